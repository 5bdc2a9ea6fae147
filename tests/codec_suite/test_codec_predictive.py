"""codec.predictive: the model-free coder of a stream's first tiles: exact round trips, its order, its rate."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from codec_toymodel import context_of, smooth_image

from codec import kernels, predictive, tilekinds
from codec.ans import Stack
from codec.errors import CodingError

HERE = Path(__file__).parent


def round_trip(pixels: np.ndarray, below: int = 0, context: predictive.Context = predictive.Context(),
               distribution: str = predictive.GAUSSIAN) -> int:
    """Push `pixels` on a stack holding `below` other symbols, pop them back; bits the tile took."""
    stack = Stack()
    marker = np.arange(below) % 11
    stack.push_uniform(marker, 2**16)
    before = stack.num_valid_bits()
    # ADAPTIVE: a stream's first tile, its statistics from zeros on both sides
    state, decoder_state = predictive.AdaptiveState(), predictive.AdaptiveState()
    predictive.encode(stack, pixels, context, distribution, state=state)
    bits = stack.num_valid_bits() - before
    again = Stack.from_words(stack.words())
    np.testing.assert_array_equal(predictive.decode(again, *pixels.shape, context, distribution, decoder_state),
                                  pixels)
    np.testing.assert_array_equal(state.sums, decoder_state.sums)
    np.testing.assert_array_equal(again.pop_uniform(below, 2**16), marker)  # nothing below was touched
    assert again.is_empty()
    return bits


@pytest.mark.parametrize("distribution", predictive.DISTRIBUTIONS)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (2, 2), (13, 29), (32, 32)])
def test_round_trip_of_every_shape(channels, size, distribution):
    rng = np.random.default_rng(channels * 100 + size[0])
    round_trip(smooth_image(rng, channels, *size), below=5, distribution=distribution)
    round_trip(rng.integers(0, 256, size=(channels, *size), dtype=np.uint8), distribution=distribution)
    round_trip(np.full((channels, *size), 255, np.uint8), distribution=distribution)
    round_trip(np.zeros((channels, *size), np.uint8), distribution=distribution)


def test_smooth_tiles_cost_far_less_than_raw_and_noise_stays_bounded():
    rng = np.random.default_rng(1)
    smooth = smooth_image(rng, 3, 32, 32, noise=1.0)  # i.i.d. noise of std 1 alone costs ~2.1 bits per value
    assert round_trip(smooth) < 0.5 * 8 * smooth.size
    flat = np.full((3, 32, 32), 200, np.uint8)
    assert round_trip(flat) < 0.8 * flat.size  # under a bit per value
    noise = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    assert round_trip(noise) < 12 * noise.size  # scales follow the activity: no symbol near 24 bits


def test_wavefronts_cover_every_pixel_once_after_its_neighbours():
    for height, width in [(1, 1), (1, 7), (6, 1), (5, 8), (32, 32)]:
        seen = np.full((height, width), -1)
        for t, (ys, xs) in enumerate(predictive._wavefronts(height, width)):
            assert np.all(seen[ys, xs] == -1)
            seen[ys, xs] = t
            for dy, dx in [(0, -1), (-1, -1), (-1, 0), (-1, 1)]:  # left, above-left, above, above-right
                y, x = ys + dy, xs + dx
                inside = (y >= 0) & (x >= 0) & (x < width)
                assert np.all(seen[y[inside], x[inside]] >= 0) and np.all(seen[y[inside], x[inside]] < t)
        assert np.all(seen >= 0)


@pytest.mark.parametrize("distribution", predictive.DISTRIBUTIONS)
def test_a_fresh_process_decodes_what_this_one_encoded(tmp_path, distribution):
    """The predictor's floats must not depend on the process (or on vectorisation: the encoder computes the
    whole tile at once, the decoder one wavefront at a time)."""
    rng = np.random.default_rng(5)
    pixels = smooth_image(rng, 3, 24, 20, noise=6.0)
    stack = Stack()
    predictive.encode(stack, pixels, distribution=distribution, state=predictive.AdaptiveState())
    np.save(tmp_path / "words.npy", stack.words())
    np.save(tmp_path / "pixels.npy", pixels)
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from codec import predictive; from codec.ans import Stack;"
        "s = Stack.from_words(np.load(sys.argv[2] + '/words.npy')); p = np.load(sys.argv[2] + '/pixels.npy');"
        "assert np.array_equal(predictive.decode(s, *p.shape, distribution=sys.argv[3],"
        " state=predictive.AdaptiveState()), p) and s.is_empty();"
        "print('ok')"
    )
    root = str(HERE.parents[1])
    out = subprocess.run([sys.executable, "-c", script, root, str(tmp_path), distribution], capture_output=True,
                         text=True)
    assert out.stdout.strip() == "ok", out.stderr


# The sha256 of every Laplace table row (predictive._every_table): the tables are part of format 5, built from
# exact operations only; a different digest on any machine or numpy version means files would not decode.
LAPLACE_TABLES_SHA256 = "32013464b4ed6801fa8c61ac5f59c2e49f634ce8c972157e673c80613d945de7"


# The same for format 6's blend, whose levels reach ten lower: format 5's rows are its last 72 levels'.
BLEND_TABLES_SHA256 = "75940567eba2d4477970dc9cb3582b4e4a83fcf24b9edb0c77807b6d8b2797f6"


def test_the_laplace_tables_are_the_same_bits_on_every_machine():
    every, edges = predictive._every_table(*predictive.TABLE_LEVELS[predictive.LAPLACE])
    assert every.rows.dtype == np.float32 and every.rows.shape == (predictive.SCALE_LEVELS * 256, 256)
    assert hashlib.sha256(every.rows.tobytes()).hexdigest() == LAPLACE_TABLES_SHA256
    blend, blend_edges = predictive._every_table(*predictive.TABLE_LEVELS[predictive.BLEND])
    assert blend.rows.shape == ((predictive.SCALE_LEVELS + 10) * 256, 256)
    assert hashlib.sha256(blend.rows.tobytes()).hexdigest() == BLEND_TABLES_SHA256
    assert np.array_equal(blend.rows[10 * 256 :], every.rows) and np.array_equal(blend_edges[10:], edges)


# The same for format 8's rows, built by integer sums from codec/fitted_residuals.npy (itself pinned by
# predictive.FITTED_TABLE_SHA256).
FITTED_ROWS_SHA256 = "037c21da36f48fcedf475673445e5964ec58d8219a83cdb0f1d4cbd7324f4999"


def test_the_fitted_rows_are_the_shipped_tables_with_their_tails_folded():
    offsets = predictive._fitted_offsets()
    levels, edges = predictive.fitted_levels()
    assert offsets.shape == (levels, predictive.FITTED_BINS, 511) and len(edges) == levels - 1 == 40
    blend_edges = predictive._every_table(*predictive.TABLE_LEVELS[predictive.BLEND])[1]
    assert np.array_equal(edges, blend_edges[1::2])  # two of the blend's levels each
    every, fitted_edges = predictive._fitted_every_table()
    assert every.rows.shape == (levels * predictive.FITTED_BINS * 256, 256) and fitted_edges is edges
    assert hashlib.sha256(every.rows.tobytes()).hexdigest() == FITTED_ROWS_SHA256
    assert np.all(every.rows.sum(axis=1, dtype=np.float64) == 2**24) and every.rows.min() >= 16
    rng = np.random.default_rng(0)
    for level, quarter, mean in [(0, 0, 0), (levels - 1, 3, 255), *zip(rng.integers(0, levels, 20),
                                                                       rng.integers(0, 4, 20), rng.integers(0, 256, 20))]:
        table = offsets[level, quarter]  # offsets -255..255
        row = every.rows[(level * predictive.FITTED_BINS + quarter) * 256 + mean]
        assert np.array_equal(row[1:255], table[256 - mean : 510 - mean])  # value v: offset v - mean
        assert row[0] == table[: 256 - mean].sum() and row[255] == table[510 - mean :].sum()
    # The compiled coder's cumulatives, built without the rows: constriction's of the rows, integer for integer.
    assert np.array_equal(predictive._fitted_cumulative(), kernels.left_cumulatives(every.rows))
    # The numpy coder's rows, gathered for the means and stds asked: the same rows, every level and quarter.
    means = np.concatenate([rng.uniform(0, 255, 5000), [0.0, 0.2, 254.7, 255.0]])
    stds = np.concatenate([np.exp(rng.uniform(-2, 6, 5000)), [0.01, 0.3, 300.0, 1.0]])
    rounded = predictive._rounded(means)
    table = np.searchsorted(edges, stds) * 4 + predictive.fitted_bins(means, rounded).astype(np.int64)
    rows = predictive._blend_rows(means, stds, predictive.FITTED)
    assert len(set(table.tolist())) == levels * 4
    assert np.array_equal(rows.rows, every.rows[table * 256 + rounded.astype(np.int64)])
    assert np.array_equal(rows.sums, every.sums[table * 256 + rounded.astype(np.int64)])


@pytest.mark.parametrize("tables", [predictive.CASCADE, predictive.SMALL])
def test_the_cascades_tables_are_their_own_and_its_cumulatives_constrictions_of_its_rows(tables):
    """Format 12's tables (codec/cascade_residuals.npy) and format 19's (small_residuals.npy): the same levels and
    quarters as format 8's, other integers; their rows are valid tables and the kernels' cumulatives are
    constriction's of them."""
    own, fitted = predictive._fitted_offsets(tables), predictive._fitted_offsets()
    assert own.shape == fitted.shape and not np.array_equal(own, fitted)
    assert not np.array_equal(predictive._fitted_offsets(predictive.CASCADE), predictive._fitted_offsets(
        predictive.SMALL))
    every, edges = predictive._fitted_every_table(tables)
    assert edges is predictive.fitted_levels()[1] and every.rows.min() >= 16
    assert np.all(every.rows.sum(axis=1, dtype=np.float64) == 2**24)
    assert np.array_equal(predictive._fitted_cumulative(tables), kernels.left_cumulatives(every.rows))


