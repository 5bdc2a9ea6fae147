"""A validating stack of bits: constriction's AnsCoder behind push/pop methods that check every parameter.

constriction accepts some bad inputs silently (a negative probability corrupts decoding, a NaN mean is taken as
is) and panics on others (std <= 0 raises a BaseException that `except Exception` misses). Every array is
therefore checked here, before it reaches the coder, and any problem is raised as CodingError.

Stack discipline (as in craystack): `push_*` puts symbols on top of the stack, `pop_*` takes them off the top.
One push of an array pops back as the same array in the same order; separate pushes come back last-in,
first-out. Popping from a stack that holds no bits never fails: it returns a deterministic (useless) sample, so
bits-back code must make sure there are bits to pop (see bitsback.py).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from dataclasses import dataclass
from typing import Iterator

import constriction
import numpy as np

from codec import kernels
from codec.errors import CodingError

_AnsCoder = constriction.stream.stack.AnsCoder
_models = constriction.stream.model

# constriction panics for supports of 2**24 symbols or more (24-bit probabilities).
MAX_SUPPORT = 2**24 - 1

# Categorical supports are capped far below constriction's 2**24: the last-symbol floor below (LAST_FLOOR)
# only protects supports much smaller than 2**24.
MAX_CATEGORIES = 2**16

# constriction 0.5's lazy Categorical (perfect=False) computes, in float32, left_cumulative(last symbol) =
# floor(sum(p[:-1]) * scale) + K - 1 with scale = (2**24 - K) / sum(p). When the last entry is 0 or tiny,
# rounding can push that to 2**24, the last symbol gets probability 0 and the coder PANICS ("leakiness should
# guarantee nonzero probabilities"; found by the property test, e.g. row [0.9700391, 0] with symbol 1).
# Raising the last entry to at least 2**-20 of its row gives it ~16 units of 2**-24, far beyond the few
# units of float32 rounding; the cost is at most ~1.5e-6 bit per symbol.
LAST_FLOOR = 2.0**-20

# Negative table entries with |value| <= this fraction of the row's largest entry are float noise from CDF
# differences and are set to 0. Anything more negative is a bug in the caller and raises.
NEGATIVE_TOLERANCE = 1e-6

# One shared family object per model kind: families are stateless.
_CATEGORICAL_FAMILY = _models.Categorical(perfect=False)


def constriction_version() -> str:
    """The installed constriction version: a different version may write a different bitstream."""
    return importlib.metadata.version("constriction")


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    """Turn anything constriction raises into CodingError, including pyo3's PanicException (a BaseException).

    Validation should make this unreachable; it is the last line of defence so that no input ever crashes the
    process with a Rust panic.
    """
    try:
        yield
    except (ValueError, KeyError, TypeError, OverflowError) as error:
        raise CodingError(f"{what}: {error}") from error
    except BaseException as error:  # noqa: BLE001 - only panics are converted, everything else re-raised
        if type(error).__name__ == "PanicException":
            raise CodingError(f"{what}: constriction panicked: {error}") from error
        raise


# ---------------------------------------------------------------------------------------------------- checks


def _check_symbols(symbols: np.ndarray, lo: int, hi: int, n: int | None = None) -> np.ndarray:
    """1-D integer symbols within [lo, hi] -> contiguous int32 (constriction needs exactly that)."""
    symbols = np.asarray(symbols)
    if symbols.ndim != 1:
        raise CodingError(f"symbols must be 1-D, got shape {symbols.shape}")
    if symbols.dtype.kind not in "iu":
        raise CodingError(f"symbols must be integers, got dtype {symbols.dtype}")
    if n is not None and symbols.shape[0] != n:
        raise CodingError(f"{symbols.shape[0]} symbols but parameters for {n}")
    if symbols.size and (symbols.min() < lo or symbols.max() > hi):
        raise CodingError(f"symbol out of range [{lo}, {hi}]: min {symbols.min()}, max {symbols.max()}")
    return np.ascontiguousarray(symbols, dtype=np.int32)


def _check_support(lo: int, hi: int) -> tuple[int, int]:
    lo, hi = int(lo), int(hi)
    if hi < lo:
        raise CodingError(f"empty support [{lo}, {hi}]")
    if hi - lo + 1 > MAX_SUPPORT:
        raise CodingError(f"support [{lo}, {hi}] has {hi - lo + 1} symbols, at most {MAX_SUPPORT} allowed")
    if lo < -(2**31) or hi >= 2**31:
        raise CodingError(f"support [{lo}, {hi}] does not fit int32")
    return lo, hi


def _check_gaussian(means: np.ndarray, stds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite means, finite positive stds, equal 1-D shapes -> contiguous float64."""
    means = np.ascontiguousarray(means, dtype=np.float64)  # (N,)
    stds = np.ascontiguousarray(stds, dtype=np.float64)  # (N,)
    if means.ndim != 1 or means.shape != stds.shape:
        raise CodingError(f"means and stds must be 1-D of equal length, got {means.shape} and {stds.shape}")
    if not np.all(np.isfinite(means)):
        raise CodingError("non-finite mean (NaN or inf)")
    if not np.all(np.isfinite(stds)):
        raise CodingError("non-finite std (NaN or inf)")
    if stds.size and stds.min() <= 0:
        raise CodingError(f"std must be > 0, got {stds.min()}")
    return means, stds


