"""16-bit samples as two 8-bit images (format 18): how a deep image's values become a high part, coded as any 8-bit
image is, and a low part holding the bits below it.

Most 16-bit files hold fewer significant bits: 8-bit pictures saved as 16-bit (each value x * 257), 10- to 14-bit
sensor data shifted up (x << 4), scaled to the full range (round(x * 65535 / 4095)) or by any other factor, a tone
curve or a white balance's gain per channel. A *depth* names how the file's values v come from n-bit values x, and
the coder codes x: its top 8 bits as the high part, its n - 8 low bits (if any) as the low part. Every depth is exact
both ways on the values it is chosen for.

| depth | v from x (x has n bits) |
|---|---|
| `shift:n`, n = 8 .. 16 | x << (16 - n) (`shift:16`: v = x, any 16-bit value) |
| `scale:n`, n = 8 .. 15 | (x * 65535 + (2^n - 1) // 2) // (2^n - 1), the nearest to x * 65535 / (2^n - 1) |
| `replicate:n`, n = 9 .. 15 | (x << (16 - n)) \\| (x >> (2n - 16)), x's top bits repeated below it |
| `levels:n`, n = 8 .. 15 | levels[c][x]: channel c's values that occur, in increasing order (at most 2^n), x a rank |

`choose` takes the depth of fewest bits; of equal bits the first of shift, scale, replicate, levels (levels last: its
values must be stored, the others are formulas). Levels rank a channel's values, so they hold any value set of at
most 2^15 values a channel, and the ranks keep the order, hence the picture, of the values they stand for.

Format 18's header names an image's depth by its index in DEPTHS: 0 an 8-bit image (every image of earlier formats),
1 the low part of the image before it, then the others; a levels depth's values follow it (codec/header.py).
"""

from __future__ import annotations

import math

import numpy as np

from codec.errors import CodingError

LOW = "low"
DEPTHS = ("", LOW) + tuple(f"shift:{n}" for n in range(8, 17)) + tuple(f"scale:{n}" for n in range(8, 16)) + tuple(
    f"replicate:{n}" for n in range(9, 16)) + tuple(f"levels:{n}" for n in range(8, 16))
_FORMS = ("shift", "scale", "replicate", "levels")
# The order `choose` tries the formulas in: fewest bits first, then shift, scale, replicate (scale:8 is replicate:8)
_TRIED = sorted((d for d in DEPTHS[2:] if not d.startswith("levels")),
                key=lambda d: (int(d.split(":")[1]), _FORMS.index(d.split(":")[0])))

Levels = tuple  # of np.ndarray: each channel's values, strictly increasing uint16 (an empty tuple: no levels)


def image_count(entries) -> int:
    """How many images a header's entries hold: a 16-bit image's low part is an entry of its own, not an image."""
    return sum(1 for entry in entries if entry.depth != LOW)


def bits(depth: str) -> int:
    """n, the bits a sample holds under `depth` (8 for an 8-bit image); CodingError for a name not in DEPTHS."""
    if depth not in DEPTHS or depth == LOW:
        raise CodingError(f"unknown depth {depth!r}")
    return 8 if not depth else int(depth.split(":")[1])


def low_bits(depth: str) -> int:
    """How many bits of each sample the low part holds (0: the image has no low part)."""
    return bits(depth) - 8


def has_levels(depth: str) -> bool:
    return depth.startswith("levels:")