@pytest.mark.parametrize("tables, attribute", [(predictive.FITTED, "FITTED_TABLE_FILE"),
                                               (predictive.CASCADE, "CASCADE_TABLE_FILE"),
                                               (predictive.SMALL, "SMALL_TABLE_FILE"),
                                               (predictive.PHOTO, "PHOTO_TABLE_FILE")])
def test_a_changed_or_missing_table_file_is_refused(tmp_path, monkeypatch, tables, attribute):
    changed = predictive._fitted_offsets(tables).astype(np.uint32)  # a copy
    changed[3, 1, 250] += 1
    changed[3, 1, 260] -= 1  # the same sums: only the pinned sha256 tells
    np.save(tmp_path / "tables.npy", changed, allow_pickle=False)
    predictive._fitted_offsets.cache_clear()
    try:
        monkeypatch.setattr(predictive, attribute, tmp_path / "tables.npy")
        with pytest.raises(ValueError, match="not the ones vaezip was built with"):
            predictive._fitted_offsets(tables)
        monkeypatch.setattr(predictive, attribute, tmp_path / "missing.npy")
        with pytest.raises(ValueError, match="missing"):
            predictive._fitted_offsets(tables)
    finally:
        monkeypatch.undo()
        predictive._fitted_offsets.cache_clear()
    assert predictive._fitted_offsets(tables).shape == (41, 4, 511)


