"""What an adaptive bitwise refinement of the photograph profile's distributions buys (ideal code lengths, and real
words with `--code`): how it was measured for issue 14 before format 21 shipped it (codec/kernels.py: "the
refinement", with |r| > m refined up to m = 4 and the rest one symbol of the table; docs/FORMAT.md has its numbers).

Each image is recorded as one tile of the photograph profile (codec/predictive.py: PHOTO; the staged cascade with its
numbers and residual tables, from zeroed statistics), which gives each value's distribution over 0..255 (its table
and integer mean). Each value is then coded as binary decisions about its residual r from that mean (r = 0?, r > 0?,
then |r| > k for k = 1, 2, ... up to MAGNITUDES, the rest by the distribution itself), each decision's probability
first the distribution's own (the chain rule: exactly the profile's code length, checked) and then as a paq-style
model refines it: adaptive counters in ten groups of contexts (the table; the neighbours' residuals in this channel
and the earlier ones; where the mean lies among the neighbours' values; their gradients), an adaptive probability
map of the distribution's probability, and a logistic mixer of them all (a weight set per decision, channel and
quarter of the tables) whose weights learn online, starting at the distribution's alone. Ideal code lengths in bits
per subpixel, before and after.

    python scripts/bitwise_refinement.py [--set kodak] [--images kodim09 kodim13] [--every K]
    python scripts/bitwise_refinement.py --integer        # every number an integer, as a portable coder's must be
    python scripts/bitwise_refinement.py --integer --warm 10 --warm-limit 30   # a state learnt on photos_train first
    python scripts/bitwise_refinement.py --integer --code  # coded for real, decoded again and compared

`--integer` computes the same model in integers only (paq's 12-bit squash and stretch tables, 16-bit counters and
map, weights in 16.16 fixed point): what a coder could compute bit for bit on any machine. `--warm N` first runs the
refinement over N of photos_train's training photographs (never a benchmark set) and codes each image from a copy of
the state it learnt, the counts capped at `--warm-limit` so that it still adapts: a state a format could ship as a
table, as it ships the cascade's initial statistics. `--code` codes each image for real in the integer form (each
decision a 2-symbol categorical of 24-bit probability, the mixer's 12-bit one shifted up, pushed last first and
popped by the ANS coder the kernels run, constriction's; the remainder beyond MAGNITUDES by halving its range, each
half's probability its table mass, every value's mass one more so that none is 0), decodes it from those words
alone (each value's table and mean taken from the recording, as the cascade would give them) and checks every value.

Measured (2026-12-07, fortieth sitting): Kodak's 24 2.87560 -> 2.82501 (-1.76 %; `--integer` 2.82536, -1.75 %;
coded for real, `--integer --code`, 2.82539 with each image's 8-byte head, every image decoded exactly; every
image smaller, by 1.0 % to 3.3 %, most on the smooth ones JPEG-XL codes for less today: kodim09, 10, 12, 16, 17 by
1.9-2.6 %); photos_train's 30 validation photographs (384x384) 2.51565 -> 2.49218 (`--integer`, -0.93 %; with
`--warm 10 --warm-limit 30` 2.48740, -1.12 %); every fourth Wikimedia photograph (`--set photos-wikimedia --every
4 --integer`) 3.29991 -> 3.27946 (-0.62 %). Knobs moved it little on kodim05, 09 and 13 (-1.45 % there): the
mixer's rate 0.0005-0.004 -1.21 .. -1.33 %, the counters' limit 60 or 1000, the map's rate, weight sets by table,
a final probability map of the mixer's output (+0.03 %); the ten context groups against seven -0.07 %. What a
coder's constraints cost (`--integer`, -1.45 % there): residuals known within 256x256 tiles only (`--tile 256`)
-1.44 %; each group's counters in 2^19 slots (no two contexts share one) -1.45 %, hashed into 2^16 -1.41 %. What
cheaper models keep (`--integer` there): |r| > m refined only up to m = 4, the table alone beyond
(`--refined-magnitudes 4`) -1.47 %, up to 2 -1.38 %; the first six counter groups alone (`--groups 6`) -1.19 %, four
-0.93 %.

`--across` measures format 22's refinement (2026-12-07, forty-second sitting): five groups more, keyed on where the
earlier channels' gradients carried over to this channel (in the first channel, spatial predictions) put the value
against c, in 15 classes, and the mixer's rate 12; chosen on every 10th of photos_train's training photographs
(`--set photos-train --every 10 --integer --refined-magnitudes 4 --across`: -4.68 %, where the ten groups give
-1.07 %); Kodak's every third image (`--every 3 --integer --refined-magnitudes 4 --across`) -11.50 %, the ten
groups -1.67 %.

EMMA (a classical context-mixing coder, ../shared/notes/anchors.md) codes Kodak at 2.60 bpsp against JPEG-XL's 2.87
and vaezip's 2.876 (format 20): this measures how much of that an adaptive refinement of the profile's
distributions reaches without a better prediction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive  # noqa: E402
from codec.kernels import _ans_pop as _ans_pop_python, _ans_push as _ans_push_python  # noqa: E402
from vaezip import data  # noqa: E402

MAGNITUDES = 12  # |r| > k decisions refined for k = 1..MAGNITUDES; beyond, the distribution alone
FORMAT21_GROUPS = 10  # counter context groups of format 21's refinement (_refine's slots)
GROUPS = 15  # with format 22's five (--across): each of the earlier channels' gradients carried over, against c
GROUP_SIZE = 1 << 20
INPUTS = GROUPS + 2  # the distribution's stretch, the counters', the map's
DECISIONS = 2 + 2 * MAGNITUDES  # zero, sign, then each magnitude on each side
MAP_BUCKETS = 33
LIMIT = 12.0  # stretch domain bound
_ans_pop, _ans_push = njit(_ans_pop_python), njit(_ans_push_python)  # constriction's coder, as the kernels run it


@njit(cache=False)
def _stretch(p):
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return np.log(p / (1.0 - p))


@njit(cache=False)
def _squash(x):
    return 1.0 / (1.0 + np.exp(-x))


@njit(cache=False)
def _fine_class(r):
    """A difference in 15 classes: 0, +-1, +-2, +-3, +-(4..5), +-(6..8), +-(9..12), +-(13 or more)."""
    m = abs(r)
    q = m if m <= 3 else (4 if m <= 5 else (5 if m <= 8 else (6 if m <= 12 else 7)))
    return 7 + q if r > 0 else 7 - q


@njit(cache=False)
def _class(r):
    """A residual (or a difference) in 7 classes: 0, +-1, +-(2..3), +-(4 or more)."""
    m = abs(r)
    q = 0 if m == 0 else (1 if m == 1 else (2 if m <= 3 else 3))
    return 3 + q if r > 0 else 3 - q


@njit(cache=False)
def _cumulative(prefix, t, c, x):
    """The table's mass of values <= x around mean c (values 0 and 255 fold the tails)."""
    if x < 0:
        return prefix[t, 0] * 0  # of prefix's type (integers in the coder, floats in the ideal pass)
    if x >= 255:
        return prefix[t, 510]
    return prefix[t, x - c + 255]


