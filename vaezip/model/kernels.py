"""Compiled kernels for the integer pixel tables and activation lookups (numba), with the torch code of
integer.py as the reference.

A pixel table is 256 frequencies per subpixel: for kodim23 that is 300 M values per image, and the torch form
spends most of its time moving such arrays through a dozen elementwise passes. The kernel makes one pass per
pixel, in cache. Its arithmetic is the reference's, operation for operation: integer sums (exact in any
order), IEEE divisions and products of exactly representable values (correctly rounded on every machine) and
table lookups; numba compiles it without fast-math, so no reassociation or contraction changes a value. Tests
hold it to the reference on parameters across and beyond every clamp.

Without numba (a platform with no wheel), `AVAILABLE` is False and integer.py uses the torch form: the same
integers, slower.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from codec.kernels import damaged_cache, flush_caches, njit_forms

try:  # numba is a dependency, but the coder must not break where it cannot be installed
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None


def _frequencies_to_probabilities(weights, mean, inv, edges, sigmoid, centre, first_q, zero_through, full_from,
                                  inv_scale_bits, cdf_bits, probability_bits, out):
    """For each row (pixel) i: the mixture's integer frequencies over the 256 values, as float32 f / 2**24
    into out[i] (integer.py: probabilities(IntegerMixture.frequencies(...))).

    weights, mean, inv: (N, K) float64 integers (mixture weights, means in fixed point, inverse scales in
    2**-inv_scale_bits units); edges: the 255 inner bin edges in fixed point; sigmoid: the CDF table (int32),
    index q - first_q, or where centre >= 0 its upper half from index `centre` on (see _cdf_value);
    zero_through / full_from: its last 0 index and first full index (of the whole table).

    One thread: numba's parallel threading layers (OpenMP beside torch's, TBB, workqueue) are known to hang
    processes at exit or in subprocesses, which a compressor cannot risk. `in_threads` runs it on row ranges
    in Python threads instead (it releases the GIL)."""
    n = weights.shape[0]
    full = np.int64(1) << cdf_bits
    spare = float((1 << probability_bits) - 256)
    scale_out = np.float32(2.0 ** -probability_bits)
    mass = np.empty((1, 256), np.int64)
    # int32 frequencies (< 2**24): their conversion to float32 is exact and vectorizes on every x86-64.
    frequency = np.empty(256, np.int32)
    for i in range(n):
        used_from, used_through = _row_masses(weights, mean, inv, edges, sigmoid, centre, first_q, zero_through,
                                              full_from, inv_scale_bits, cdf_bits, i, mass, 0)
        total = weights[i].sum() * float(full)  # integers: exact in any order
        # Outside the used values the mass is 0 and the frequency floor(0) + 1 = 1.
        frequency[:] = 1
        for v in range(used_from, used_through + 1):
            frequency[v] = np.int32(np.floor(float(mass[0, v]) / total * spare)) + np.int32(1)
        largest = np.argmax(frequency)  # the first largest, as torch.argmax
        frequency[largest] += np.int32((1 << probability_bits) - frequency.sum())
        for v in range(256):
            out[i, v] = np.float32(frequency[v]) * scale_out


def _masses(weights, mean, inv, edges, sigmoid, centre, first_q, zero_through, full_from, inv_scale_bits, cdf_bits,
            out):
    """(N, 256) int64 into out: IntegerMixture._full_masses' integers (the reference the tests hold the
    kernel's masses to exactly)."""
    for i in range(weights.shape[0]):
        _row_masses(weights, mean, inv, edges, sigmoid, centre, first_q, zero_through, full_from, inv_scale_bits,
                    cdf_bits, i, out, i)


def _row_masses(weights, mean, inv, edges, sigmoid, centre, first_q, zero_through, full_from, inv_scale_bits, cdf_bits,
                i, mass, row):
    """mass[row] = sum over components of weight * (CDF(upper edge) - CDF(lower edge)) of pixel i; returns the
    first and last value that any component gives mass to."""
    full = np.int64(1) << cdf_bits
    last = 2 * centre if centre >= 0 else sigmoid.shape[0] - 1  # the whole table's last index
    half = 2.0 ** (inv_scale_bits - 1)
    down = 2.0 ** -inv_scale_bits
    mass[row, :] = 0
    used_from, used_through = 255, 0
    for j in range(weights.shape[1]):
        if weights[i, j] == 0.0:
            # No mass anywhere (a component the channels before ruled out: ~22 % of them in kodim23's second and
            # third channels): skipping it leaves every mass, and so every frequency, as it is; the values only it
            # reached get frequency 1 either way, as values outside the used range.
            continue
        # The position's terms are integers times powers of two, and so is their sum: exact (integer.py).
        offset = (half - mean[i, j] * inv[i, j]) * down - first_q
        slope = inv[i, j] * down
        # The component's CDF at value v's upper edge is sigmoid[index(v)], index non-decreasing in v;
        # below `start` it is 0, from `stop` on it is full (value 255's upper edge: full by definition).
        start = _first_edge_above(edges, offset, slope, last, zero_through + 1, _guess(zero_through, offset, slope), 0)
        stop = _first_edge_above(edges, offset, slope, last, full_from, _guess(full_from - 1, offset, slope), start)
        weight = np.int64(weights[i, j])
        previous = np.int64(0)
        for v in range(start, stop):
            cdf = _cdf_value(sigmoid, centre, full, _index(edges[v], offset, slope, last))
            mass[row, v] += weight * (cdf - previous)
            previous = cdf
        mass[row, stop] += weight * (full - previous)
        used_from = min(used_from, start)
        used_through = max(used_through, stop)
    return used_from, used_through