@pytest.mark.parametrize("tables, attribute, version, kind, code, formats", [
    (predictive.SMALL, "SMALL_TABLE_FILE", 19, tilekinds.PREDICTIVE_SMALL_SECTIONS, "v", (19, 20, 21, 22, 23)),
    (predictive.PHOTO, "PHOTO_TABLE_FILE", 20, tilekinds.PREDICTIVE_PHOTO_SECTIONS, "x", (20, 21, 22, 23)),
], ids=["small", "photo"])
def test_a_profiles_tampered_table_file_is_refused_naming_its_format(monkeypatch, tmp_path, tables, attribute,
                                                                     version, kind, code, formats):
    """A profile's tables, pinned by their sha256, refused where one byte of the file differs, the error naming the
    format whose tables they are; the section kind that codes with them is that format's. (Read directly: a coding
    that met them would take the failure for the compiled kernels' and turn them off for the rest of the
    process.)"""
    tampered = bytearray(getattr(predictive, attribute).read_bytes())
    tampered[-1] ^= 1
    (tmp_path / "tables.npy").write_bytes(bytes(tampered))
    monkeypatch.setattr(predictive, attribute, tmp_path / "tables.npy")
    predictive.clear_table_caches()
    try:
        with pytest.raises(CodingError, match=f"format {version}'s residual tables .* not the ones"):
            predictive._fitted_offsets(tables)
    finally:
        monkeypatch.undo()
        predictive.clear_table_caches()
    assert tilekinds.BY_NAME[kind].formats == formats and tilekinds.BY_NAME[kind].code == code


