"""Format 16's sections (codec/tilekinds.py: PREDICTIVE_SECTIONS; codec/bitsback.py: section_runs, price_sections,
decode_tiles): independent runs of tiles, each on a stack of its own from the initial statistics, decoded side by
side."""

import threading
from pathlib import Path

import numpy as np
import pytest
from codec_toymodel import smooth_image

from codec import bitsback, predictive, tilekinds
from codec.ans import Stack
from codec.bitsback import PREDICTIVE_SECTIONS, PREDICTIVE_STAGED
from codec.errors import CodingError
from codec.tiling import split_tiles

INF = float("inf")


def image_tiles(rng, sizes, tile=16, channels=3):
    """The tiles of smooth images of `sizes`, one stream."""
    return [t for h, w in sizes for t in split_tiles(smooth_image(rng, channels, h, w), tile, 2)]


def encode_sections(tiles, runs=None, kinds=(PREDICTIVE_SECTIONS,)):
    """Every tile in sections (runs: section_runs's where None) of `kinds` (format 16's by default):
    (words, schedule, prices)."""
    priced = bitsback.price_sections(tiles, runs=runs, kinds=kinds)
    stack = Stack()
    schedule, stats = bitsback.encode_tiles(stack, tiles, None, model_bits=[INF] * len(tiles), priced=priced)
    assert len(stats) == len(tiles)
    return stack.words(), schedule, priced


def test_section_runs_cut_whole_rows_at_equal_shares_of_the_values(monkeypatch):
    monkeypatch.setattr(bitsback, "SECTION_VALUES", 3 * 16 * 16 * 3)  # three 16x16 colour tiles
    monkeypatch.setattr(bitsback, "SECTIONS_NEAR", 100)
    monkeypatch.setattr(bitsback, "SECTIONS_MOST", 100)
    rng = np.random.default_rng(0)
    # one image of 5 rows of 4 tiles (the last column 8 wide): each row holds 3.5 tiles' values, 13,440 in all
    tiles = image_tiles(rng, [(80, 56)])
    assert bitsback.section_runs(tiles) == [4, 4, 4, 4, 4]  # five sections' worth: a row each
    monkeypatch.setattr(bitsback, "SECTION_VALUES", 5 * 16 * 16 * 3)  # three sections, cut at the rows nearest
    assert bitsback.section_runs(tiles) == [8, 4, 8]  # to a third and two thirds of the values
    assert bitsback.cut_sections(tiles, 3) == [8, 4, 8] and bitsback.cut_sections(tiles, 9) == [4] * 5
    monkeypatch.setattr(bitsback, "SECTION_VALUES", 16 * 16 * 3)
    monkeypatch.setattr(bitsback, "SECTIONS_NEAR", 2)  # at most two; half the values lie in the middle row
    assert bitsback.section_runs(tiles) == [8, 12]
    monkeypatch.setattr(bitsback, "SECTIONS_NEAR", 100)
    # images smaller than SECTION_VALUES: sections of SMALL_IMAGE_SECTIONS times as many values
    monkeypatch.setattr(bitsback, "SECTION_VALUES", 16 * 16 * 3 + 1)
    small = image_tiles(rng, [(16, 16)] * 10)
    assert bitsback.section_runs(small) == [5, 5]
    assert bitsback.section_spans(small) == [(0, 5)] * 5 + [(5, 5)] * 5
    monkeypatch.setattr(bitsback, "SECTION_VALUES", 2**19)
    assert bitsback.section_runs(tiles) == [20]  # fewer values than a section holds: one
    monkeypatch.setattr(bitsback, "SECTION_TILES", 3)  # a section would hold more tiles than a batch may
    assert bitsback.section_runs(tiles) is None and bitsback.price_sections(tiles) is None


def test_section_count_takes_more_sections_only_for_large_images():
    """Up to SECTIONS_NEAR sections of SECTION_VALUES values; beyond, one a LARGE_SECTION_VALUES, at most
    SECTIONS_MOST: the shipped numbers, on the sizes of real images."""
    colour = 3
    assert bitsback.section_count(768 * 512 * colour, 1) == 2  # a Kodak image: two cores' worth
    assert bitsback.section_count(300 * 200 * colour, 1) == 1
    assert bitsback.section_count(4256 * 2848, 1) == 2  # gray8bit's largest, 12.1 M values: as before
    assert bitsback.section_count(4000 * 3000 * colour, 1) == 8  # 12 Mpixel in colour, 36 M values
    assert bitsback.section_count(6000 * 4000 * colour, 1) == bitsback.SECTIONS_MOST == 16
    assert bitsback.section_count(2000 * 32 * 32 * colour, 2000) == 2  # Imagenette's archive: 6.1 M values
    assert bitsback.section_count(20_000 * 32 * 32 * colour, 20_000) == 14  # sections of ~1,400 thumbnails
    assert bitsback.section_count(0, 0) == 1