@njit(cache=False)
def _decision(prefix, t, c, r, k):
    """Decision k about residual r around mean c in table t: (its index, the table's mass of a one, the mass of both,
    the bit, whether it is the value's last), or index -1 where it is not taken (nothing is left to decide)."""
    total = prefix[t, 510]
    zero = _cumulative(prefix, t, c, c) - _cumulative(prefix, t, c, c - 1)
    if k == 0:  # r == 0?
        return 0, zero, total, 1 if r == 0 else 0, r == 0
    if k == 1:  # r > 0, given r != 0
        return 1, total - _cumulative(prefix, t, c, c), total - zero, 1 if r > 0 else 0, False
    m = k - 1  # |r| > m given |r| >= m, on r's side
    if r > 0:
        if c + m >= 255:
            return -1, 0.0, 0.0, 0, True
        one, both = total - _cumulative(prefix, t, c, c + m), total - _cumulative(prefix, t, c, c + m - 1)
    else:
        if c - m <= 0:
            return -1, 0.0, 0.0, 0, True
        one, both = _cumulative(prefix, t, c, c - m - 1), _cumulative(prefix, t, c, c - m)
    bit = 1 if abs(r) > m else 0
    return 2 + 2 * (m - 1) + (1 if r > 0 else 0), one, both, bit, bit == 0 or m == MAGNITUDES


@njit(cache=False)
def _residual_at(residual, ch, y, x, y0, x0, tile):
    """The residual at (ch, y, x) as the value at (y0, x0) sees it: 0 outside the image or its tile."""
    if y < 0 or x < 0 or x >= residual.shape[2] or y // tile != y0 // tile or x // tile != x0 // tile:
        return 0
    return residual[ch, y, x]