def test_a_means_quarter_stays_in_its_range_at_every_edge():
    means = np.array([0.0, 0.25, 0.5 - 2**-54, 0.5, 0.75, 1.0 - 2**-53, 1.0, 127.2, 254.5, 255.0])
    rounded = predictive._rounded(means)
    assert np.array_equal(rounded, [0, 0, 1, 1, 1, 1, 1, 127, 255, 255])  # 0.5 - 2**-54 + 0.5 rounds up to 1
    assert np.array_equal(predictive.fitted_bins(means, rounded), [2, 3, 0, 0, 1, 1, 2, 2, 0, 2])


def test_the_fitted_tables_code_a_photograph_for_less_than_format_7s_laplaces():
    """Fitted on photos_train: on the shipped sample photograph's 32x32 tiles (never fitted on) 1.4 % less."""
    from PIL import Image

    image = np.asarray(Image.open(HERE.parents[1] / "samples" / "hopper.png").convert("RGB")).transpose(2, 0, 1)
    tiles = [np.ascontiguousarray(image[:, y : y + 32, x : x + 32]) for y in range(0, 256, 64) for x in range(0, 256, 64)]
    laplace, fitted = (sum(round_trip(tile, distribution=d) for tile in tiles) for d in predictive.BLENDS)
    assert fitted < 0.99 * laplace


def test_the_blend_reaches_below_format_5s_lowest_level_and_no_further_than_its_smallest_std():
    """Its smallest std, the constant term of channels after the first (every other term is >= 0), has its
    own row in the blend's tables, more peaked than format 5's lowest, where every std below 0.6 lands; and
    it lands in the blend's lowest level (no level is built that no std reaches)."""
    def peak(std: float, distribution: str) -> float:
        return float(predictive.laplace_tables(np.array([100.0]), np.array([std]), distribution).rows[0].max())

    smallest = min(weights[0] for weights in predictive.BLEND_STD_WEIGHTS)
    assert all(w >= 0 for weights in predictive.BLEND_STD_WEIGHTS for w in weights)
    assert peak(smallest, predictive.LAPLACE) == peak(0.6, predictive.LAPLACE) == peak(0.6, predictive.BLEND)
    assert peak(smallest, predictive.BLEND) > 0.93 * 2**24 > 0.7 * 2**24 > peak(0.6, predictive.BLEND)
    _, edges = predictive._every_table(*predictive.TABLE_LEVELS[predictive.BLEND])
    lowest = predictive.STD_FLOOR * 2 ** (predictive.BLEND_LOWEST_LEVEL / 8)
    assert lowest / 2 ** (1 / 16) < smallest < edges[0]
    with pytest.raises(ValueError, match="no Laplace tables"):
        predictive.laplace_tables(np.array([1.0]), np.array([1.0]), predictive.GAUSSIAN)


