"""16-bit samples as two 8-bit images (format 18): how a deep image's values become a high part, coded as any 8-bit
image is, and a low part holding the bits below it.

Most 16-bit files hold fewer significant bits: 8-bit pictures saved as 16-bit (each value x * 257), 10- to 14-bit
sensor data shifted up (x << 4) or scaled to the full range (round(x * 65535 / 4095)). A *depth* names how the file's
values v come from n-bit values x, and the coder codes x: its top 8 bits as the high part, its n - 8 low bits (if any)
as the low part. Every form is exact both ways on the values it is chosen for; `choose` tries them from the fewest
bits up.

| depth | v from x (x has n bits) |
|---|---|
| `shift:n`, n = 8 .. 16 | x << (16 - n) (`shift:16`: v = x, any 16-bit value) |
| `scale:n`, n = 8 .. 15 | (x * 65535 + (2^n - 1) // 2) // (2^n - 1), the nearest to x * 65535 / (2^n - 1) |
| `replicate:n`, n = 9 .. 15 | (x << (16 - n)) \\| (x >> (2n - 16)), x's top bits repeated below it |

Format 18's header names an image's depth by its index in DEPTHS: 0 an 8-bit image (every image of earlier formats),
1 the low part of the image before it, then the forms.
"""

from __future__ import annotations

import numpy as np

from codec.errors import CodingError

LOW = "low"
DEPTHS = ("", LOW) + tuple(f"shift:{n}" for n in range(8, 17)) + tuple(f"scale:{n}" for n in range(8, 16)) + tuple(
    f"replicate:{n}" for n in range(9, 16))
# The order `choose` tries them in: fewest bits first, then shift, scale, replicate (scale:8 is also replicate:8).
_TRIED = sorted(DEPTHS[2:], key=lambda depth: (int(depth.split(":")[1]),
                                              ("shift", "scale", "replicate").index(depth.split(":")[0])))


def bits(depth: str) -> int:
    """n, the bits a sample holds under `depth` (8 for an 8-bit image); CodingError for a name not in DEPTHS."""
    if depth not in DEPTHS or depth == LOW:
        raise CodingError(f"unknown depth {depth!r}")
    return 8 if not depth else int(depth.split(":")[1])


def low_bits(depth: str) -> int:
    """How many bits of each sample the low part holds (0: the image has no low part)."""
    return bits(depth) - 8


def _forward(depth: str, x: np.ndarray) -> np.ndarray:
    """v from x (int64 arrays)."""
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


def choose(samples: np.ndarray) -> str:
    """The depth of the fewest bits that gives back every one of `samples` (uint16, any shape) exactly."""
    present = np.flatnonzero(np.bincount(samples.reshape(-1), minlength=1 << 16)).astype(np.int64)
    for depth in _TRIED:
        if np.array_equal(_forward(depth, _backward(depth, present)), present):
            return depth
    raise AssertionError("shift:16 holds every 16-bit value")


def split(samples: np.ndarray, depth: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(high, low) uint8 arrays of `samples`' shape: x's top 8 bits, and its low_bits(depth) bits below them (None
    where there are none). ValueError where `depth` does not give back every sample."""
    v = samples.astype(np.int64)
    x = _backward(depth, v)
    if not np.array_equal(_forward(depth, x), v):
        raise ValueError(f"depth {depth} does not hold these samples")
    below = low_bits(depth)
    high = (x >> below).astype(np.uint8)
    return high, ((x & ((1 << below) - 1)).astype(np.uint8) if below else None)


def join(high: np.ndarray, low: np.ndarray | None, depth: str) -> np.ndarray:
    """The uint16 samples back from split's parts; CodingError where the low part does not fit the depth (more bits
    than it holds, present or missing against low_bits, another shape)."""
    below = low_bits(depth)
    if (low is None) != (below == 0) or (low is not None and low.shape != high.shape):
        raise CodingError(f"a {depth} image's parts do not fit together")
    x = high.astype(np.int64) << below
    if low is not None:
        if below < 8 and int(low.max(initial=0)) >> below:
            raise CodingError(f"a {depth} image's low part holds values of more than {below} bits")
        x |= low.astype(np.int64)
    return _forward(depth, x).astype(np.uint16)
