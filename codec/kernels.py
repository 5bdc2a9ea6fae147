"""The blend predictor's coder compiled (numba): a predictor tile of format 6 pushed or popped in one call,
ANS included.

predictive.py's numpy decoder pops a blend tile wavefront by wavefront and channel by channel through
constriction, ~280 calls of a dozen numpy operations each for a 32x32 colour tile (~10 ms, most of it call
overhead); its encoder builds a 256-wide table row per value for constriction. Here the same numbers are
computed pixel by pixel (`_code_tile`), and the values are pushed (`_push`) and popped (`_pop`) by an ANS coder
that does exactly what constriction's does (32-bit words, 64-bit head, 24-bit probabilities, its lazy
categorical model's quantisation of the float32 integer tables): ~0.6 ms a tile either way, the same words
on the stack and the same pixels.

Why it is exact: every float64 operation is the numpy coder's, one for one and in its order (sums as running
sums from the first term, like np.add.accumulate), each exactly rounded; numba compiles without fast-math, so
nothing is reassociated or contracted into a fused multiply-add. The categorical model's cumulative
frequencies are computed once, in float32 as constriction computes them (`left_cumulatives`). Tests hold the
kernels, compiled and as plain Python, to the numpy coder and to constriction, on pushed values and on
arbitrary words.

Without numba, or where its compile fails, `ready()` is None and predictive.py's numpy coder runs: the same
bits, slower."""

from __future__ import annotations

import contextlib
import pickle
import sys
import threading
import types
import warnings
from collections.abc import Callable

import numpy as np

PRECISION = 24  # constriction's probability bits
WORD_BITS = 32

# Adaptive contexts (predictive.ADAPTIVE, format 9): each value of a tile has a context, its channel class (0, 1,
# 2 and on), its std's group (FITTED's level // ADAPT_LEVEL_DIVISOR, at most ADAPT_LEVEL_GROUPS - 1), where each
# of its four neighbours lies against its unrounded mean (above by more than 1/2, below by more, or neither: 81
# patterns), and, after the first channel, where the previous channel's value at this pixel fell against that
# one's mean (3). A context keeps four running statistics over the values coded in it before (the stream's, not
# only the tile's: predictive.AdaptiveState): the sum of value - unrounded mean, their count, the sum of
# |value - coded mean| / std, and ADAPT_TUNING's expected share per value of that sum; all four halve when the
# count reaches the limit. A value's mean moves by its context's mean residual, its std scales by the ratio of
# the last two (each with a prior count added, within bounds), and its table row follows from those.
ADAPT_LEVEL_DIVISOR = 4
ADAPT_LEVEL_GROUPS = 11
ADAPT_CHANNEL_CLASSES = 3
ADAPT_CONTEXTS = ADAPT_CHANNEL_CLASSES * ADAPT_LEVEL_GROUPS * 81 * 3  # 8,019
# The count at which a context's statistics halve, the prior count of the std's ratio, the expected |residual| /
# std per value, and the ratio's bounds: chosen on 23 of photos_train's training photographs (every 13th),
# 32x32 tiles in the decoder's order, 4.72 % below FITTED there; the best of `python scripts/adaptive_contexts.py
# photos-train --every 13 --tune`'s grid, a prior of 4, is 0.04 % lower still.
ADAPT_TUNING = np.array([64.0, 8.0, 0.7, 0.4, 2.5])
ADAPT_TUNING.flags.writeable = False
# _code_tile's `adaptive` for the other distributions: writable (numba types a read-only array apart and refuses
# the branch that writes it), and empty, so nothing is ever written.
NO_ADAPTATION = np.zeros((0, 4))
NO_MOMENTS = np.zeros((0, 0))  # _code_tile's `moments` for the distributions without least squares (writable too)

# The cascade (predictive.CASCADE, format 12): LEAST_SQUARES with the tile's values in raster order, not wavefront
# order (the least-squares window then holds the rows above in full, up to LS_RADIUS columns right: more samples
# for the same sums), a std that also grows with the least-squares fit's own mean squared error over its window and
# with how far the least-squares and the blend's predictions lie apart, and a second stage of context statistics
# after ADAPTIVE's. Its contexts: the channel class and std group as the first's, where the least-squares
# prediction lies against the blend's (CASCADE_APART edges, either side: 9) and where the values two to the left
# and two above lie against the mean (9). A value's mean, corrected by the first stage, moves again by
# CASCADE_TUNING's share of the second's mean residual (the residuals after the first stage's correction), and its
# std scales again by the second's ratio, with ADAPT_TUNING's halving, prior, expectation and bounds. Its numbers:
# the share of the std taken by the fit's root mean squared error, that error's scale, the weight of the two
# predictions' distance, the second stage's share of its mean residual, and the floor and diagonal share of the
# least-squares blend's weights (the blend's seven take predictive.CASCADE_ERROR_FLOOR and _DIAGONAL); chosen
# with the std weights by coordinate descent on 23 of photos_train's training photographs (every 13th), 128x128
# tiles (`python scripts/cascade.py photos-train --every 13 --tune`).
CASCADE_CONTEXTS = ADAPT_CHANNEL_CLASSES * ADAPT_LEVEL_GROUPS * 9 * 9  # 2,673, after ADAPTIVE's in the statistics
# The cascade with parity (predictive.PARITY, format 13): the cascade whose second stage's contexts also hold
# where the value lies on the image's grid of 2x2 pixels: its column's and row's parity in the image. A tile is
# coded turned by 180 degrees, its frame's last column and row the tile's first (tiles of even sides, as every
# shipped model's, start on even columns and rows), so the parities are those of the frame's columns and rows
# counted from its last ones. Photographs whose colour was stored at half resolution and interpolated back
# (Kodak's, from Photo CD), demosaiced or cut from 8x8 JPEG blocks differ from one position to the next on that
# grid; the contexts learn by how much. Its own rows after the cascade's, four for each of its.
# Kodak's every third image 0.66 % smaller, 23 of photos_train's training photographs (every 13th) 0.22 %, the
# first 8 Wikimedia photographs 0.07 % larger (128x128 tiles; `python scripts/cascade.py SET`).
PARITY_CONTEXTS = 4 * CASCADE_CONTEXTS
# The wide cascade (predictive.WIDE, format 14): the cascade with parity whose blends weigh each predictor also by
# its errors two columns to the left and two rows above (_neighbour_weight's `far`, _code_tile's `far_shares`):
# the blend's seven by WIDE_FAR[0] of them, the least-squares prediction and the blend's by WIDE_FAR[1]. Those
# values lie on the value's own place of the 2x2 grid, and widen the neighbourhood the weights are judged on. The
# same statistics as the parity's. Chosen on 23 of photos_train's training photographs (every 13th), tiles of 256:
# 0.27 % smaller there (0.35 to 0.7 each within 0.03 %), Kodak's every third image 0.26 %, every third Wikimedia
# photograph 0.22 % (`python scripts/cascade.py SET --every 3 --tile 256`).
WIDE_FAR = np.array([0.5, 0.5])
NO_FAR = np.zeros(2)  # _code_tile's `far_shares` for the other distributions
# The staged cascade (predictive.STAGED, format 15): the wide cascade whose std also grows with the residuals two to
# the left and two above (STAGED_TUNING[0] of their sum), and whose contexts adapt in a third stage after the
# second: its contexts the channel class and std group as the first's, and where each of the residuals left of and
# above the value, signed, lies against the value's std after the second stage (THIRD_CLASSES classes each, their
# edges +-STAGED_TUNING[2] and [3] stds). The residuals are those of the values' coded means (the means the third
# stage corrected); a value's mean moves again by STAGED_TUNING[1]'s share of its third context's mean residual (the
# residual after the second stage's correction), its std scales again by that context's ratio, with ADAPT_TUNING's
# halving, prior, expectation and bounds. Its rows after the parity's; the wide cascade's other numbers. The residuals
# two away are the third stage's neighbours on the value's place of the 2x2 grid; the signed residuals are what the
# stages before left of the neighbours' errors: where both lie on one side, the value's often does too. Chosen by hand
# on 23 of photos_train's training photographs (every 13th), every third Kodak image and every fifth of Imagenette
# 32x32's first 2,000 validation images as one stream, tiles of 256 (`python scripts/cascade.py SET --every K --tile
# 256 --stages`, Imagenette's with --one-stream): 0.42 %, 0.23 % and 0.50 % smaller than the wide cascade there.
# Tuning the cascade's numbers for it as well (--tune's coordinate descent on those photographs) took them 0.17 %
# lower still, and photos_train's validation photographs 0.17 %, but Kodak 0.09 % and Imagenette 0.16 % higher: not
# taken.
THIRD_CLASSES = 5
THIRD_CONTEXTS = ADAPT_CHANNEL_CLASSES * ADAPT_LEVEL_GROUPS * THIRD_CLASSES * THIRD_CLASSES  # 825
STAGED_TUNING = np.array([0.1, 0.5, 1.5, 0.4])
NO_STAGES = np.zeros(0)  # _code_tile's `staged` for the other distributions
# predictive.AdaptiveState's rows
ADAPT_STATISTICS = ADAPT_CONTEXTS + CASCADE_CONTEXTS + PARITY_CONTEXTS + THIRD_CONTEXTS
CASCADE_APART = np.array([0.5, 2.0, 5.0, 12.0])
CASCADE_TUNING = np.array([0.169, 0.9, 0.24, 0.3, 1.35, 0.625])
NO_CASCADE = np.zeros(0)  # _code_tile's `cascade` for the other distributions (of the same type as CASCADE_TUNING)
for _constant in (CASCADE_APART, CASCADE_TUNING, WIDE_FAR, NO_FAR, STAGED_TUNING, NO_STAGES):
    _constant.flags.writeable = False


