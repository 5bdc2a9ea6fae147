"""Transcendental functions computed the same on every machine, for numbers that decide what the coder does.

libm's exp and log (and numpy's SIMD versions) may differ in the last bit between machines and library
versions; anything that reaches the entropy coder must not. These use only +, -, *, /, floor, frexp and
ldexp (each correctly rounded by IEEE-754, hence the same bits everywhere) and fixed series. The integer
network's lookup tables (vaezip/model/integer.py) and importance-weighted bits-back's sample weights
(codec/tilekinds.py) are built from them.
"""

from __future__ import annotations

import numpy as np


# Elements per pass of deterministic_exp and deterministic_log2: their temporaries stay in a core's cache (the
# integer model's tables, 3 M values: built in 0.16 s instead of 0.32).
_EXP_CHUNK = 1 << 14


def _chunked(compute, x: np.ndarray) -> np.ndarray:
    """compute(x chunk, out chunk) over x (any shape) in _EXP_CHUNK pieces; a 0-d x gives a numpy scalar."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_x.size, _EXP_CHUNK):
        compute(flat_x[start : start + _EXP_CHUNK], flat_out[start : start + _EXP_CHUNK])
    return out[()] if out.ndim == 0 else out


def deterministic_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) in float64 from +, -, *, floor and ldexp only (|relative error| < 1e-15), so the same bits on
    every IEEE-754 machine: libm's exp (and numpy's SIMD exp) may differ in the last bit between machines.
    Computed in chunks, in place: every element by the same operations in the same order."""
    return _chunked(_exp_chunk, x)


def _exp_chunk(x: np.ndarray, out: np.ndarray) -> None:
    ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # Cody-Waite split of ln 2
    n = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - n * ln2_hi) - n * ln2_lo  # |r| <= ~0.35
    term = np.ones_like(r)
    total = np.ones_like(r)
    for k in range(1, 20):  # Taylor series: the 19th term is below 1e-25
        term *= r  # term = term * r / k, total = total + term: in place, the same two roundings
        term /= float(k)
        total += term
    np.ldexp(total, n.astype(np.int64), out=out)


def deterministic_log2(y: np.ndarray) -> np.ndarray:
    """log2(y) for y > 0 from frexp, +, -, *, / only (the atanh series of the mantissa). Computed in chunks,
    in place, as deterministic_exp."""
    return _chunked(_log2_chunk, y)


def _log2_chunk(y: np.ndarray, out: np.ndarray) -> None:
    mantissa, exponent = np.frexp(y)  # y = m * 2**e, m in [0.5, 1)
    small = mantissa < 0.7071067811865476
    mantissa = np.where(small, mantissa * 2.0, mantissa)  # m in [0.707, 1.414)
    exponent = exponent - small.astype(np.int64)
    s = (mantissa - 1.0) / (mantissa + 1.0)  # |s| < 0.172
    s2 = s * s
    total = np.zeros_like(s)
    for k in reversed(range(25)):  # 2 * sum s**(2k+1) / (2k+1) = ln m
        total *= s2  # total = total * s2 + c: in place, the same two roundings
        total += 1.0 / float(2 * k + 1)
    out[:] = exponent + 2.0 * s * total * 1.4426950408889634
