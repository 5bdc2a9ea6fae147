"""Format 20's photograph profile (codec/predictive.py: PHOTO; codec/tilekinds.py: PREDICTIVE_PHOTO_SECTIONS;
codec/bitsback.py: section_kinds, sections_kinds): the staged cascade with its numbers chosen again and tables of its
own, in sections the encoder codes a stream of photographs with."""

import numpy as np
import pytest
from codec_toymodel import (assert_sections_decode_only_as_their_kind, recorded_with_staged_numbers,
                            smooth_image)

from codec import bitsback, predictive
from codec.ans import Stack
from codec.bitsback import (PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_PHOTO_SECTIONS, PREDICTIVE_REFINED_SECTIONS,
                            PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS, PREDICTIVE_SMALL_SECTIONS)
from codec.tiling import split_tiles

INF = float("inf")
FORMAT20 = bitsback.SECTION_KINDS[:3]  # the kinds format 20 may hold (format 21 refines the photograph profile's)


def image_tiles(rng, sizes, tile=16, channels=3):
    """The tiles of smooth images of `sizes`, one stream."""
    return [t for h, w in sizes for t in split_tiles(smooth_image(rng, channels, h, w), tile, 2)]


@pytest.mark.parametrize("channels", [1, 3])
def test_photo_sections_decode_to_their_tiles(channels):
    rng = np.random.default_rng(10 + channels)
    tiles = image_tiles(rng, [(48, 40), (16, 24)], channels=channels)  # 9 tiles, then 2
    # a section's words popped as another profile's are refused or decode to other pixels, never silently right
    assert_sections_decode_only_as_their_kind(tiles, [6, 3, 2], PREDICTIVE_PHOTO_SECTIONS,
                                              [PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS])


def test_the_profile_is_the_staged_cascade_with_its_numbers_and_tables():
    """With the staged cascade's numbers and tables in its place, PHOTO records a tile exactly as STAGED does: the
    profile differs in nothing else (the channels in their own order)."""
    rng = np.random.default_rng(8)
    tile = smooth_image(rng, 3, 20, 24)  # (3, 20, 24) uint8
    context = predictive.Context(above=smooth_image(rng, 3, 1, 24)[:, 0], left=smooth_image(rng, 3, 20, 1)[:, :, 0],
                                 corner=np.array([10, 200, 30], dtype=np.uint8))
    photo = predictive.record_adaptive(tile, context, predictive.AdaptiveState(), predictive.PHOTO)
    staged = predictive.record_adaptive(tile, context, predictive.AdaptiveState(), predictive.STAGED)
    assert not np.array_equal(photo.rows, staged.rows)  # its own numbers and tables
    as_staged = recorded_with_staged_numbers(predictive.PHOTO, "PHOTO_PROFILE", tile, context)
    np.testing.assert_array_equal(as_staged.rows, staged.rows)
    np.testing.assert_array_equal(as_staged.values, staged.values)


def test_which_images_take_the_photograph_profile(monkeypatch):
    """Images of PHOTO_PROFILE_VALUES values or more each (on average) take the photograph profile instead of the
    staged cascade's sections, where format 20 may be written (refined where format 21 or 22 may); below
    SMALL_PROFILE_VALUES the small-image profile is priced beside either (refined where format 22 may be
    written)."""
    rng = np.random.default_rng(5)
    tiles = image_tiles(rng, [(32, 32)] * 2)  # 3,072 values an image
    small, older = (PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS), bitsback.SECTION_KINDS[:2]
    assert bitsback.section_kinds(tiles, FORMAT20) == small == bitsback.section_kinds(tiles, older)  # as format 19's
    assert bitsback.section_kinds(tiles) == (PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS)
    monkeypatch.setattr(bitsback, "PHOTO_PROFILE_VALUES", 32 * 32 * 3)  # mid-sized now
    assert bitsback.section_kinds(tiles, FORMAT20) == (PREDICTIVE_PHOTO_SECTIONS, PREDICTIVE_SMALL_SECTIONS)
    assert bitsback.section_kinds(tiles) == (PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS)
    assert bitsback.section_kinds(tiles, bitsback.SECTION_KINDS[:4]) == (PREDICTIVE_REFINED_SECTIONS,
                                                                         PREDICTIVE_SMALL_SECTIONS)
    assert bitsback.section_kinds(tiles, older) == small
    monkeypatch.setattr(bitsback, "SMALL_PROFILE_VALUES", 32 * 32 * 3)  # photographs now
    assert bitsback.section_kinds(tiles, FORMAT20) == (PREDICTIVE_PHOTO_SECTIONS,)
    assert bitsback.section_kinds(tiles, older) == (PREDICTIVE_SECTIONS,)
    assert bitsback.section_kinds(tiles, (PREDICTIVE_SECTIONS,)) == (PREDICTIVE_SECTIONS,)
    priced = bitsback.price_stream(tiles, bitsback.PREDICTIVE_STAGED, [INF] * len(tiles), allowed=FORMAT20)
    assert {price[0] for price in priced} == {PREDICTIVE_PHOTO_SECTIONS}
    priced = bitsback.price_stream(tiles, bitsback.PREDICTIVE_STAGED, [INF] * len(tiles), allowed=older)
    assert {price[0] for price in priced} == {PREDICTIVE_SECTIONS}