@njit(cache=False)
def _slots(slots, values, residual, n, ch, y, x, channels, width, c, t, decision, side, tile, group_size):
    """Each counter group's context (GROUPS) of a decision about the value (ch, y, x), the n-th recorded. `tile`: a
    neighbour in another tile of that size counts as residual 0 (a coder that keeps residuals tile by tile)."""
    left = _residual_at(residual, ch, y, x - 1, y, x, tile)
    above = _residual_at(residual, ch, y - 1, x, y, x, tile)
    above_left = _residual_at(residual, ch, y - 1, x - 1, y, x, tile)
    above_right = _residual_at(residual, ch, y - 1, x + 1, y, x, tile)
    left_left = _residual_at(residual, ch, y, x - 2, y, x, tile)
    above_above = _residual_at(residual, ch, y - 2, x, y, x, tile)
    before = residual[ch - 1, y, x] if ch > 0 else 0
    first = residual[0, y, x] if ch > 1 else 0
    before_left = _residual_at(residual, ch - 1, y, x - 1, y, x, tile) if ch > 0 else 0
    before_above = _residual_at(residual, ch - 1, y - 1, x, y, x, tile) if ch > 0 else 0
    # the neighbours' values, where the mean lies among them
    a = values[n - channels] if x > 0 else c
    b = values[n - channels * width] if y > 0 else c
    d = values[n - channels * width + channels] if y > 0 and x + 1 < width else c
    e = values[n - channels * width - channels] if y > 0 and x > 0 else c
    level, fraction = min(t // 4, 32), t % 4
    key = (decision * 3 + ch) * 3 + side
    slots[0] = (key * 33 + level) * 4 + fraction
    slots[1] = (key * 7 + _class(left)) * 7 + _class(above)
    slots[2] = ((key * 7 + _class(before)) * 7 + _class(first)) * 7 + _class(left)
    slots[3] = ((key * 7 + _class(above_left)) * 7 + _class(above_right)) * 7 + _class(left_left)
    slots[4] = ((key * 7 + _class(a - c)) * 7 + _class(b - c)) * 7 + _class(d - c)
    slots[5] = ((key * 33 + level) * 7 + _class(left)) * 7 + _class(above)
    slots[6] = ((key * 7 + _class(above_above)) * 7 + _class(left + above)) * 7 + _class(above_left + above_right)
    slots[7] = ((key * 7 + _class(a - b)) * 7 + _class(b - d)) * 7 + _class(a - e)
    slots[8] = ((key * 7 + _class(before)) * 7 + _class(before_left)) * 7 + _class(before_above)
    slots[9] = ((key * 33 + level) * 7 + _class(before)) * 7 + _class(first)
    # format 22's five (codec/kernels.py: REFINE_ACROSS_GROUPS): in the first channel spatial predictions against c,
    # in the others the earlier channels' gradients carried over to this one (p: the previous channel, f: the first)
    if ch == 0:
        aa = values[n - 2 * channels] if x > 1 else a
        bb = values[n - 2 * channels * width] if y > 1 else b
        pairs = ((a - c, b - c), (a + b - e - c, 2 * b - bb - c), (d - c, e - c), (2 * a - aa - c, a + d - b - c),
                 (a - c, d - c))
    else:
        p = values[n - 1]
        pa = p - values[n - channels - 1] if x > 0 else 0
        pb = p - values[n - channels * width - 1] if y > 0 else 0
        pd = p - values[n - channels * width + channels - 1] if y > 0 and x + 1 < width else 0
        pe = p - values[n - channels * width - channels - 1] if y > 0 and x > 0 else 0
        fa = fb = 0
        if ch > 1:
            fa = values[n - ch] - values[n - channels - ch] if x > 0 else 0
            fb = values[n - ch] - values[n - channels * width - ch] if y > 0 else 0
        pairs = ((a + pa - c, b + pb - c), (a + fa - c, b + fb - c), (d + pd - c, e + pe - c),
                 (a + fa - c, a + pa - c), (b + fb - c, b + pb - c))
    for j in range(5):
        slots[FORMAT21_GROUPS + j] = (key * 15 + _fine_class(pairs[j][0])) * 15 + _fine_class(pairs[j][1])
    for g in range(GROUPS):
        slots[g] = slots[g] % group_size


# The integer form (every number an integer, as a portable coder's must be): paq's 12-bit squash by interpolation in
# a table of 33 and stretch its inverse, 16-bit counters and map, weights in 16.16 fixed point.
_SQUASH_KNOTS = np.array([1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994, 3348,
                          3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094], np.int64)


@njit(cache=False)
def _squash_int(d):
    """d (stretch units of 1/256) -> a 12-bit probability."""
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    i = (d >> 7) + 16
    return (_SQUASH_KNOTS[i] * (128 - w) + _SQUASH_KNOTS[i + 1] * w + 64) >> 7


@njit(cache=False)
def _stretch_table():
    table = np.empty(4096, np.int64)
    previous = 0
    for d in range(-2047, 2048):
        v = _squash_int(d)
        for i in range(previous, v + 1):
            table[i] = d
        previous = v + 1
    for i in range(previous, 4096):
        table[i] = 2047
    return table


@njit(cache=False)
def _int_predict(inputs16, slots, counters16, weights16, maps16, stretch, one, both, mixer, map_row, active=GROUPS):
    """The integer form's 12-bit probability of a one for a decision whose table masses are `one` of `both`, its
    inputs left in inputs16, and the map's bucket and share (for _int_learn)."""
    base = min(max((np.int64(one) * 4096) // np.int64(both), 1), 4095)
    inputs16[0] = stretch[base]
    for g in range(GROUPS):  # the first `active` groups only (the others' inputs 0: their weights never move)
        inputs16[1 + g] = stretch[counters16[g, slots[g]] >> 4] if g < active else 0
    position = (inputs16[0] + 2048) * 32
    low, share = position >> 12, position & 4095
    mapped = (maps16[map_row, low] * (4096 - share) + maps16[map_row, low + 1] * share) >> 16
    inputs16[INPUTS - 1] = stretch[min(max(mapped, 1), 4095)]
    dot = 0
    for i in range(INPUTS):
        dot += weights16[mixer, i] * inputs16[i]
    return min(max(_squash_int(dot >> 16), 1), 4095), low, share


@njit(cache=False)
def _int_learn(bit, q, inputs16, slots, counters16, counts, reciprocal, weights16, maps16, mixer, map_row, low, share,
               limit, int_rate, int_map_shift, active=GROUPS):
    """The integer form's state after a decision's bit: the mixer's weights, the counters, the map."""
    error = ((bit << 12) - q) * int_rate
    for i in range(INPUTS):
        weights16[mixer, i] += (inputs16[i] * error + 32768) >> 16
    for g in range(active):
        s = slots[g]
        counts[g, s] = min(counts[g, s] + 1, limit)
        counters16[g, s] += (((bit << 16) - counters16[g, s]) * reciprocal[counts[g, s]]) >> 16
    target = bit << 16
    maps16[map_row, low] += ((target - maps16[map_row, low]) * (4096 - share)) >> (12 + int_map_shift)
    maps16[map_row, low + 1] += ((target - maps16[map_row, low + 1]) * share) >> (12 + int_map_shift)


def fresh_state(channels: int, mixer_levels: int, group_size: int = GROUP_SIZE) -> tuple:
    """The refinement's state before anything is coded: (counters, counts, weights, maps) of the float form, then
    those of the integer form."""
    counters = np.full((GROUPS, group_size), 0.5)
    counts = np.zeros((GROUPS, group_size), np.int64)
    weights = np.zeros((DECISIONS * channels * mixer_levels, INPUTS))
    weights[:, 0] = 1.0
    knots = (np.arange(MAP_BUCKETS) - (MAP_BUCKETS - 1) / 2) * (2 * LIMIT / (MAP_BUCKETS - 1))
    maps = np.tile(1.0 / (1.0 + np.exp(-knots)), (DECISIONS * channels * 40, 1))
    counters16 = np.full((GROUPS, group_size), 32768, np.int64)
    weights16 = np.zeros((DECISIONS * channels * mixer_levels, INPUTS), np.int64)
    weights16[:, 0] = 65536
    maps16 = np.tile(np.array([_squash_int((b - 16) * 128) * 16 for b in range(MAP_BUCKETS)], np.int64),
                     (DECISIONS * channels * 40, 1))
    return counters, counts, weights, maps, counters16, weights16, maps16


@njit(cache=False)
def _refine(tables, centres, values, channels, height, width, prefix, rate, map_rate, limit, mixer_levels, integer,
            int_rate, int_map_shift, tile, refined_magnitudes, active, counters, counts, weights, maps, counters16,
            weights16, maps16):
    """(baseline bits, chain-rule bits, refined bits) of the recorded values (raster order, channels innermost),
    the refinement's state (fresh_state's arrays) updated in place."""
    residual = np.zeros((channels, height, width), np.int64)
    inputs = np.zeros(INPUTS)
    stretch = _stretch_table()
    reciprocal = np.array([131072 // (2 * k + 3) for k in range(1024)], np.int64)
    inputs16 = np.zeros(INPUTS, np.int64)
    slots = np.zeros(GROUPS, np.int64)
    baseline = chain = refined = 0.0
    n = 0
    for y in range(height):
        for x in range(width):
            for ch in range(channels):
                t, c, v = tables[n], centres[n], values[n]
                total = prefix[t, 510]
                mass = _cumulative(prefix, t, c, v) - _cumulative(prefix, t, c, v - 1)
                baseline -= np.log2(mass / total)
                r = v - c
                level = min(t // 4, 32)
                k = 0
                while True:
                    decision, one, both, bit, last = _decision(prefix, t, c, r, k)
                    if decision < 0:
                        break
                    p = one / both
                    chain -= np.log2(p if bit == 1 else 1.0 - p)
                    side = 0 if k < 2 else (1 if r > 0 else 2)
                    _slots(slots, values, residual, n, ch, y, x, channels, width, c, t, decision, side, tile,
                           counters.shape[1])
                    row = decision * channels + ch
                    mixer = row * mixer_levels + min(level * mixer_levels // 33, mixer_levels - 1)
                    map_row = row * 40 + level
                    if k >= 2 and k - 1 > refined_magnitudes:  # the table's probability alone, nothing learnt
                        refined -= np.log2(p if bit == 1 else 1.0 - p)
                    elif integer:
                        q, low, share = _int_predict(inputs16, slots, counters16, weights16, maps16, stretch, one,
                                                     both, mixer, map_row, active)
                        refined -= np.log2((q if bit == 1 else 4096 - q) / 4096)
                        _int_learn(bit, q, inputs16, slots, counters16, counts, reciprocal, weights16, maps16, mixer,
                                   map_row, low, share, limit, int_rate, int_map_shift, active)
                    else:
                        inputs[0] = min(max(_stretch(p), -LIMIT), LIMIT)
                        for g in range(GROUPS):  # the first `active` groups only, as _int_predict reads them
                            inputs[1 + g] = min(max(_stretch(counters[g, slots[g]]), -LIMIT), LIMIT) if g < active \
                                else 0.0
                        where = (inputs[0] + LIMIT) / (2 * LIMIT) * (MAP_BUCKETS - 1)
                        low = min(int(where), MAP_BUCKETS - 2)
                        share = where - low
                        mapped = maps[map_row, low] * (1 - share) + maps[map_row, low + 1] * share
                        inputs[INPUTS - 1] = min(max(_stretch(mapped), -LIMIT), LIMIT)
                        dot = 0.0
                        for i in range(INPUTS):
                            dot += weights[mixer, i] * inputs[i]
                        mixed = _squash(min(max(dot, -LIMIT), LIMIT))
                        q = min(max(mixed, 1e-5), 1 - 1e-5)
                        refined -= np.log2(q if bit == 1 else 1.0 - q)
                        error = bit - mixed
                        for i in range(INPUTS):
                            weights[mixer, i] += rate * error * inputs[i]
                        for g in range(active):
                            s = slots[g]
                            counts[g, s] = min(counts[g, s] + 1, limit)
                            counters[g, s] += (bit - counters[g, s]) / (counts[g, s] + 0.5)
                        maps[map_row, low] += map_rate * (1 - share) * (bit - maps[map_row, low])
                        maps[map_row, low + 1] += map_rate * share * (bit - maps[map_row, low + 1])
                    k += 1
                    if last:
                        break
                # what the decisions leave: the distribution alone, within what they narrowed it to
                if abs(r) > MAGNITUDES:
                    if r > 0:
                        rest = total - _cumulative(prefix, t, c, c + MAGNITUDES)
                    else:
                        rest = _cumulative(prefix, t, c, c - MAGNITUDES - 1)
                    chain -= np.log2(mass / rest)
                    refined -= np.log2(mass / rest)
                residual[ch, y, x] = r
                n += 1
    return baseline, chain, refined


@njit(cache=False)
def _side_masses(prefix, t, c, positive, m):
    """(the table's mass of |r| > m, of |r| >= m) on one side of mean c, each value's mass one more (no decision
    of a coder may have probability 0)."""
    if positive:
        one = prefix[t, 510] - _cumulative(prefix, t, c, c + m) + (255 - c - m)
        both = prefix[t, 510] - _cumulative(prefix, t, c, c + m - 1) + (256 - c - m)
    else:
        one = _cumulative(prefix, t, c, c - m - 1) + (c - m)
        both = _cumulative(prefix, t, c, c - m) + (c - m + 1)
    return one, both


@njit(cache=False)
def _binary(decode, bit, frequency, words, position, state, frequencies, bits, count):
    """One decision of 24-bit probability `frequency` of a one: recorded (the encoder's, pushed in reverse later) or
    popped (the decoder's, as kernels._pop pops: a one above the zero's [0, 2**24 - frequency)). (bit, position,
    state, count)."""
    if not decode:
        frequencies[count], bits[count] = frequency, bit
        return bit, position, state, count + 1
    zero = (1 << 24) - frequency
    quantile = np.int64(state & np.uint64((1 << 24) - 1))
    bit = 1 if quantile >= zero else 0
    position, state = _ans_pop(state, quantile, zero if bit else 0, frequency if bit else zero, words, position)
    return bit, position, state, count


@njit(cache=False)
def _code(tables, centres, values, channels, height, width, prefix, limit, mixer_levels, int_rate, int_map_shift,
          active, decode, words, position, state, frequencies, bits, counters16, counts, weights16, maps16):
    """The integer refinement as a coder over a recording (each value's table and mean): the encoder (decode
    False) records each decision's 24-bit frequency of a one and its bit; the decoder pops them from `words`
    (the bulk up to `position`, the head `state`) and writes the values it decodes into `values`. The remainder
    beyond MAGNITUDES is coded by halving its range, each half's probability its table mass. (position, state,
    decisions recorded)."""
    residual = np.zeros((channels, height, width), np.int64)
    stretch = _stretch_table()
    reciprocal = np.array([131072 // (2 * k + 3) for k in range(1024)], np.int64)
    inputs16 = np.zeros(INPUTS, np.int64)
    slots = np.zeros(GROUPS, np.int64)
    count = 0
    n = 0
    for y in range(height):
        for x in range(width):
            for ch in range(channels):
                t, c = tables[n], centres[n]
                r = values[n] - c  # the encoder's; the decoder finds it
                level = min(t // 4, 32)
                positive, magnitude = True, 0
                for k in range(2 + MAGNITUDES):
                    if k == 0:
                        zero = _cumulative(prefix, t, c, c) - _cumulative(prefix, t, c, c - 1) + 1
                        decision, one, both, bit = 0, zero, prefix[t, 510] + 256, 1 if r == 0 else 0
                    elif k == 1:
                        zero = _cumulative(prefix, t, c, c) - _cumulative(prefix, t, c, c - 1) + 1
                        decision = 1
                        one, both = prefix[t, 510] - _cumulative(prefix, t, c, c) + 255 - c, prefix[t, 510] + 256 - zero
                        bit = 1 if r > 0 else 0
                        if c == 255 or c == 0:  # one side only: nothing to decide
                            decision = -1
                            bit = 0 if c == 255 else 1
                    else:
                        m = k - 1
                        if (positive and c + m >= 255) or (not positive and c - m <= 0):
                            break  # no value beyond: |r| is m
                        one, both = _side_masses(prefix, t, c, positive, m)
                        decision = 2 + 2 * (m - 1) + (1 if positive else 0)
                        bit = 1 if abs(r) > m else 0
                    if decision >= 0:
                        side = 0 if k < 2 else (1 if positive else 2)
                        _slots(slots, values, residual, n, ch, y, x, channels, width, c, t, decision, side,
                               1 << 30, counters16.shape[1])
                        row = decision * channels + ch
                        mixer = row * mixer_levels + min(level * mixer_levels // 33, mixer_levels - 1)
                        map_row = row * 40 + level
                        q, low, share = _int_predict(inputs16, slots, counters16, weights16, maps16, stretch, one,
                                                     both, mixer, map_row, active)
                        bit, position, state, count = _binary(decode, bit, q << 12, words, position, state,
                                                              frequencies, bits, count)
                        _int_learn(bit, q, inputs16, slots, counters16, counts, reciprocal, weights16, maps16, mixer,
                                   map_row, low, share, limit, int_rate, int_map_shift, active)
                    if k == 0:
                        if bit == 1:
                            break
                        magnitude = 1
                    elif k == 1:
                        positive = bit == 1
                    else:
                        if bit == 0:
                            break
                        magnitude = k  # |r| > m: at least m + 1
                # beyond MAGNITUDES: the value by halving its range
                if magnitude > MAGNITUDES:
                    low_value, high_value = (c + magnitude, 255) if positive else (0, c - magnitude)
                    while low_value < high_value:
                        middle = (low_value + high_value) // 2
                        upper = _cumulative(prefix, t, c, high_value) - _cumulative(prefix, t, c, middle) + (
                            high_value - middle)
                        every = _cumulative(prefix, t, c, high_value) - _cumulative(prefix, t, c, low_value - 1) + (
                            high_value - low_value + 1)
                        frequency = min(max((np.int64(upper) << 24) // np.int64(every), 1), (1 << 24) - 1)
                        value = values[n]
                        bit, position, state, count = _binary(decode, 1 if value > middle else 0, frequency, words,
                                                              position, state, frequencies, bits, count)
                        if bit:
                            low_value = middle + 1
                        else:
                            high_value = middle
                    value = low_value
                else:
                    value = c + (magnitude if positive else -magnitude)
                if decode:
                    values[n] = value
                residual[ch, y, x] = value - c
                n += 1
    return position, state, count


@njit(cache=False)
def _push_decisions(frequencies, bits, count, words):
    """The recorded decisions pushed last first onto an empty coder (kernels._ans_push): (bulk words, head)."""
    position, state = 0, np.uint64(0)
    for i in range(count - 1, -1, -1):
        frequency = np.int64(frequencies[i])
        zero = (1 << 24) - frequency
        position, state = _ans_push(state, zero if bits[i] else 0, frequency if bits[i] else zero, words, position)
    return position, state


def code(image: np.ndarray, limit: int = 255, mixer_levels: int = 4, int_rate: int = 6,
         int_map_shift: int = 6, active: int = FORMAT21_GROUPS) -> tuple[int, int]:
    """image (C, H, W) uint8 coded for real by the integer refinement and decoded again (the same values, checked):
    (the words' bytes with the head's 8, the values' count)."""
    recorded = predictive.record_adaptive(image, predictive.Context(), predictive.AdaptiveState(), predictive.PHOTO)
    tables, centres = np.divmod(recorded.rows.astype(np.int64), predictive._LEVELS)
    offsets = predictive._fitted_offsets(predictive._table_distribution(predictive.PHOTO)).reshape(
        -1, predictive._OFFSETS)
    prefix = np.cumsum(offsets, axis=1)
    channels, height, width = image.shape
    values = recorded.values.astype(np.int64)
    room = len(values) * (4 + MAGNITUDES + 8)
    frequencies, bits = np.zeros(room, np.int64), np.zeros(room, np.int64)
    words = np.zeros(room // 8 + 1024, np.uint32)
    state = fresh_state(channels, mixer_levels, 1 << 19)
    options = (limit, mixer_levels, int_rate, int_map_shift, active)
    _, _, count = _code(tables, centres, values, channels, height, width, prefix, *options, False, words, 0,
                        np.uint64(0), frequencies, bits, state[4], state[1], state[5], state[6])
    position, head = _push_decisions(frequencies, bits, count, words)
    head = np.uint64(head)  # numba hands it back as a Python int, which a compiled call would type as signed
    decoded = np.zeros_like(values)
    fresh = fresh_state(channels, mixer_levels, 1 << 19)
    end, last, _ = _code(tables, centres, decoded, channels, height, width, prefix, *options, True, words, position,
                         head, frequencies, bits, fresh[4], fresh[1], fresh[5], fresh[6])
    if not np.array_equal(decoded, values) or end != 0 or last != 0:
        raise AssertionError("the refinement did not decode its own words")
    return 4 * position + 8, len(values)


def measure(image: np.ndarray, rate: float = 0.002, map_rate: float = 0.02, limit: int = 255, mixer_levels: int = 4,
            integer: bool = False, int_rate: int = 6, int_map_shift: int = 6, tile: int = 1 << 30,
            group_size: int = GROUP_SIZE, refined_magnitudes: int = MAGNITUDES, active: int = FORMAT21_GROUPS,
            state: tuple | None = None) -> tuple[float, float, float]:
    """image (C, H, W) uint8 -> (baseline, chain, refined) bits, from `state` (fresh_state's; updated) or a fresh
    one."""
    recorded = predictive.record_adaptive(image, predictive.Context(), predictive.AdaptiveState(), predictive.PHOTO)
    tables, centres = np.divmod(recorded.rows.astype(np.int64), predictive._LEVELS)
    offsets = predictive._fitted_offsets(predictive._table_distribution(predictive.PHOTO)).reshape(
        -1, predictive._OFFSETS)
    prefix = np.cumsum(offsets, axis=1).astype(np.float64)
    channels, height, width = image.shape
    state = fresh_state(channels, mixer_levels, group_size) if state is None else state
    return _refine(tables, centres, recorded.values.astype(np.int64), channels, height, width, prefix, rate,
                   map_rate, limit, mixer_levels, integer, int_rate, int_map_shift, tile, refined_magnitudes, active,
                   *state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="kodak")
    parser.add_argument("--images", nargs="+", help="by name (default: every --every-th of the set)")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.002, help="the mixer's learning rate")
    parser.add_argument("--map-rate", type=float, default=0.02, help="the probability map's")
    parser.add_argument("--limit", type=int, default=255, help="the counters' count limit")
    parser.add_argument("--mixer-levels", type=int, default=4, help="mixer weight sets by the table's level")
    parser.add_argument("--integer", action="store_true", help="every number an integer, as a coder's must be")
    parser.add_argument("--int-rate", type=int, help="--integer: the mixer's learning rate (default 6; --across 12)")
    parser.add_argument("--int-map-shift", type=int, default=6, help="--integer: the map's rate, 2^-N")
    parser.add_argument("--tile", type=int, default=1 << 30,
                        help="neighbours in another tile of this size count as residual 0")
    parser.add_argument("--group-size", type=int, default=GROUP_SIZE, help="each counter group's slots")
    parser.add_argument("--code", action="store_true", help="code each image for real (the integer form, its words "
                        "pushed and popped as the kernels' ANS coder does) and decode it again")
    parser.add_argument("--refined-magnitudes", type=int, default=MAGNITUDES,
                        help="refine |r| > m only up to this m (beyond: the table's probability alone)")
    parser.add_argument("--groups", type=int, help="only the first N counter groups (default: format 21's ten, "
                        "--across's fifteen)")
    parser.add_argument("--across", action="store_true", help="format 22's refinement: five groups more, on the "
                        "earlier channels' gradients carried over, and --int-rate 12 (unless given)")
    parser.add_argument("--warm", type=int, default=0,
                        help="learn the state on this many of photos_train's training photographs first, each test "
                             "image then coded from it")
    parser.add_argument("--warm-limit", type=int, default=255, help="--warm: the learnt counts capped at this")
    args = parser.parse_args()
    args.groups = args.groups or (GROUPS if args.across else FORMAT21_GROUPS)
    args.int_rate = args.int_rate or (12 if args.across else 6)
    options = dict(rate=args.rate, map_rate=args.map_rate, limit=args.limit, mixer_levels=args.mixer_levels,
                   integer=args.integer, int_rate=args.int_rate, int_map_shift=args.int_map_shift, tile=args.tile,
                   group_size=args.group_size, refined_magnitudes=args.refined_magnitudes, active=args.groups)
    warmed = None
    if args.warm:
        training = list(data.load("photos-train").images)
        warmed = fresh_state(3, args.mixer_levels, args.group_size)
        for pixels in training[:: max(1, len(training) // args.warm)][: args.warm]:
            measure(np.ascontiguousarray(np.asarray(pixels).transpose(2, 0, 1)), state=warmed, **options)
        np.minimum(warmed[1], args.warm_limit, out=warmed[1])
    loaded = data.load(args.set)
    names = [Path(str(name)).stem for name in loaded.names]
    sums = np.zeros(3)
    values = real = 0
    for wanted in args.images or names[::args.every]:
        pixels = np.asarray(loaded.images[names.index(wanted)])  # H, W, C
        image = np.ascontiguousarray((pixels[..., None] if pixels.ndim == 2 else pixels).transpose(2, 0, 1))
        started = time.perf_counter()
        state = None if warmed is None else tuple(array.copy() for array in warmed)
        bits = np.array(measure(image, state=state, **options))
        assert abs(bits[1] / bits[0] - 1) < 1e-9, bits  # the chain rule: the profile's own code length
        coded = ""
        if args.code:
            size, _ = code(image, args.limit, args.mixer_levels, args.int_rate, args.int_map_shift, args.groups)
            real += 8 * size
            coded = f", coded {8 * size / image.size:.5f} and decoded"
        sums += bits
        values += image.size
        print(f"{wanted}: {bits[0] / image.size:.5f} -> {bits[2] / image.size:.5f} bpsp "
              f"({100 * (bits[2] / bits[0] - 1):+.2f} %{coded}; {time.perf_counter() - started:.1f} s)", flush=True)
    print(f"all: {sums[0] / values:.5f} -> {sums[2] / values:.5f} bpsp ({100 * (sums[2] / sums[0] - 1):+.2f} %)"
          + (f"; coded {real / values:.5f} ({100 * (real / sums[0] - 1):+.2f} %)" if args.code else ""))


if __name__ == "__main__":
    main()