@pytest.mark.parametrize("distribution", predictive.BLENDS)
@pytest.mark.parametrize("which", ["", "above", "left", "above+left"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_the_blends_decoder_computes_the_encoders_very_means_and_stds(which, channels, distribution, monkeypatch):
    """Bit for bit, not merely within a table level: the encoder computes every position at once, the decoder
    one wavefront at a time (a round trip would miss a std that moved within its level)."""
    pushed, popped = [], []
    push, pop = predictive._push, predictive._pop
    monkeypatch.setattr(kernels, "ready", lambda *_: None)  # the numpy decoder (the kernels: test_codec_kernels)
    monkeypatch.setattr(predictive, "_push", lambda stack, symbols, means, stds, distribution: (
        pushed.append((means.copy(), stds.copy())), push(stack, symbols, means, stds, distribution))[-1])
    monkeypatch.setattr(predictive, "_pop", lambda stack, means, stds, distribution: (
        popped.append((means.copy(), stds.copy())), pop(stack, means, stds, distribution))[-1])
    rng = np.random.default_rng(channels)
    for height, width in [(1, 1), (1, 6), (5, 1), (7, 9)]:
        for image in (smooth_image(rng, channels, height + 1, width + 1, noise=3.0),
                      rng.integers(0, 256, size=(channels, height + 1, width + 1), dtype=np.uint8)):
            pushed.clear(), popped.clear()
            round_trip(np.ascontiguousarray(image[:, 1:, 1:]), context=context_of(image, 1, 1, height, width, which),
                       distribution=distribution)
            (means, stds), = pushed
            for got, expected in zip((np.concatenate([m for m, _ in popped]), np.concatenate([s for _, s in popped])),
                                     (means, stds)):
                assert np.array_equal(got.view(np.int64), expected.view(np.int64)), (height, width)


def test_the_blend_codes_flat_and_smooth_tiles_for_less_than_format_5():
    rng = np.random.default_rng(8)
    flat = np.full((3, 32, 32), 77, np.uint8)
    # format 5: 0.55 bits a value; the blend's stds of channels after the first start at 0.26
    assert round_trip(flat, distribution=predictive.BLEND) < 0.3 * flat.size
    smooth = smooth_image(rng, 3, 32, 32, noise=1.0)
    laplace = round_trip(smooth, distribution=predictive.LAPLACE)
    assert round_trip(smooth, distribution=predictive.BLEND) < 0.95 * laplace


def test_laplace_tables_are_integer_frequencies_of_the_discretized_laplace():
    """Each row: integers >= 16 summing to 2**24, within a few units of 2**24 times the mass of each value's
    bin under the Laplace of the std's level (the tails folded into the end bins)."""
    means = np.array([0.0, 255.0, 128.0, 3.0, 250.0, 77.0])
    stds = np.array([0.6, 0.6, 5.0, 40.0, 200.0, 1e6])
    tables = predictive.laplace_tables(means, stds).rows.astype(np.float64)
    assert np.all(tables == np.floor(tables)) and tables.min() >= 16 and np.all(tables.sum(axis=1) == 2**24)
    levels = np.minimum(np.round(np.log2(stds / predictive.STD_FLOOR) * 8), predictive.SCALE_LEVELS - 1)
    scale = predictive.STD_FLOOR * 2.0 ** (levels / 8) / np.sqrt(2)  # (N,)
    edges = np.arange(-1, 256) + 0.5  # (257,) the bins' edges, the outer ones replaced by the tails
    z = (edges[None, :] - means[:, None]) / scale[:, None]
    cdf = np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    np.testing.assert_allclose(tables / 2**24, np.diff(cdf, axis=1), atol=3e-4)


def test_a_std_rounds_to_the_nearest_level_in_log2():
    """Levels are 2**(1/8) apart, their edges halfway in log2 (2**(1/16) = 1.044 above a level); a std on an
    edge takes the lower level; beyond the top level, the top level."""
    def row(std: float) -> np.ndarray:
        return predictive.laplace_tables(np.array([100.0]), np.array([std])).rows[0]

    level_10 = predictive.STD_FLOOR * 2 ** (10 / 8)
    assert np.array_equal(row(level_10), row(level_10 * 1.04)) and np.array_equal(row(level_10), row(level_10 / 1.04))
    assert not np.array_equal(row(level_10), row(level_10 * 1.05))
    assert not np.array_equal(row(level_10), row(level_10 / 1.05))
    _, edges = predictive._every_table(*predictive.TABLE_LEVELS[predictive.LAPLACE])
    assert np.array_equal(row(edges[4]), row(edges[4] * 0.99))
    assert not np.array_equal(row(edges[4]), row(float(np.nextafter(edges[4], np.inf))))
    top = predictive.STD_FLOOR * 2 ** ((predictive.SCALE_LEVELS - 1) / 8)
    assert np.array_equal(row(top), row(1e12)) and row(0.01).max() == row(predictive.STD_FLOOR).max()


def test_laplace_tables_refuse_what_the_predictor_never_gives():
    with pytest.raises(ValueError, match="integers"):
        predictive.laplace_tables(np.array([1.5]), np.array([1.0]))
    with pytest.raises(ValueError, match="integers"):
        predictive.laplace_tables(np.array([256.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="stds"):
        predictive.laplace_tables(np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="distribution"):
        predictive.encode(Stack(), np.zeros((1, 2, 2), np.uint8), distribution="cauchy")


@pytest.mark.parametrize("distribution", predictive.DISTRIBUTIONS)
@pytest.mark.parametrize("which", ["above", "left", "above+left"])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_with_context(which, channels, distribution):
    rng = np.random.default_rng(channels)
    for height, width in [(1, 1), (1, 7), (6, 1), (9, 13)]:
        image = smooth_image(rng, channels, height + 1, width + 1)
        round_trip(np.ascontiguousarray(image[:, 1:, 1:]), below=3, context=context_of(image, 1, 1, height, width, which),
                   distribution=distribution)
        noise = rng.integers(0, 256, size=(channels, height + 1, width + 1), dtype=np.uint8)
        round_trip(np.ascontiguousarray(noise[:, 1:, 1:]), context=context_of(noise, 1, 1, height, width, which),
                   distribution=distribution)


def test_context_makes_a_tile_of_a_smooth_image_cheaper():
    """The tile's first row and column are predicted from real neighbours instead of from each other alone."""
    rng = np.random.default_rng(5)
    images = [smooth_image(rng, 3, 33, 33, noise=2.0) for _ in range(8)]
    costs = {}
    for which in ["", "above", "above+left"]:
        costs[which] = sum(
            round_trip(np.ascontiguousarray(image[:, 1:, 1:]), context=context_of(image, 1, 1, 32, 32, which))
            for image in images
        )
    assert costs["above+left"] < costs["above"] < costs[""]


def test_context_of_the_wrong_shape_is_refused():
    tile = np.zeros((3, 4, 5), np.uint8)
    with pytest.raises(ValueError, match="above"):
        predictive.encode(Stack(), tile, predictive.Context(above=np.zeros((3, 4), np.uint8)))
    with pytest.raises(ValueError, match="corner"):
        predictive.encode(Stack(), tile, predictive.Context(np.zeros((3, 5), np.uint8), np.zeros((3, 4), np.uint8)))