@pytest.mark.parametrize("runs", [None, [6], [2, 4], [2, 2, 2], [1] * 6])
def test_sections_round_trip_each_decoded_from_its_own_words(runs):
    rng = np.random.default_rng(1)
    tiles = image_tiles(rng, [(40, 36)])  # 3 rows of 3 tiles, partial at the right and bottom
    tiles = tiles[:6]  # two whole rows
    words, schedule, priced = encode_sections(tiles, runs)
    expected = runs or [6]
    assert schedule == [(PREDICTIVE_SECTIONS, n) for n in expected]
    assert [price.section for price in priced] == [(sum(expected[:k]), n) for k, n in enumerate(expected)
                                                   for _ in range(n)]
    decoded = bitsback.decode(words, schedule, [t.spec for t in tiles], None)
    for tile, pixels in zip(tiles, decoded):
        np.testing.assert_array_equal(pixels, tile.pixels)


def test_the_sections_priced_are_pushed_as_coded_the_same_words_as_coding_them_again():
    """price_sections codes each section while it prices it (Price.coded) and keeps no recording; encode_tiles
    pushes those words. Without them (prices of the same kinds and sections, nothing coded) the encoder records and
    codes each section itself: the same words, the same bits per tile."""
    rng = np.random.default_rng(4)
    tiles = image_tiles(rng, [(48, 40)])  # 3 rows of 3
    words, schedule, priced = encode_sections(tiles, [3, 6])
    assert all(price.recorded is None and price.coded is priced[price.section[0]].coded for price in priced)
    assert [len(priced[first].coded.bits) for first in (0, 3)] == [3, 6]
    bare = [bitsback.Price(price[0], price[1], section=price.section) for price in priced]
    stack = Stack()
    again, stats = bitsback.encode_tiles(stack, tiles, None, model_bits=[INF] * len(tiles), priced=bare)
    assert again == schedule and np.array_equal(stack.words(), words)
    assert [stat.ideal_bits for stat in stats] == [*priced[0].coded.bits, *priced[3].coded.bits]


def test_pricing_reports_each_section_as_it_is_done():
    """price_sections's progress: one call a section, in the calling thread, the tiles priced so far of all."""
    import threading

    rng = np.random.default_rng(5)
    tiles = image_tiles(rng, [(48, 40)])  # 3 rows of 3
    calls = []
    priced = bitsback.price_sections(tiles, runs=[3, 3, 3], progress=lambda done, total: calls.append(
        (done, total, threading.current_thread() is threading.main_thread())))
    assert calls == [(3, 9, True), (6, 9, True), (9, 9, True)]
    assert [price[1] for price in priced] == [price[1] for price in bitsback.price_sections(tiles, runs=[3, 3, 3])]


def test_a_section_reads_no_tile_of_another_and_starts_from_the_initial_statistics(monkeypatch):
    """Each section's tiles decode from its own words alone (decode_section, given nothing of the stream), and the
    sections come off in threads of their own: the pops of every section are taken first, the decoding after."""
    rng = np.random.default_rng(2)
    tiles = image_tiles(rng, [(32, 48)])  # 2 rows of 3
    words, schedule, _ = encode_sections(tiles, [3, 3])
    stack = Stack.from_words(words)
    # in pop order: the second section's words are on top
    second = tilekinds.BY_NAME[PREDICTIVE_SECTIONS].pop(stack, [t.spec for t in tiles[3:]], 3, None)
    first = tilekinds.BY_NAME[PREDICTIVE_SECTIONS].pop(stack, [t.spec for t in tiles[:3]], 0, None)
    assert stack.is_empty()
    for decode, part in ((first, tiles[:3]), (second, tiles[3:])):
        for tile, pixels in zip(part, decode()):
            np.testing.assert_array_equal(pixels, tile.pixels)
    threads = set()
    decode_section = tilekinds.decode_section
    monkeypatch.setattr(tilekinds, "decode_section",
                        lambda *args: threads.add(threading.get_ident()) or decode_section(*args))
    bitsback.decode(words, schedule, [t.spec for t in tiles], None)
    assert threading.get_ident() not in threads and threads


