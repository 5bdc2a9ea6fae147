"""A uint8 plane coded i.i.d. with its own histogram: alpha channels, palette indices when no model fits.

The histogram (sorted distinct values and their counts) goes into the file header; the pixels are pushed with
one shared Categorical table of the counts. That costs H * entropy(histogram) bits plus the header entry.
A constant plane (one distinct value) costs nothing: its value is in the header.

    hist = fit_histogram(alpha)                 # (H, W) uint8
    push_plane(stack, alpha, hist)              # encoder
    header_entry = hist.to_dict()
    ...
    hist = Histogram.from_dict(header_entry)    # decoder (validates the dict)
    alpha = pop_plane(stack, hist, (H, W))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from codec.ans import Stack
from codec.errors import CodingError


@dataclass(frozen=True)
class Histogram:
    values: tuple[int, ...]  # distinct pixel values, strictly increasing, in [0, 255]
    counts: tuple[int, ...]  # how often each occurs, all >= 1

    def __post_init__(self) -> None:
        if not self.values or len(self.values) != len(self.counts):
            raise CodingError("histogram needs as many counts as values, and at least one value")
        if any(not 0 <= v <= 255 for v in self.values) or any(a >= b for a, b in zip(self.values, self.values[1:])):
            raise CodingError("histogram values must be strictly increasing in [0, 255]")
        if any(c < 1 for c in self.counts):
            raise CodingError("histogram counts must be >= 1")

    @property
    def is_constant(self) -> bool:
        return len(self.values) == 1

    @property
    def total(self) -> int:
        return sum(self.counts)

    def ideal_bits(self) -> float:
        """-log2 of the probability of the plane under its own histogram: what push_plane costs (about)."""
        counts = np.array(self.counts, dtype=np.float64)
        return float(-(counts * np.log2(counts / counts.sum())).sum())

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form: values as one hex string (2 chars per value), counts as a list of ints."""
        return {"values": bytes(self.values).hex(), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, d: Any) -> "Histogram":
        """Parse `to_dict` output from an untrusted header; CodingError if malformed."""
        try:
            values = tuple(bytes.fromhex(d["values"]))
            counts = d["counts"]
            if not isinstance(counts, list) or not all(type(c) is int for c in counts):
                raise TypeError("counts must be a list of ints")
            return cls(values, tuple(counts))
        except (KeyError, TypeError, ValueError) as error:
            raise CodingError(f"bad histogram: {error}") from error


def fit_histogram(plane: np.ndarray) -> Histogram:
    """The histogram of a uint8 array of any shape."""
    if plane.dtype != np.uint8 or plane.size == 0:
        raise CodingError(f"plane must be a non-empty uint8 array, got {plane.dtype} {plane.shape}")
    counts = np.bincount(plane.ravel(), minlength=256)  # (256,)
    values = np.nonzero(counts)[0]
    return Histogram(tuple(int(v) for v in values), tuple(int(counts[v]) for v in values))


def _table(hist: Histogram) -> np.ndarray:
    return np.array(hist.counts, dtype=np.float64) / hist.total  # (K,)


def push_plane(stack: Stack, plane: np.ndarray, hist: Histogram) -> None:
    """Push every pixel of `plane` (any shape, uint8), which must match `hist` exactly."""
    if fit_histogram(plane) != hist:
        raise CodingError("plane does not match its histogram")
    if hist.is_constant:
        return
    lookup = np.zeros(256, dtype=np.int32)
    lookup[list(hist.values)] = np.arange(len(hist.values), dtype=np.int32)  # value -> index into the table
    stack.push_categorical(lookup[plane.ravel()], _table(hist))


def pop_plane(stack: Stack, hist: Histogram, shape: tuple[int, ...]) -> np.ndarray:
    """Pop a plane of `shape`; its pixel count must equal the histogram's total."""
    n = int(np.prod(shape))
    if n != hist.total:
        raise CodingError(f"histogram counts {hist.total} pixels, the plane has {n}")
    if hist.is_constant:
        return np.full(shape, hist.values[0], dtype=np.uint8)
    indices = stack.pop_categorical(_table(hist), n=n)  # (n,)
    return np.array(hist.values, dtype=np.uint8)[indices].reshape(shape)