def _forward(depth: str, x: np.ndarray) -> np.ndarray:
    """v from x (int64 arrays), for the formulas."""
    form, n = depth.split(":")[0], bits(depth)
    if form == "shift":
        return x << (16 - n)
    if form == "scale":
        top = (1 << n) - 1
        return (x * 65535 + top // 2) // top
    return (x << (16 - n)) | (x >> (2 * n - 16))


def _backward(depth: str, v: np.ndarray) -> np.ndarray:
    """x from v (int64 arrays), exact where v is some x's `_forward`."""
    form, n = depth.split(":")[0], bits(depth)
    if form == "scale":
        top = (1 << n) - 1
        return (v * top + 32767) // 65535
    return v >> (16 - n)


def _channels(samples: np.ndarray) -> list[np.ndarray]:
    return [samples] if samples.ndim == 2 else [samples[..., c] for c in range(samples.shape[2])]


def choose(samples: np.ndarray) -> tuple[str, Levels]:
    """The depth of the fewest bits that gives back every one of `samples` ((H, W) or (H, W, C) uint16), and its
    levels (each channel's values; () for a formula)."""
    present = np.flatnonzero(np.bincount(samples.reshape(-1), minlength=1 << 16)).astype(np.int64)
    formula = next(d for d in _TRIED if np.array_equal(_forward(d, _backward(d, present)), present))  # shift:16 last
    levels = tuple(np.flatnonzero(np.bincount(channel.reshape(-1), minlength=1 << 16)).astype(np.uint16)
                   for channel in _channels(samples))
    n = max(8, max(math.ceil(math.log2(max(len(values), 1))) for values in levels))
    # Levels save (bits(formula) - n) bits a sample, at most, and cost their table in the header: not worth it for a
    # small image of many values (a 96x96 14-bit photograph: the table takes more than the bit it saves).
    if n < bits(formula) and table_bytes(levels) < (bits(formula) - n) * samples.size / 8:
        return f"levels:{n}", levels
    return formula, ()


def table_bytes(levels: Levels) -> int:
    """The bytes the levels take in a format-18 header before it is deflated (codec/header.py): a varint count, the
    first value, each step less 1, a varint each."""
    total = 0
    for values in levels:
        steps = np.diff(values.astype(np.int64), prepend=-1) - 1  # the first: the first value
        total += _varint_size(len(values)) + int(np.sum(1 + (steps >= 1 << 7) + (steps >= 1 << 14)))
    return total


def _varint_size(value: int) -> int:
    return 1 + (value >= 1 << 7) + (value >= 1 << 14) + (value >= 1 << 21)


def check_levels(depth: str, levels: Levels, channels: int, pixels: int) -> str:
    """What is wrong with `levels` for `depth` in an image of `channels` and `pixels` ("" where nothing is): a levels
    depth has one array a channel, each of 1 to 2^n strictly increasing values, and no more than the image has
    pixels (each stands for a value some pixel holds); any other depth none."""
    if not has_levels(depth):
        return "levels without a levels depth" if levels else ""
    if len(levels) != channels:
        return f"{len(levels)} level tables for {channels} channels"
    for values in levels:
        if not 1 <= len(values) <= min(1 << bits(depth), pixels):
            return f"{len(values)} levels in a {depth} image of {pixels} pixels"
        if np.any(np.diff(values.astype(np.int64)) <= 0):
            return "levels not strictly increasing"
    return ""


def split(samples: np.ndarray, depth: str, levels: Levels = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """(high, low) uint8 arrays of `samples`' shape: x's top 8 bits, and its low_bits(depth) bits below them (None
    where there are none). ValueError where `depth` does not give back every sample."""
    if has_levels(depth):
        x = np.empty(samples.shape, np.int64)
        for channel, out, values in zip(_channels(samples), _channels(x), levels):
            rank = np.zeros(1 << 16, np.int64)  # a lookup table: one pass over the samples
            rank[values] = np.arange(len(values))
            out[...] = rank[channel]
            if not np.array_equal(values[out], channel):
                raise ValueError("levels do not hold these samples")
    else:
        v = samples.astype(np.int64)
        x = _backward(depth, v)
        if not np.array_equal(_forward(depth, x), v):
            raise ValueError(f"depth {depth} does not hold these samples")
    below = low_bits(depth)
    high = (x >> below).astype(np.uint8)
    return high, ((x & ((1 << below) - 1)).astype(np.uint8) if below else None)


def join(high: np.ndarray, low: np.ndarray | None, depth: str, levels: Levels = ()) -> np.ndarray:
    """The uint16 samples back from split's parts; CodingError where the low part does not fit the depth (more bits
    than it holds, present or missing against low_bits, another shape) or x is past a channel's levels."""
    below = low_bits(depth)
    if (low is None) != (below == 0) or (low is not None and low.shape != high.shape):
        raise CodingError(f"a {depth} image's parts do not fit together")
    x = high.astype(np.int64) << below
    if low is not None:
        if below < 8 and int(low.max(initial=0)) >> below:
            raise CodingError(f"a {depth} image's low part holds values of more than {below} bits")
        x |= low.astype(np.int64)
    if not has_levels(depth):
        return _forward(depth, x).astype(np.uint16)
    out = np.empty(x.shape, np.uint16)
    for ranks, channel, values in zip(_channels(x), _channels(out), levels):
        if int(ranks.max(initial=0)) >= len(values):
            raise CodingError(f"a {depth} image's samples go past its {len(values)} levels")
        channel[...] = values[ranks]
    return out