def test_sections_cost_what_one_chain_from_zeros_does_on_a_photograph():
    """Two sections of the sample photograph from the initial statistics against one chain of the staged cascade
    from zeros (format 15): within 1 %; one section less than that chain (the initial statistics pay)."""
    from PIL import Image

    image = np.asarray(Image.open(Path(__file__).parents[2] / "samples" / "hopper.png").convert("RGB"))
    image = image.transpose(2, 0, 1)
    tiles = split_tiles(np.ascontiguousarray(image), 64, 2)
    chain = sum(price[1] for price in bitsback.price_without_model(tiles, PREDICTIVE_STAGED))
    rows = sum(1 for tile in tiles if tile.neighbours[1] == 0)
    per_row = len(tiles) // rows
    one = sum(price[1] for price in bitsback.price_sections(tiles, runs=[len(tiles)]))
    two = sum(price[1] for price in bitsback.price_sections(tiles, runs=[per_row * (rows // 2),
                                                                         len(tiles) - per_row * (rows // 2)]))
    assert one < chain and two < 1.01 * chain, (one, two, chain)


def test_damaged_sections_are_refused():
    rng = np.random.default_rng(3)
    tiles = image_tiles(rng, [(32, 32)])
    words, schedule, _ = encode_sections(tiles, [2, 2])
    specs = [t.spec for t in tiles]
    stack = Stack()
    stack.push_uniform(np.array([0xFFFF, 0xFFFF]), 2**16)  # a section of 2**32 - 1 words on a small stack
    with pytest.raises(CodingError, match="a section of 4294967295 words"):
        tilekinds.BY_NAME[PREDICTIVE_SECTIONS].pop(stack, specs[:2], 0, None)
    # a section's words holding more than its tiles: the first section's two tiles decoded as one
    stack = Stack.from_words(words)
    tilekinds.BY_NAME[PREDICTIVE_SECTIONS].pop(stack, specs[2:], 2, None)
    decode = tilekinds.BY_NAME[PREDICTIVE_SECTIONS].pop(stack, specs[1:2], 1, None)
    with pytest.raises(CodingError):
        decode()
    with pytest.raises(CodingError, match="not raster tiles in a row"):
        bitsback.decode(words, schedule, specs, None, order=[2, 3, 1, 0])


def test_a_section_whose_tiles_are_not_all_priced_in_it_is_refused():
    rng = np.random.default_rng(4)
    tiles = image_tiles(rng, [(32, 32)])
    priced = bitsback.price_sections(tiles, runs=[2, 2])
    model_bits = [INF, 0.0, INF, INF]  # tile 1 would go to the model: its section is not whole
    with pytest.raises(CodingError, match="is not whole"):
        bitsback.encode_tiles(Stack(), tiles, None, model_bits=model_bits, priced=priced)
    assert not bitsback.sections_hold(tiles, priced, model_bits)
    assert bitsback.sections_hold(tiles, priced, [INF] * 4)
    noise = split_tiles(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), 16, 2)
    assert not bitsback.sections_hold(noise, bitsback.price_sections(noise))  # raw bytes cost less


def test_the_initial_statistics_are_pinned(tmp_path, monkeypatch):
    sums = predictive.initial_statistics()
    assert sums.shape == (predictive.kernels.ADAPT_STATISTICS, 4) and not sums.flags.writeable
    assert (sums[:, 1] > 0).sum() > 1000  # contexts seen in the training photographs
    assert predictive.AdaptiveState.initial().sums is sums
    changed = sums.astype(np.float32)
    changed[0, 0] += 1.0
    np.savez(tmp_path / "changed.npz", sums=changed)
    monkeypatch.setattr(predictive, "INITIAL_STATISTICS_FILE", tmp_path / "changed.npz")
    predictive.initial_statistics.cache_clear()
    try:
        with pytest.raises(CodingError, match="not the ones vaezip was built with"):
            predictive.initial_statistics()
        monkeypatch.setattr(predictive, "INITIAL_STATISTICS_FILE", tmp_path / "missing.npz")
        with pytest.raises(CodingError, match="missing or unreadable"):
            predictive.initial_statistics()
    finally:
        predictive.initial_statistics.cache_clear()
