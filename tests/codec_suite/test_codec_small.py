"""Format 19's small-image profile (codec/predictive.py: SMALL; codec/tilekinds.py: PREDICTIVE_SMALL_SECTIONS;
codec/bitsback.py: section_kinds, price_sections): the staged cascade with other numbers and tables and its channels
coded last first, in sections the encoder keeps where they cost less."""

import numpy as np
import pytest
from codec_toymodel import (assert_sections_decode_only_as_their_kind, recorded_with_staged_numbers,
                            smooth_image)

from codec import bitsback, predictive
from codec.bitsback import PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS
from codec.errors import CodingError
from codec.tiling import split_tiles

INF = float("inf")


def image_tiles(rng, sizes, tile=16, channels=3):
    """The tiles of smooth images of `sizes`, one stream."""
    return [t for h, w in sizes for t in split_tiles(smooth_image(rng, channels, h, w), tile, 2)]


@pytest.mark.parametrize("channels", [1, 3])
def test_small_sections_decode_to_their_tiles(channels):
    rng = np.random.default_rng(channels)
    tiles = image_tiles(rng, [(32, 40), (16, 16), (24, 8)], channels=channels)
    # an image each; a section's words popped as the other profile's are refused or decode to other pixels
    assert_sections_decode_only_as_their_kind(tiles, [6, 1, 2], PREDICTIVE_SMALL_SECTIONS, [PREDICTIVE_SECTIONS])


def test_the_profile_is_the_staged_cascade_with_its_numbers_and_tables_and_the_channels_turned():
    """With the staged cascade's numbers and tables in its place, SMALL records a colour tile exactly as STAGED
    records the tile with its channels in the other order: the profile differs in nothing else."""
    rng = np.random.default_rng(7)
    tile = smooth_image(rng, 3, 20, 24)  # (3, 20, 24) uint8
    context = predictive.Context(above=smooth_image(rng, 3, 1, 24)[:, 0], left=smooth_image(rng, 3, 20, 1)[:, :, 0],
                                 corner=np.array([10, 200, 30], dtype=np.uint8))
    small = predictive.record_adaptive(tile, context, predictive.AdaptiveState(), predictive.SMALL)
    turned = predictive.Context(context.above[::-1], context.left[::-1], context.corner[::-1])
    staged = predictive.record_adaptive(np.ascontiguousarray(tile[::-1]), turned, predictive.AdaptiveState(),
                                        predictive.STAGED)
    assert not np.array_equal(small.rows, staged.rows)  # its own numbers and tables
    as_staged = recorded_with_staged_numbers(predictive.SMALL, "SMALL_PROFILE", tile, context)
    np.testing.assert_array_equal(as_staged.rows, staged.rows)
    np.testing.assert_array_equal(as_staged.values, staged.values)
    unturned = predictive.record_adaptive(tile, context, predictive.AdaptiveState(), predictive.STAGED)
    assert not np.array_equal(unturned.rows, as_staged.rows)  # the turn is what is left to tell them apart


@pytest.mark.parametrize("header_bits", [0, bitsback.SMALL_HEADER_BITS, 10**6])
def test_each_section_keeps_the_profile_that_codes_it_in_fewer_words_with_the_headers_bytes(monkeypatch,
                                                                                          header_bits):
    """The small-image profile pays the two header bytes an image that format 19 adds (and a word): kept only where
    its words save more."""
    monkeypatch.setattr(bitsback, "SMALL_HEADER_BITS", header_bits)
    rng = np.random.default_rng(3)
    tiles = image_tiles(rng, [(16, 16)] * 8)  # one tile an image: two images end in each section
    runs, kinds = [2, 2, 2, 2], (PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS)
    both = bitsback.price_sections(tiles, runs=runs, kinds=kinds)
    alone = {kind: bitsback.price_sections(tiles, runs=runs, kinds=[kind]) for kind in kinds}
    chosen_kinds = set()
    for start in range(0, 8, 2):
        cost = {kind: 32 * len(prices[start].coded.words) for kind, prices in alone.items()}
        cost[PREDICTIVE_SMALL_SECTIONS] += 2 * header_bits + 32
        chosen = both[start]
        assert chosen[0] == min(kinds, key=lambda kind: (cost[kind], kind != PREDICTIVE_SECTIONS))
        assert chosen.coded.words.tolist() == alone[chosen[0]][start].coded.words.tolist()
        assert [price[0] for price in both[start : start + 2]] == [chosen[0]] * 2
        chosen_kinds.add(chosen[0])
    if header_bits == 0:
        assert PREDICTIVE_SMALL_SECTIONS in chosen_kinds  # these images: the profile wins some sections
    if header_bits == 10**6:
        assert chosen_kinds == {PREDICTIVE_SECTIONS}
    with pytest.raises(CodingError, match="sections are coded as one of"):
        bitsback.price_sections(tiles, runs=runs, kinds=["predictive-staged"])


def test_only_small_images_and_only_where_format_19_may_be_written_are_priced_in_the_profile(monkeypatch):
    rng = np.random.default_rng(4)
    small = image_tiles(rng, [(16, 16)] * 3)
    both = (PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS)
    assert bitsback.section_kinds(small, bitsback.SECTION_KINDS[:4]) == both == bitsback.section_kinds(small, both)
    assert bitsback.section_kinds(small) == (PREDICTIVE_SECTIONS, bitsback.PREDICTIVE_SMALL_ACROSS_SECTIONS)
    assert bitsback.section_kinds(small, (PREDICTIVE_SECTIONS,)) == (PREDICTIVE_SECTIONS,)
    monkeypatch.setattr(bitsback, "SMALL_PROFILE_VALUES", 16 * 16 * 3)  # those images no longer small
    assert bitsback.section_kinds(small) == (PREDICTIVE_SECTIONS,)
    priced = bitsback.price_stream(small, bitsback.PREDICTIVE_STAGED, [INF] * len(small), allowed=both)
    assert {price[0] for price in priced} == {PREDICTIVE_SECTIONS}