@dataclass(frozen=True)
class Tables:
    """Probability tables that passed `check_tables`: pass them to push/pop_categorical to skip a second check."""

    rows: np.ndarray  # (N, K) or (K,) float32, C-contiguous, what constriction gets
    sums: np.ndarray  # (N,) or (1,) row sums of `rows` (float32 or float64): p(symbol) = rows[symbol] / sum


def check_tables(tables: np.ndarray | Tables) -> Tables:
    """Probability tables, one row per symbol (N, K) or one shared row (K,) -> float32 rows for constriction.

    Rows need not sum to 1. Tiny negatives (float noise) become 0; real negatives, NaN, inf and rows without a
    positive entry raise. Rows whose sum is so large or so small that constriction would reject them
    (sum overflowing float32, denormal sums) are normalised first, and the last entry of each row is raised
    to LAST_FLOOR of the row's sum (see there: otherwise constriction can panic). The result is a pure function of the
    input, so encoder and decoder feed identical tables to the coder. Works in float32 without float64
    copies: pixel tables are large.
    """
    if isinstance(tables, Tables):
        return tables
    tables = np.asarray(tables)
    if tables.ndim not in (1, 2) or tables.shape[-1] < 1:
        raise CodingError(f"tables must be (N, K) or (K,) with K >= 1, got shape {tables.shape}")
    if tables.dtype.kind != "f":
        raise CodingError(f"tables must be floating point, got dtype {tables.dtype}")
    if tables.shape[-1] > MAX_CATEGORIES:
        raise CodingError(f"{tables.shape[-1]} categories, at most {MAX_CATEGORIES} allowed")
    shape = tables.shape
    rows = tables.astype(np.float32, copy=False).reshape(-1, shape[-1])  # (N, K); inf if float64 overflowed
    owned = rows is not tables and not np.shares_memory(rows, tables)  # may we modify rows in place?
    if rows.size == 0:
        return Tables(np.ascontiguousarray(rows.reshape(shape)), np.ones(len(rows), np.float32))
    # Two passes over the table (it is large: N pixels x 256): the global minimum, and the row sums, which
    # are NaN or inf whenever a row holds a NaN or an inf (or sums past float32, told apart below).
    if rows.min() < 0:
        row_max = rows.max(axis=1)  # (N,) NaN rows fall through to the finiteness check below
        if np.any(rows.min(axis=1) < -NEGATIVE_TOLERANCE * row_max):
            raise CodingError("negative probability beyond float noise (a bug in the model?)")
        rows, owned = np.maximum(rows, np.float32(0)), True
    with np.errstate(over="ignore", invalid="ignore"):
        sums = rows.sum(axis=1)  # (N,) float32
    if not np.all(np.isfinite(sums)):
        if not np.all(np.isfinite(rows)):
            raise CodingError("non-finite probability (NaN or inf)")
        sums = rows.sum(axis=1, dtype=np.float64)  # finite entries whose sum overflows float32
    if sums.min() <= 0:
        raise CodingError(f"a probability row has no positive entry (row {int(np.argmin(sums))})")
    if sums.min() < 1e-30 or sums.max() > 1e30:
        rows, sums, owned = (rows / sums[:, None].astype(np.float64)).astype(np.float32), np.ones(len(rows)), True
    floor = (sums * LAST_FLOOR).astype(np.float32)  # (N,)
    if shape[-1] > 1 and np.any(rows[:, -1] < floor):
        rows = rows if owned else rows.copy()
        rows[:, -1] = np.maximum(rows[:, -1], floor)
    return Tables(np.ascontiguousarray(rows.reshape(shape)), sums)


