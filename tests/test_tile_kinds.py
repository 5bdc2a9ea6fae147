"""codec.tilekinds: one registry of tile kinds, which docs/FORMAT.md's table, the header's checks and the
decoder follow; every kind's push and pop are inverses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from codec import bitsback, container, header, tilekinds
from codec.ans import Stack
from codec.errors import CodingError, HeaderError
from codec.header import CoderSettings, Header, ImageEntry
from codec.tiling import split_tiles

sys.path.insert(0, str(Path(__file__).parent / "codec_suite"))
from codec_toymodel import ToyModel, smooth_image  # noqa: E402

FORMAT_MD = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"


def documented_kinds() -> list[tuple[str, str, tuple[int, ...], bool, bool, str]]:
    """The rows of the table under '### Tile kinds' in docs/FORMAT.md."""
    text = FORMAT_MD.read_text()
    section = text[text.index("### Tile kinds") :]
    section = section[: section.index("\n#", 1)] if "\n#" in section[1:] else section
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 6, line
        code, name, formats, tiles, written, summary = cells
        assert tiles in ("1", "1 .. max_batch") and written in ("yes", "read only"), line
        rows.append((code.strip("`"), name, tuple(int(f) for f in formats.split(",")), tiles == "1",
                     written == "yes", summary))
    return rows


def test_the_docs_table_of_tile_kinds_is_the_registry():
    registered = [(k.code, k.name, k.formats, k.single, k.written, k.summary) for k in tilekinds.KINDS]
    assert documented_kinds() == registered


def test_the_registry_is_consistent():
    codes = [kind.code for kind in tilekinds.KINDS]
    assert len(set(codes)) == len(codes) and all(len(c) == 1 and c.isascii() and c.isalpha() for c in codes)
    assert len({kind.name for kind in tilekinds.KINDS}) == len(codes)
    assert bitsback.KINDS == tuple(kind.name for kind in tilekinds.KINDS)
    for kind in tilekinds.KINDS:
        assert set(kind.formats) <= set(container.READABLE_VERSIONS) and kind.formats
        # what the encoder writes today, files of today's formats may hold
        assert not kind.written or set(container.BINARY_VERSIONS) & set(kind.formats)
        assert "|" not in kind.summary and "\n" not in kind.summary
    assert [k.name for k in tilekinds.KINDS if k.needs_bits] == [bitsback.BITSBACK] + [
        tilekinds.importance_kind(samples) for samples in tilekinds.SAMPLE_COUNTS]
    assert all(tilekinds.BY_NAME[name].written for name in bitsback.WITHOUT_BITS)


# ---------------------------------------------------------------------------------------------- push and pop


def stream_tiles():
    """Four tiles of 8x8 padded shape of a 15x13 image (partial tiles: padding is recreated by the pop)."""
    image = smooth_image(np.random.default_rng(3), 3, 15, 13)
    tiles = split_tiles(image, 8, 2)
    assert len(tiles) == 4 and len({t.pixels.shape for t in tiles}) == 1 and tiles[0].neighbours == (2, 1)
    return tiles


@pytest.mark.parametrize("kind", tilekinds.KINDS, ids=lambda kind: kind.name)
def test_every_kind_pops_what_it_pushed_and_leaves_the_stack_as_it_was(kind):
    tiles = stream_tiles()
    model = ToyModel(3)
    batch = tiles[:1] if kind.single else tiles
    start = 0
    stack = Stack()
    # bits for bits-back to pop (importance-weighted batches pop up to 16 samples a tile); the others code on top
    initial = np.random.default_rng(4).integers(0, 2**16, size=2048)
    stack.push_uniform(initial, 2**16)
    before = stack.words().copy()
    replays = {}
    if kind.name in bitsback.STATEFUL:  # pushed from its recording, made in the decoder's order first
        recording = tilekinds.Stream(len(tiles), lambda k: tiles[k].pixels)
        replays[start] = tilekinds.record_adaptive(batch[0], start, recording, kind.name)
    encoder = tilekinds.Stream(len(tiles), lambda k: tiles[k].pixels, model, replays=replays)
    ideal = kind.push(stack, batch, start, encoder)
    assert ideal is not None and ideal.shape == (len(batch),) and np.all(np.isfinite(ideal))
    assert stack.num_valid_bits() > 16 * len(initial) - 64
    # The decoder has every tile but the batch's own: those after it in the stream are decoded first.
    inside = range(start, start + len(batch))
    decoder = tilekinds.Stream(len(tiles), lambda k: None if k in inside else tiles[k].pixels, model)
    decoded = kind.pop(stack, [t.spec for t in batch], start, decoder)
    if kind.deferred:  # the batch's words are off the stack already; its tiles come from them alone, later
        np.testing.assert_array_equal(stack.words(), before)
        decoded = np.stack(decoded())
    assert decoded.dtype == np.uint8 and decoded.shape == (len(batch), *batch[0].pixels.shape)
    for tile, pixels in zip(batch, decoded):
        np.testing.assert_array_equal(pixels, tile.pixels)
    np.testing.assert_array_equal(stack.words(), before)  # the bits below the batch, untouched


def test_a_one_tile_kind_refuses_a_batch_of_more():
    tiles = stream_tiles()
    for kind in tilekinds.KINDS:
        if kind.single:
            with pytest.raises(CodingError, match="exactly one tile"):
                bitsback.decode(np.zeros(0, np.uint32), [(kind.name, 2), ("direct", 2)], [t.spec for t in tiles],
                                ToyModel(3))


# ---------------------------------------------------------------------------------------------- unknown kinds


def assert_names_every_kind(message: str) -> None:
    for kind in tilekinds.KINDS:
        assert f"'{kind.code}' ({kind.name})" in message, message


def a_header(schedule=(("direct", 1),)) -> Header:
    coder = CoderSettings(2.0**-8, 16.0, 8, 4, tuple(schedule), "0.5.0", {})
    return Header("tiny", "0123456789abcdef", coder, (ImageEntry("x.png", "RGB", 8, 8),), "ab" * 32)


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_an_unknown_kind_is_refused_naming_every_valid_kind():
    obj = json.loads(header.to_json(a_header()))
    assert obj["coder"]["schedule"] == [["d", 1, 1]]
    obj["coder"]["schedule"] = [["c", 1, 1]]
    for version in (None, 1, 2):
        with pytest.raises(HeaderError, match="unknown tile kind 'c'") as error:
            header.from_json(canonical(obj), version)
        assert_names_every_kind(str(error.value))

    raw = header.to_binary(a_header(), 3)  # format 3: the kind is a byte
    assert raw.count(b"d\x01\x01") == 1
    with pytest.raises(HeaderError, match="unknown tile kind 'c'") as error:
        header.from_binary(raw.replace(b"d\x01\x01", b"c\x01\x01"))
    assert_names_every_kind(str(error.value))

    with pytest.raises(HeaderError) as error:
        header.to_json(a_header([("sideways", 1)]))
    assert_names_every_kind(str(error.value))
    with pytest.raises(CodingError) as error:
        bitsback.decode(np.zeros(0, np.uint32), [("sideways", 1)], [stream_tiles()[0].spec], ToyModel(3))
    assert_names_every_kind(str(error.value))


@pytest.mark.parametrize("kind", tilekinds.KINDS, ids=lambda kind: kind.name)
def test_each_format_takes_the_kinds_the_registry_allows_it(kind):
    obj = json.loads(header.to_json(a_header()))
    obj["coder"]["schedule"] = [[kind.code, 1, 1]]
    for version in (1, 2):
        if version in kind.formats:
            assert header.from_json(canonical(obj), version).coder.schedule == ((kind.name, 1),)
        else:
            with pytest.raises(HeaderError, match=f"tile kind '{kind.code}' \\({kind.name}\\) in a format-{version}"):
                header.from_json(canonical(obj), version)
    for version in container.BINARY_VERSIONS:
        if version in kind.formats:
            parsed, _, _ = header.from_binary(header.to_binary(a_header([(kind.name, 1)]), 3, version), version)
            assert parsed.coder.schedule == ((kind.name, 1),)
        else:
            with pytest.raises(HeaderError, match=f"in a format-{version} file"):
                header.to_binary(a_header([(kind.name, 1)]), 3, version)
            raw = header.to_binary(a_header(), 3, version)
            with pytest.raises(HeaderError, match=f"in a format-{version} file"):
                header.from_binary(raw.replace(b"d\x01\x01", kind.code.encode() + b"\x01\x01"), version)


def test_a_file_takes_the_oldest_binary_format_that_holds_its_kinds():
    assert container.binary_version([]) == container.binary_version(["bitsback", "whitened"]) == 3
    assert container.binary_version(["predictive-neighbours", "bitsback-iw4"]) == 4
    assert container.binary_version(["predictive-laplace", "bitsback"]) == 5
    assert container.binary_version(["predictive-laplace", "bitsback-iw16"]) == 5
    assert container.binary_version(["predictive-blend", "bitsback"]) == 6
    assert container.binary_version(["predictive-blend", "predictive-laplace", "bitsback-iw2"]) == 6
    assert container.binary_version(["predictive-fitted", "predictive-blend", "bitsback-iw8"]) == 8
    with pytest.raises(CodingError):
        container.binary_version(["raw"])  # format 1 only


def test_an_interrupt_while_sections_are_priced_does_not_wait_for_the_running_ones(monkeypatch):
    """Ctrl-C (or SIGTERM) while a photograph's sections are priced ends the command at once: the sections still
    running (a compiled call cannot be stopped) finish in their threads unused. Here the second section blocks
    until the test lets it go: waiting for it would never return."""
    import threading

    from codec.tiling import split_tiles

    release, started, finished = threading.Event(), threading.Event(), threading.Event()
    record = tilekinds.record_section

    def slow_second(tiles, first, *distribution):
        if first > 0:
            started.set()
            release.wait(timeout=60)  # a pool that waits for it: the test fails after a minute, not hangs
            finished.set()
        return record(tiles, first, *distribution)

    monkeypatch.setattr(tilekinds, "record_section", slow_second)
    monkeypatch.setattr(bitsback, "section_workers", lambda: 2)
    tiles = split_tiles(smooth_image(np.random.default_rng(5), 3, 32, 64), 32, 1)

    def interrupted(done: int, total: int) -> None:
        started.wait(timeout=600)
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            bitsback.price_sections(tiles, [1, 1], progress=interrupted)
        assert not finished.is_set()  # the second section still runs, and was not waited for
    finally:
        release.set()
