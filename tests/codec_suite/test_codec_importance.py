"""Importance-weighted (Monte-Carlo) bits-back, codec/tilekinds.py: round trips through the numpy toy models,
the stack given back bit for bit, the sample-index tables, and where files may hold these batches."""

import numpy as np
import pytest
from codec_toymodel import LinearToyModel, ToyModel, sample_tiles, smooth_image

from codec import bitsback, tilekinds
from codec.ans import Stack
from codec.errors import CodingError, HeaderError
from codec.header import from_binary, to_binary
from codec.tilekinds import (
    LOG_WEIGHT_BITS, SAMPLE_COUNTS, Stream, _importance_bits, _index_tables, importance_kind,
)
from codec.tiling import split_tiles


def _tiles(rng, channels, sizes, tile=8):
    return [t for h, w in sizes for t in split_tiles(smooth_image(rng, channels, h, w), tile, 2)]


def _sampled(model, rng, count):
    """`count` whole 8x8 tiles drawn from the model."""
    return [split_tiles(pixels, 8, 2)[0] for pixels in sample_tiles(model, rng, count, 8, 8)]


@pytest.mark.parametrize("samples", SAMPLE_COUNTS)
def test_round_trip_of_importance_weighted_batches(samples):
    rng = np.random.default_rng(samples)
    tiles = _tiles(rng, 3, [(16, 16), (9, 30), (24, 8), (1, 1), (16, 24)])
    model = ToyModel(3)
    kind = importance_kind(samples)
    result = bitsback.encode(tiles, model, max_batch=3, bitsback_kind=kind)
    kinds = [name for name, _ in result.schedule]
    assert kind in kinds  # not every tile went without the model
    # plain bits-back only where K samples of one tile could not pop, a single tile at a time
    assert all(n == 1 for name, n in result.schedule if name == bitsback.BITSBACK)
    decoded = bitsback.decode(result.words, result.schedule, [t.spec for t in tiles], model)
    for tile, pixels in zip(tiles, decoded):
        np.testing.assert_array_equal(pixels, tile.pixels)


def test_a_stream_starts_with_plain_bits_back_until_k_samples_can_pop():
    """At a stream's start the stack holds too few bits for 16 samples of a tile, but enough for one: those
    tiles go as single plain bits-back batches, not without the model; later ones importance-weighted."""
    rng = np.random.default_rng(16)
    tiles = _tiles(rng, 3, [(16, 16), (9, 30), (24, 8)])
    kind = importance_kind(16)
    result = bitsback.encode(tiles, ToyModel(3), max_batch=3, bitsback_kind=kind)
    kinds = [name for name, _ in result.schedule]
    first_plain, first_weighted = kinds.index(bitsback.BITSBACK), kinds.index(kind)
    assert first_plain < first_weighted and bitsback.BITSBACK not in kinds[first_weighted:]
    decoded = bitsback.decode(result.words, result.schedule, [t.spec for t in tiles], ToyModel(3))
    for tile, pixels in zip(tiles, decoded):
        np.testing.assert_array_equal(pixels, tile.pixels)


@pytest.mark.parametrize("samples", [2, 8])
def test_a_batch_gives_back_the_bits_it_borrowed(samples):
    """Push one importance-weighted batch onto a stack of random words, pop it: the stack is the one before,
    word for word (every pop the encoder made is undone by a push of the decoder with the same distribution)."""
    rng = np.random.default_rng(3)
    model = LinearToyModel(3)
    tiles = _sampled(model, rng, 4)
    before = Stack.from_words(rng.integers(1, 2**32, 6000, dtype=np.uint64).astype(np.uint32))
    stack = before.clone()
    kind = tilekinds.BY_NAME[importance_kind(samples)]
    stream = Stream(len(tiles), lambda k: tiles[k].pixels, model)
    ideal = kind.push(stack, tiles, 0, stream)
    assert ideal is not None and ideal.shape == (len(tiles),) and np.all(np.isfinite(ideal))
    popped = kind.pop(stack, [t.spec for t in tiles], 0, Stream(len(tiles), lambda k: None, model))
    for tile, pixels in zip(tiles, popped):
        np.testing.assert_array_equal(pixels, tile.pixels)
    np.testing.assert_array_equal(stack.words(), before.words())


