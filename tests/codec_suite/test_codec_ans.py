"""codec.ans.Stack: push/pop round trips, stack order, and validation (CodingError, never a panic)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.ans import Stack, check_tables
from codec.errors import CodingError

LO, HI = -4096, 4096


def random_tables(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n).astype(np.float32)  # (n, k)


def test_gaussian_round_trip_and_empty_at_the_end():
    rng = np.random.default_rng(0)
    n = 1000
    means, stds = rng.normal(0, 300, n), rng.uniform(0.5, 500, n)
    symbols = np.clip(np.rint(means + stds * rng.normal(size=n)), LO, HI).astype(np.int32)
    stack = Stack()
    stack.push_gaussian(symbols, means, stds, LO, HI)
    assert stack.num_bits() > 0 and not stack.is_empty()
    np.testing.assert_array_equal(stack.pop_gaussian(means, stds, LO, HI), symbols)
    assert stack.is_empty() and stack.num_bits() == 0


def test_categorical_round_trip_per_row_and_shared():
    rng = np.random.default_rng(1)
    tables = random_tables(rng, 500, 256)
    symbols = np.array([rng.choice(256, p=t / t.sum()) for t in tables.astype(np.float64)], dtype=np.int32)
    shared = np.array([0.5, 0.25, 0.25])
    shared_symbols = rng.integers(0, 3, 300)
    stack = Stack()
    stack.push_categorical(symbols, tables)
    stack.push_categorical(shared_symbols, shared)  # any integer dtype is accepted (int64 here)
    np.testing.assert_array_equal(stack.pop_categorical(shared, n=300), shared_symbols)
    np.testing.assert_array_equal(stack.pop_categorical(tables), symbols)
    assert stack.is_empty()


def test_stack_order_is_last_in_first_out():
    stack = Stack()
    a, b = np.array([1, 2, 3]), np.array([7, 8])
    table = np.full(10, 0.1)
    stack.push_categorical(a, table)
    stack.push_categorical(b, table)
    np.testing.assert_array_equal(stack.pop_categorical(table, n=2), b)
    np.testing.assert_array_equal(stack.pop_categorical(table, n=3), a)


def test_words_clone_restore():
    rng = np.random.default_rng(2)
    stack = Stack()
    stack.push_categorical(rng.integers(0, 256, 1000), np.ones(256))
    words = stack.words()
    assert words.dtype == np.uint32 and words.ndim == 1 and len(words) * 32 == stack.num_bits()
    assert stack.num_valid_bits() <= stack.num_bits()
    copy = Stack.from_words(words)
    snapshot = stack.clone()
    stack.pop_categorical(np.ones(256), n=10)
    assert stack.num_bits() < snapshot.num_bits()
    stack.restore(snapshot)
    np.testing.assert_array_equal(stack.words(), words)
    np.testing.assert_array_equal(copy.words(), words)
    assert Stack.from_words(np.zeros(0, np.uint32)).is_empty()


def test_certain_symbols_cost_nothing():
    stack = Stack()
    stack.push_categorical(np.zeros(5, np.int32), np.ones((5, 1)))  # K = 1 (constriction rejects it)
    stack.push_gaussian(np.full(5, 3), np.zeros(5), np.ones(5), 3, 3)  # one-point support (constriction panics)
    assert stack.is_empty()
    np.testing.assert_array_equal(stack.pop_gaussian(np.zeros(2), np.ones(2), 3, 3), [3, 3])


def test_tiny_negative_probabilities_are_clipped_and_round_trip():
    # A CDF difference in float can be -1e-9: constriction would silently decode garbage with it.
    table = np.array([[0.5, -1e-9, 0.5, 1e-12]] * 4)
    assert check_tables(table).rows.min() == 0
    stack = Stack()
    stack.push_categorical([0, 2, 2, 0], table)
    np.testing.assert_array_equal(stack.pop_categorical(table), [0, 2, 2, 0])


def test_extreme_but_valid_rows_round_trip():
    # Rows whose sums overflow float32 or are denormal: constriction rejects them unless normalised first.
    table = np.array([[3e38, 3e38, 1.0], [1e-40, 0.0, 1e-41], [1e-30, 1e-30, 1e-30]], dtype=np.float32)
    stack = Stack()
    stack.push_categorical([1, 0, 2], table)
    np.testing.assert_array_equal(stack.pop_categorical(table), [1, 0, 2])


@pytest.mark.parametrize(
    "means, stds",
    [
        ([np.nan], [1.0]),
        ([np.inf], [1.0]),
        ([0.0], [np.nan]),
        ([0.0], [np.inf]),
        ([0.0], [0.0]),
        ([0.0], [-1.0]),
        ([0.0, 1.0], [1.0]),  # length mismatch
    ],
)
def test_bad_gaussian_parameters_raise_coding_error(means, stds):
    stack = Stack()
    with pytest.raises(CodingError):
        stack.push_gaussian(np.zeros(len(means), np.int32), means, stds, LO, HI)
    with pytest.raises(CodingError):
        stack.pop_gaussian(means, stds, LO, HI)


@pytest.mark.parametrize(
    "symbols, lo, hi",
    [
        ([HI + 1], LO, HI),
        ([LO - 1], LO, HI),
        ([[0]], LO, HI),  # 2-D
        ([0.0], LO, HI),  # float symbols
        ([0], 1, 0),  # empty support
        ([0], 0, 2**24),  # support too large: constriction panics
    ],
)
def test_bad_gaussian_symbols_raise_coding_error(symbols, lo, hi):
    with pytest.raises(CodingError):
        Stack().push_gaussian(np.array(symbols), np.zeros(1), np.ones(1), lo, hi)


@pytest.mark.parametrize(
    "symbols, table",
    [
        ([0], [[np.nan, 1.0]]),
        ([0], [[np.inf, 1.0]]),
        ([0], [[0.5, -0.1, 0.5]]),  # a real negative, not float noise
        ([0], [[0.0, 0.0]]),  # no positive entry
        ([2], [[0.5, 0.5]]),  # symbol out of range
        ([-1], [[0.5, 0.5]]),
        ([0, 1], [[0.5, 0.5]]),  # one row for two symbols
        ([0], [[1, 2]]),  # integer table
        ([0], np.ones((1, 1, 2))),  # 3-D table
    ],
)
def test_bad_categorical_inputs_raise_coding_error(symbols, table):
    with pytest.raises(CodingError):
        Stack().push_categorical(np.array(symbols), np.array(table))


def test_bad_tables_raise_on_pop_too():
    stack = Stack()
    stack.push_categorical([1], [0.5, 0.5])
    for table in ([[np.nan, 1.0]], [[-1.0, 1.0]], [[0.0, 0.0]]):
        with pytest.raises(CodingError):
            stack.pop_categorical(np.array(table))
    with pytest.raises(CodingError):
        stack.pop_categorical(np.array([0.5, 0.5]))  # shared table without n


def test_bad_words_raise_coding_error():
    with pytest.raises(CodingError):
        Stack.from_words(np.array([5, 0], np.uint32))  # ANS never writes a last word of 0
    with pytest.raises(CodingError):
        Stack.from_words(np.array([5, 1], np.int64))


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(2, 300),
    st.integers(0, 2**32 - 1),
)
def test_categorical_round_trip_property(n, k, seed):
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, n, k)
    tables[rng.random((n, k)) < 0.3] = 0.0  # some impossible symbols
    tables[np.arange(n), rng.integers(0, k, n)] += 1e-3  # every row keeps a positive entry
    symbols = rng.integers(0, k, n).astype(np.int32)  # even impossible ones must round trip (cost ~24 bits)
    below = rng.integers(0, 2**32, 5, dtype=np.uint64).astype(np.uint32)
    below[-1] |= 1  # a valid non-empty stack underneath
    stack = Stack.from_words(below)
    stack.push_categorical(symbols, tables)
    np.testing.assert_array_equal(stack.pop_categorical(tables), symbols)
    np.testing.assert_array_equal(stack.words(), below)


def test_zero_last_entry_does_not_panic():
    # constriction 0.5's lazy Categorical gives the last symbol probability 0 (and panics) for this row, unless
    # check_tables raises the last entry (see codec.ans.LAST_FLOOR).
    table = np.array([[0.9700391, 0.0]], dtype=np.float32)
    stack = Stack()
    stack.push_categorical([1], table)
    np.testing.assert_array_equal(stack.pop_categorical(table), [1])


@pytest.mark.parametrize("k", [2, 3, 256])
def test_rows_with_tiny_last_entries_round_trip_their_last_symbol(k):
    rng = np.random.default_rng(k)
    n = 3000
    tables = (rng.dirichlet(np.full(k, 0.3), size=n) * rng.choice([1e-3, 1.0, 1e4], size=(n, 1))).astype(np.float32)
    tables[:, -1] *= np.where(rng.random(n) < 0.5, 0.0, 1e-7)  # zero or tiny last entries
    for symbol in (k - 1, k - 2):
        symbols = np.full(n, symbol)
        stack = Stack()
        stack.push_categorical(symbols, tables)
        np.testing.assert_array_equal(stack.pop_categorical(tables), symbols)
    noise = Stack.from_words(rng.integers(1, 2**32, n, dtype=np.uint64).astype(np.uint32))
    assert noise.pop_categorical(tables).max() < k  # decoding arbitrary bits never panics either