def _guess(index, offset, slope):
    """About the value whose upper edge has this table index (edges are ~2**15 / 255 fixed-point units apart,
    value 127's at 0)."""
    edge = (index - offset) / slope
    return int(min(max(edge * (255.0 / 32768.0) + 127.0, 0.0), 255.0))


def _first_edge_above(edges, offset, slope, last, target, guess, at_least):
    """The first value v in at_least..255 whose upper edge's table index is >= target (255 if none: value
    255's upper edge is above every index), given that no value below at_least qualifies. The walk starts from
    the guess and moves one value at a time while the exact test says so: the answer never depends on the
    guess, which only saves lookups."""
    guess = min(max(guess, at_least), 255)
    while guess > at_least and _index(edges[guess - 1], offset, slope, last) >= target:
        guess -= 1
    while guess < 255 and _index(edges[guess], offset, slope, last) < target:
        guess += 1
    return guess


def _cdf_value(table, centre, full, index):
    """The CDF table's value at `index` (int64). centre < 0: `table` is the whole table. Else it is the upper
    half, from index `centre` on, of a table symmetric about it (value[centre + k] + value[centre - k] = full
    for every k, checked when the half is made: integer.CdfTable), which gives the same integers: a half of
    the sigmoid table (1.4 MB) stays in a core's L2 cache where the whole (3 MB) does not, and the lookups
    are about half the kernel's time (measured 15 % faster on kodim23's tables)."""
    if centre < 0:
        return np.int64(table[index])
    if index >= centre:
        return np.int64(table[index - centre])
    return full - np.int64(table[centre - index])


def _index(edge, offset, slope, last):
    """The sigmoid table index of a component at `edge`: floor of the exact position, clamped to the table."""
    return np.int64(min(max(offset + edge * slope, 0.0), float(last)))


def _channel_terms(logits, means, inv_scales, coeffs, values, unit_values, channel, exp_values, exp_first_q,
                   edges, sigmoid, centre, first_q, inv_scale_bits, cdf_bits, mix_bits, out_weights, out_mean,
                   out_inv):  # in_threads cuts the first five and the last three by rows
    """Per pixel i and component j, the mixture of `channel` given the channels before it, into out_weights,
    out_mean, out_inv (N, K) float64 integers (integer.py: IntegerMixture._channel_terms, operation for
    operation).

    logits (N, K), means and inv_scales (N, K, C): the split's, clamped; coeffs (N, K, 3) the coupling
    coefficients ((N, K, 0) where the channels are not coupled); values (N, C) the pixels (int);
    unit_values (256,) each value's fixed-point position; exp_values / exp_first_q: the exp table; edges,
    sigmoid, centre, first_q: the CDF as _row_masses reads it."""
    n, k = logits.shape
    full = float(np.int64(1) << cdf_bits)
    last = 2 * centre if centre >= 0 else sigmoid.shape[0] - 1
    exp_last = exp_values.shape[0] - 1
    half = 2.0 ** (inv_scale_bits - 1)
    down = 2.0 ** -inv_scale_bits
    scale_mix = 2.0 ** mix_bits
    one = 2.0 ** 14  # integer.ONE: the fixed point of the coupling coefficients and unit values
    weights = np.empty(k)
    for i in range(n):
        largest = logits[i, 0]
        for j in range(1, k):
            largest = max(largest, logits[i, j])
        for j in range(k):
            index = logits[i, j] - largest - exp_first_q
            weights[j] = max(float(exp_values[np.int64(min(max(index, 0.0), float(exp_last)))]), 1.0)
        for previous in range(channel):
            value = values[i, previous]
            joint_largest = 0.0
            for j in range(k):
                mean = _coupled_mean(means, coeffs, unit_values, values, i, j, previous, one)
                inv = inv_scales[i, j, previous]
                offset = (half - mean * inv) * down - first_q
                slope = inv * down
                upper = full
                if value != 255:
                    upper = float(_cdf_value(sigmoid, centre, np.int64(full), _index(edges[value], offset, slope, last)))
                lower = 0.0
                if value != 0:
                    lower = float(_cdf_value(sigmoid, centre, np.int64(full), _index(edges[value - 1], offset, slope, last)))
                joint = weights[j] * max(upper - lower, 1.0)  # < 2**46: exact
                weights[j] = joint
                joint_largest = max(joint_largest, joint)
            for j in range(k):
                weights[j] = np.floor(weights[j] / joint_largest * scale_mix)
        for j in range(k):
            out_weights[i, j] = weights[j]
            out_mean[i, j] = _coupled_mean(means, coeffs, unit_values, values, i, j, channel, one)
            out_inv[i, j] = inv_scales[i, j, channel]