def left_cumulatives(rows: np.ndarray) -> np.ndarray:
    """(R, K + 1) int32: constriction's left cumulative of each symbol of each row of float32 frequencies
    (R, K) under its lazy categorical model (`Categorical(perfect=False)`), and 2**24 after the last:
    floor(float32(float32 sum of the row before the symbol) x scale) + symbol, scale = float32(2**24 - K) /
    the row's float32 sum (constriction's `from_floating_point_probabilities_fast`). Numpy's float32 sums
    run left to right as constriction's do; the rows handed to it here are integers whose running sums stay
    below 2**24, exact in any order anyway.

    int32 (every value is at most 2**24) and in place: the blend predictor's 21,000 rows are built once per
    process, and int64 temporaries of their size cost ~0.3 s, most of it the first touch of fresh memory."""
    rows = np.asarray(rows, dtype=np.float32)
    count, symbols = rows.shape
    running = np.cumsum(rows, axis=1, dtype=np.float32)  # (R, K): the sum up to and including each symbol
    scale = np.float32((1 << PRECISION) - symbols) / running[:, -1]  # (R,) float32 division
    scaled = running[:, :-1]  # (R, K - 1): the sums before symbols 1 .. K - 1, scaled in place next
    np.multiply(scaled, scale[:, None], out=scaled)  # float32 products, as constriction's
    cumulative = np.empty((count, symbols + 1), dtype=np.int32)
    cumulative[:, 0] = 0
    cumulative[:, 1:symbols] = scaled  # truncation of non-negative floats below 2**24: their floor
    cumulative[:, 1:symbols] += np.arange(1, symbols, dtype=np.int32)
    cumulative[:, symbols] = 1 << PRECISION  # constriction's special case for the last symbol
    return cumulative


def _ans_pop(state, quantile, left, probability, words, position):
    """constriction's AnsCoder.decode_symbol after its model's quantile function: the head without the popped
    symbol (`quantile` its low bits, in [left, left + probability)), refilled from the bulk's top word where it
    fell below 2**32. Returns (position, state)."""
    state = (state >> np.uint64(PRECISION)) * np.uint64(probability) + np.uint64(quantile - left)
    if state < np.uint64(1 << WORD_BITS) and position > 0:
        position -= 1
        state = (state << np.uint64(WORD_BITS)) | np.uint64(words[position])
    return position, state