def test_a_batch_that_runs_the_stack_dry_is_refused():
    """Too few bits to pop K samples: push returns None (the caller restores its clone and tries fewer tiles
    or a kind without pops), as plain bits-back does."""
    model = LinearToyModel(3)
    tiles = _sampled(model, np.random.default_rng(4), 2)
    stack = Stack.from_words(np.full(3, 12345, dtype=np.uint32))
    stream = Stream(len(tiles), lambda k: tiles[k].pixels, model, margin_bits=64)
    assert tilekinds.BY_NAME[importance_kind(16)].push(stack, tiles, 0, stream) is None


def test_index_tables_follow_the_weights_exactly():
    """Frequencies f / 2**24, every f >= 1, summing to 2**24, ordered as the weights, and the rule re-derived
    with Python integers for one row."""
    log_weights = np.array([[0, -(2**LOG_WEIGHT_BITS), -(3 * 2**LOG_WEIGHT_BITS), -(2**30)],
                            [5, 5, 5, 5], [2**40, 0, -(2**40), 7]], dtype=np.int64)
    tables = _index_tables(log_weights)
    assert tables.dtype == np.float32
    frequencies = tables.astype(np.float64) * 2**24
    assert np.all(frequencies == np.round(frequencies)) and np.all(frequencies >= 1)
    assert np.all(frequencies.sum(axis=1) == 2**24)
    first = frequencies[0]
    assert first[0] > first[1] > first[2] >= first[3] == 1  # w = 1, 1/2, 1/8, ~0
    assert abs(first[0] / first[1] - 2.0) < 1e-5 and abs(first[1] / first[2] - 4.0) < 1e-5
    assert len(set(frequencies[1][1:])) == 1 and frequencies[1][0] >= frequencies[1][1]  # ties: rest to the first
    # row 0 with Python integers: weights floor(2**(d / 2**20) * 2**24), frequencies floor(w / sum * spare) + 1
    weights = [2**24, 2**23, 2**21, 1]
    spare = 2**24 - 4
    expected = [w * spare // sum(weights) + 1 for w in weights]
    expected[0] += 2**24 - sum(expected)
    assert first.tolist() == expected


def test_importance_bits_are_the_k_sample_bound():
    """-log2 of the mean weight: equal weights give the one sample's bits, unequal ones less than their mean."""
    one = 2**LOG_WEIGHT_BITS
    assert _importance_bits(np.array([[-100 * one] * 4]))[0] == pytest.approx(100.0)
    unequal = np.array([[-100 * one, -104 * one]])
    assert _importance_bits(unequal)[0] == pytest.approx(-np.log2((2.0**-100 + 2.0**-104) / 2))
    assert _importance_bits(unequal)[0] < 102.0


def test_only_known_sample_counts_have_a_kind():
    assert [importance_kind(k) for k in SAMPLE_COUNTS] == [f"bitsback-iw{k}" for k in SAMPLE_COUNTS]
    for bad in (0, 1, 3, 32):
        with pytest.raises(CodingError, match="samples"):
            importance_kind(bad)


def test_format_3_files_refuse_importance_weighted_batches_and_format_4_files_hold_them():
    from codec.header import CoderSettings, Header, ImageEntry

    def header(kind: str) -> Header:
        coder = CoderSettings(2.0**-8, 16.0, 32, 4, ((kind, 2),), "0.5.0", {})
        return Header("m", "0" * 16, coder, (ImageEntry("a.png", "RGB", 64, 32),), "0" * 16)

    iw = importance_kind(4)
    with pytest.raises(HeaderError, match="format-3"):
        to_binary(header(iw), 10, 3)
    raw = to_binary(header(iw), 10, 4)
    assert from_binary(raw, 4)[0].coder.schedule == ((iw, 2),)
    with pytest.raises(HeaderError, match="format-3"):
        from_binary(raw, 3)  # the same bytes read as format 3
    assert from_binary(to_binary(header(bitsback.BITSBACK), 10, 4), 4)[0].coder.schedule == ((bitsback.BITSBACK, 2),)
