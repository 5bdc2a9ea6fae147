"""codec.kernels: the compiled coders push and pop exactly what constriction does, and the blend predictor's
compiled coder codes exactly the bits of predictive.py's numpy coder."""

import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from codec_toymodel import context_of, smooth_image

from codec import ans, kernels, predictive
from codec.ans import RawParts, Stack

HERE = Path(__file__).parent
python_pop = kernels.PYTHON_FORMS["_pop"]
compiled = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                              reason="numba is not installed: the numpy coder runs")


@pytest.fixture
def plain(monkeypatch):
    """The kernels as plain Python, calling each other as plain Python (numba not needed)."""
    for name, function in kernels.PYTHON_FORMS.items():
        monkeypatch.setitem(kernels.__dict__, name, function)
    return kernels.PYTHON_FORMS


def random_words(rng, n: int) -> np.ndarray:
    words = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    if n:
        words[-1] |= 1  # a compressed stack never ends in a zero word
    return words


def frequency_rows(rng, n: int) -> np.ndarray:
    """float32 rows as the coder gets them: the blend's own table rows and random integer rows summing to 2**24,
    peaked and flat."""
    every, _ = predictive._every_table(*predictive.TABLE_LEVELS[predictive.BLEND])
    table = every.rows[rng.integers(0, len(every.rows), size=n // 2)]
    spread = rng.exponential(size=(n - n // 2, 256)) ** rng.uniform(0.5, 8.0, size=(n - n // 2, 1))
    counts = np.floor(spread / spread.sum(axis=1, keepdims=True) * (2**24 - 16 * 256)) + 16
    counts[np.arange(len(counts)), rng.integers(0, 256, len(counts))] += 2**24 - counts.sum(axis=1)
    return np.concatenate([table, counts.astype(np.float32)])


def python_pops(stack: Stack, rows: np.ndarray) -> np.ndarray:
    """Pop one symbol per row with the kernel's _pop (plain Python) and leave the stack as it pops it."""
    parts = stack.raw_parts()
    cumulative, state, position, symbols = kernels.left_cumulatives(rows), np.uint64(parts.head), parts.length, []
    for row in range(len(rows)):
        symbol, position, state = python_pop(cumulative, row, parts.buffer, position, state)
        symbols.append(symbol)
    stack.set_raw_parts(RawParts(int(state), parts.buffer, position))
    return np.array(symbols)


@pytest.mark.parametrize("below", [0, 1, 2, 3, 50])
def test_raw_parts_give_back_the_same_stack(below):
    rng = np.random.default_rng(below)
    stack = Stack.from_words(random_words(rng, below))
    words, bits, valid = stack.words(), stack.num_bits(), stack.num_valid_bits()
    parts = stack.raw_parts(room=10)
    assert parts.length == max(0, below - 2) and (parts.head >= 2**32 or parts.length == 0)
    assert len(parts.buffer) >= parts.length + 10 and stack.in_raw_parts
    assert (stack.num_bits(), stack.num_valid_bits(), stack.is_empty()) == (bits, valid, below == 0)
    copy = stack.clone()
    stack.set_raw_parts(parts)
    assert np.array_equal(stack.words(), words) and np.array_equal(copy.words(), words)
    stack.push_uniform(np.arange(5), 7)  # constriction takes the stack back from its raw parts
    assert not stack.in_raw_parts and np.array_equal(stack.pop_uniform(5, 7), np.arange(5))
    assert np.array_equal(stack.words(), words)


def test_a_head_that_breaks_the_coders_invariant_is_refused():
    with pytest.raises(Exception, match="head"):
        Stack().set_raw_parts(RawParts(5, np.ones(3, dtype=np.uint32), 3))


@pytest.mark.parametrize("below", [0, 2, 40])
def test_the_kernels_pop_is_constrictions_on_pushed_symbols(below, plain):
    rng = np.random.default_rng(below + 1)
    rows = frequency_rows(rng, 400)
    symbols = np.array([rng.choice(256, p=row / row.sum()) for row in rows.astype(np.float64)], dtype=np.int32)
    stack = Stack.from_words(random_words(rng, below))
    stack.push_categorical(symbols, rows)
    ours, theirs = Stack.from_words(stack.words()), Stack.from_words(stack.words())
    assert np.array_equal(python_pops(ours, rows), symbols)
    assert np.array_equal(theirs.pop_categorical(rows), symbols)
    assert np.array_equal(ours.words(), theirs.words())


@pytest.mark.parametrize("words", [0, 1, 2, 5, 300])
def test_the_kernels_pop_is_constrictions_on_any_words(words, plain):
    """Popping what was never pushed (arbitrary quantiles, an emptying stack): the same symbols, the same stack."""
    rng = np.random.default_rng(words + 7)
    rows = frequency_rows(rng, 600)
    data = random_words(rng, words)
    ours, theirs = Stack.from_words(data), Stack.from_words(data)
    assert np.array_equal(python_pops(ours, rows), theirs.pop_categorical(rows))
    assert np.array_equal(ours.words(), theirs.words())


def tiles(rng):
    """(pixels, context) pairs: 1-4 channels, edge shapes, smooth and noisy, each context shape."""
    for channels in (1, 2, 3, 4):
        for height, width in [(1, 1), (1, 7), (6, 1), (9, 13), (32, 32)]:
            for image in (smooth_image(rng, channels, height + 1, width + 1, noise=4.0),
                          rng.integers(0, 256, size=(channels, height + 1, width + 1), dtype=np.uint8)):
                tile = np.ascontiguousarray(image[:, 1:, 1:])
                for which in ("", "above", "left", "above+left"):
                    yield tile, context_of(image, 1, 1, height, width, which)


def decode_with(forms, monkeypatch, stack: Stack, shape, context, strict: bool = True,
                distribution: str = predictive.BLEND) -> np.ndarray:
    """Decode with the kernels `forms` (None: the numpy coder); `strict`: they must have run (no fallback)."""
    monkeypatch.setattr(kernels, "ready", lambda *_: forms)
    with warnings.catch_warnings():
        if strict and forms is not None:
            warnings.simplefilter("error", RuntimeWarning)  # a kernel that fails (and falls back) fails the test
        pixels = predictive.decode(stack, *shape, context, distribution)
    assert not strict or stack.in_raw_parts == (forms is not None)  # the kernels leave the stack in raw parts
    return pixels


def encode_with(forms, monkeypatch, stack: Stack, tile, context, strict: bool = True,
                distribution: str = predictive.BLEND) -> None:
    """Encode with the kernels `forms` (None: the numpy coder); `strict`: they must have run (no fallback)."""
    monkeypatch.setattr(kernels, "ready", lambda *_: forms)
    with warnings.catch_warnings():
        if strict and forms is not None:
            warnings.simplefilter("error", RuntimeWarning)
        predictive.encode(stack, tile, context, distribution)
    assert not strict or stack.in_raw_parts == (forms is not None)


@compiled
@pytest.mark.parametrize("distribution", predictive.BLENDS)
def test_the_compiled_coder_writes_and_reads_the_numpy_coders_bits(monkeypatch, distribution):
    """Pushed by the kernels and by numpy + constriction: the same words; popped by each: the same pixels and
    stack."""
    rng = np.random.default_rng(3)
    forms = kernels.compiled()
    for tile, context in tiles(rng):
        below = random_words(rng, 3)
        fast, slow = Stack.from_words(below), Stack.from_words(below)
        encode_with(forms, monkeypatch, fast, tile, context, distribution=distribution)
        encode_with(None, monkeypatch, slow, tile, context, distribution=distribution)
        assert np.array_equal(fast.words(), slow.words())
        assert np.array_equal(decode_with(forms, monkeypatch, fast, tile.shape, context, distribution=distribution), tile)
        assert np.array_equal(decode_with(None, monkeypatch, slow, tile.shape, context, distribution=distribution), tile)
        assert np.array_equal(fast.words(), slow.words()) and np.array_equal(fast.words(), below)


@compiled
@pytest.mark.parametrize("distribution", predictive.BLENDS)
def test_a_recorded_tile_pushed_again_is_the_tile_encoded_there(monkeypatch, distribution):
    """encode(..., record=True) returns what it pushed; push_recorded pushes it onto another stack: the words
    of encoding the tile there (the kernels' or the numpy coder's). Without the kernels nothing is recorded,
    and push_recorded leaves the stack alone and says so."""
    rng = np.random.default_rng(8)
    forms = kernels.compiled()
    monkeypatch.setattr(kernels, "ready", lambda *_: forms)
    for tile, context in itertools.islice(tiles(rng), 0, None, 7):
        recorded = predictive.encode(Stack.from_words(random_words(rng, 2)), tile, context, distribution, record=True)
        assert recorded.distribution == distribution and len(recorded.rows) == tile.size
        below = random_words(rng, int(rng.integers(0, 50)))
        again, encoded, numpy_coded = (Stack.from_words(below) for _ in range(3))
        assert predictive.push_recorded(again, recorded)
        encode_with(forms, monkeypatch, encoded, tile, context, distribution=distribution)
        encode_with(None, monkeypatch, numpy_coded, tile, context, distribution=distribution)
        assert np.array_equal(again.words(), encoded.words()) and np.array_equal(again.words(), numpy_coded.words())
        monkeypatch.setattr(kernels, "ready", lambda *_: None)
        assert predictive.encode(Stack(), tile, context, distribution, record=True) is None
        untouched = Stack.from_words(below)
        assert not predictive.push_recorded(untouched, recorded) and np.array_equal(untouched.words(), below)
        monkeypatch.setattr(kernels, "ready", lambda *_: forms)


@compiled
@pytest.mark.parametrize("distribution", predictive.BLENDS)
def test_the_compiled_decoder_gives_the_numpy_decoders_pixels_from_any_words(monkeypatch, distribution):
    """Every pop's mean and std (and so every table row) must be the numpy decoder's: from arbitrary words the
    pixels depend on each of them, and a single difference shows."""
    rng = np.random.default_rng(4)
    forms = kernels.compiled()
    monkeypatch.setattr(ans, "COPY_WORDS_PER_VALUE", 10**9)  # however large the stack, the kernels take it
    for tile, context in tiles(rng):
        data = random_words(rng, int(rng.integers(0, 400)))
        fast, slow = Stack.from_words(data), Stack.from_words(data)
        got = decode_with(forms, monkeypatch, fast, tile.shape, context, distribution=distribution)
        assert np.array_equal(got, decode_with(None, monkeypatch, slow, tile.shape, context, distribution=distribution))
        assert np.array_equal(fast.words(), slow.words())


@pytest.mark.parametrize("distribution", predictive.BLENDS)
def test_the_kernels_as_plain_python_code_the_numpy_coders_bits(monkeypatch, plain, distribution):
    """The kernels' logic, without numba: the same words and pixels on small tiles."""
    rng = np.random.default_rng(5)
    forms = plain
    for channels, (height, width), which in [(3, (5, 6), "above+left"), (1, (4, 3), "left"), (4, (2, 5), "")]:
        image = smooth_image(rng, channels, height + 1, width + 1, noise=5.0)
        tile = np.ascontiguousarray(image[:, 1:, 1:])
        context = context_of(image, 1, 1, height, width, which)
        fast, slow = Stack(), Stack()
        encode_with(forms, monkeypatch, fast, tile, context, distribution=distribution)
        encode_with(None, monkeypatch, slow, tile, context, distribution=distribution)
        assert np.array_equal(fast.words(), slow.words())
        for pushed, data in ((True, fast.words()), (False, random_words(rng, 30))):
            fast, slow = Stack.from_words(data), Stack.from_words(data)
            got = decode_with(forms, monkeypatch, fast, tile.shape, context, distribution=distribution)
            assert np.array_equal(got, decode_with(None, monkeypatch, slow, tile.shape, context,
                                                   distribution=distribution))
            assert np.array_equal(fast.words(), slow.words())
            assert not pushed or (np.array_equal(got, tile) and fast.is_empty())


def test_kernels_that_fail_leave_the_numpy_coder(monkeypatch):
    def broken(*args):
        raise RuntimeError("no machine code here")

    monkeypatch.setattr(kernels, "_failed", False)
    rng = np.random.default_rng(6)
    tile = smooth_image(rng, 3, 9, 7)
    stack = Stack()
    with pytest.warns(RuntimeWarning, match="blend coder is off"):
        encode_with({"_code_tile": broken, "_push": broken}, monkeypatch, stack, tile, predictive.Context(),
                    strict=False)
    assert kernels._failed and not stack.in_raw_parts
    monkeypatch.setattr(kernels, "_failed", False)
    with pytest.warns(RuntimeWarning, match="blend coder is off"):
        assert np.array_equal(decode_with({"_code_tile": broken}, monkeypatch, stack, tile.shape,
                                          predictive.Context(), strict=False), tile)
    assert stack.is_empty() and kernels._failed


@compiled
@pytest.mark.parametrize("distribution", predictive.BLENDS)
def test_a_fresh_process_with_plain_numpy_decodes_with_the_kernel(tmp_path, distribution):
    """What this process encoded, decoded by the compiled kernel in another process with numpy's SIMD off."""
    rng = np.random.default_rng(8)
    pairs = list(tiles(rng))[:40]
    stack = Stack()
    for tile, context in pairs:
        predictive.encode(stack, tile, context, distribution)
    np.save(tmp_path / "words.npy", stack.words())
    np.savez(tmp_path / "tiles.npz", *[tile for tile, _ in pairs])
    contexts = [(c.above, c.left, c.corner) for _, c in pairs]
    np.save(tmp_path / "contexts.npy", np.array(contexts, dtype=object), allow_pickle=True)
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from codec import predictive, kernels; from codec.ans import Stack;"
        "kernels.COMPILE_AFTER_VALUES = 0;"
        "s = Stack.from_words(np.load(sys.argv[2] + '/words.npy'));"
        "t = np.load(sys.argv[2] + '/tiles.npz'); c = np.load(sys.argv[2] + '/contexts.npy', allow_pickle=True);"
        "ok = all(np.array_equal(predictive.decode(s, *t[f'arr_{i}'].shape, predictive.Context(*c[i]), sys.argv[3]),"
        " t[f'arr_{i}']) for i in reversed(range(len(c))));"
        "print('ok' if ok and s.is_empty() and s.in_raw_parts and not kernels._failed else 'bad')"
    )
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "X86_V4 X86_V3 AVX512_ICL AVX512_SPR"}
    out = subprocess.run([sys.executable, "-c", script, str(HERE.parents[1]), str(tmp_path), distribution],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_large_stack_that_constriction_holds_goes_to_the_numpy_coder(monkeypatch, plain):
    """Copying a large stack's words out for one small tile would cost more than the kernels save; a stack in
    raw parts already costs no copy."""
    calls = []

    def counted(*args):
        calls.append(len(args))
        return kernels.PYTHON_FORMS["_code_tile"](*args)

    monkeypatch.setattr(ans, "COPY_WORDS_PER_VALUE", 4)
    rng = np.random.default_rng(9)
    tile = smooth_image(rng, 1, 2, 3)  # 6 values: up to 24 words are copied
    forms = {"_code_tile": counted, "_push": kernels.PYTHON_FORMS["_push"]}
    for words, compiled_ in ((20, True), (30, False)):
        stack = Stack.from_words(random_words(rng, words))
        encode_with(forms, monkeypatch, stack, tile, predictive.Context(), strict=False)
        assert (len(calls) == 1) == compiled_ and stack.in_raw_parts == compiled_
        stack.push_uniform(np.arange(words) % 2, 2)  # constriction holds it again
        assert np.array_equal(stack.pop_uniform(words, 2), np.arange(words) % 2) and not stack.in_raw_parts
        assert np.array_equal(decode_with(forms, monkeypatch, stack, tile.shape, predictive.Context(), strict=False),
                              tile)
        assert len(calls) == (2 if compiled_ else 0)
        calls.clear()



def test_ready_waits_for_enough_values_unless_numba_is_loaded_and_stops_after_a_failure(monkeypatch):
    forms = {"_code_tile": "compiled"}
    monkeypatch.setattr(kernels, "compiled", lambda: forms)
    for name, value in (("_compiled", None), ("_failed", False), ("_values_seen", 0)):
        monkeypatch.setattr(kernels, name, value)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    tile = 3 * 32 * 32  # a 32x32 colour tile's values
    waiting = kernels.COMPILE_AFTER_VALUES // tile
    assert [kernels.ready(tile) for _ in range(waiting)] == [None] * waiting and kernels.ready(tile) is forms
    monkeypatch.setattr(kernels, "_values_seen", 0)
    assert kernels.ready(3 * 128 * 128) is None and kernels.ready(3 * 128 * 128) is forms  # two large tiles
    monkeypatch.setattr(kernels, "_values_seen", 0)
    assert kernels.ready(kernels.COMPILE_AFTER_VALUES + 1) is forms  # a long run at once
    monkeypatch.setattr(kernels, "_values_seen", 0)
    monkeypatch.setitem(sys.modules, "numba", types.ModuleType("numba"))  # the model's kernels loaded it
    assert kernels.ready(1) is forms
    with pytest.warns(RuntimeWarning, match="blend coder is off"):
        kernels.disable("a test")
    assert kernels.ready() is None


# ---------------------------------------------------------------------------------------------- adaptive contexts


def adaptive_stream(forms, monkeypatch, pairs, distribution=predictive.ADAPTIVE):
    """`pairs` (pixels, context) as one stream's `distribution` (STATEFUL) tiles, the first popped first, with the
    kernels `forms`: recorded in that order, pushed last first, popped back. (The recordings, the words, the
    decoded tiles, the encoder's and the decoder's statistics.)"""
    monkeypatch.setattr(kernels, "always", lambda: forms)
    state = predictive.AdaptiveState()
    recorded = [predictive.record_adaptive(tile, context, state, distribution) for tile, context in pairs]
    stack = Stack()
    for one in reversed(recorded):
        predictive.push_rows(stack, one)
    words = stack.words()
    decoder = predictive.AdaptiveState()
    decoded = [predictive.decode(stack, *tile.shape, context, distribution, decoder) for tile, context in pairs]
    assert stack.is_empty()
    return recorded, words, decoded, state, decoder


@compiled
# SMALL_ACROSS left out (~13 s of plain Python): SMALL's numbers and order, REFINED_ACROSS's refinement, both here;
# test_codec_refined compares its compiled and plain forms on a tile
@pytest.mark.parametrize("distribution", [d for d in predictive.STATEFUL if d != predictive.SMALL_ACROSS])
def test_adaptive_tiles_compiled_and_as_plain_python_are_the_same_bits(monkeypatch, distribution):
    """The STATEFUL distributions (ADAPTIVE, LEAST_SQUARES, CASCADE, PARITY, WIDE, STAGED) have no numpy coder: the
    compiled kernels and their plain Python forms (where numba is missing) must record the same rows, write the
    same words and learn the same statistics, and both decode; only the cascade's tiles touch its second stage's
    statistics, only those with parity (PARITY's, WIDE's and STAGED's) the parity contexts' (after the cascade's),
    and only STAGED's the third stage's (after those)."""
    pairs = list(tiles(np.random.default_rng(31)))[::7]  # every shape and channel count, smooth and noisy
    runs = [adaptive_stream(forms, monkeypatch, pairs, distribution)
            for forms in (kernels.compiled(), kernels.PLAIN_FORMS)]
    for recorded, words, decoded, state, decoder in runs:
        assert all(np.array_equal(got, tile) for got, (tile, _) in zip(decoded, pairs))
        assert np.array_equal(state.sums, decoder.sums) and np.count_nonzero(state.sums[:, 1]) > 100
        parity_rows = kernels.ADAPT_CONTEXTS + kernels.CASCADE_CONTEXTS
        second_stage = np.count_nonzero(state.sums[kernels.ADAPT_CONTEXTS : parity_rows, 1])
        third_rows = parity_rows + kernels.PARITY_CONTEXTS
        with_parity = np.count_nonzero(state.sums[parity_rows:third_rows, 1])
        third_stage = np.count_nonzero(state.sums[third_rows:, 1])
        assert (second_stage > 50) if distribution == predictive.CASCADE else second_stage == 0
        assert (with_parity > 50) if distribution in predictive.PARITIES else with_parity == 0
        assert (third_stage > 50) if distribution in predictive.STAGES else third_stage == 0
    (compiled_rows, compiled_words, _, compiled_state, _), (plain_rows, plain_words, _, plain_state, _) = runs
    assert all(np.array_equal(a.rows, b.rows) and np.array_equal(a.values, b.values)
               for a, b in zip(compiled_rows, plain_rows))
    assert np.array_equal(compiled_words, plain_words) and np.array_equal(compiled_state.sums, plain_state.sums)


def test_adaptive_statistics_carry_from_tile_to_tile(monkeypatch):
    """A tile's rows depend on the tiles coded before it in the stream (and only through the statistics): the
    same tile after others is coded otherwise than first, and its decoder needs the same history."""
    monkeypatch.setattr(kernels, "always", lambda: kernels.PLAIN_FORMS)
    rng = np.random.default_rng(32)
    before = [smooth_image(rng, 3, 8, 8, noise=3.0) for _ in range(3)]
    tile = smooth_image(rng, 3, 8, 8, noise=3.0)
    fresh = predictive.record_adaptive(tile, predictive.Context(), predictive.AdaptiveState())
    state = predictive.AdaptiveState()
    for other in before:
        predictive.record_adaptive(other, predictive.Context(), state)
    learned = state.copy()
    after = predictive.record_adaptive(tile, predictive.Context(), state)
    assert np.array_equal(fresh.values, after.values) and not np.array_equal(fresh.rows, after.rows)
    stack = Stack()
    predictive.push_rows(stack, after)
    words = stack.words()
    assert np.array_equal(predictive.decode(Stack.from_words(words), *tile.shape, predictive.Context(),
                                            predictive.ADAPTIVE, learned), tile)
    wrong = predictive.decode(Stack.from_words(words), *tile.shape, predictive.Context(), predictive.ADAPTIVE,
                              predictive.AdaptiveState())
    assert not np.array_equal(wrong, tile)
    with pytest.raises(ValueError, match="AdaptiveState"):
        predictive.decode(Stack.from_words(words), *tile.shape, predictive.Context(), predictive.ADAPTIVE)


# ---------------------------------------------------------------------------------------------- local least squares


def window_samples(height: int, width: int, y: int, x: int, raster: bool = False) -> list[tuple[int, int]]:
    """The samples of value (y, x) of a (height, width) frame as docs/FORMAT.md defines them: in wavefront order
    (formats 10 and 11), or in raster order (format 12's cascade)."""
    radius = kernels.LS_RADIUS

    def last(row: int) -> int:
        if raster:
            return min(width - 2, x + radius) if row < y else x - 1
        return min(width - 2, x + radius, x + 2 * (y - row) - 1)

    return [(row, column) for row in range(max(2, y - radius), y + 1)
            for column in range(max(2, x - radius), last(row) + 1)]


@pytest.mark.parametrize("raster", [False, True])
@pytest.mark.parametrize("forms", ["compiled", "plain"])
def test_the_least_squares_prediction_solves_the_ridge_normal_equations_of_its_window(forms, raster):
    """_ls_predict's running sums and Cholesky solve give what numpy's solve of the window's normal equations
    gives (built here from the samples one by one), for each channel's features, and nothing near the edges; the
    window in wavefront order or in raster order (the cascade's), and the fit's mean squared error over it."""
    if forms == "compiled" and kernels.compiled() is None:
        pytest.skip("numba is not installed")
    chosen = kernels.compiled() if forms == "compiled" else kernels.PLAIN_FORMS
    rng = np.random.default_rng(41)
    channels, height, width = 3, 14, 17
    frame = np.concatenate([smooth_image(rng, channels, height, width, noise=6.0).reshape(channels, -1)
                            .astype(np.float64), np.full((channels, 1), 128.0)], axis=1)
    # in raster order the running sums' column sums after them (kernels.LS_RING's comment)
    assert height <= kernels.LS_RING  # so the ring holds every row
    moments = np.zeros((kernels.LS_RING * width,
                        sum(kernels.LS_MOMENTS[min(c, 2)] for c in range(channels)) * (1 + raster)))
    scratch = np.empty(2 * kernels.LS_FEATURES[2] + 1)
    for at in range(height * width):  # raster order: every sample before any value after it
        chosen["_ls_moments"](frame, moments, at, width, channels, scratch, raster)
    gram, window_sums = np.empty((13, 13)), np.empty(kernels.LS_MOMENTS[2])
    checked = 0
    for y, x in [(0, 5), (1, 9), (5, 1), (7, width - 1), (2, 2), (6, 8), (13, 16 - 1), (13, 9)]:
        at = y * width + x
        for channel in range(channels):
            solved = np.full((channels, height, 15), -1.0)  # nothing solved before: a solve now
            got = chosen["_ls_predict"](frame, moments, channel, at, width, gram, window_sums, scratch, solved,
                                        raster)
            samples = window_samples(height, width, y, x, raster) if y >= 2 and 2 <= x <= width - 2 else []
            count = kernels.LS_FEATURES[min(channel, 2)]
            if len(samples) < count + 2:
                assert got == -1.0, (y, x, channel)
                continue
            features = np.array([[chosen["_ls_features"](frame, channel, r * width + c, width, scratch),
                                  *scratch[:count]][1:] for r, c in samples])
            values = np.array([frame[channel, r * width + c] for r, c in samples])
            weights = np.linalg.solve(features.T @ features + kernels.LS_RIDGE * np.eye(count), features.T @ values)
            chosen["_ls_features"](frame, channel, at, width, scratch)
            expected = float(np.clip(weights @ scratch[:count], 0.0, 255.0))
            assert abs(got - expected) < 1e-6 * max(1.0, abs(expected)), (y, x, channel, got, expected)
            error = float(np.mean((values - features @ weights) ** 2))
            assert abs(solved[channel, y, 14] - error) < 1e-6 * max(1.0, error), (y, x, channel, error)
            checked += 1
    assert checked >= 9


def test_the_coder_refuses_far_shares_it_cannot_read(monkeypatch):
    """The compiled forms check no index: a `far_shares` of fewer than its two shares is refused before coding."""
    monkeypatch.setattr(kernels, "always", lambda: kernels.PLAIN_FORMS)
    monkeypatch.setattr(kernels, "WIDE_FAR", np.zeros(1))
    with pytest.raises(ValueError, match="far_shares"):
        predictive.record_adaptive(np.zeros((1, 3, 3), np.uint8), predictive.Context(), predictive.AdaptiveState(),
                                   predictive.WIDE)


@pytest.mark.parametrize("problem", ["numbers", "signed"])
def test_the_coder_refuses_stages_it_cannot_read(monkeypatch, problem):
    """The compiled forms check no index: a `staged` of fewer than its four numbers, or residuals without the rows
    of the signed ones, is refused before coding."""
    monkeypatch.setattr(kernels, "always", lambda: kernels.PLAIN_FORMS)
    if problem == "numbers":
        monkeypatch.setattr(kernels, "STAGED_TUNING", np.zeros(3))
    else:
        plain = predictive._blend_frames
        monkeypatch.setattr(predictive, "_blend_frames", lambda values, predictors, signed: plain(values, predictors))
    with pytest.raises(ValueError, match="staged"):
        predictive.record_adaptive(np.zeros((1, 3, 3), np.uint8), predictive.Context(), predictive.AdaptiveState(),
                                   predictive.STAGED)


def test_a_damaged_cache_is_emptied_and_the_forms_compiled_afresh_once(monkeypatch):
    """A compiled form whose cache file was cut short fails its first call with a pickle error: the forms' caches
    are emptied and the forms built again (compiled afresh at their next call), once a process; another failure,
    or any other kind, leaves the numpy coder."""
    import pickle

    flushed = []

    class Cache:
        def flush(self):
            flushed.append(self)

    form = types.SimpleNamespace(_cache=Cache())
    for name, value in (("_compiled", {"_code_tile": form}), ("_failed", False), ("_flushed", False)):
        monkeypatch.setattr(kernels, name, value)
    with pytest.warns(RuntimeWarning, match="compiling it afresh"):
        kernels.disable("UnpicklingError: pickle data was truncated", pickle.UnpicklingError("truncated"))
    assert flushed == [form._cache] and kernels._compiled is None and not kernels._failed
    monkeypatch.setattr(kernels, "_compiled", {"_code_tile": form})
    with pytest.warns(RuntimeWarning, match="blend coder is off"):
        kernels.disable("UnpicklingError: again", pickle.UnpicklingError("again"))
    assert kernels._failed and len(flushed) == 1
    for name, value in (("_compiled", {"_code_tile": form}), ("_failed", False), ("_flushed", False)):
        monkeypatch.setattr(kernels, name, value)
    with pytest.warns(RuntimeWarning, match="blend coder is off"):
        kernels.disable("RuntimeError: no machine code", RuntimeError("no machine code"))
    assert kernels._failed and len(flushed) == 1


IN_CACHE_SCRIPT = """if True:
    import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]
    from codec import kernels
    import twice
    if sys.argv[3] == 'notice':  # an empty cache: building the forms tells, once
        told = []
        kernels.compile_notice = lambda: told.append(1)
        assert kernels.compiled() and kernels.compiled()
        print(len(told), kernels.in_cache(kernels.compiled()['_code_tile']))
    else:
        before = kernels.in_cache(twice.twice)
        twice.twice(3)  # compiled, or loaded from the cache
        print(before, kernels.in_cache(twice.twice))"""


def test_in_cache_tells_whether_numbas_cache_holds_a_form_and_an_empty_one_gets_the_compile_notice(tmp_path):
    """kernels.in_cache reads numba's cache index (not a public API): a cached form compiled in one process is in
    the cache in the next, not before; where the coder's forms are not in it, building them calls
    kernels.compile_notice once (the command line's progress bar then says the first run compiles)."""
    (tmp_path / "twice.py").write_text("import numba\n\n@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run(mode: str) -> str:
        out = subprocess.run([sys.executable, "-c", IN_CACHE_SCRIPT, str(HERE.parents[1]), str(tmp_path), mode],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    import numba

    assert kernels.in_cache(numba.njit(cache=False)(lambda x: x)) is False  # no cache: every process compiles
    assert run("twice") == "False True"  # compiled here, written to the cache
    assert run("twice") == "True True"  # loaded from it
    assert run("notice") == "1 False"  # the coder's forms: an empty cache (built, not compiled: no call)


# (_code_tile's argument, the axis it loses an entry along (None: an integer one lower, or the position one past the
# words), whether the tile is encoded, the distribution): each an array too small (or a number out of range) for what
# the other arguments ask, which the compiled forms would read or write past the end of.
TOO_SMALL = [("errors", 0, False, predictive.REFINED_ACROSS), ("errors", 2, False, predictive.REFINED_ACROSS),
             ("residuals", 1, False, predictive.REFINED_ACROSS), ("cumulative", 0, False, predictive.PHOTO),
             ("cumulative", 1, False, predictive.PHOTO), ("levels", None, False, predictive.PHOTO),
             ("position", None, False, predictive.PHOTO), ("coded", 1, True, predictive.PHOTO),
             *((name, axis, False, predictive.REFINED_ACROSS) for name, axis in (
                 ("refine_prefix", 0), ("refine_prefix", 1), ("refine_counters", 0), ("refine_counters", 1),
                 ("refine_weights", 0), ("refine_weights", 1), ("refine_maps", 0), ("refine_maps", 1),
                 ("refine_residual", 0), ("refine_residual", 1), ("refine_stretch", 0), ("refine_reciprocal", 0))),
             ("refine_record", 1, True, predictive.REFINED_ACROSS)]


def smaller(value, axis):
    """`value` with one entry fewer along `axis`, of the same type to numba (C-contiguous, writable or not as it
    was: another type would compile _code_tile again); an integer one lower."""
    if axis is None:
        return value - 1
    cut = np.ascontiguousarray(np.take(value, np.arange(value.shape[axis] - 1), axis=axis))
    cut.flags.writeable = value.flags.writeable
    return cut


@pytest.mark.parametrize("form", ["plain", pytest.param("compiled", marks=compiled)])
def test_code_tile_refuses_arrays_smaller_than_its_other_arguments_ask(form):
    """The compiled forms check no index, so _code_tile checks its arrays' sizes against what its other arguments
    ask before any value is coded: one entry fewer anywhere (or a position past the words) is a ValueError, where
    the arrays as predictive makes them code the tile."""
    code_tile = kernels.PLAIN_FORMS["_code_tile"] if form == "plain" else kernels.always()["_code_tile"]
    names = list(inspect.signature(kernels.PYTHON_FORMS["_code_tile"]).parameters)
    rng = np.random.default_rng(5)
    tile = smooth_image(rng, 3, 6, 5).astype(np.float64)
    words = random_words(rng, 64)

    def code(distribution, encode, change=None):
        def call(*args):
            args = list(args)
            if change is not None:
                at = names.index(change[0])
                args[at] = len(words) + 1 if change[0] == "position" else smaller(args[at], change[1])
            return code_tile(*args)

        refinement = predictive.Refinement(distribution) if distribution in predictive.REFINEMENTS else None
        stack = (predictive._NO_WORDS, 0, 0) if encode else (words, len(words), (1 << 40) + 12345)
        return predictive._kernel_tile({"_code_tile": call}, tile if encode else np.zeros_like(tile), 0, 0, encode,
                                       distribution, *stack, predictive.AdaptiveState().sums, refinement)

    for distribution in {case[3] for case in TOO_SMALL}:
        for encode in (False, True):
            frame, coded, *_ = code(distribution, encode)  # as predictive makes them: coded
            assert frame.shape == (3, 31) and (coded.shape == (2, 90) if encode else coded.size == 0)
    for name, axis, encode, distribution in TOO_SMALL:
        with pytest.raises(ValueError):
            code(distribution, encode, (name, axis))
