"""codec.exact: the chunked, in-place forms give the very bits of the plain formulas (every table of the
integer model and every predictor's std levels are built from them: one bit off and old files fail)."""

import numpy as np
import pytest

from codec.exact import _EXP_CHUNK, deterministic_exp, deterministic_log2


def plain_exp(x):
    x = np.asarray(x, dtype=np.float64)
    ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
    n = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - n * ln2_hi) - n * ln2_lo
    term, total = np.ones_like(r), np.ones_like(r)
    for k in range(1, 20):
        term = term * r / float(k)
        total = total + term
    return np.ldexp(total, n.astype(np.int64))


def plain_log2(y):
    mantissa, exponent = np.frexp(np.asarray(y, dtype=np.float64))
    small = mantissa < 0.7071067811865476
    mantissa = np.where(small, mantissa * 2.0, mantissa)
    exponent = exponent - small.astype(np.int64)
    s = (mantissa - 1.0) / (mantissa + 1.0)
    s2 = s * s
    total = np.zeros_like(s)
    for k in reversed(range(25)):
        total = total * s2 + 1.0 / float(2 * k + 1)
    return exponent + 2.0 * s * total * 1.4426950408889634


def bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.int64)


@pytest.mark.parametrize("size", [0, 1, _EXP_CHUNK - 1, _EXP_CHUNK, 3 * _EXP_CHUNK + 5])
def test_chunked_forms_give_the_plain_formulas_bits(size):
    rng = np.random.default_rng(size)
    x = np.concatenate([rng.normal(0.0, 12.0, size), [0.0, -0.0, 1e-300, 709.7, -745.1, -24.0, 24.0]])
    np.testing.assert_array_equal(bits(deterministic_exp(x)), bits(plain_exp(x)))
    y = np.concatenate([np.abs(rng.normal(0.0, 1e3, size)) + 1e-300, [1.0, 0.5, 2.0, 1e-310, 1e308]])
    np.testing.assert_array_equal(bits(deterministic_log2(y)), bits(plain_log2(y)))


def test_shapes_and_scalars_come_back_as_given():
    grid = np.linspace(-3.0, 3.0, 12).reshape(3, 4)
    assert deterministic_exp(grid).shape == deterministic_log2(np.exp2(grid)).shape == (3, 4)
    for value in (1.5, -0.25):
        assert isinstance(deterministic_exp(value), np.floating) and deterministic_exp(value) == plain_exp(value)
    assert deterministic_log2(3.0) == plain_log2(3.0) and np.ndim(deterministic_log2(3.0)) == 0