def frequency_tables(rows: np.ndarray) -> Tables:
    """What check_tables gives for rows (N, K) float32 that are integer frequencies / 2**24, each >= 1 and each
    row summing to exactly 2**24 (an integer-exact model's tables), without its passes over the table.

    For such rows check_tables changes only the last entry: every partial sum of multiples of 2**-24 below 1
    is exact in float32, whatever numpy's summation order, so each row sums to exactly 1.0, its floor is
    LAST_FLOOR itself, and the last entry is raised to it where below. That is done here, in place (the rows
    must be the caller's to change); the rows' other properties are the model's guarantee and are not
    checked (tests hold the two functions equal on real tables)."""
    if rows.ndim != 2 or rows.dtype != np.float32 or not rows.flags.c_contiguous or rows.shape[-1] < 2:
        raise CodingError(f"frequency tables must be C-contiguous (N, K >= 2) float32, got {rows.dtype} {rows.shape}")
    last = rows[:, -1]
    np.maximum(last, np.float32(LAST_FLOOR), out=last)
    return Tables(rows, np.ones(len(rows), np.float32))


# ---------------------------------------------------------------------------------------------------- stack


# Handing the compiled kernels a stack that constriction holds copies its words out (and back when constriction
# next needs them): ~1 ns a word against the numpy predictor's ~3.4 us a value. Beyond this many words per
# value the kernels are not used (a stack of 3 MiB for a 32x32 colour tile), so that the copies never cost a
# large file more than the kernels save; runs of kernel work pass the words on without copies.
COPY_WORDS_PER_VALUE = 256


def _head_words(head: int) -> np.ndarray:
    """The words constriction appends for its head when it hands out the compressed data: up to the highest
    nonzero one, low word first (none for an empty coder)."""
    high, low = divmod(head, 2**32)
    return np.array([low, high] if high else ([low] if low else []), dtype=np.uint32)


@dataclass(frozen=True)
class RawParts:
    """constriction's AnsCoder as its parts, for a coder that pushes and pops them itself
    (codec/kernels.py): the 64-bit head and the bulk of words below it, buffer[:length] (uint32; the
    buffer may have room past it). Where the bulk is not empty the head is at least 2**32 (the coder's
    invariant); AnsCoder(words()) reads the same head and bulk back."""

    head: int
    buffer: np.ndarray
    length: int

    @classmethod
    def of(cls, words: np.ndarray) -> "RawParts":
        """The parts of compressed words (Stack.words()): its last two words (or its only one) are the head."""
        if len(words) >= 2:
            return cls((int(words[-1]) << 32) | int(words[-2]), words, len(words) - 2)
        return cls(int(words[0]) if len(words) else 0, words, 0)

    def words(self) -> np.ndarray:
        return np.concatenate([self.buffer[: self.length], _head_words(self.head)])

    def with_room(self, room: int) -> "RawParts":
        if len(self.buffer) >= self.length + room:
            return self
        buffer = np.empty(max(2 * len(self.buffer), self.length + room), dtype=np.uint32)
        buffer[: self.length] = self.buffer[: self.length]
        return RawParts(self.head, buffer, self.length)

    def copy(self) -> "RawParts":
        return RawParts(self.head, self.buffer[: self.length].copy(), self.length)

    def check(self) -> None:
        if not (0 <= self.head < 2**64 and 0 <= self.length <= len(self.buffer)) or (self.length and self.head < 2**32):
            raise CodingError("not an ANS coder's head and bulk")