def _coupled_mean(means, coeffs, unit_values, values, i, j, channel, one):
    """IntegerMixture._coupled_mean of pixel i, component j: the mean of `channel` shifted by the channels
    before it (none where coeffs holds no coefficients)."""
    mean = means[i, j, channel]
    if coeffs.shape[2] == 0 or channel == 0:
        return mean
    if channel == 1:
        return mean + np.floor(coeffs[i, j, 0] * unit_values[values[i, 0]] / one + 0.5)
    mean = mean + np.floor(coeffs[i, j, 1] * unit_values[values[i, 0]] / one + 0.5)
    return mean + np.floor(coeffs[i, j, 2] * unit_values[values[i, 1]] / one + 0.5)


def _table_lookup(q, first_q, values, identity_above, output_per_input, out):
    """out[i] = integer.Table's value at the fixed-point input q[i] (flat float64 arrays): values[q - first_q]
    clamped to the table, or q * output_per_input above it where identity_above. One pass over memory instead
    of the torch form's five (shift, clamp, convert, gather, select); the same exact operations (integer
    differences and comparisons, a truncation of a non-negative integer, a product by a power of two)."""
    last = values.shape[0] - 1
    for i in range(q.shape[0]):
        index = q[i] - first_q
        if identity_above and index > last:
            out[i] = q[i] * output_per_input
        else:
            out[i] = values[np.int64(min(max(index, 0.0), float(last)))]


_PYTHON_FORMS = {function.__name__: function for function in (
    _index, _cdf_value, _guess, _first_edge_above, _row_masses, _frequencies_to_probabilities, _masses,
    _coupled_mean, _channel_terms, _table_lookup)}


frequencies_to_probabilities = masses = first_edge_above = table_lookup = channel_terms = None
if AVAILABLE:
    try:
        # The numba versions of the functions above, bound in this module's globals too: a compiled function
        # calls the others through them (looked up when it compiles, at its first call).
        _functions = njit_forms(_PYTHON_FORMS)
        globals().update(_functions)
        frequencies_to_probabilities = _functions["_frequencies_to_probabilities"]
        masses = _functions["_masses"]
        first_edge_above = _functions["_first_edge_above"]  # for tests
        table_lookup = _functions["_table_lookup"]
        channel_terms = _functions["_channel_terms"]
    except Exception:  # noqa: BLE001 - any failure of numba leaves the torch form, the same integers
        globals().update(_PYTHON_FORMS)
        AVAILABLE = False


# Rows below which a range is not worth a thread of its own (a hand-off costs ~50 us; a table row ~1.5 us).
MIN_ROWS_PER_THREAD = 2048
# (its workers, the pool), made at first use; a forked process, whose copy has no threads, makes its own.
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    """After a fork: the parent's pool has no threads here, and its lock may have been held mid-fork."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # every platform that can fork
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] < workers:
            # A smaller pool is left as it is (another thread may be using it); its idle threads end at exit.
            _pool = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaezip-kernel"))
        return _pool[1]


def in_threads(kernel, rows: tuple, shared: tuple, out: np.ndarray | tuple, threads: int) -> None:
    """kernel(*rows, *shared, out) (or *out, a tuple of arrays) with the row arrays and out cut into up to
    `threads` contiguous ranges, run at once: one in the calling thread, the others in a pool. The compiled
    kernels release the GIL (nogil) and compute every row (element) on its own, so the cut changes no value.
    On the 2-core machine two threads made the table kernel 1.85x faster on its own (each core's L2 cache
    holds the CDF table's half), 1.2x inside the coder, where torch's OpenMP threads still spin on the other
    core after a convolution."""
    outs = out if isinstance(out, tuple) else (out,)
    n = len(outs[0])
    parts = max(1, min(threads, n // MIN_ROWS_PER_THREAD))
    if parts == 1:
        kernel(*rows, *shared, *outs)
        return
    bounds = [n * k // parts for k in range(parts + 1)]
    cut = lambda arrays, k: [array[bounds[k] : bounds[k + 1]] for array in arrays]  # noqa: E731
    pending = []
    try:
        pool = _executor(parts - 1)
        for k in range(1, parts):
            pending.append(pool.submit(kernel, *cut(rows, k), *shared, *cut(outs, k)))
        kernel(*cut(rows, 0), *shared, *cut(outs, 0))
    finally:
        for future in pending:
            future.result()  # waits for every range, and raises what a range raised


def disable(reason: str, error: BaseException | None = None) -> None:
    """Use the torch form from now on (a compile or run failure of the kernel on this platform). Where `error` is a
    damaged cache's (a pickle cut short), the kernels' caches are emptied: the next process compiles afresh."""
    global AVAILABLE
    if AVAILABLE:
        warnings.warn(f"vaezip: the compiled table kernel is off ({reason}); using the slower torch form",
                      RuntimeWarning, stacklevel=2)
        if damaged_cache(error):
            flush_caches(_functions)
    AVAILABLE = False