def test_a_photograph_archived_with_thumbnails_takes_the_photograph_profile(monkeypatch):
    """Each section is priced in the kinds its own images call for, not all by the stream's average image: a
    photograph's sections in the photograph profile alone, the thumbnails' after it in the small-image profile too
    (and, the file holding format 18's layout then, the photograph profile instead of format 16's sections)."""
    monkeypatch.setattr(bitsback, "PHOTO_PROFILE_VALUES", 48 * 48 * 3)
    monkeypatch.setattr(bitsback, "SMALL_PROFILE_VALUES", 48 * 48 * 3)
    rng = np.random.default_rng(6)
    tiles = image_tiles(rng, [(64, 64)] + [(16, 16)] * 12)  # 16 tiles of 12,288 values, then 12 of 768
    shares = bitsback.image_shares(tiles)
    assert shares[:16] == [1 / 16] * 16 and shares[16:] == [1.0] * 12
    photo, small = (PREDICTIVE_PHOTO_SECTIONS,), (PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS)
    assert bitsback.section_kinds(tiles, FORMAT20) == small  # as one section: 1,656 values an image
    runs = [8, 8, 6, 6]  # the photograph's two halves, the thumbnails in two
    both = photo + small[1:]
    assert bitsback.sections_kinds(tiles, runs, FORMAT20) == [photo, photo, both, both]
    assert bitsback.sections_kinds(tiles[16:], [6, 6], FORMAT20) == [small, small]  # the thumbnails alone
    older = bitsback.SECTION_KINDS[:2]
    assert bitsback.sections_kinds(tiles, runs, older) == [small[:1], small[:1], small, small]
    priced = bitsback.price_sections(tiles, runs=runs, allowed=FORMAT20)
    assert [price[0] for price in priced[:16]] == [PREDICTIVE_PHOTO_SECTIONS] * 16
    assert [price[0] for price in bitsback.price_sections(tiles, runs=runs, allowed=older)][:16] == [
        PREDICTIVE_SECTIONS] * 16  # format 19's choice
    stack = Stack()
    schedule, _ = bitsback.encode_tiles(stack, tiles, None, model_bits=[INF] * len(tiles), priced=priced)
    decoded = bitsback.decode(stack.words(), schedule, [t.spec for t in tiles], None)
    for tile, pixels in zip(tiles, decoded):
        np.testing.assert_array_equal(pixels, tile.pixels)


def test_against_the_photograph_profile_the_small_image_profile_pays_no_header_bytes(monkeypatch):
    """Both profiles' files hold format 18's layout: the words alone decide between them (the small-image profile's
    header bytes count only against format 16's sections)."""
    monkeypatch.setattr(bitsback, "SMALL_HEADER_BITS", 10**6)
    rng = np.random.default_rng(3)
    tiles = image_tiles(rng, [(16, 16)] * 8)  # one tile an image: two images end in each section
    runs, kinds = [2, 2, 2, 2], (PREDICTIVE_PHOTO_SECTIONS, PREDICTIVE_SMALL_SECTIONS)
    both = bitsback.price_sections(tiles, runs=runs, kinds=kinds)
    alone = {kind: bitsback.price_sections(tiles, runs=runs, kinds=[kind]) for kind in kinds}
    chosen = set()
    for start in range(0, 8, 2):
        words = {kind: len(prices[start].coded.words) for kind, prices in alone.items()}
        assert both[start][0] == min(kinds, key=lambda kind: (words[kind], kind != PREDICTIVE_PHOTO_SECTIONS))
        chosen.add(both[start][0])
    assert PREDICTIVE_SMALL_SECTIONS in chosen  # these images: the small-image profile wins some sections