class Stack:
    """A stack of compressed bits (ANS). All arrays are 1-D, one entry per symbol.

    It lives in constriction's AnsCoder, or, after a compiled coder worked on it (codec/kernels.py), as
    that coder's raw parts until constriction is needed again: consecutive predictor tiles then pass the
    stack's words on without copying them."""

    def __init__(self, coder: _AnsCoder | None = None) -> None:
        self._ans: _AnsCoder | None = coder if coder is not None else _AnsCoder()
        self._raw: RawParts | None = None  # set instead of _ans while the stack is in raw parts
        # Values the caller will code with the compiled kernels one call after another from here (a decoder's
        # run of predictor tiles): the words are copied out of constriction once for the whole run.
        self.kernel_run_values = 0

    @property
    def _coder(self) -> _AnsCoder:
        """constriction's coder of this stack, built from its raw parts where it is in them."""
        if self._raw is not None:
            self._ans, self._raw = _AnsCoder(self._raw.words()), None
        return self._ans

    @_coder.setter
    def _coder(self, coder: _AnsCoder) -> None:
        self._ans, self._raw = coder, None

    # --- construction and state

    @classmethod
    def from_words(cls, words: np.ndarray) -> "Stack":
        """A stack holding `words` (as returned by `words()`); an empty array gives an empty stack."""
        words = np.asarray(words)
        if words.ndim != 1 or words.dtype != np.uint32:
            raise CodingError(f"words must be a 1-D uint32 array, got {words.dtype} {words.shape}")
        with _guard("invalid compressed data"):  # e.g. a last word of 0, which ANS never writes
            return cls(_AnsCoder(np.ascontiguousarray(words)))

    def words(self) -> np.ndarray:
        """The compressed data as a fresh 1-D uint32 array (store as little-endian '<u4')."""
        if self._raw is not None:
            return self._raw.words()
        return np.array(self._coder.get_compressed(), dtype=np.uint32, copy=True)

    @property
    def in_raw_parts(self) -> bool:
        """Whether raw_parts() would hand the words on without copying them."""
        return self._raw is not None

    def raw_parts(self, room: int = 0) -> "RawParts":
        """The stack as a compiled coder works on it (see RawParts), with room for `room` more bulk words.
        Copies the words out of constriction only where the stack is not in raw parts already. The stack keeps
        these parts: a coder that fails before set_raw_parts leaves it as it was (it writes only past the
        bulk)."""
        if self._raw is None:
            self._raw, self._ans = RawParts.of(self.words()), None
        self._raw = self._raw.with_room(room)
        return self._raw

    def set_raw_parts(self, parts: "RawParts") -> None:
        """The stack is now `parts` (a compiled coder's result)."""
        parts.check()
        self._ans, self._raw = None, parts

    def kernel_forms(self, values: int) -> dict | None:
        """The compiled kernels (codec/kernels.py) to code `values` values on this stack, or None where the
        numpy coder should: no numba yet, or a stack that constriction holds and is so large that copying its
        words out (and back) would cost more than the kernels save on these values, or on the run of
        `kernel_run_values` that they begin."""
        values = max(values, self.kernel_run_values)
        forms = kernels.ready(values)
        if forms is None or (self._raw is None and self.num_bits() // 32 > COPY_WORDS_PER_VALUE * values):
            return None
        return forms

    def clone(self) -> "Stack":
        if self._raw is not None:
            copy = Stack()
            copy._ans, copy._raw = None, self._raw.copy()
            return copy
        return Stack(self._coder.clone())

    def restore(self, snapshot: "Stack") -> None:
        """Make this stack equal to `snapshot` (a clone taken earlier); `snapshot` must not be used afterwards."""
        self._ans, self._raw = snapshot._ans, snapshot._raw

    def num_bits(self) -> int:
        """Size in bits, rounded up to whole 32-bit words: what the file will hold."""
        if self._raw is not None:
            return 32 * (self._raw.length + len(_head_words(self._raw.head)))
        return int(self._coder.num_bits())

    def num_valid_bits(self) -> int:
        """Size in bits without the leading zeros of the top word: the finer measure for rates."""
        if self._raw is not None:  # constriction's count: the bulk's bits and the head's below its top 1
            return 32 * self._raw.length + max(self._raw.head.bit_length(), 1) - 1
        return int(self._coder.num_valid_bits())

    def is_empty(self) -> bool:
        if self._raw is not None:
            return self._raw.head == 0
        return bool(self._coder.is_empty())

    # --- quantized Gaussian: integer symbols in [lo, hi], bins of width 1, tails folded into lo and hi

    def push_gaussian(self, symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, lo: int, hi: int) -> None:
        means, stds = _check_gaussian(means, stds)
        lo, hi = _check_support(lo, hi)
        symbols = _check_symbols(symbols, lo, hi, n=means.shape[0])
        if lo == hi or symbols.size == 0:  # one-symbol support costs nothing (and constriction panics on it)
            return
        with _guard("push_gaussian"):
            self._coder.encode_reverse(symbols, _models.QuantizedGaussian(lo, hi), means, stds)

    def pop_gaussian(self, means: np.ndarray, stds: np.ndarray, lo: int, hi: int) -> np.ndarray:
        means, stds = _check_gaussian(means, stds)
        lo, hi = _check_support(lo, hi)
        if lo == hi or means.size == 0:
            return np.full(means.shape[0], lo, dtype=np.int32)
        with _guard("pop_gaussian"):
            return np.asarray(self._coder.decode(_models.QuantizedGaussian(lo, hi), means, stds), dtype=np.int32)

    # --- categorical: symbols in [0, K), one table row per symbol (N, K) or one row shared by all (K,)

    def push_categorical(self, symbols: np.ndarray, tables: np.ndarray | Tables) -> None:
        tables = check_tables(tables).rows
        n = tables.shape[0] if tables.ndim == 2 else None
        symbols = _check_symbols(symbols, 0, tables.shape[-1] - 1, n=n)
        if tables.shape[-1] == 1 or symbols.size == 0:  # a certain symbol costs nothing
            return
        with _guard("push_categorical"):
            if tables.ndim == 2:
                self._coder.encode_reverse(symbols, _CATEGORICAL_FAMILY, tables)
            else:
                self._coder.encode_reverse(symbols, _models.Categorical(tables, perfect=False))

    def pop_categorical(self, tables: np.ndarray | Tables, n: int | None = None) -> np.ndarray:
        """Pop one symbol per row of (N, K) tables, or `n` symbols with one shared (K,) table."""
        tables = check_tables(tables).rows
        if tables.ndim == 2:
            if n is not None and n != tables.shape[0]:
                raise CodingError(f"n={n} but {tables.shape[0]} table rows")
            n = tables.shape[0]
        elif n is None or n < 0:
            raise CodingError("a shared (K,) table needs the number of symbols n >= 0")
        if tables.shape[-1] == 1 or n == 0:
            return np.zeros(n, dtype=np.int32)
        with _guard("pop_categorical"):
            if tables.ndim == 2:
                return np.asarray(self._coder.decode(_CATEGORICAL_FAMILY, tables), dtype=np.int32)
            return np.asarray(self._coder.decode(_models.Categorical(tables, perfect=False), int(n)), dtype=np.int32)

    # --- uniform: symbols in [0, size), 2 <= size < 2**24

    def push_uniform(self, symbols: np.ndarray, size: int) -> None:
        size = _check_uniform_size(size)
        symbols = _check_symbols(symbols, 0, size - 1)
        if symbols.size:
            with _guard("push_uniform"):
                self._coder.encode_reverse(symbols, _models.Uniform(size))

    def pop_uniform(self, n: int, size: int) -> np.ndarray:
        size = _check_uniform_size(size)
        if n < 0:
            raise CodingError(f"cannot pop {n} symbols")
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        with _guard("pop_uniform"):
            return np.asarray(self._coder.decode(_models.Uniform(size), int(n)), dtype=np.int32)


def _check_uniform_size(size: int) -> int:
    size = int(size)
    if not 2 <= size <= MAX_SUPPORT:
        raise CodingError(f"uniform size must be in [2, {MAX_SUPPORT}], got {size}")
    return size