def _ans_push(state, left, probability, words, position):
    """constriction's AnsCoder.encode_symbol of a symbol in [left, left + probability): the head's low word
    moved to the bulk first where the head would overflow. Returns (position, state)."""
    probability = np.uint64(probability)
    if (state >> np.uint64(2 * WORD_BITS - PRECISION)) >= probability:
        words[position] = np.uint32(state & np.uint64((1 << WORD_BITS) - 1))
        position += 1
        state = state >> np.uint64(WORD_BITS)
    state = ((state // probability) << np.uint64(PRECISION)) | (np.uint64(left) + state % probability)
    return position, state


def _pop(cumulative, row, words, position, state):
    """One symbol popped with table row `row` of `cumulative`: (symbol, position, state) after it, as
    constriction's AnsCoder.decode_symbol with the lazy categorical model. `words[:position]` is the bulk;
    `state` the 64-bit head (np.uint64)."""
    quantile = np.int64(state & np.uint64((1 << PRECISION) - 1))
    # The symbol s with cumulative[row, s] <= quantile < ..[s + 1], searched for from the row's mean outwards (rows
    # are laid out table by table, a row per mean): most values lie a few steps from it, so the search reads one
    # or two cache lines of the row, not the eight scattered ones of a bisection of it. Any search finds the same s.
    last = cumulative.shape[1] - 2
    start = min(row % (last + 1), last)
    if cumulative[row, start] <= quantile:
        low, step = start, 1
        while low + step <= last and cumulative[row, low + step] <= quantile:
            low += step
            step *= 2
        high = min(low + step - 1, last)
    else:
        high, step = start - 1, 1
        low = 0
        while start - step > 0:
            if cumulative[row, start - step] <= quantile:
                low = start - step
                break
            high = start - step - 1
            step *= 2
    while low < high:
        middle = (low + high + 1) // 2
        if cumulative[row, middle] <= quantile:
            low = middle
        else:
            high = middle - 1
    left = cumulative[row, low]
    position, state = _ans_pop(state, quantile, left, cumulative[row, low + 1] - left, words, position)
    return low, position, state


def _push(cumulative, rows, symbols, words, position, state):
    """Push symbols (N,) with table rows `rows` (N,) of `cumulative`, the last first (constriction's
    encode_reverse: they pop back first to last), onto the bulk `words[:position]` (room for N more words) and
    head `state` (np.uint64), as constriction's AnsCoder.encode_symbol with the lazy categorical model.
    Returns (position, state) afterwards."""
    for n in range(len(rows) - 1, -1, -1):
        left = cumulative[rows[n], symbols[n]]
        position, state = _ans_push(state, left, cumulative[rows[n], symbols[n] + 1] - left, words, position)
    return position, state


def _level(edges, std):
    """np.searchsorted(edges, std): how many of the ascending `edges` are below `std`."""
    level, above = 0, len(edges)
    while level < above:
        middle = (level + above) // 2
        if edges[middle] < std:
            level = middle + 1
        else:
            above = middle
    return level


# Local least squares (predictive.LEAST_SQUARES, format 10): each value is also predicted by a linear combination
# of its causal neighbours (and, after the first channel, of earlier channels' values at and around it), the weights
# solved per value on the values around it decoded before it: the ones within LS_RADIUS rows above and columns to
# either side whose wavefront came earlier, each with its own neighbours as the features (ridge LS_RIDGE). That
# prediction and the blend's are blended again by their errors on the neighbours. Each value's products of its
# features and itself are kept as running sums along its row (`moments`), so a value's normal equations are a
# difference of two sums per row of the window. Pixel values are integers, so every product and sum there is an
# integer below 2**53, exact in any order; the solve is a Cholesky factorisation of exactly rounded operations in
# a fixed order (sqrt included: IEEE 754 rounds it exactly), so encoder and decoder agree on any machine. Solving
# costs more than the rest: a value whose column is not a multiple of LS_EVERY reuses the weights solved last in
# its row (and channel) where they are that recent. The window's radius and LS_EVERY were chosen on 23 of
# photos_train's training photographs (every 13th), 128x128 tiles (`python scripts/least_squares.py photos-train
# --every 13 --tile 128 --tune`): 3.8 % below ADAPTIVE there; radius 10 is 0.1 % lower still and ~10 % slower,
# solving every value 0.2 % lower and ~1.9 times slower.
LS_RADIUS = 8
LS_EVERY = 3
LS_RIDGE = 1.0
LS_FEATURES = (6, 10, 13)  # the first channel, the second, and every later one (see _ls_features)
LS_MOMENTS = tuple((d + 1) * (d + 2) // 2 for d in LS_FEATURES)  # the packed lower triangle of (features, value)
# The running sums are kept for the last LS_RING rows only, row y in row y % LS_RING of `moments`: a window at
# (y, x) reads rows y - LS_RADIUS .. y at columns x - LS_RADIUS - 1 .. x + LS_RADIUS, so a read of (row r, column
# c) comes by wavefront 2 * row + column 2r + c + 3 * LS_RADIUS + 1, before row r + LS_RING overwrites that column
# at 2r + 2 * LS_RING + c (2 * LS_RING > 3 * LS_RADIUS + 1; the sums of a wavefront are added after its values).
# A 128x128 colour tile's sums then take 3.3 MB instead of 26 MB (the whole tile's), nearer the core: kodim23
# decodes 5-12 % faster (same-run comparisons), with the same values.
LS_RING = 16
assert 2 * LS_RING > 3 * LS_RADIUS + 1
# In raster order (the cascade's) a window holds rows y - LS_RADIUS .. y - 1 in full between the same columns, so
# `moments` also keeps, after the running sums, their sums down each column (of every row since the frame's top,
# in the same ring): a window's rows above are then four reads a sum, not two a row (the cascade's kernel ~8 %
# faster on kodim23, same-run comparisons).
# The sums are the same numbers: every product is of integers below 256, so each sum is an integer, exact in a
# float64 while it stays below 2**53 (a frame of up to 2**53 / 255**2, about 1.4e11, samples), in any order.
LS_BLENDED = 2  # the extra errors a least-squares tile keeps: its least-squares prediction's, and the blend's
BLEND_SUBS = 7  # the blend's own predictors (predictive.BLEND_PREDICTORS)


def _neighbour_weight(errors, k, channel, at, around, diagonal, floor, far, width):
    """Predictor k's weight in a blend at (channel, at): 1 / (its errors at the left and above neighbours, those at
    the above-left and above-right ones times `diagonal`, and `floor`)**2; where `far` is above 0 (WIDE_FAR, passed
    by the caller only where the value lies two columns and rows from the frame's left and top: _far_share), its
    errors two to the left and two above times `far` join them. `width`: the frame's (raster order, whose values
    there are all coded before this one)."""
    spread = (errors[k, channel, around[0, at]] + errors[k, channel, around[1, at]]
              + diagonal * (errors[k, channel, around[2, at]] + errors[k, channel, around[3, at]]) + floor)
    if far > 0.0:
        spread = spread + far * (errors[k, channel, at - 2] + errors[k, channel, at - 2 * width])
    return 1.0 / (spread * spread)


def _far_share(far, x, y):
    """`far` where the value at column x, row y lies two columns and rows from the frame's left and top (its errors
    two to the left and two above are there), else 0.0: the test once a position, not in each of its values' nine
    weights."""
    return far if x >= 2 and y >= 2 else 0.0


def _ls_features(frame, channel, at, width, out):
    """The least-squares features of the value (channel, at) of `frame` (C, M + 1) into `out`; their count.
    Valid for a position at least two rows and columns from the frame's top and left and one from its right."""
    out[0] = frame[channel, at - 1]  # left
    out[1] = frame[channel, at - width]  # above
    out[2] = frame[channel, at - width - 1]  # above-left
    out[3] = frame[channel, at - width + 1]  # above-right
    out[4] = frame[channel, at - 2]  # two left
    out[5] = frame[channel, at - 2 * width]  # two above
    count = 6
    if channel >= 1:  # the previous channel at the value, left, above and above-right of it
        out[6] = frame[channel - 1, at]
        out[7] = frame[channel - 1, at - 1]
        out[8] = frame[channel - 1, at - width]
        out[9] = frame[channel - 1, at - width + 1]
        count = 10
    if channel >= 2:  # the first channel at the value, left and above of it
        out[10] = frame[0, at]
        out[11] = frame[0, at - 1]
        out[12] = frame[0, at - width]
        count = 13
    return count


def _ls_offset(channel):
    """Where channel `channel`'s moments start in a position's row of `moments`."""
    offset = 0
    for earlier in range(channel):
        offset += LS_MOMENTS[min(earlier, 2)]
    return offset


def _ls_moments(frame, moments, at, width, channels, features, raster):
    """The running sums along its row of each channel's products of (features, value) at position `at`, once all
    of its channels are known: the sums up to the position before it plus its own, where it can be a sample.
    `raster` (the cascade's order): then also those sums summed down the column to this row (LS_RING's comment)."""
    y, x = at // width, at % width
    sample = y >= 2 and x >= 2 and x <= width - 2
    here = (y % LS_RING) * width + x
    offset = 0
    for channel in range(channels):
        size = LS_MOMENTS[min(channel, 2)]
        if sample:
            count = _ls_features(frame, channel, at, width, features)
            features[count] = frame[channel, at]
            k = offset
            for i in range(count + 1):
                factor = features[i]
                for j in range(i + 1):
                    moments[here, k + j] = moments[here - 1, k + j] + factor * features[j]
                k += i + 1
        elif x >= 2:  # right of the samples: the row's sums carry on
            for k in range(offset, offset + size):
                moments[here, k] = moments[here - 1, k]
        offset += size
    if raster and x >= 2:
        above = ((y + LS_RING - 1) % LS_RING) * width + x
        for k in range(offset):
            moments[here, offset + k] = moments[above, offset + k] + moments[here, k]


def _ls_predict(frame, moments, channel, at, width, gram, window_sums, features, solved, raster):
    """The least-squares prediction of the value (channel, at), or -1.0 where it has none (too near the frame's
    edge, or too few samples): the solution of the normal equations of the samples in its window, by Cholesky.
    `raster`: the values are coded in raster order (the cascade's), else in wavefront order. The fit's mean squared
    error over its window is left in solved[channel, y, LS_FEATURES[2] + 1]."""
    y, x = at // width, at % width
    if y < 2 or x < 2 or x > width - 2:
        return -1.0
    count = _ls_features(frame, channel, at, width, features)
    if x % LS_EVERY != 0 and solved[channel, y, count] >= x - LS_EVERY + 1:
        prediction = 0.0
        for i in range(count):
            prediction = prediction + solved[channel, y, i] * features[i]
        return min(max(prediction, 0.0), 255.0)
    offset = _ls_offset(channel)
    size = (count + 1) * (count + 2) // 2
    for k in range(size):
        window_sums[k] = 0.0
    samples = 0
    low = max(2, x - LS_RADIUS)
    if raster:
        # Every sample of the rows above (from the column sums: those down to row y - 1 less those down to the
        # row before the window's first), then those left of the value in its own row.
        first, high = max(2, y - LS_RADIUS), min(width - 2, x + LS_RADIUS)
        if y > first:
            samples += (y - first) * (high - low + 1)
            last, before = ((y - 1) % LS_RING) * width, ((first - 1) % LS_RING) * width
            columns = _ls_offset(frame.shape[0]) + offset
            for k in range(size):
                window_sums[k] = ((moments[last + high, columns + k] - moments[last + low - 1, columns + k])
                                  - (moments[before + high, columns + k] - moments[before + low - 1, columns + k]))
        if x > low:
            samples += x - low
            here = (y % LS_RING) * width
            for k in range(size):
                window_sums[k] += moments[here + x - 1, offset + k] - moments[here + low - 1, offset + k]
    else:
        for row in range(max(2, y - LS_RADIUS), y + 1):
            # The row's samples coded before this value: those whose wavefront 2 * row + column came before its own.
            high = min(width - 2, x + LS_RADIUS, x + 2 * (y - row) - 1)
            if high < low:
                continue
            samples += high - low + 1
            last, before = (row % LS_RING) * width + high, (row % LS_RING) * width + low - 1
            for k in range(size):
                window_sums[k] += moments[last, offset + k] - moments[before, offset + k]
    if samples < count + 2:
        return -1.0
    # gram (lower) <- the features' products plus the ridge; window_sums (packed) keeps each feature's product with
    # the value after them
    k = 0
    for i in range(count):
        for j in range(i + 1):
            gram[i, j] = window_sums[k]
            k += 1
        gram[i, i] = gram[i, i] + LS_RIDGE
    # Cholesky, G = L L^T, L's diagonal kept as its reciprocals (one division a row, not one an entry). Each entry is
    # its own sum in a fixed order (m = 0, 1, ...), taken column by column: an entry reads only the columns before its
    # own and its column's diagonal, so this is the row-by-row order's arithmetic, entry for entry, and a column's
    # entries below its diagonal are chains of their own that the core runs side by side (row by row, each entry
    # waited for the one left of it). Where a diagonal is not positive both orders give up at it.
    for j in range(count):
        total = gram[j, j]
        for m in range(j):
            total = total - gram[j, m] * gram[j, m]
        if not total > 0.0:
            return -1.0
        diagonal = 1.0 / np.sqrt(total)
        gram[j, j] = diagonal
        for i in range(j + 1, count):
            total = gram[i, j]
            for m in range(j):
                total = total - gram[i, m] * gram[j, m]
            gram[i, j] = total * diagonal
    solution = count + 1  # where the solution starts in `features` (after the features and the value)
    for i in range(count):  # forward: L z = (the features' products with the value)
        total = window_sums[k + i]
        for m in range(i):
            total = total - gram[i, m] * features[solution + m]
        features[solution + i] = total * gram[i, i]
    for i in range(count - 1, -1, -1):  # back: L^T w = z
        total = features[solution + i]
        for m in range(i + 1, count):
            total = total - gram[m, i] * features[solution + m]
        features[solution + i] = total * gram[i, i]
    prediction = 0.0
    explained = 0.0  # the solution's products with the features' products with the value, and its squared length
    length = 0.0
    for i in range(count):
        weight = features[solution + i]
        prediction = prediction + weight * features[i]
        solved[channel, y, i] = weight
        explained = explained + weight * window_sums[k + i]
        length = length + weight * weight
    solved[channel, y, count] = x
    # The fit's squared error summed over the window: the value's own squared sum less what the solution explains
    # and less the ridge's share (exact algebra of the normal equations, rounded), never below zero.
    error = window_sums[k + count] - explained - LS_RIDGE * length
    solved[channel, y, LS_FEATURES[2] + 1] = max(error, 0.0) / samples
    return min(max(prediction, 0.0), 255.0)


def _learn(adaptive, context, residual, spread, tuning):
    """A value's update of its context's statistics (row `context` of `adaptive`): its residual against the mean
    the context corrected, one more value, its |residual| / std against the mean coded, and the expected share
    tuning[2]; all four halved where the count reaches tuning[0] (recent values count more)."""
    adaptive[context, 0] += residual
    adaptive[context, 1] += 1.0
    adaptive[context, 2] += spread
    adaptive[context, 3] += tuning[2]
    if adaptive[context, 1] >= tuning[0]:
        for statistic in range(4):
            adaptive[context, statistic] *= 0.5


def _corrected(adaptive, context, unrounded, mean, std, share, tuning):
    """A stage's correction by its context's statistics (row `context` of `adaptive`): the unrounded mean moved by
    `share` of the context's mean residual (where it has a value yet; clamped to 0..255) and rounded again, the std
    scaled by the context's spread against its expectation (with tuning[1]'s prior, within tuning[3] and [4]).
    Returns (unrounded, mean, std) after it."""
    if adaptive[context, 1] > 0.0:
        unrounded = min(max(unrounded + share * adaptive[context, 0] / adaptive[context, 1], 0.0), 255.0)
        mean = np.floor(unrounded + 0.5)
    ratio = (adaptive[context, 2] + tuning[1]) / (adaptive[context, 3] + tuning[1])
    return unrounded, mean, std * min(max(ratio, tuning[3]), tuning[4])


def _signed_class(residual, std, outer, inner):
    """Where a signed residual lies against `std` (STAGED's third stage): 0 at or below -outer stds, 1 at or below
    -inner, 2 within inner either side, 3 below outer, else 4."""
    share = residual / std
    if share <= -outer:
        return 0
    if share <= -inner:
        return 1
    if share < inner:
        return 2
    if share < outer:
        return 3
    return 4


def _borrowed(array):
    """`array` itself; compiled (_register_borrowing), a view of it that holds no reference: numba counts the
    references of every array it passes to a function it calls, by an atomic increment and decrement of the
    array's count, which took ~20 % of the cascade's time (perf: NRT_MemInfo_acquire and _release), and skips
    that for a view of no owner. The caller must hold the array meanwhile (_code_tile holds its scratch arrays, its
    caller the rest)."""
    return array


def _code_tile(frame, errors, residuals, positions, fronts, sources, around, std_weights, gains, diagonal, floor,
               edges, cumulative, levels, bins, words, position, state, coded, encode, adaptive, tuning, cascade,
               parity, far_shares, staged, moments, width, refine_prefix, refine_counters,
               refine_weights, refine_maps, refine_residual, refine_record, refine_used, refine_stretch,
               refine_reciprocal):
    """Pop a blend tile into `frame` (C, M + 1), filling `errors` (K, C, M + 1) and `residuals` (C, M + 1) as
    predictive._blend_decoder does; or, with `encode`, take the values `frame` holds instead of popping them
    and record each one's table row and value in `coded` (2, P * C), in pop order, for _push. positions (P,):
    the tile's flat positions, wavefront after wavefront (the cascade's: in raster order, each a wavefront of its
    own); fronts (F + 1,): where each wavefront starts in it;
    sources, around (4, M): _gather_plan; std_weights (2, 6): BLEND_STD_WEIGHTS; gains:
    (BLEND_GAIN_PREVIOUS, BLEND_GAIN_FIRST); diagonal, floor: BLEND_ERROR_DIAGONAL, BLEND_ERROR_FLOOR; edges
    (J - 1,): the std levels' edges; cumulative: the table rows' left_cumulatives, row (level * bins + quarter)
    * levels + mean, the quarter the mean's between integers where bins > 1 (FITTED; predictive.fitted_bins),
    0 where bins is 1 (BLEND).
    adaptive (ADAPT_STATISTICS, 4) float64, or (0, 4) for none: the state of ADAPTIVE's context statistics (see
    "adaptive contexts" at the top of this module), read and updated value by value in pop order; tuning:
    ADAPT_TUNING. cascade: CASCADE_TUNING for the cascade (its raster order, std terms and second stage, the
    second stage's statistics in `adaptive` after ADAPTIVE's; see "the cascade" above), or NO_CASCADE; parity:
    the cascade's second stage reads the values' parity (PARITY_CONTEXTS, its statistics after the cascade's);
    far_shares (2,): WIDE_FAR for the cascade whose blends also read the errors two to the left and two above, else
    NO_FAR. staged (4,): STAGED_TUNING for the staged cascade (its std's terms of the residuals two away and its third
    stage, whose statistics follow the parity's in `adaptive`; see "the staged cascade" above), with `residuals`
    (2C, M + 1), whose rows C.. keep each value's signed residual against its coded mean; else NO_STAGES.
    moments (LS_RING * width, sum of LS_MOMENTS over the channels; twice that for the cascade, its column sums
    after them: LS_RING's comment), or (0, 0) for none: LEAST_SQUARES's running sums of its last LS_RING rows
    (see "local least squares" above), zeros, and errors (BLEND_SUBS + LS_BLENDED, C, M + 1) with them; width:
    the frame's.
    refine_*: the refinement's (see "the refinement" above; NO_REFINEMENT's empty arrays for none): the tables'
    running masses (T, 511) int64, its counters (G, REFINE_SLOTS) int32 (G: REFINE_GROUPS, or REFINE_WIDEST for
    format 22's refinement across channels), weights (rows, G + 2) and map rows, updated
    in place; the tile's residuals (C, M + 1) int64 (zeros outside the tile); where `encode`, the decisions recorded
    in refine_record (2, D) int32 (each one's start and frequency) from refine_used[0] on (which it advances); the
    stretch and reciprocal tables.
    Returns the stack's (position, state) afterwards (unchanged when encoding)."""
    channels, predictors = frame.shape[0], errors.shape[0]
    least_squares = moments.shape[0] > 0
    # The compiled forms check no index: arrays too small for what the arguments ask are refused here.
    if least_squares and moments.shape[1] < (2 if cascade.shape[0] > 0 else 1) * _ls_offset(channels):
        raise ValueError("moments too narrow for the least-squares sums asked for")
    if adaptive.shape[0] > 0 and adaptive.shape[0] < ADAPT_STATISTICS:
        raise ValueError("adaptive statistics with too few rows")
    if far_shares.shape[0] < 2:
        raise ValueError("far_shares needs the blend's share and the least-squares blend's")
    if staged.shape[0] > 0 and (staged.shape[0] < 4 or residuals.shape[0] < 2 * channels or cascade.shape[0] == 0):
        raise ValueError("staged needs its four numbers, the cascade's and rows for the signed residuals")
    if (predictors < BLEND_SUBS + (LS_BLENDED if least_squares else 0) or errors.shape[1] < channels
            or errors.shape[2] < frame.shape[1] or residuals.shape[0] < channels
            or residuals.shape[1] < frame.shape[1]):
        raise ValueError("errors or residuals smaller than the frame and the predictors asked for")
    tables = (len(edges) + 1) * bins  # a table is a std level (0 .. len(edges)) and, with bins, a quarter
    refining = refine_prefix.shape[0] > 0
    if not encode and not refining and (levels < 256 or cumulative.shape[1] < 257
                                        or cumulative.shape[0] < tables * levels):
        raise ValueError("cumulative has fewer rows than the tables and levels ask for")
    if not encode and not 0 <= position <= len(words):
        raise ValueError("position outside the words")
    if encode and (coded.shape[0] < 2 or coded.shape[1] < len(positions) * channels):
        raise ValueError("coded has room for fewer values than the tile's")
    if refining:
        groups = refine_counters.shape[0]
        if (refine_prefix.shape[0] < tables or refine_prefix.shape[1] < 511
                or (groups != REFINE_GROUPS and groups != REFINE_WIDEST) or refine_counters.shape[1] < REFINE_SLOTS
                or refine_weights.shape[0] < REFINE_DECISIONS * 3 * REFINE_MIXER_LEVELS
                or refine_weights.shape[1] < groups + 2
                or refine_maps.shape[0] < REFINE_DECISIONS * 3 * REFINE_LEVELS
                or refine_maps.shape[1] < REFINE_BUCKETS
                or refine_residual.shape[0] < channels or refine_residual.shape[1] < frame.shape[1]
                or len(refine_stretch) < 4096 or len(refine_reciprocal) < REFINE_LIMIT + 1 or len(refine_used) < 1):
            raise ValueError("a refinement array smaller than its tables, groups and the frame ask for")
        if encode and refine_record.shape[1] < refine_used[0] + len(positions) * channels * (3 + REFINE_MAGNITUDES):
            raise ValueError("refine_record has room for fewer decisions than the tile's")
    gram = np.empty((LS_FEATURES[2], LS_FEATURES[2]))
    window_sums = np.empty(LS_MOMENTS[2])
    features = np.empty(2 * LS_FEATURES[2] + 1)
    # per channel and row of the frame: the weights solved last in it, their column (-1: none yet) and the fit's error
    solved = np.full((channels, (frame.shape[1] - 1) // width if least_squares else 0, LS_FEATURES[2] + 2), -1.0)
    widest = 0
    for f in range(len(fronts) - 1):
        widest = max(widest, fronts[f + 1] - fronts[f])
    subs = np.empty((predictors, channels, widest))
    spatial = np.empty((channels, widest))
    base = np.empty((channels, widest))
    centre = np.empty((channels, widest))  # each value's unrounded mean (ADAPTIVE's contexts read the last channel's)
    weight = np.empty(predictors)
    refine_inputs = np.zeros(REFINE_WIDEST + 2, np.int64)
    refine_slots = np.zeros(2 * REFINE_WIDEST, np.int64)  # the slots, then the value's contexts
    return _code_values(frame, errors, residuals, positions, fronts, sources, around, std_weights, gains, diagonal,
                        floor, edges, cumulative, levels, bins, words, position, state, coded, encode, adaptive,
                        tuning, cascade, parity, far_shares, staged, moments, width, gram, window_sums, features,
                        solved, subs, spatial, base, centre, weight, refine_prefix, refine_counters,
                        refine_weights, refine_maps, refine_residual, refine_record, refine_used, refine_stretch,
                        refine_reciprocal, refine_inputs, refine_slots)


def _code_values(frame, errors, residuals, positions, fronts, sources, around, std_weights, gains, diagonal, floor,
                 edges, cumulative, levels, bins, words, position, state, coded, encode, adaptive, tuning, cascade,
                 parity, far_shares, staged, moments, width, gram, window_sums, features, solved, subs, spatial, base,
                 centre, weight, refine_prefix, refine_counters, refine_weights, refine_maps,
                 refine_residual, refine_record, refine_used, refine_stretch, refine_reciprocal, refine_inputs,
                 refine_slots):
    """_code_tile's work, with the scratch arrays it made (and holds meanwhile). Every array is borrowed first
    (_borrowed), so that the helpers called value by value take them without touching their reference counts."""
    frame, errors, residuals = _borrowed(frame), _borrowed(errors), _borrowed(residuals)
    positions, fronts, sources, around = _borrowed(positions), _borrowed(fronts), _borrowed(sources), _borrowed(around)
    std_weights, gains, edges = _borrowed(std_weights), _borrowed(gains), _borrowed(edges)
    cumulative, words, coded = _borrowed(cumulative), _borrowed(words), _borrowed(coded)
    adaptive, tuning, cascade, moments = _borrowed(adaptive), _borrowed(tuning), _borrowed(cascade), _borrowed(moments)
    far_shares, staged = _borrowed(far_shares), _borrowed(staged)
    gram, window_sums, features = _borrowed(gram), _borrowed(window_sums), _borrowed(features)
    solved, subs, spatial, base = _borrowed(solved), _borrowed(subs), _borrowed(spatial), _borrowed(base)
    centre, weight = _borrowed(centre), _borrowed(weight)
    refine_prefix, refine_counters = _borrowed(refine_prefix), _borrowed(refine_counters)
    refine_weights, refine_maps, refine_residual = _borrowed(refine_weights), _borrowed(refine_maps), _borrowed(
        refine_residual)
    refine_record, refine_stretch, refine_reciprocal = _borrowed(refine_record), _borrowed(refine_stretch), _borrowed(
        refine_reciprocal)
    refine_inputs, refine_slots = _borrowed(refine_inputs), _borrowed(refine_slots)
    refining = refine_prefix.shape[0] > 0
    used = refine_used[0] if refining else 0
    channels = frame.shape[0]
    predictors = errors.shape[0]
    rows = (frame.shape[1] - 1) // width  # the frame's
    least_squares = moments.shape[0] > 0
    cascading = cascade.shape[0] > 0
    adapting = adaptive.shape[0] > 0
    staging = staged.shape[0] > 0
    count = 0
    for f in range(len(fronts) - 1):
        start, end = fronts[f], fronts[f + 1]
        # What does not wait for this wavefront's values: predictions, blends, the std's neighbour terms.
        for i in range(start, end):
            at, j = positions[i], i - start
            far_blend = _far_share(far_shares[0], at % width, at // width)
            for channel in range(channels):
                a, b = frame[channel, sources[0, at]], frame[channel, sources[1, at]]
                c, d = frame[channel, sources[2, at]], frame[channel, sources[3, at]]
                activity = (abs(a - c) + abs(b - c) + abs(b - d)) / 3.0
                low, high = min(a, b), max(a, b)
                if c >= high:
                    median = low
                elif c <= low:
                    median = high
                else:
                    median = a + b - c
                subs[0, channel, j] = median
                subs[1, channel, j] = a + b - c
                subs[2, channel, j] = a + d - b
                subs[3, channel, j] = (a + b) / 2.0
                subs[4, channel, j] = (a + d) / 2.0
                subs[5, channel, j] = a
                subs[6, channel, j] = b
                for k in range(BLEND_SUBS):
                    weight[k] = _neighbour_weight(errors, k, channel, at, around, diagonal, floor, far_blend, width)
                total = weight[0]
                weighted = weight[0] * subs[0, channel, j]
                for k in range(1, BLEND_SUBS):
                    total = total + weight[k]
                    weighted = weighted + weight[k] * subs[k, channel, j]
                spatial[channel, j] = weighted / total
                near = (residuals[channel, around[0, at]] + residuals[channel, around[1, at]]) / 2.0
                diagonal_residual = (residuals[channel, around[2, at]] + residuals[channel, around[3, at]]) / 2.0
                w = min(channel, 1)  # std_weights' row (not a view of it: each view costs two atomic operations)
                base[channel, j] = (std_weights[w, 0] + std_weights[w, 1] * activity + std_weights[w, 2] * near
                                    + std_weights[w, 3] * diagonal_residual)
        # The values, channel by channel: each channel's mean and std read the earlier channels' values here.
        for channel in range(channels):
            w = min(channel, 1)
            for i in range(start, end):
                at, j = positions[i], i - start
                x, y = at % width, at // width
                mean = spatial[channel, j]
                if channel == 1:
                    mean = mean + (frame[0, at] - spatial[0, j])
                elif channel > 1:
                    mean = mean + (gains[0] * (frame[channel - 1, at] - spatial[channel - 1, j])
                                   + gains[1] * (frame[0, at] - spatial[0, j]))
                apart, fit_error = 0.0, -1.0  # the cascade's: the two predictions' distance, the fit's error
                if least_squares:
                    # The least-squares prediction and this one, blended by their errors on the neighbours as the
                    # blend's predictors are (where it has none, this one twice: the same errors).
                    ls_prediction = _ls_predict(frame, moments, channel, at, width, gram, window_sums, features,
                                                solved, cascading)
                    if ls_prediction < 0.0:
                        ls_prediction = mean
                    else:
                        fit_error = solved[channel, at // width, LS_FEATURES[2] + 1]
                    apart = ls_prediction - mean
                    subs[BLEND_SUBS, channel, j], subs[BLEND_SUBS + 1, channel, j] = ls_prediction, mean
                    for k in range(BLEND_SUBS, BLEND_SUBS + LS_BLENDED):
                        if cascading:
                            weight[k] = _neighbour_weight(errors, k, channel, at, around, cascade[5], cascade[4],
                                                          _far_share(far_shares[1], x, y), width)
                        else:
                            weight[k] = _neighbour_weight(errors, k, channel, at, around, diagonal, floor, 0.0, width)
                    mean = ((weight[BLEND_SUBS] * ls_prediction + weight[BLEND_SUBS + 1] * mean)
                            / (weight[BLEND_SUBS] + weight[BLEND_SUBS + 1]))
                unrounded = min(max(mean, 0.0), 255.0)
                mean = np.floor(unrounded + 0.5)
                std = base[channel, j]
                if channel > 0:
                    std = std + std_weights[w, 4] * residuals[channel - 1, at]
                if channel > 1:
                    std = std + std_weights[w, 5] * residuals[0, at]
                if staging and x >= 2 and y >= 2:
                    std = std + staged[0] * (residuals[channel, at - 2] + residuals[channel, at - 2 * width])
                if cascading:
                    if fit_error >= 0.0:
                        std = (1.0 - cascade[0]) * std + cascade[0] * cascade[1] * np.sqrt(fit_error)
                    std = std + cascade[2] * abs(apart)
                level = _level(edges, std)
                coded_mean, coded_unrounded, coded_level, context, second = mean, unrounded, level, 0, -1
                third, second_unrounded, second_std = -1, unrounded, std  # the third stage's, and its inputs
                first_unrounded, first_std = unrounded, std  # the mean and std after the first stage
                if adapting:
                    # The value's context (ADAPTIVE): its channel, std group, where its four neighbours lie
                    # against its mean, and where the previous channel's value at this pixel fell against its own.
                    centre[channel, j] = unrounded
                    texture = 0
                    for q in range(4):
                        neighbour = frame[channel, sources[q, at]]
                        texture = texture * 3 + (1 if neighbour > unrounded + 0.5 else
                                                 2 if neighbour < unrounded - 0.5 else 0)
                    previous = 0
                    if channel > 0:
                        offset = frame[channel - 1, at] - centre[channel - 1, j]
                        previous = 1 if offset > 0.5 else 2 if offset < -0.5 else 0
                    group = min(level // ADAPT_LEVEL_DIVISOR, ADAPT_LEVEL_GROUPS - 1)
                    context = ((min(channel, ADAPT_CHANNEL_CLASSES - 1) * ADAPT_LEVEL_GROUPS + group) * 81
                               + texture) * 3 + previous
                    # The mean moved by the context's mean residual (all of it: 1.0 times it is the residual
                    # exactly), the std scaled by its spread so far.
                    coded_unrounded, coded_mean, coded_std = _corrected(adaptive, context, unrounded, mean, std, 1.0,
                                                                        tuning)
                    first_unrounded, first_std = coded_unrounded, coded_std
                    if cascading:
                        # The second stage's context: channel class and std group, where the least-squares
                        # prediction lies against the blend's, and where the values two left and two above lie.
                        apart_class = 0
                        while apart_class < len(CASCADE_APART) and abs(apart) >= CASCADE_APART[apart_class]:
                            apart_class += 1
                        if apart < 0.0 and apart_class > 0:
                            apart_class += len(CASCADE_APART)
                        far_left = frame[channel, at - 2] if x >= 2 else frame[channel, sources[0, at]]
                        far_above = frame[channel, at - 2 * width] if y >= 2 else frame[channel, sources[1, at]]
                        far = ((1 if far_left > unrounded + 0.5 else 2 if far_left < unrounded - 0.5 else 0) * 3
                               + (1 if far_above > unrounded + 0.5 else 2 if far_above < unrounded - 0.5 else 0))
                        second = ((min(channel, ADAPT_CHANNEL_CLASSES - 1) * ADAPT_LEVEL_GROUPS + group) * 9
                                  + apart_class) * 9 + far
                        if parity:  # the value's column's and row's parity in the image (PARITY_CONTEXTS)
                            second = (ADAPT_CONTEXTS + CASCADE_CONTEXTS + second * 4
                                      + ((width - 1 - x) % 2) * 2 + (rows - 1 - y) % 2)
                        else:
                            second = ADAPT_CONTEXTS + second
                        coded_unrounded, coded_mean, coded_std = _corrected(
                            adaptive, second, coded_unrounded, coded_mean, coded_std, cascade[3], tuning)
                        if staging and x >= 1 and y >= 1:
                            # The third stage's context: channel class and std group, where the signed residuals
                            # left and above lie against this std.
                            second_unrounded, second_std = coded_unrounded, coded_std
                            left = _signed_class(residuals[channels + channel, at - 1], coded_std, staged[2],
                                                 staged[3])
                            up = _signed_class(residuals[channels + channel, at - width], coded_std, staged[2],
                                               staged[3])
                            third = (ADAPT_CONTEXTS + CASCADE_CONTEXTS + PARITY_CONTEXTS
                                     + ((min(channel, ADAPT_CHANNEL_CLASSES - 1) * ADAPT_LEVEL_GROUPS + group)
                                        * THIRD_CLASSES + left) * THIRD_CLASSES + up)
                            coded_unrounded, coded_mean, coded_std = _corrected(
                                adaptive, third, coded_unrounded, coded_mean, coded_std, staged[1], tuning)
                    # _level(edges, coded_std), stepped from the std's own level: the ratios move it a few levels
                    while coded_level < len(edges) and edges[coded_level] < coded_std:
                        coded_level += 1
                    while coded_level > 0 and edges[coded_level - 1] >= coded_std:
                        coded_level -= 1
                table = coded_level
                if bins > 1:  # predictive.fitted_bins, operation for operation
                    quarter = min(max(np.floor((coded_unrounded - coded_mean + 0.5) * bins), 0.0), bins - 1.0)
                    table = coded_level * bins + np.int64(quarter)
                row = table * levels + np.int64(coded_mean)
                if refining:
                    symbol, position, state, used = _refine_value(
                        encode, np.int64(frame[channel, at]) if encode else np.int64(0), np.int64(table),
                        np.int64(coded_mean), channel, at, width, frame, refine_residual, refine_prefix,
                        refine_counters, refine_weights, refine_maps, refine_stretch, refine_reciprocal,
                        refine_inputs, refine_slots, words, position, state, refine_record, used)
                    if encode:
                        coded[0, count], coded[1, count] = row, symbol
                        count += 1
                elif encode:
                    symbol = np.int64(frame[channel, at])
                    coded[0, count], coded[1, count] = row, symbol
                    count += 1
                else:
                    symbol, position, state = _pop(cumulative, row, words, position, state)
                frame[channel, at] = float(symbol)
                residuals[channel, at] = abs(float(symbol) - mean)
                if staging:
                    residuals[channels + channel, at] = float(symbol) - coded_unrounded
                if adapting:
                    _learn(adaptive, context, float(symbol) - unrounded,
                           abs(float(symbol) - first_unrounded) / std, tuning)
                    if third >= 0:  # the third stage learns what remains after the second
                        _learn(adaptive, third, float(symbol) - second_unrounded,
                               abs(float(symbol) - coded_unrounded) / second_std, tuning)
                    if second >= 0:  # the second stage learns what remains after the first
                        _learn(adaptive, second, float(symbol) - first_unrounded,
                               abs(float(symbol) - coded_unrounded) / first_std, tuning)
        for i in range(start, end):
            at, j = positions[i], i - start
            for k in range(predictors):
                for channel in range(channels):
                    errors[k, channel, at] = abs(frame[channel, at] - subs[k, channel, j])
            if least_squares:
                _ls_moments(frame, moments, at, width, channels, features, cascading)
    if refining:
        refine_used[0] = used
    return position, state


# The refinement (format 21's tile kind y; predictive.REFINED): the photograph profile's value coded as binary
# decisions about its residual r from the coded mean (r == 0?, r > 0?, then |r| > m for m = 1..REFINE_MAGNITUDES on
# r's side; beyond, the value as one symbol of the table's masses there), each decision's probability the table's own
# mixed, by a logistic mixer whose weights learn online, with adaptive counters in REFINE_GROUPS groups of contexts
# and an adaptive map of the table's probability: every number an integer (paq's 12-bit squash and stretch, 16-bit
# counters and map, weights in 16.16 fixed point), so that any machine computes the same bits. Each decision is pushed
# and popped as a 2-symbol categorical of 24-bit probability. Measured before it was built:
# scripts/bitwise_refinement.py (Kodak -1.75 %; refining |r| > m beyond m = 4 buys nothing and costs a decision
# each: a busy photograph's values would take ~6 decisions each instead of ~3.5).
REFINE_MAGNITUDES = 4
REFINE_GROUPS = 10
# Format 22's refinement across channels (tile kinds z and a; predictive.REFINED_ACROSS, and SMALL_ACROSS in the
# small-image profile): five groups more, whose contexts are where other predictions of the value lie against its
# mean, finely (_refine_fine_class): each of the earlier channels' gradients carried over to this channel (a + (p -
# p_left), b + (p - p_above), ... for the previous channel p and the first f), in the first channel spatial ones; and
# its mixer learning twice as fast. The cascade's mean already carries the first channel's gradient, but its table
# cannot say how sure it is: where those predictions agree with the mean the residual is far more often zero. Chosen
# on every 10th of photos_train's training photographs (scripts/bitwise_refinement.py: -1.07 % -> -4.68 % against the
# profile alone).
REFINE_ACROSS_GROUPS = 5
REFINE_WIDEST = REFINE_GROUPS + REFINE_ACROSS_GROUPS
REFINE_INPUTS = REFINE_GROUPS + 2  # the table's stretch, the counters', the map's (format 21's; G + 2 for G groups)
REFINE_DECISIONS = 2 + 2 * REFINE_MAGNITUDES
REFINE_LEVELS = 33  # the tables' std levels, the counters' and the map's
REFINE_MIXER_LEVELS = 4
REFINE_BUCKETS = 33
REFINE_RATE = 6
REFINE_ACROSS_RATE = 12
REFINE_MAP_SHIFT = 6
REFINE_LIMIT = 255  # a counter's count, kept in its low 8 bits (its 16-bit probability above them)
REFINE_KNOTS = np.array([1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994, 3348,
                         3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094], np.int64)
REFINE_KNOTS.flags.writeable = False


def _refine_squash(d, knots):
    """d (the logit in 1/256ths) -> a 12-bit probability, by interpolation between 33 knots."""
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    i = (d >> 7) + 16
    return (knots[i] * (128 - w) + knots[i + 1] * w + 64) >> 7


def refine_stretch() -> np.ndarray:
    """(4096,) int64: the inverse of _refine_squash (read-only)."""
    table = np.empty(4096, np.int64)
    previous = 0
    squash = PLAIN_FORMS["_refine_squash"]  # not the compiled form: called from Python it loads a form of its own
    for d in range(-2047, 2048):
        v = squash(d, REFINE_KNOTS)
        table[previous: v + 1] = d
        previous = max(previous, v + 1)
    table[previous:] = 2047
    table.flags.writeable = False
    return table


def refine_reciprocals() -> np.ndarray:
    """(REFINE_LIMIT + 1,) int64: a counter's step after its n-th count, 2**16 / (n + 1.5) (read-only)."""
    table = np.array([131072 // (2 * n + 3) for n in range(REFINE_LIMIT + 1)], np.int64)
    table.flags.writeable = False
    return table


def _refine_class(r):
    """A residual (or a difference) in 7 classes: 0, +-1, +-(2..3), +-(4 or more)."""
    m = abs(r)
    q = 0 if m == 0 else (1 if m == 1 else (2 if m <= 3 else 3))
    return 3 + q if r > 0 else 3 - q


# _refine_fine_class's classes of -13 .. 13 (a table: the branches, inlined twenty times, took the kernels' first
# compile from ~1.2 to ~1.8 GB of memory)
REFINE_FINE_CLASSES = np.array([7 + q if r > 0 else 7 - q for r in range(-13, 14)
                                for q in [min(abs(r), 3) if abs(r) <= 3 else 4 if abs(r) <= 5 else 5 if abs(r) <= 8
                                          else 6 if abs(r) <= 12 else 7]], np.int64)
REFINE_FINE_CLASSES.flags.writeable = False


def _refine_fine_class(r):
    """A difference in 15 classes: 0, +-1, +-2, +-3, +-(4..5), +-(6..8), +-(9..12), +-(13 or more)."""
    return REFINE_FINE_CLASSES[min(max(r, -13), 13) + 13]


def _refine_mass(prefix, t, c, x):
    """Table t's mass (+1 a value: none is 0) of the values <= x around mean c (0 and 255 fold the tails)."""
    if x < 0:
        return np.int64(0)
    if x >= 255:
        return prefix[t, 510] + 256
    return prefix[t, x - c + 255] + x + 1


# Each counter group's context is the mixed-radix number (key, ...) the format describes: the decision's key (decision x
# channel class x side) and the value's own part (_refine_contexts, computed once for all its decisions, one of
# REFINE_RADICES[g]). No two contexts share a counter, so where each is kept changes no bit: a group's counters are kept
# value part first, key last (slot = part x REFINE_KEYS + key), and the key without its side: the side (0 for decisions
# 0 and 1, then 1 for r > 0, 2 for r < 0) follows from the decision, whose number already says r's sign, so two
# contexts that differ in side alone never both occur. A value's decisions then read counters side by side (the
# channel class's ten keys, 40 bytes: mostly one cache line a group), and the counters that are read take a third of
# the memory they took with the side in the key (the 15 groups' counters missed the core's cache: kodim23 ~5 % faster,
# the same bits). REFINE_SLOTS a group, ~0.2 MB. The compiled forms check no index: test_codec_refined holds every
# part below its radix.
REFINE_RADICES = np.array([REFINE_LEVELS * 4, 49, 343, 343, 343, REFINE_LEVELS * 49, 343, 343, 343, REFINE_LEVELS * 49,
                           225, 225, 225, 225, 225], np.int64)
REFINE_RADICES.flags.writeable = False
REFINE_KEYS = 3 * REFINE_DECISIONS  # channel class x decision (the side follows from the decision)
REFINE_SLOTS = int(REFINE_RADICES.max()) * REFINE_KEYS


def _refine_contexts(tails, frame, residual, at, width, channel, c, t, groups):
    """Into tails (groups,): each counter group's context of the value (channel, at) of `frame` (C, M + 1)
    but for the decision's key: the neighbours' residuals (`residual`, 0 outside the tile), where its mean c lies
    among the neighbours' values, their gradients and its table t; with REFINE_WIDEST groups, where the other
    predictions of REFINE_ACROSS_GROUPS's comment lie against c."""
    x, y = at % width, at // width
    left = residual[channel, at - 1] if x > 0 else 0
    above = residual[channel, at - width] if y > 0 else 0
    above_left = residual[channel, at - width - 1] if x > 0 and y > 0 else 0
    above_right = residual[channel, at - width + 1] if y > 0 and x + 1 < width else 0
    left_left = residual[channel, at - 2] if x > 1 else 0
    above_above = residual[channel, at - 2 * width] if y > 1 else 0
    before = residual[channel - 1, at] if channel > 0 else 0
    first = residual[0, at] if channel > 1 else 0
    before_left = residual[channel - 1, at - 1] if channel > 0 and x > 0 else 0
    before_above = residual[channel - 1, at - width] if channel > 0 and y > 0 else 0
    a = np.int64(frame[channel, at - 1]) if x > 0 else c
    b = np.int64(frame[channel, at - width]) if y > 0 else c
    d = np.int64(frame[channel, at - width + 1]) if y > 0 and x + 1 < width else c
    e = np.int64(frame[channel, at - width - 1]) if y > 0 and x > 0 else c
    level, fraction = min(t // 4, REFINE_LEVELS - 1), t % 4
    tails[0] = level * 4 + fraction
    tails[1] = _refine_class(left) * 7 + _refine_class(above)
    tails[2] = (_refine_class(before) * 7 + _refine_class(first)) * 7 + _refine_class(left)
    tails[3] = (_refine_class(above_left) * 7 + _refine_class(above_right)) * 7 + _refine_class(left_left)
    tails[4] = (_refine_class(a - c) * 7 + _refine_class(b - c)) * 7 + _refine_class(d - c)
    tails[5] = (level * 7 + _refine_class(left)) * 7 + _refine_class(above)
    tails[6] = (_refine_class(above_above) * 7 + _refine_class(left + above)) * 7 + _refine_class(
        above_left + above_right)
    tails[7] = (_refine_class(a - b) * 7 + _refine_class(b - d)) * 7 + _refine_class(a - e)
    tails[8] = (_refine_class(before) * 7 + _refine_class(before_left)) * 7 + _refine_class(before_above)
    tails[9] = (level * 7 + _refine_class(before)) * 7 + _refine_class(first)
    if groups > REFINE_GROUPS:
        if channel == 0:
            a_a = np.int64(frame[0, at - 2]) if x > 1 else a
            b_b = np.int64(frame[0, at - 2 * width]) if y > 1 else b
            tails[10] = _refine_fine_class(a - c) * 15 + _refine_fine_class(b - c)
            tails[11] = _refine_fine_class(a + b - e - c) * 15 + _refine_fine_class(2 * b - b_b - c)
            tails[12] = _refine_fine_class(d - c) * 15 + _refine_fine_class(e - c)
            tails[13] = _refine_fine_class(2 * a - a_a - c) * 15 + _refine_fine_class(a + d - b - c)
            tails[14] = _refine_fine_class(a - c) * 15 + _refine_fine_class(d - c)
        else:
            # the previous channel's value here and its steps to the neighbours, then the first channel's (from the
            # third channel on; the second's first channel is its previous one, whose steps count once)
            p = np.int64(frame[channel - 1, at])
            p_a = p - np.int64(frame[channel - 1, at - 1]) if x > 0 else 0
            p_b = p - np.int64(frame[channel - 1, at - width]) if y > 0 else 0
            p_d = p - np.int64(frame[channel - 1, at - width + 1]) if y > 0 and x + 1 < width else 0
            p_e = p - np.int64(frame[channel - 1, at - width - 1]) if y > 0 and x > 0 else 0
            f_a = f_b = np.int64(0)
            if channel > 1:
                f = np.int64(frame[0, at])
                f_a = f - np.int64(frame[0, at - 1]) if x > 0 else 0
                f_b = f - np.int64(frame[0, at - width]) if y > 0 else 0
            tails[10] = _refine_fine_class(a + p_a - c) * 15 + _refine_fine_class(b + p_b - c)
            tails[11] = _refine_fine_class(a + f_a - c) * 15 + _refine_fine_class(b + f_b - c)
            tails[12] = _refine_fine_class(d + p_d - c) * 15 + _refine_fine_class(e + p_e - c)
            tails[13] = _refine_fine_class(a + f_a - c) * 15 + _refine_fine_class(a + p_a - c)
            tails[14] = _refine_fine_class(b + f_b - c) * 15 + _refine_fine_class(b + p_b - c)


def _refine_slots(slots, tails, channel, decision, groups):
    """Each counter group's slot for a decision about a value whose contexts _refine_contexts put in `tails` (the
    decision's side, which the format's key also holds, follows from the decision: REFINE_KEYS' comment)."""
    key = min(channel, 2) * REFINE_DECISIONS + decision
    for g in range(groups):
        slots[g] = tails[g] * REFINE_KEYS + key


def _refine_decide(encode, bit, one, both, row, level, slots, counters, weights, maps, stretch, reciprocal,
                   inputs, words, position, state, record, recorded):
    """One refined decision (the table's masses `one` of `both`): its probability mixed, then its bit recorded
    (`encode`: record[:, recorded] its bit's start and frequency among 2**24) or popped, then every part of the
    state taught it. The counters' groups are counters.shape[0]'s (REFINE_GROUPS, or REFINE_WIDEST with
    REFINE_ACROSS_RATE). Returns (bit, position, state, recorded)."""
    groups = counters.shape[0]
    rate = REFINE_RATE if groups == REFINE_GROUPS else REFINE_ACROSS_RATE
    mixer = row * REFINE_MIXER_LEVELS + min(level * REFINE_MIXER_LEVELS // REFINE_LEVELS, REFINE_MIXER_LEVELS - 1)
    map_row = row * REFINE_LEVELS + level
    inputs[0] = stretch[min(max((one * 4096) // both, 1), 4095)]
    for g in range(groups):
        inputs[1 + g] = stretch[counters[g, slots[g]] >> 12]
    at = (inputs[0] + 2048) * 32
    low, share = at >> 12, at & 4095
    mapped = (maps[map_row, low] * (4096 - share) + maps[map_row, low + 1] * share) >> 16
    inputs[groups + 1] = stretch[min(max(mapped, 1), 4095)]
    dot = np.int64(0)
    for i in range(groups + 2):
        dot += weights[mixer, i] * inputs[i]
    q = min(max(_refine_squash(dot >> 16, REFINE_KNOTS), 1), 4095)
    bit, position, state, recorded = _refine_binary(encode, bit, q << 12, words, position, state, record, recorded)
    error = ((bit << 12) - q) * rate
    for i in range(groups + 2):
        weights[mixer, i] += (inputs[i] * error + 32768) >> 16
    for g in range(groups):
        s = slots[g]
        count = min((counters[g, s] & 255) + 1, REFINE_LIMIT)
        probability = counters[g, s] >> 8
        probability += (((bit << 16) - probability) * reciprocal[count]) >> 16
        counters[g, s] = (probability << 8) | count
    target = bit << 16
    maps[map_row, low] += ((target - maps[map_row, low]) * (4096 - share)) >> (12 + REFINE_MAP_SHIFT)
    maps[map_row, low + 1] += ((target - maps[map_row, low + 1]) * share) >> (12 + REFINE_MAP_SHIFT)
    return bit, position, state, recorded


def _refine_binary(encode, bit, frequency, words, position, state, record, recorded):
    """A decision of 24-bit probability `frequency` of a one: recorded (the encoder's, pushed last first by
    _push_decisions) or popped (a one above the zero's [0, 2**24 - frequency)). (bit, position, state, recorded)."""
    zero = (1 << PRECISION) - frequency
    if encode:
        record[0, recorded], record[1, recorded] = (zero, frequency) if bit else (0, zero)
        return bit, position, state, recorded + 1
    quantile = np.int64(state & np.uint64((1 << PRECISION) - 1))
    bit = 1 if quantile >= zero else 0
    position, state = _ans_pop(state, quantile, zero if bit else 0, frequency if bit else zero, words, position)
    return bit, position, state, recorded


def _refine_start(x, low, base, every, room, prefix, t, c):
    """Where value x starts among the 2**24 of _refine_rest's symbol over low.. (table t's masses from `base` on,
    `every` of them, in `room` of the 2**24, and one for each value: none is empty)."""
    return ((_refine_mass(prefix, t, c, x - 1) - base) * room) // every + x - low


def _refine_rest(encode, symbol, low, high, t, c, prefix, words, position, state, record, recorded):
    """The value beyond the refined magnitudes, one of low..high, as one symbol of table t's masses over them:
    recorded (the encoder's `symbol`) or popped. Returns (symbol, position, state, recorded)."""
    base = _refine_mass(prefix, t, c, low - 1)
    every = _refine_mass(prefix, t, c, high) - base
    room = (1 << PRECISION) - (high - low + 1)
    quantile = np.int64(state & np.uint64((1 << PRECISION) - 1))  # the decoder's
    if not encode:
        symbol, top = low, high  # the last value starting at or below the quantile
        while symbol < top:
            middle = (symbol + top + 1) // 2
            if _refine_start(middle, low, base, every, room, prefix, t, c) <= quantile:
                symbol = middle
            else:
                top = middle - 1
    start = _refine_start(symbol, low, base, every, room, prefix, t, c)
    frequency = _refine_start(symbol + 1, low, base, every, room, prefix, t, c) - start
    if encode:
        record[0, recorded], record[1, recorded] = start, frequency
        return symbol, position, state, recorded + 1
    position, state = _ans_pop(state, quantile, start, frequency, words, position)
    return symbol, position, state, recorded


def _refine_value(encode, symbol, t, c, channel, at, width, frame, residual, prefix, counters, weights, maps,
                  stretch, reciprocal, inputs, slots, words, position, state, record, recorded):
    """The value (channel, at) of table t around mean c: its decisions recorded (`encode`, the value `symbol`) or
    popped. Returns (symbol, position, state, recorded)."""
    r = symbol - c  # the encoder's; the decoder's is found
    level = min(t // 4, REFINE_LEVELS - 1)
    groups = counters.shape[0]
    tails = slots[groups:]
    _refine_contexts(tails, frame, residual, at, width, channel, c, t, groups)
    total, through_c = prefix[t, 510] + 256, _refine_mass(prefix, t, c, c)  # mass(255), mass(c)
    zero = through_c - _refine_mass(prefix, t, c, c - 1)  # r = 0's
    positive, magnitude = True, 0
    for k in range(2 + REFINE_MAGNITUDES):
        decision, one, both, bit = -1, np.int64(0), np.int64(1), 0
        if k == 0:  # r == 0?
            decision, one, both, bit = 0, zero, total, 1 if r == 0 else 0
        elif k == 1:  # r > 0, given r != 0: decided only where both sides hold values
            bit = 1 if r > 0 else 0
            if c == 255:
                bit = 0
            elif c == 0:
                bit = 1
            else:
                decision, one, both = 1, total - through_c, total - zero
        else:  # |r| > m given |r| >= m, on r's side
            m = k - 1
            if (positive and c + m >= 255) or (not positive and c - m <= 0):
                break  # no value beyond: |r| is m
            if positive:
                one = total - _refine_mass(prefix, t, c, c + m)
                both = total - _refine_mass(prefix, t, c, c + m - 1)
            else:
                one = _refine_mass(prefix, t, c, c - m - 1)
                both = _refine_mass(prefix, t, c, c - m)
            decision, bit = 2 + 2 * (m - 1) + (1 if positive else 0), 1 if abs(r) > m else 0
        if decision >= 0:
            _refine_slots(slots, tails, channel, decision, groups)
            bit, position, state, recorded = _refine_decide(
                encode, bit, one, both, decision * 3 + min(channel, 2), level, slots, counters, weights,
                maps, stretch, reciprocal, inputs, words, position, state, record, recorded)
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
    if magnitude > REFINE_MAGNITUDES:  # the rest: one symbol of the table's masses beyond
        low, high = (c + magnitude, 255) if positive else (0, c - magnitude)
        symbol, position, state, recorded = _refine_rest(encode, symbol, low, high, t, c, prefix, words, position,
                                                         state, record, recorded)
    else:
        symbol = c + (magnitude if positive else -magnitude)
    residual[channel, at] = symbol - c
    return symbol, position, state, recorded


def _push_decisions(record, count, words, position, state):
    """Push record[:, :count] (each decision's or rest's start and frequency among 2**24) the last first (they pop
    back first to last) onto the bulk `words[:position]` (room for count more words) and head `state` (np.uint64).
    (position, state)."""
    for i in range(count - 1, -1, -1):
        position, state = _ans_push(state, record[0, i], record[1, i], words, position)
    return position, state


NO_REFINEMENT = (np.zeros((0, 511), np.int64), np.zeros((0, 0), np.int32), np.zeros((0, REFINE_INPUTS), np.int64),
                 np.zeros((0, REFINE_BUCKETS), np.int64), np.zeros((0, 0), np.int64),
                 np.zeros((2, 0), np.int32))  # prefix .. record for the others
NO_REFINE_TABLE = np.zeros(0, np.int64)  # the stretch and reciprocal tables for the others
# read-only as the refinement's own tables are (predictive._refine_tables): numba types a read-only array apart, and
# _code_tile would be compiled twice (~40 s the second time) for the two
for _constant in (NO_REFINEMENT[0], NO_REFINE_TABLE):
    _constant.flags.writeable = False


PYTHON_FORMS = {function.__name__: function for function in (
    _ans_pop, _ans_push, _pop, _push, _level, _neighbour_weight, _far_share, _ls_features, _ls_offset, _ls_moments,
    _ls_predict, _learn, _corrected, _signed_class, _code_tile, _code_values, _refine_squash, _refine_class,
    _refine_fine_class, _refine_mass, _refine_contexts, _refine_slots, _refine_decide, _refine_binary, _refine_start,
    _refine_rest, _refine_value, _push_decisions)}


# The helpers that _code_values and _push call value by value, compiled into them: a call of a compiled function
# passes each array with an atomic increment and decrement of its reference count, which took ~20 % of the
# cascade's time (perf: numba's NRT_MemInfo_acquire and _release). The same operations in the same order: the
# same values. _refine_contexts is called, not compiled in: once a value, with borrowed arrays (no reference counts),
# it costs no measurable time, and compiled into _code_values it made the kernels' first compile 38 s and 1.5 GB
# instead of ~23 s and 0.6 GB (the sample photo's first compress, 2-core EPYC: LLVM's time grows faster than the
# function). _refine_value called so would save ~4 s more of the compile but cost ~8 % of a photograph's coding.
INLINED = frozenset(name for name in PYTHON_FORMS if name not in ("_code_tile", "_code_values", "_push",
                                                                   "_push_decisions", "_refine_contexts"))


def _plain_forms() -> dict:
    """PYTHON_FORMS calling one another, never the compiled forms that _build binds in this module's globals (a
    compiled _pop hands its state back as a Python int, which a compiled call then types as a signed one): the
    same functions over a namespace of their own."""
    namespace = dict(globals())
    plain = {name: types.FunctionType(function.__code__, namespace, name, function.__defaults__)
             for name, function in PYTHON_FORMS.items()}
    namespace.update(plain)
    return plain


PLAIN_FORMS = _plain_forms()
_compiled: dict | None = None  # the numba forms once built ({} where they cannot be)
_building = threading.Lock()  # compress prices and codes in two threads at once
_failed = False
_flushed = False  # disable() has emptied the compiled forms' caches once in this process
# Called (from the coding thread) where the compiled forms are built and numba's cache on disk holds no machine code
# for them: their first call compiles them (~25 s and ~0.6 GB on a 2-core machine) instead of loading them (~0.1 s).
# The command line sets it to say so on its progress bar.
compile_notice: Callable[[], None] | None = None


_borrowing_registered = False
_registering = threading.Lock()  # codec's kernels and the model's (vaezip/model/kernels.py) may build at once


def _register_borrowing() -> None:
    """Give _borrowed its compiled form (once per process): the array's own data, shape and strides with no owner
    (a null meminfo, which numba's reference counting passes over)."""
    global _borrowing_registered
    with _registering:
        if not _borrowing_registered:
            _register_borrowed_form()
            _borrowing_registered = True


def _register_borrowed_form() -> None:
    from numba.extending import overload

    try:  # numba's own array helpers, not a public API: where a release moves them, plain references (slower)
        from numba.core import types
        from numba.extending import intrinsic
        from numba.np.arrayobj import make_array, populate_array
    except ImportError:
        warnings.warn("vaezip: numba's array helpers moved; the compiled coder counts references (slower)",
                      RuntimeWarning, stacklevel=3)

        @overload(_borrowed)
        def referenced(array):
            return lambda array: array

        return

    @intrinsic
    def borrow(typing_context, array):
        if not isinstance(array, types.Array):
            return None

        def generate(context, builder, signature, arguments):
            source = make_array(array)(context, builder, value=arguments[0])
            view = make_array(array)(context, builder)
            populate_array(view, data=source.data, shape=source.shape, strides=source.strides,
                           itemsize=source.itemsize, meminfo=None)
            return view._getvalue()

        return array(array), generate

    @overload(_borrowed)
    def compiled_borrowed(array):
        return lambda array: borrow(array)


def njit_forms(functions: dict, inlined: frozenset = frozenset()) -> dict:
    """numba versions of `functions` (name -> plain function), compiled at their first call without fast-math
    (no reassociation or contraction changes a value), releasing the GIL. Raises ImportError without numba.
    Shared by this module and vaezip/model/kernels.py; each binds the forms in its own globals, so that
    compiled functions call each other's compiled forms. Those named in `inlined` are compiled into their
    callers (numba's inline="always"), not called: see INLINED."""
    import numba

    _register_borrowing()

    def build(cache: bool) -> dict:
        options = dict(cache=cache, nogil=True, fastmath=False, error_model="numpy")
        return {name: numba.njit(inline="always" if name in inlined else "never", **options)(function)
                for name, function in functions.items()}

    # cache=True keeps the machine code next to the module (or in the user's cache folder); where no folder is
    # writable numba refuses it, and compiling once per process is the price.
    try:
        return build(cache=True)
    except RuntimeError:
        return build(cache=False)


def _build() -> dict:
    """numba versions of the functions above, bound in this module's globals; {} without numba."""
    try:
        functions = njit_forms(PYTHON_FORMS, INLINED)
    except Exception:  # noqa: BLE001 - no numba, or any failure of it, leaves the numpy coder: the same bits
        return {}
    globals().update(functions)
    return functions


def compiled() -> dict | None:
    """The compiled forms by name (built once per process, whichever thread asks first), or None without numba."""
    global _compiled
    with _building:
        if _compiled is None:
            _compiled = _build()
            # _code_tile's compile compiles the rest
            if _compiled and compile_notice is not None and in_cache(_compiled["_code_tile"]) is False:
                compile_notice()
    return _compiled or None


def in_cache(form) -> bool | None:
    """Whether numba's cache on disk holds machine code of this source for the compiled form `form` (a numba
    dispatcher), so that its first call loads it rather than compiling it: False for a form made without a cache
    (njit_forms' where no folder is writable: every process compiles); None where that cannot be told (numba's cache
    internals, not a public API, look otherwise in this release)."""
    try:
        if type(form._cache).__name__ == "NullCache":
            return False
        return bool(form._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - only a notice depends on it
        return None


# Below this many values (predictor tiles' subpixels) in a process the numpy coder is kept unless numba is loaded
# already (the model's kernels load it): importing numba and loading the compiled kernels cost ~0.3 s, about 30
# 32x32 colour predictor tiles' decoding. Counted in values, not calls: a tile of 256x256 (compress --fast's) is
# 64 of those, and a decoder's run of predictor tiles counts whole (Stack.kernel_run_values).
COMPILE_AFTER_VALUES = 24 * 3 * 32 * 32
_values_seen = 0


def always() -> dict:
    """The compiled forms, loaded now whatever the count of values (the plain Python ones run ~25,000 values a
    second: loading the compiled ones pays from two 32x32 colour tiles on), else the plain ones (no numba, or a
    failed compile or run): for a coder with no numpy form (predictive.ADAPTIVE, whose statistics change value by
    value)."""
    return (None if _failed else compiled()) or PLAIN_FORMS


def ready(values: int = 0) -> dict | None:
    """The compiled forms to code `values` more values with now, or None (no numba, a failed compile or run, or
    too few values yet, these included, to pay for loading them)."""
    global _values_seen
    if _failed:
        return None
    if _compiled is None:
        _values_seen += values
        if "numba" not in sys.modules and _values_seen <= COMPILE_AFTER_VALUES:
            return None
    return compiled()


def flush_caches(forms: dict) -> None:
    """Empty numba's cache on disk of each compiled form in `forms` (numba's Cache.flush: its index emptied), so
    that its next compile, in this process or any other, compiles afresh and caches again. A cache file cut short
    (a full disk) failed the forms' first call in every process, each of which then coded with the numpy forms:
    a 512x512 photograph's decode 0.6 -> 45 s, every time."""
    for form in forms.values():
        flush = getattr(getattr(form, "_cache", None), "flush", None)  # numba's, where this numba has it
        if flush is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001 - a cache that cannot be emptied: as before
                flush()


def damaged_cache(error: BaseException | None) -> bool:
    """Whether a compiled form's first call failed on numba's cache on disk, damaged (a pickle cut short)."""
    return isinstance(error, (pickle.UnpicklingError, EOFError))


def disable(reason: str, error: BaseException | None = None) -> None:
    """Use the numpy coder from now on (the kernels failed to compile or run on this platform). Where `error` (what
    the failing call raised) is a damaged cache's (a pickle cut short), the forms' caches are emptied instead and
    the forms built again, compiled afresh at their next call, once a process: the processes after it run
    compiled again."""
    global _failed, _compiled, _flushed
    with _building:
        if not _flushed and _compiled and damaged_cache(error):
            _flushed = True
            flush_caches(_compiled)
            _compiled = None
            warnings.warn(f"vaezip: the compiled blend coder failed ({reason}); compiling it afresh",
                          RuntimeWarning, stacklevel=2)
            return
    if not _failed:
        warnings.warn(f"vaezip: the compiled blend coder is off ({reason}); using the slower numpy form",
                      RuntimeWarning, stacklevel=2)
    _failed = True
