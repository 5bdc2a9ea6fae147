"""Fuzz the .vz decoder: mutate real files made with an untrained tiny model and check every outcome.

    .venv/bin/python scripts/fuzz.py --cases 10000 --report fuzz-report.json [--seed 0] [--timeout 10]
        [--weights-cases 2000] [--adversarial [--adversarial-cases 500]] [--binary-cases 20000]

Each case is decoded in-process through `vaezip.api.decompress_images`. An outcome is one of:
- rejected with an exception in `vaezip.errors.USER_ERRORS` (counted by class): fine;
- decoded to exactly the original images (the mutation did not matter, e.g. a no-op edit): fine;
- any other exception (would be a traceback for the user): FAILURE;
- decoded to pixels, modes or names different from the original: FAILURE (silent corruption);
- no answer within the per-case timeout: FAILURE (hang).
Every `--cli-every`-th case also goes through the CLI (`vaezip decompress`, in-process via Typer's runner) in
an empty folder: it must exit 1 with one `vaezip: error: ...` line and leave no file behind (or, for a
harmless mutation, exit 0 and write exactly the original image).

Mutations: bit flips, byte changes, truncations, insertions, deletions, trailing bytes anywhere in the file;
and "CRC-fixed" ones that edit the header JSON (raw bytes or structured edits of its fields), the payload
words or the prefix fields and then recompute both CRC32s, so that they reach the JSON parser, the schema
checks and the decoder instead of stopping at a checksum; "resource-crc" ones forge what costs memory and
time (huge or tiny grid floats, thousands of huge images, huge tile counts, huge batches, empty payloads).

Besides the random mutations, every run also goes through (issue 19):
- crafted headers, a fixed named list: grid_bound / grid_step 1e308 and other huge or tiny floats, an empty
  archive (no images, no schedule, no payload, pixels_sha256 = sha256("")), 32 palette images of 10000x10000
  with a tiny payload, one 16-tile batch of 1024x1024 tiles, huge tile counts with empty payloads; and valid
  files whose payload is empty (black images, every mode), which must decode to the original. Each also goes
  through the CLI.
- crafted weights files (`--weights-cases` random ones after a fixed named list: negative, string and huge
  widths, num_mixtures 10^7, 6,000 stages, 100,000-deep metadata JSON, tensors of the wrong names, shapes or
  dtypes, damaged safetensors headers), loaded through `vaezip.api.load_model`: each must be a one-line
  CheckpointError / ConfigError (or load, where the edit kept the file consistent).
- with --adversarial, round trips of adversarial contents (black, white, constant, two-value, noise,
  letterboxed, gradients, 1x1 .. 3x3 and larger, in every mode L / LA / RGB / RGBA / P), compressed and
  decoded in process: anything but the exact original back is a failure; `--adversarial-cases` adds random
  small images made of large constant regions.
- with --binary-cases N, N mutations of today's files (formats 10 to 23: binary header, one CRC over the file)
  made with the shipped photo2 and photo-gray2 from crops of samples/hopper.png: bits-back and predictor tiles
  in the stream order, --fast with format 13's, 12's and 10's predictor tiles, grey, an
  archive, and an archive of 24 small crops (binary_corpus); byte edits, cuts and payload
  words, half of them with the CRC recomputed (mutate_binary). The JSON corpus above is format 2's.
The report (JSON, plus a markdown twin when the path ends in .md or with --markdown) lists the counts by
section and outcome, the failures with their mutation, the slowest rejections, and the process's peak memory
(ru_maxrss) with the cases that raised it most. --memory-limit-gb caps the address space (RLIMIT_AS), so a
case that would take the machine's memory fails as a MemoryError instead.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.container import pack_header, unpack_header  # noqa: E402

PREFIX = struct.Struct("<8sHI")
U32 = struct.Struct("<I")


class CaseTimeout(BaseException):
    """Raised by the alarm handler; a BaseException so that no `except Exception` in the decoder swallows it."""


# ---------------------------------------------------------------------------------------------- corpus


def make_model(path: Path, seed: int = 0, name: str = "tiny-rgb", channels: int = 3) -> Path:
    """An untrained tiny model (RGB, or grey with channels=1) exported as safetensors (codes losslessly, just
    not compactly)."""
    import torch

    from vaezip.checkpoint import config_to_dict, export_weights
    from vaezip.config import get_preset
    from vaezip.model import HierarchicalVAE

    torch.manual_seed(seed)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=channels))
    export_weights({"ema": model.state_dict(), "model_config": config_to_dict(model.config), "step": 0}, path, name)
    return path


def corpus_images() -> dict[str, list[tuple[str, "object"]]]:
    """Small images that exercise every path: several tiles (bits-back), alpha, palette, index fallback."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = (rng.integers(0, 256, (16, 24, 3)) // 64 * 64).astype(np.uint8)
    rgba = np.concatenate([rgb[:10, :12], rng.integers(0, 2, (10, 12, 1)).astype(np.uint8) * 255], axis=-1)
    pal = Image.fromarray(rng.integers(0, 4, (9, 11)).astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    dup = Image.fromarray(rng.integers(0, 3, (6, 7)).astype(np.uint8), "P")
    dup.putpalette([10, 20, 30, 10, 20, 30, 200, 100, 0])  # two indices share a colour: index plane
    return {
        "rgb-tiles": [("rgb.png", Image.fromarray(rgb, "RGB"))],
        "rgba": [("rgba.png", Image.fromarray(np.ascontiguousarray(rgba), "RGBA"))],
        "archive": [("pal.png", pal), ("dup.png", dup), ("small.png", Image.fromarray(rgb[:5, :3], "RGB"))],
    }


def make_corpus(loaded) -> dict[str, tuple[bytes, list]]:
    from vaezip.api import compress_images

    corpus = {}
    for key, images in corpus_images().items():
        # rgb-tiles codes its tiles through bits-back: the untrained tiny model would lose them all to the
        # predictor otherwise, and mutated bits-back payloads are what the decoder must survive most.
        # Format 2: the CRC-fixed mutations edit the header as JSON (format 3: tests/test_classic.py).
        data = compress_images(images, loaded, tile=8, predictor=key != "rgb-tiles", format_version=2).data
        corpus[key] = (data, images)
    return corpus


SHIPPED = ("photo2", "photo-gray2")  # the models binary_corpus codes with


def shipped_models() -> dict:
    """SHIPPED, loaded from pretrained/: name -> LoadedModel."""
    from vaezip.models import load_model

    return {name: load_model(ROOT / "pretrained" / f"{name}.safetensors") for name in SHIPPED}


BINARY_SECTION = "binary_format23"  # the report's section of binary_corpus's mutations (today's formats)


def binary_corpus(models: dict) -> dict[str, tuple[bytes, list, str]]:
    """Files of today's formats (10 to 23: binary header, one CRC over the file) made with the shipped models from
    crops of samples/hopper.png, key -> (data, images, model: "photo2" or "photo-gray2"): tiles by bits-back, the
    predictor and whitened bytes in the stream order (model tiles last; a grey crop as RGB, where photo2 wins a
    tile), a colour crop by the predictor alone (--fast) in sections (format 22's, in the photograph profile refined
    across channels: one, and in tiles of 16 four, cut as scripts/make_golden.py's small_sections cuts them; format
    21's refined within each channel with --format 21; format 20's unrefined with --format 20; and format 16's with
    --format 19), with format 15's staged cascade tiles in one chain
    (--format 15), with format 14's wide ones (--format 14), format 13's cascade tiles with parity (--format 13),
    format 12's without (--format 12) and format 10's least-squares ones (--format 11), a grey image, an archive of
    two, one of 24 small crops (its header deflated; format 22, some of its sections in the small-image profile
    refined, format 19's unrefined, and in format 16's sections only), a crop with metadata chunks (format 17) and
    an archive of 16-bit images with and without low parts beside an 8-bit one (format 18) and an archive of grey
    images of 1, 2, 4 and 8 bits (format 23). What the JSON
    corpus above cannot reach: the binary header's parser, the stream order, the fitted tables and the compiled
    coder under damaged words.
    `models`: shipped_models()."""
    from PIL import Image

    from vaezip.api import compress_images

    colour = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((128, 96, 224, 160))
    grey = colour.convert("L").crop((0, 0, 80, 48))
    cases = {
        "model": ([("grey-as-rgb.png", grey.convert("RGB"))], "photo2", {}),
        "fast": ([("crop.png", colour)], "photo2", {"fast": True}),
        "sections-fast": ([("crop.png", colour)], "photo2", {"fast": True, "tile": 16}),
        "refined-sections-fast": ([("crop.png", colour)], "photo2", {"fast": True, "tile": 16, "format_version": 21}),
        "photo-sections-fast": ([("crop.png", colour)], "photo2", {"fast": True, "tile": 16, "format_version": 20}),
        "format16-sections-fast": ([("crop.png", colour)], "photo2", {"fast": True, "tile": 16, "format_version": 19}),
        "staged-fast": ([("crop.png", colour)], "photo2", {"fast": True, "format_version": 15}),
        "wide-fast": ([("crop.png", colour)], "photo2", {"fast": True, "format_version": 14}),
        "parity-fast": ([("crop.png", colour)], "photo2", {"fast": True, "format_version": 13}),
        "cascade-fast": ([("crop.png", colour)], "photo2", {"fast": True, "format_version": 12}),
        "least-squares-fast": ([("crop.png", colour)], "photo2", {"fast": True, "format_version": 11}),
        "grey": ([("grey.png", grey)], "photo-gray2", {}),
        "archive": ([("crop.png", colour), ("grey-as-rgb.png", grey.convert("RGB"))], "photo2", {}),
        "small-archive": ([(f"{k}.png", colour.crop((16 * (k % 6), 16 * (k // 6), 16 * (k % 6) + 16,
                                                         16 * (k // 6) + 16))) for k in range(24)], "photo2", {}),
    }
    cases["least-squares-small-archive"] = (cases["small-archive"][0], "photo2", {"format_version": 11})
    cases["sections-small-archive"] = (cases["small-archive"][0], "photo2", {"format_version": 16})
    cases["unrefined-small-archive"] = (cases["small-archive"][0], "photo2", {"format_version": 19})
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_golden import deep_files, grey_bits_files, metadata_files, small_sections

    cases["metadata-fast"] = (metadata_files()["photo-fast.vz"][0], "photo2", {"fast": True,
                                                                              "format_version": 17})
    deep = deep_files()  # its colour images (a named model codes one kind): 16 bits with and without low parts
    colour = [item for item in deep["archive-fast.vz"][0] if item[1].mode in ("RGB", "RGBA")]
    cases["deep-fast"] = (deep["photo-fast.vz"][0] + colour, "photo2", {"fast": True, "format_version": 18})
    cases["grey-bits-fast"] = (grey_bits_files()["archive-fast.vz"][0], "photo-gray2", {"fast": True, "tile": 8})

    with small_sections():
        corpus = {key: (compress_images(images, models[model], classical=False, **options).data, images, model)
                  for key, (images, model, options) in cases.items()}
    assert corpus["fast"][0][8] == corpus["sections-fast"][0][8] == 22  # the photograph profile refined across
    assert corpus["refined-sections-fast"][0][8] == 21  # refined within each channel
    assert corpus["photo-sections-fast"][0][8] == 20  # unrefined
    assert corpus["format16-sections-fast"][0][8] == corpus["sections-small-archive"][0][8] == 16  # sections
    assert corpus["small-archive"][0][8] == 22  # and some sections in the small-image profile, refined
    assert corpus["unrefined-small-archive"][0][8] == 19  # unrefined
    assert corpus["metadata-fast"][0][8] == 17  # and each image's metadata chunks
    assert corpus["deep-fast"][0][8] == 18  # and 16-bit images
    assert corpus["grey-bits-fast"][0][8] == 23  # and grey images of 1, 2 and 4 bits
    assert corpus["staged-fast"][0][8] == 15 and corpus["wide-fast"][0][8] == 14
    assert corpus["parity-fast"][0][8] == 13 and corpus["cascade-fast"][0][8] == 12
    assert corpus["least-squares-fast"][0][8] in (10, 11) and corpus["least-squares-small-archive"][0][8] == 11
    return corpus


def mutate_binary(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One mutation of a binary-header file: a byte-level edit anywhere, half the time with the file's CRC
    recomputed so that it reaches the header parser and the decoders (a payload word replaced, most often)."""
    body = bytearray(data[:-4])
    kind = rng.choice(["bitflip", "byte", "insert", "delete", "word", "word", "truncate"])
    where = rng.randrange(len(body))
    if kind == "bitflip":
        body[where] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        body[where] = rng.randrange(256)
    elif kind == "insert":
        body[where:where] = bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 4])))
    elif kind == "delete":
        del body[where : where + rng.choice([1, 2, 4])]
    elif kind == "word":  # in the last part, where the ANS words are
        where = len(body) - 4 * rng.randrange(1, max(2, min(200, len(body) // 4)))
        body[where : where + 4] = U32.pack(rng.randrange(2**32))
    else:
        return data[: rng.randrange(len(data))], "truncate"
    if rng.random() < 0.5:
        return bytes(body) + data[-4:], f"{kind} at {where}"
    return bytes(body) + U32.pack(zlib.crc32(bytes(body))), f"{kind} at {where}, CRC recomputed"


# ---------------------------------------------------------------------------------------------- file surgery


def split_file(data: bytes) -> tuple[int, bytes, bytes]:
    """(version, header JSON bytes, payload words bytes) of a well-formed file."""
    _, version, n = PREFIX.unpack_from(data)
    header = unpack_header(bytes(data[14 : 14 + n]))
    (w,) = U32.unpack_from(data, 18 + n)
    return version, header, data[22 + n : 22 + n + 4 * w]


def build_file(header: bytes, payload: bytes, *, version: int = 1, n: int | None = None, w: int | None = None,
               magic: bytes = b"\x89.VZ\r\n\x1a\n") -> bytes:
    """A file with both CRCs right, whatever the (possibly lying) length fields say; `header` is the JSON."""
    header = pack_header(header)
    prefix = PREFIX.pack(magic, version, len(header) if n is None else n) + header
    count = U32.pack(len(payload) // 4 if w is None else w) + payload
    return prefix + U32.pack(zlib.crc32(prefix)) + count + U32.pack(zlib.crc32(count))


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


HUGE_INTS = [0, -1, 1, 2, 3, 4, 7, 8, 9, 64, 65535, 65536, 2**28, 2**31, 2**32, 2**63, 10**30]
ODD_VALUES = [None, True, False, "", "x", "RGB", "L", "P", "CMYK", "I;16", 1.5, -0.0, 1e308, [], {}, [1], {"a": 1}]


def _paths(obj, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, prefix + (index,))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def json_edit(rng: random.Random, header: bytes) -> tuple[bytes, str]:
    """A structured edit of the header JSON (re-serialized canonically): types, limits, keys, cross-fields."""
    obj = json.loads(header)
    paths = [p for p, _ in _paths(obj) if p]
    path = rng.choice(paths)
    value = None
    for _ in range(1):
        current = obj
        for key in path:
            current = current[key]
        choice = rng.random()
        if choice < 0.35 and isinstance(current, (int, float)) and not isinstance(current, bool):
            value = rng.choice(HUGE_INTS + [current + 1, current - 1, current * 2, current * 1000, float(current)])
        elif choice < 0.45 and isinstance(current, str):
            value = rng.choice([current[:-1], current + "0", current.upper(), "0" * len(current), "\u00e9" + current,
                                "../" + current, current * 3])
        elif choice < 0.55:
            value = rng.choice(ODD_VALUES)
        elif choice < 0.65 and isinstance(current, dict) and current:
            del current[rng.choice(sorted(current))]
            return canonical(obj), f"json delete key in {'/'.join(map(str, path))}"
        elif choice < 0.72 and isinstance(current, dict):
            current["zz_extra"] = 1
            return canonical(obj), f"json add key in {'/'.join(map(str, path))}"
        elif choice < 0.80 and isinstance(current, list) and current:
            if rng.random() < 0.5:
                current.append(rng.choice(current))
                return canonical(obj), f"json duplicate list item in {'/'.join(map(str, path))}"
            current.pop(rng.randrange(len(current)))
            return canonical(obj), f"json drop list item in {'/'.join(map(str, path))}"
        else:
            value = rng.choice(HUGE_INTS + ODD_VALUES)
    _set(obj, path, value)
    return canonical(obj), f"json set {'/'.join(map(str, path))} = {str(value)[:40]}"


TARGETED = [  # (path, value): cross-field edits a random walk rarely hits
    (("images", 0, "width"), 65535), (("images", 0, "height"), 4096), (("images", 0, "width"), 1),
    (("images", 0, "mode"), "L"), (("images", 0, "mode"), "RGBA"), (("images", 0, "mode"), "P"),
    (("images", 0, "mode"), "CMYK"), (("pixels_sha256",), "0" * 64), (("images", 0, "name"), "../../etc/x"),
    (("images", 0, "info"), {"planes": {"alpha": {"values": "00ff", "counts": [1, 2**28]}}}),
    (("images", 0, "info"), {"planes": []}), (("images", 0, "info"), {"planes": "index"}),
    (("images", 0, "info"), {"planes": {"index": {"values": "0001", "counts": [1, 1]}}}),
    (("images", 0, "info"), {"used": 5, "palette_mode": "RGB"}), (("images", 0, "info"), {"palette_mode": 7}),
    (("images", 0, "palette"), "00"), (("images", 0, "palette"), "ff" * 1024),
    (("coder", "tile"), 4), (("coder", "tile"), 16), (("coder", "tile"), 6), (("coder", "tile"), 65536),
    (("coder", "grid_step"), 1e-9), (("coder", "grid_step"), 0.5), (("coder", "grid_bound"), 1e9),
    (("coder", "max_batch"), 4096), (("coder", "schedule"), [["d", 1, 1]]), (("coder", "schedule"), [["b", 1, 4194304]]),
    (("coder", "schedule"), [["r", 1, 6]]), (("coder", "schedule"), [["d", 6, 1]]), (("coder", "schedule"), []),
    (("coder", "extra"), {"device": "cuda"}), (("coder", "extra"), {"device": 5}), (("coder", "constriction"), "9.9"),
    (("model", "sha256"), "0123456789abcdef"), (("model", "name"), "not-installed"),
]


def targeted_edit(rng: random.Random, header: bytes) -> tuple[bytes, str]:
    obj = json.loads(header)
    path, value = rng.choice(TARGETED)
    try:
        _set(obj, path, json.loads(json.dumps(value)))
    except (IndexError, KeyError, TypeError):
        return header, "targeted edit (no-op)"
    # Keep the schedule consistent with a huge image so that the decoder, not the schedule check, is hit.
    if path[-1] in ("width", "height") and rng.random() < 0.5:
        tile = obj["coder"]["tile"]
        im = obj["images"][0]
        tiles = -(-im["height"] // tile) * -(-im["width"] // tile)
        obj["coder"]["schedule"] = [["d", 1, 1]] + ([["b", 1, tiles - 1]] if tiles > 1 else [])
        return canonical(obj), f"targeted {'/'.join(map(str, path))} = {value} with a matching schedule"
    return canonical(obj), f"targeted {'/'.join(map(str, path))} = {str(value)[:40]}"


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One mutation of a well-formed file, and its description (starting with the kind of mutation)."""
    kind = rng.choices(
        ["bitflip", "byte", "truncate", "insert", "delete", "append", "header-bytes-crc", "json-crc", "targeted-crc",
         "payload-crc", "prefix-crc", "empty", "resource-crc"],
        weights=[14, 8, 8, 5, 5, 2, 14, 18, 10, 12, 3, 1, 6],
    )[0]
    mutated, what = _mutate(rng, data, kind)
    return mutated, f"{kind}: {what}"


def _mutate(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    version, header, payload = split_file(data)
    buf = bytearray(data)
    if kind == "bitflip":
        flips = [rng.randrange(8 * len(buf)) for _ in range(rng.choice([1, 1, 2, 3, 8]))]
        for bit in flips:
            buf[bit // 8] ^= 1 << (bit % 8)
        return bytes(buf), f"bitflip at bits {flips[:4]}"
    if kind == "byte":
        at = rng.randrange(len(buf))
        buf[at] = rng.randrange(256)
        return bytes(buf), f"byte {at} = {buf[at]}"
    if kind == "truncate":
        cut = rng.randrange(len(buf))
        return bytes(buf[:cut]), f"truncate to {cut} of {len(buf)}"
    if kind == "insert":
        at, extra = rng.randrange(len(buf) + 1), bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 4, 8, 100])))
        return bytes(buf[:at] + extra + buf[at:]), f"insert {len(extra)} bytes at {at}"
    if kind == "delete":
        at = rng.randrange(len(buf))
        n = rng.choice([1, 2, 4, 16])
        return bytes(buf[:at] + buf[at + n :]), f"delete {n} bytes at {at}"
    if kind == "append":
        return data + bytes(rng.choice([[0], [0, 0, 0, 0], list(b"\x89.VZ")])), "append trailing bytes"
    if kind == "empty":
        return b"", "zero-length file"
    if kind == "header-bytes-crc":
        h = bytearray(header)
        for _ in range(rng.choice([1, 1, 2, 4])):
            h[rng.randrange(len(h))] = rng.choice([rng.randrange(256), ord(rng.choice('0123456789{}[]",:.-e'))])
        return build_file(bytes(h), payload, version=version), "header byte edit, CRCs recomputed"
    if kind == "json-crc":
        edited, what = json_edit(rng, header)
        return build_file(edited, payload, version=version), what + ", CRCs recomputed"
    if kind == "targeted-crc":
        edited, what = targeted_edit(rng, header)
        return build_file(edited, payload, version=version), what + ", CRCs recomputed"
    if kind == "resource-crc":
        edited, keep, what = resource_edit(rng, header)
        kept = payload if keep == "all" else payload[: 4 * keep]
        return build_file(edited, kept, version=version), f"{what}, {len(kept) // 4} payload words, CRCs recomputed"
    if kind == "payload-crc":
        p = bytearray(payload)
        how = rng.choice(["flip", "word", "drop", "add", "zero", "swap"])
        if how == "flip" and p:
            bit = rng.randrange(8 * len(p))
            p[bit // 8] ^= 1 << (bit % 8)
        elif how == "word" and p:
            at = 4 * rng.randrange(len(p) // 4)
            p[at : at + 4] = U32.pack(rng.randrange(2**32))
        elif how == "drop" and p:
            p = p[4:] if rng.random() < 0.5 else p[:-4]
        elif how == "add":
            p = p + U32.pack(rng.randrange(2**32)) if rng.random() < 0.5 else U32.pack(rng.randrange(2**32)) + p
        elif how == "zero":
            p = bytearray(len(p))
        elif how == "swap" and len(p) >= 8:
            a, b = 4 * rng.randrange(len(p) // 4), 4 * rng.randrange(len(p) // 4)
            p[a : a + 4], p[b : b + 4] = p[b : b + 4], p[a : a + 4]
        return build_file(header, bytes(p), version=version), f"payload {how}, CRCs recomputed"
    # prefix-crc: lying version / lengths with valid CRCs
    field = rng.choice(["version", "n", "w"])
    if field == "version":
        v = rng.choice([0, 2, 255, 65535])
        return build_file(header, payload, version=v), f"version {v}, CRCs recomputed"
    if field == "n":
        n = rng.choice([0, len(header) - 1, len(header) + 1, 2**24, 2**32 - 1])
        return build_file(header, payload, n=n), f"header length field {n}, CRCs recomputed"
    w = rng.choice([0, len(payload) // 4 - 1, len(payload) // 4 + 1, 2**30, 2**32 - 1])
    return build_file(header, payload, w=w), f"payload length field {w}, CRCs recomputed"


HUGE_FLOATS = [1e308, 1.7976931348623157e308, 1e300, 1e100, 1e30, 65536.0, 1e-30, 1e-100, 1e-300,
               2.2250738585072014e-308, 5e-324, 0.5, 1.0, 3.0]


def _count_tiles(height: int, width: int, tile: int) -> int:
    return -(-height // tile) * -(-width // tile)


def schedule_for(tiles: int, max_batch: int, first: str = "d") -> list:
    """A schedule the header accepts for `tiles` tiles: one tile without bits-back, then full batches."""
    runs = [[first, 1, 1]]
    rest = tiles - 1
    if rest >= max_batch:
        runs.append(["b", max_batch, rest // max_batch])
    if rest % max_batch:
        runs.append(["b", rest % max_batch, 1])
    return runs if tiles else []


def huge_image_header(obj: dict, *, width: int, height: int, tile: int, max_batch: int, count: int = 1,
                      mode: str = "RGB", first: str = "d") -> dict:
    """`obj` with `count` images of width x height coded through the model, and a schedule that covers them."""
    base = {"height": height, "info": {"planes": {}}, "mode": mode, "name": "x.png", "palette": None, "width": width}
    obj["images"] = [{**base, "name": f"huge{i}.png"} for i in range(count)]
    obj["coder"].update(tile=tile, max_batch=max_batch,
                        schedule=schedule_for(count * _count_tiles(height, width, tile), max_batch, first))
    return obj


def palette_images_header(obj: dict, *, count: int, side: int, values: list[int]) -> dict:
    """`obj` with `count` P images of side x side whose pixels are all in the index plane (no model tiles)."""
    pixels = side * side
    counts = [pixels // len(values)] * len(values)
    counts[0] += pixels - sum(counts)
    entry = {"height": side, "mode": "P", "palette": "0a141e0a141ec86400", "width": side,
             "info": {"palette_mode": "RGB", "planes": {"index": {"counts": counts, "values": bytes(values).hex()}}}}
    obj["images"] = [{**entry, "name": f"pal{i}.png"} for i in range(count)]
    obj["coder"]["schedule"] = []
    return obj


def resource_edit(rng: random.Random, header: bytes) -> tuple[bytes, int | str, str]:
    """A forged header that would cost memory or time if believed: (JSON, payload words to keep or "all", what)."""
    obj = json.loads(header)
    how = rng.choice(["grid", "grid", "images", "tiles", "batch", "palettes", "empty-archive"])
    keep = rng.choice([0, 0, 1, 4, "all"])
    if how == "grid":
        field = rng.choice(["grid_bound", "grid_step"])
        value = rng.choice(HUGE_FLOATS)
        obj["coder"][field] = value
        return canonical(obj), keep, f"resource {field} = {value!r}"
    if how == "images":
        side = rng.choice([1024, 4096, 10000, 16384, 65535])
        tile = rng.choice([8, 16, 32, 256, 1024])
        count = rng.choice([1, 2, 32, 4096])
        other = rng.choice([1, 7, side])
        obj = huge_image_header(obj, width=side, height=other, tile=tile, max_batch=rng.choice([1, 16, 4096]),
                                count=count)
        return canonical(obj), keep, f"resource {count} images of {side}x{other}, tile {tile}"
    if how == "tiles":
        tile = rng.choice([1, 2, 4, 8])
        side = rng.choice([512, 4096, 10000, 16384])
        obj = huge_image_header(obj, width=side, height=side, tile=tile, max_batch=rng.choice([16, 4096]))
        return canonical(obj), keep, f"resource {side}x{side} in {tile}x{tile} tiles"
    if how == "batch":
        tile = rng.choice([256, 512, 1024])
        n = rng.choice([4, 16, 64, 4096])
        side = tile * int(n**0.5)
        obj = huge_image_header(obj, width=side, height=side, tile=tile, max_batch=n, first=rng.choice("db"))
        obj["coder"]["schedule"] = [[rng.choice("db"), n, 1]]
        return canonical(obj), keep, f"resource one batch of {n} tiles of {tile}x{tile}"
    if how == "palettes":
        count, side = rng.choice([1, 32, 4096]), rng.choice([4096, 10000, 16384])
        obj = palette_images_header(obj, count=count, side=side, values=rng.choice([[0], [0, 1], [0, 1, 2]]))
        return canonical(obj), keep, f"resource {count} palette images of {side}x{side}"
    obj["images"], obj["coder"]["schedule"] = [], []
    obj["pixels_sha256"] = hashlib.sha256(b"").hexdigest()
    return canonical(obj), 0, "resource empty archive"


# ---------------------------------------------------------------------------------------------- crafted files


class Crafted:
    """One crafted .vz file: `must_decode` files are valid and must decode to `original`; the others must be
    rejected cleanly (or decode to `original`, where the edit did not matter). A plain class, not a dataclass:
    tests load this script with importlib without registering it in sys.modules."""

    def __init__(self, name: str, data: bytes, original: list, model: str, must_decode: bool = False):
        self.name, self.data, self.original = name, data, original
        self.model = model  # "rgb" or "grey": the model that decodes it
        self.must_decode = must_decode


def black_images() -> list[tuple[str, str, list]]:
    """(name, model, images): valid images whose files carry an empty or almost empty payload (issue 19 item 1)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    bars = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bars[:32] = 0
    letterbox = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    letterbox[:8] = letterbox[-8:] = 0
    rgba_black = Image.new("RGBA", (9, 9), (0, 0, 0, 255))
    grey_bars = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    grey_bars[:, :12] = 0
    return [
        ("black-rgb-8x8", "rgb", [("black.png", Image.new("RGB", (8, 8)))]),
        ("black-rgb-1x1", "rgb", [("black.png", Image.new("RGB", (1, 1)))]),
        ("black-rgb-40x40-tiles", "rgb", [("black.png", Image.new("RGB", (40, 40)))]),
        ("black-bars-rgb-64x64", "rgb", [("bars.png", Image.fromarray(bars, "RGB"))]),
        ("black-letterbox-rgb", "rgb", [("letterbox.png", Image.fromarray(letterbox, "RGB"))]),
        ("black-rgba-opaque", "rgb", [("black.png", rgba_black)]),
        ("black-rgba-transparent", "rgb", [("clear.png", Image.new("RGBA", (9, 9)))]),
        ("black-p-1x1-default-palette", "rgb", [("p.png", Image.new("P", (1, 1)))]),
        ("black-p-16x16", "rgb", [("p.png", Image.new("P", (16, 16)))]),
        ("black-l-8x8", "grey", [("black.png", Image.new("L", (8, 8)))]),
        ("black-l-33x17-tiles", "grey", [("black.png", Image.new("L", (33, 17)))]),
        ("black-la", "grey", [("black.png", Image.new("LA", (5, 7)))]),
        ("black-bars-l", "grey", [("bars.png", Image.fromarray(grey_bars, "L"))]),
        ("black-archive-rgb", "rgb", [("a.png", Image.new("RGB", (8, 8))), ("b.png", Image.new("RGB", (3, 5))),
                                      ("c.png", Image.new("P", (2, 2)))]),
    ]


QUICK_CRAFTED = ("grid_bound 1e+308", "grid_step 5e-324", "grid_bound 1e-300", "empty archive",
                 "32 palette images of 10000x10000, 2 values", "one 16-tile batch of 1024x1024 tiles [['d', 16, 1]]",
                 "1 x 10000x10000 in 8x8 tiles, 0 payload words", "valid: black-rgb-8x8", "valid: black-bars-rgb",
                 "valid: black-p-1x1", "valid: black-l-8x8", "valid: black-rgba-transparent")


def crafted_headers(corpus: dict, models: dict, quick: bool = False) -> list[Crafted]:
    """The crafted files of issue 19, named; built from the corpus with both CRCs right. `quick`: the few
    that QUICK_CRAFTED names (for the test suite)."""
    from vaezip.api import compress_images

    out: list[Crafted] = []
    tiles_data, tiles_original = corpus["rgb-tiles"]
    archive_data, archive_original = corpus["archive"]
    version, tiles_header, tiles_payload = split_file(tiles_data)
    _, archive_header, archive_payload = split_file(archive_data)

    def edited(header: bytes, change) -> bytes:
        obj = json.loads(header)
        change(obj)
        return canonical(obj)

    for field in ("grid_bound", "grid_step"):
        for value in HUGE_FLOATS:
            header = edited(tiles_header, lambda obj: obj["coder"].__setitem__(field, value))
            out.append(Crafted(f"{field} {value!r}", build_file(header, tiles_payload), tiles_original, "rgb"))
    header = edited(tiles_header, lambda obj: obj["coder"].update(grid_bound=1e308, grid_step=5e-324))
    out.append(Crafted("grid_bound 1e308 and grid_step 5e-324", build_file(header, tiles_payload), tiles_original,
                       "rgb"))
    header = edited(archive_header, lambda obj: obj["coder"].__setitem__("grid_bound", 1e308))
    out.append(Crafted("archive grid_bound 1e308", build_file(header, archive_payload), archive_original, "rgb"))

    def empty(obj):
        obj["images"], obj["coder"]["schedule"] = [], []
        obj["pixels_sha256"] = hashlib.sha256(b"").hexdigest()

    out.append(Crafted("empty archive", build_file(edited(archive_header, empty), b""), [], "rgb"))
    out.append(Crafted("empty archive with payload", build_file(edited(archive_header, empty), archive_payload), [],
                       "rgb"))
    for count, values in ((32, [0, 1]), (32, [0]), (4096, [0, 1])):
        header = edited(archive_header, lambda obj: palette_images_header(obj, count=count, side=10000, values=values))
        out.append(Crafted(f"{count} palette images of 10000x10000, {len(values)} values, tiny payload",
                           build_file(header, archive_payload[:8]), [], "rgb"))
    for schedule in ([["d", 16, 1]], [["b", 16, 1]], [["d", 1, 1], ["b", 15, 1]]):
        def batch(obj, schedule=schedule):
            huge_image_header(obj, width=4096, height=4096, tile=1024, max_batch=16)
            obj["coder"]["schedule"] = schedule
        header = edited(tiles_header, batch)
        out.append(Crafted(f"one 16-tile batch of 1024x1024 tiles {schedule}", build_file(header, tiles_payload[:16]),
                           [], "rgb"))
    for side, other, tile, max_batch, count in ((10000, 10000, 8, 16, 1), (10000, 10000, 1, 4096, 1),
                                                (65535, 4096, 4, 4096, 1), (16384, 16384, 16, 16, 1),
                                                (64, 64, 1, 4096, 4096), (10000, 10000, 8, 16, 32)):
        for words in (0, 1):
            header = edited(tiles_header, lambda obj: huge_image_header(obj, width=side, height=other, tile=tile,
                                                                         max_batch=max_batch, count=count))
            out.append(Crafted(f"{count} x {side}x{other} in {tile}x{tile} tiles, {words} payload words",
                               build_file(header, tiles_payload[: 4 * words]), [], "rgb"))
    for name, model, images in black_images():
        if quick and not any(f"valid: {name}".startswith(q) for q in QUICK_CRAFTED):
            continue
        data = compress_images(images, models[model], tile=8, format_version=2).data
        out.append(Crafted(f"valid: {name} ({len(split_file(data)[2]) // 4} payload words)", data, images, model,
                           must_decode=True))
    if quick:
        out = [item for item in out if any(item.name.startswith(q) for q in QUICK_CRAFTED)]
    return out


# ---------------------------------------------------------------------------------------------- crafted weights


def safetensors_file(description, tensors: dict, raw_text: str | None = None) -> bytes:
    from safetensors.torch import save

    text = raw_text if raw_text is not None else json.dumps(description)
    return save(tensors, metadata=None if text is None else {"vaezip": text})


def _deep_text(description: dict, depth: int, kind: str = "[]") -> str:
    """The description's JSON with an extra key nested `depth` arrays ("[]") or objects ("{}") deep."""
    nested = "[" * depth + "]" * depth if kind == "[]" else '{"a":' * depth + "1" + "}" * depth
    return json.dumps(description)[:-1] + ', "x": ' + nested + "}"


def _set_header_json(data: bytes, change) -> bytes:
    """A safetensors file whose header JSON `change(obj)` edited, with its length prefix recomputed."""
    n = int.from_bytes(data[:8], "little")
    obj = json.loads(data[8 : 8 + n])
    change(obj)
    text = json.dumps(obj).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def weights_named(description: dict, state: dict) -> list[tuple[str, bytes]]:
    """The crafted weights files of issue 19 (and their neighbours), named."""
    import torch

    def config(**changes):
        return {**description, "model_config": {**description["model_config"], **changes}}

    def stage(**changes):
        stages = [dict(s) for s in description["model_config"]["stages"]]
        stages[0].update(changes)
        return config(stages=stages)

    first = next(iter(state))
    wide = next(key for key, value in state.items() if value.dim() > 1 and value.shape[0] != value.shape[1])
    cases = [
        ("width -5", stage(width=-5)), ("width '64'", stage(width="64")), ("width 10^12", stage(width=10**12)),
        ("width 10^300", stage(width=10**300)), ("width true", stage(width=True)), ("width 32.0", stage(width=32.0)),
        ("latent_channels 10^5", stage(latent_channels=10**5)), ("encoder_blocks 10^6", stage(encoder_blocks=10**6)),
        ("num_mixtures 10^7", config(num_mixtures=10**7)), ("num_mixtures 0", config(num_mixtures=0)),
        ("stem_factor 1000", config(stem_factor=1000)), ("pixel_context 10^9", config(pixel_context=10**9)),
        ("min_std 0", config(min_std=0.0)), ("min_std 1e308", config(min_std=1e308)),
        ("image_channels 2", config(image_channels=2)),
        ("6000 stages", config(stages=description["model_config"]["stages"] * 3000)),
        ("600 stages", config(stages=description["model_config"]["stages"] * 300)),
        ("31 G parameters", config(stages=[{"width": 1024, "encoder_blocks": 64, "latent_groups": 64,
                                            "latent_channels": 256}] * 8)),
        ("180 M parameter config, tiny tensors", config(num_mixtures=10, stages=[
            {"width": 512, "encoder_blocks": 2, "latent_groups": 2, "latent_channels": 16}] * 7)),
        ("format_version true", {**description, "format_version": True}),
        ("name 60000 chars", {**description, "name": "n" * 60000}),
    ]
    out = [(name, safetensors_file(d, state)) for name, d in cases]
    out += [
        ("metadata 100,000 deep", safetensors_file(None, state, _deep_text(description, 100_000))),
        ("metadata 20,000 deep", safetensors_file(None, state, _deep_text(description, 20_000))),
        ("metadata 5,000 deep objects", safetensors_file(None, state, _deep_text(description, 5_000, "{}"))),
        ("metadata 1 MB", safetensors_file(None, state, json.dumps(description) + " " * 2**20)),
        ("metadata NaN", safetensors_file(None, state, json.dumps(config(min_std=float("nan"))))),
        ("metadata 5000-digit width", safetensors_file(None, state, re.sub(
            r'"width": \d+', '"width": ' + "9" * 5000, json.dumps(description), count=1))),
        ("no metadata", safetensors_file(None, state, None)),
        ("tensor missing", safetensors_file(description, {k: v for k, v in state.items() if k != first})),
        ("tensor extra", safetensors_file(description, {**state, "evil": torch.zeros(3)})),
        ("tensor int32", safetensors_file(description, {**state, first: state[first].to(torch.int32)})),
        ("tensor reshaped", safetensors_file(description, {**state, wide: state[wide].flatten()})),
        ("tensor transposed", safetensors_file(description, {**state, wide: state[wide].transpose(0, 1).contiguous()})),
    ]
    genuine = safetensors_file(description, state)
    out += [
        ("safetensors shape 2^40", _set_header_json(genuine, lambda obj: obj[first].__setitem__("shape", [2**40]))),
        ("safetensors offsets past the end", _set_header_json(
            genuine, lambda obj: obj[first].__setitem__("data_offsets", [0, 2**40]))),
        ("safetensors header length 2^62", (2**62).to_bytes(8, "little") + genuine[8:]),
        ("empty file", b""),
        ("truncated", genuine[: len(genuine) // 2]),
    ]
    return out


WEIGHT_VALUES = [-5, -1, 0, 1, 2, 3, 8, 64, 65, 1024, 1025, 6000, 10**7, 2**31, 2**63, 10**30, 1e308, 5e-324, 0.5,
                 "64", "", True, False, None, [], {}, [1], {"a": 1}]


def mutate_weights(rng: random.Random, description: dict, state: dict) -> tuple[bytes, str]:
    """One random crafted weights file from the genuine description and tensors, and what was done."""
    import torch

    kind = rng.choice(["config", "config", "config", "stages", "deep", "metadata-bytes", "top", "tensor", "tensor",
                       "file-bytes", "header-json"])
    d = json.loads(json.dumps(description))
    if kind == "config":
        paths = [path for path, _ in _paths(d["model_config"]) if path]
        path = rng.choice(paths)
        value = rng.choice(WEIGHT_VALUES)
        _set(d["model_config"], path, value)
        return safetensors_file(d, state), f"config {'/'.join(map(str, path))} = {str(value)[:30]}"
    if kind == "stages":
        n = rng.choice([0, 2, 9, 100, 600, 6000])
        d["model_config"]["stages"] = (d["model_config"]["stages"] * n)[:n]
        return safetensors_file(d, state), f"{n} stages"
    if kind == "deep":
        depth = rng.choice([15, 17, 100, 1000, 20_000, 100_000])
        shape = rng.choice(["[]", "{}"])
        return safetensors_file(None, state, _deep_text(d, depth, shape)), f"metadata nested {depth} deep ({shape})"
    if kind == "metadata-bytes":
        text = list(json.dumps(d))
        for _ in range(rng.choice([1, 2, 4])):
            text[rng.randrange(len(text))] = rng.choice('0123456789{}[]",:.-eE ')
        return safetensors_file(None, state, "".join(text)), "metadata chars edited"
    if kind == "top":
        key = rng.choice(["kind", "format_version", "name", "model_config", "step"])
        if rng.random() < 0.3:
            del d[key]
            return safetensors_file(d, state), f"metadata without {key}"
        value = rng.choice(WEIGHT_VALUES + ["vaezip-weights", 1, 2])
        d[key] = value
        return safetensors_file(d, state), f"metadata {key} = {str(value)[:30]}"
    if kind == "tensor":
        tensors = dict(state)
        key = rng.choice(sorted(tensors))
        how = rng.choice(["drop", "add", "reshape", "int32", "bool", "float16", "float64", "scalar", "grow"])
        if how == "drop":
            del tensors[key]
        elif how == "add":
            tensors[key + ".extra"] = torch.zeros(2)
        elif how == "reshape":
            tensors[key] = tensors[key].flatten() if tensors[key].dim() > 1 else tensors[key][None]
        elif how in ("int32", "bool", "float16", "float64"):
            tensors[key] = tensors[key].to(getattr(torch, how))
        elif how == "scalar":
            tensors[key] = torch.zeros(())
        else:
            tensors[key] = torch.zeros(tensors[key].numel() + 1)
        return safetensors_file(d, tensors), f"tensor {key}: {how}"
    genuine = bytearray(safetensors_file(d, state))
    if kind == "file-bytes":
        n = int.from_bytes(genuine[:8], "little")
        how = rng.choice(["flip", "truncate", "length"])
        if how == "flip":
            at = rng.randrange(8 + n)
            genuine[at] ^= 1 << rng.randrange(8)
            return bytes(genuine), f"bit flipped at byte {at} (header)"
        if how == "truncate":
            cut = rng.randrange(len(genuine))
            return bytes(genuine[:cut]), f"truncated to {cut}"
        value = rng.choice([0, 1, n - 1, n + 8, 2**31, 2**62, 2**64 - 1])
        return value.to_bytes(8, "little") + bytes(genuine[8:]), f"header length {value}"
    key = rng.choice(sorted(state))
    field = rng.choice(["shape", "dtype", "data_offsets"])
    value = {"shape": rng.choice([[2**40], [0], [], [-1], [2**31, 2**31]]),
             "dtype": rng.choice(["I64", "BOOL", "F8_E4M3", "X"]),
             "data_offsets": rng.choice([[0, 2**40], [10, 0], [0, 0]])}[field]
    return _set_header_json(bytes(genuine), lambda obj: obj[key].__setitem__(field, value)), \
        f"safetensors header {key} {field} = {value}"


def run_weights_case(data: bytes, path: Path, timeout: float) -> tuple[str, str, float]:
    """Load crafted weights through `vaezip.api.load_model`: (outcome, detail, seconds)."""
    from vaezip.api import load_model
    from vaezip.checkpoint import CheckpointError
    from vaezip.config import ConfigError

    path.write_bytes(data)
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        load_model(path)
    except CaseTimeout:
        return "FAIL-timeout", f"no answer within {timeout} s", time.perf_counter() - started
    except (CheckpointError, ConfigError) as error:
        message = str(error)
        if "\n" in message.strip() or not message.strip() or len(message) > 500:
            return "FAIL-message", f"{type(error).__name__}: {message[:300]!r}", time.perf_counter() - started
        return f"error:{type(error).__name__}", message, time.perf_counter() - started
    except BaseException as error:  # noqa: BLE001
        if isinstance(error, KeyboardInterrupt):
            raise
        return "FAIL-traceback", "".join(traceback.format_exception(error))[-1500:], time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return "loaded", "", time.perf_counter() - started


# ---------------------------------------------------------------------------------------------- adversarial contents

ADVERSARIAL_MODES = ("L", "LA", "RGB", "RGBA", "P")
CONTENTS = ("black", "white", "constant", "two-value", "checker", "noise", "letterbox", "pillarbox", "black-corner",
            "gradient-h", "gradient-v", "gradient-diagonal")
SMALL_SIZES = [(w, h) for h in (1, 2, 3) for w in (1, 2, 3)]
LARGER_SIZES = [(8, 8), (16, 9), (17, 23), (40, 24)]


def content_plane(content: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 values of one adversarial content."""
    ys, xs = np.mgrid[0:height, 0:width]
    if content == "black":
        return np.zeros((height, width), np.uint8)
    if content == "white":
        return np.full((height, width), 255, np.uint8)
    if content == "constant":
        return np.full((height, width), 77, np.uint8)
    if content == "two-value":
        return np.where(rng.random((height, width)) < 0.5, 10, 11).astype(np.uint8)
    if content == "checker":
        return (((ys + xs) % 2) * 255).astype(np.uint8)
    if content == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    if content in ("letterbox", "pillarbox", "black-corner"):
        plane = rng.integers(0, 256, (height, width), dtype=np.uint8)
        if content == "letterbox":
            bar = max(1, height // 4)
            plane[:bar] = plane[-bar:] = 0
        elif content == "pillarbox":
            bar = max(1, width // 4)
            plane[:, :bar] = plane[:, -bar:] = 0
        else:
            plane[: (height + 1) // 2, : (width + 1) // 2] = 0
        return plane
    if content == "gradient-h":
        return (xs * 255 // max(1, width - 1)).astype(np.uint8)
    if content == "gradient-v":
        return (ys * 255 // max(1, height - 1)).astype(np.uint8)
    return ((xs + ys) * 255 // max(1, width + height - 2)).astype(np.uint8)


def adversarial_image(content: str, mode: str, width: int, height: int, rng: np.random.Generator, variant: int = 0):
    """A PIL image of `mode` whose every plane carries `content` (colours and alpha vary with `variant`)."""
    from PIL import Image

    plane = content_plane(content, width, height, rng)
    if mode == "L":
        return Image.fromarray(plane, "L")
    alpha = [np.full_like(plane, 255), np.zeros_like(plane), plane, content_plane("two-value", width, height, rng) * 25]
    alpha = alpha[variant % len(alpha)]
    if mode == "LA":
        return Image.fromarray(np.stack([plane, alpha], -1), "LA")
    shifts = [(0, 0, 0), (0, 85, 170), (255, 0, 0)][variant % 3]
    rgb = np.stack([(plane.astype(np.int32) + s) % 256 if content not in ("black", "white") else plane for s in shifts],
                   -1).astype(np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        return Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA")
    # P: the content as indices into a palette: the default one (black entries), a random one, or one with
    # duplicated colours (coded through the index plane).
    image = Image.fromarray((plane % 16 if variant % 3 == 2 else plane).astype(np.uint8), "P")
    if variant % 3 == 0:
        image.putpalette([0, 0, 0] * 256)
    elif variant % 3 == 1:
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    else:
        image.putpalette([10, 20, 30, 10, 20, 30] * 8)
    return image


def adversarial_suite(quick: bool = False) -> list[tuple[str, str, int, int, int]]:
    """(content, mode, width, height, variant) of the fixed suite; `quick`: a subset for the test suite."""
    sizes = SMALL_SIZES + ([] if quick else LARGER_SIZES)
    contents = ("black", "two-value", "noise", "letterbox", "gradient-diagonal") if quick else CONTENTS
    cases = []
    for mode in ADVERSARIAL_MODES:
        for index, content in enumerate(contents):
            for size_index, (width, height) in enumerate(sizes):
                if quick and (size_index + index) % 3:
                    continue
                cases.append((content, mode, width, height, index + size_index))
    return cases


def random_adversarial(rng: random.Random, nrng: np.random.Generator):
    """A random small image made of large constant regions (plus some noise and gradients), as hypothesis would."""
    from PIL import Image

    mode = rng.choice(ADVERSARIAL_MODES)
    width, height = rng.randint(1, 48), rng.randint(1, 48)
    background = rng.choice([0, 0, 0, 255, rng.randrange(256)])
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 1}[mode]
    array = np.full((height, width, channels), background, np.uint8)
    parts = []
    for _ in range(rng.randint(0, 4)):
        y0, x0 = rng.randrange(height), rng.randrange(width)
        y1, x1 = rng.randint(y0 + 1, height), rng.randint(x0 + 1, width)
        fill = rng.choice(["constant", "constant", "noise", "gradient"])
        region = array[y0:y1, x0:x1]
        if fill == "constant":
            region[...] = rng.randrange(256)
        elif fill == "noise":
            region[...] = nrng.integers(0, 256, region.shape, dtype=np.uint8)
        else:
            region[...] = (np.arange(x1 - x0) * 7 % 256).astype(np.uint8)[None, :, None]
        parts.append(f"{fill}@{y0}:{y1},{x0}:{x1}")
    if mode == "P":
        image = Image.fromarray(array[..., 0], "P")
        image.putpalette(nrng.integers(0, 256, 768, dtype=np.uint8).tobytes() if rng.random() < 0.5 else [0] * 768)
    else:
        image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    tile = rng.choice([8, 16, 32])
    return image, f"random {mode} {width}x{height} background {background} tile {tile} [{' '.join(parts)}]", tile


def run_round_trip(image, loaded, timeout: float, tile: int | None) -> tuple[str, str, float]:
    """Compress then decode in process: 'identical', or a FAIL-* outcome."""
    from vaezip.api import compress_images, decompress_images
    from vaezip.errors import USER_ERRORS

    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    stage = "compress"
    try:
        data = compress_images([("case.png", image)], loaded, tile=tile, device="cpu").data
        stage = "decode"
        decoded = decompress_images(data, loaded, device="cpu")
    except CaseTimeout:
        return "FAIL-timeout", f"{stage}: no answer within {timeout} s", time.perf_counter() - started
    except USER_ERRORS as error:
        return f"FAIL-{stage}-refused", f"{type(error).__name__}: {str(error)[:300]}", time.perf_counter() - started
    except BaseException as error:  # noqa: BLE001
        if isinstance(error, KeyboardInterrupt):
            raise
        return "FAIL-traceback", f"{stage}: " + "".join(traceback.format_exception(error))[-1500:], \
            time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - started
    if compare(decoded, [("case.png", image)]) != "identical":
        return "FAIL-wrong-image", "decoded without error to a different image", seconds
    return "identical", "", seconds


# ---------------------------------------------------------------------------------------------- running


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Section:
    """Outcome counts, failures, slowest rejections and peak-memory jumps of one part of a run."""

    def __init__(self, name: str):
        self.name = name
        self.outcomes: Counter = Counter()
        self.failures: list[dict] = []
        self.slowest: list[tuple] = []
        self.memory: list[tuple] = []  # (MiB the process peak grew during the case, label)
        self.examples: dict[str, str] = {}
        self.seconds = 0.0

    def add(self, label: str, outcome: str, detail: str, seconds: float, peak_before: float) -> None:
        self.outcomes[outcome] += 1
        self.seconds += seconds
        self.examples.setdefault(outcome, f"{label}: {detail[:200]}")
        if outcome.startswith("FAIL"):
            self.failures.append({"section": self.name, "case": label, "outcome": outcome, "detail": detail})
        elif outcome.startswith("error"):
            self.slowest = sorted(self.slowest + [(seconds, label, outcome[len("error:"):], detail[:200])],
                                  reverse=True)[:10]
        grown = peak_rss_mib() - peak_before
        if grown > 1:
            self.memory = sorted(self.memory + [(grown, label)], reverse=True)[:5]

    def summary(self) -> dict:
        return {
            "cases": sum(self.outcomes.values()),
            "case_seconds": round(self.seconds, 1),
            "outcomes": dict(sorted(self.outcomes.items())),
            "failure_count": len(self.failures),
            "slowest_rejections": [{"seconds": round(t, 4), "case": c, "error": e, "message": m}
                                   for t, c, e, m in self.slowest],
            "largest_peak_memory_growth": [{"mib": round(m, 1), "case": c} for m, c in self.memory],
            "example_per_outcome": self.examples,
        }


def compare(decoded, original) -> str:
    """'identical', 'renamed' (same pixels, a stored name edited: names are header data, not pixels, and are
    made safe by the CLI), or 'different'."""
    from vaezip.images import pixel_checksum

    if len(decoded) != len(original):
        return "different"
    renamed = False
    for (name_a, a), (name_b, b) in zip(decoded, original):
        if a.mode != b.mode or a.size != b.size or pixel_checksum(a) != pixel_checksum(b):
            return "different"
        renamed |= name_a != name_b
    return "renamed" if renamed else "identical"


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(data: bytes, original, loaded, timeout: float) -> tuple[str, str, float]:
    """(outcome, detail, seconds). outcome: 'error:<Class>', 'identical', 'FAIL-traceback', 'FAIL-wrong-image',
    'FAIL-timeout'; 'renamed' when the pixels are right but a stored name was edited."""
    from vaezip.api import decompress_images
    from vaezip.errors import USER_ERRORS

    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        decoded = decompress_images(data, loaded, device="cpu")
    except CaseTimeout:
        return "FAIL-timeout", f"no answer within {timeout} s", time.perf_counter() - started
    except USER_ERRORS as error:
        message = str(error)
        outcome = f"error:{type(error).__name__}"
        if "\n" in message.strip() or not message.strip():
            return "FAIL-message", f"{type(error).__name__}: {message!r}", time.perf_counter() - started
        return outcome, message, time.perf_counter() - started
    except BaseException as error:  # noqa: BLE001 - that is the point
        if isinstance(error, KeyboardInterrupt):
            raise
        return "FAIL-traceback", "".join(traceback.format_exception(error))[-1500:], time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - started
    verdict = compare(decoded, original)
    if verdict != "different":
        return verdict, "", seconds
    return "FAIL-wrong-image", "decoded without error to different images", seconds


def run_cli_case(data: bytes, model_path: Path, decodes: bool) -> str | None:
    """Through the CLI in an empty folder: None if fine, else what went wrong."""
    from typer.testing import CliRunner

    from vaezip.cli import app

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "case.vz"
        source.write_bytes(data)
        args = ["decompress", str(source), "-d", str(Path(folder) / "out"), "-m", str(model_path), "-q"]
        try:
            result = CliRunner(mix_stderr=False).invoke(app, args)
        except TypeError:  # click >= 8.2 keeps stderr apart already
            result = CliRunner().invoke(app, args)
        left = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and p.name != "case.vz")
        stderr = getattr(result, "stderr", "") or ""
        if decodes:
            return None if result.exit_code == 0 and left else f"exit {result.exit_code}, files {left}"
        if left:
            return f"files left behind: {left}"
        if result.exit_code != 1:
            return f"exit code {result.exit_code} ({result.exception!r})"
        lines = [line for line in stderr.splitlines() if line.strip()]
        if len(lines) != 1 or not lines[0].startswith("vaezip: error: "):
            return f"stderr is not one error line: {stderr[-300:]!r}"
    return None


def fuzz(cases: int, seed: int = 0, timeout: float = 10.0, cli_every: int = 50, model_path: Path | None = None,
         time_limit: float | None = None, log=None, *, crafted: bool = True, weights_cases: int = 0,
         adversarial: bool = False, adversarial_cases: int = 0, quick: bool = False,
         grey_model_path: Path | None = None, binary_cases: int = 0) -> dict:
    """Run `cases` random mutations of the corpus, then (crafted) the crafted headers and the named crafted
    weights, `weights_cases` random crafted weights, (adversarial) the adversarial round-trip suite plus
    `adversarial_cases` random contents, and `binary_cases` mutations of format 10 to 20 files made with the
    shipped models (binary_corpus). `quick`: small subsets of the crafted headers and of the adversarial suite
    (for the test suite)."""
    from vaezip.api import load_model

    with tempfile.TemporaryDirectory() as folder:
        if model_path is None:
            model_path = make_model(Path(folder) / "tiny-rgb.safetensors")
        if grey_model_path is None and (crafted or adversarial):
            grey_model_path = make_model(Path(folder) / "tiny-grey.safetensors", name="tiny-grey", channels=1)
        loaded = load_model(model_path)
        models = {"rgb": loaded}
        paths = {"rgb": model_path, "grey": grey_model_path}
        if grey_model_path is not None:
            models["grey"] = load_model(grey_model_path)
        corpus = make_corpus(loaded)
        keys = sorted(corpus)
        rng = random.Random(seed)
        outcomes: Counter = Counter()
        kinds: Counter = Counter()
        failures, slowest, examples = [], [], {}
        memory: list[tuple] = []
        cli_checked = cli_failures = 0
        started = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _alarm)

        def out_of_time() -> bool:
            return time_limit is not None and time.perf_counter() - started > time_limit

        sections = {}
        try:
            done = 0
            for index in range(cases):
                if out_of_time():
                    break
                key = keys[index % len(keys)]
                data, original = corpus[key]
                mutated, what = mutate(rng, data)
                kinds[what.split(":")[0]] += 1
                peak_before = peak_rss_mib()
                outcome, detail, seconds = run_case(mutated, original, loaded, timeout)
                outcomes[outcome] += 1
                examples.setdefault(outcome, f"{key}: {what}: {detail[:200]}")
                if outcome.startswith("FAIL"):
                    failures.append({"case": index, "file": key, "mutation": what, "outcome": outcome, "detail": detail})
                elif outcome.startswith("error"):
                    slowest.append((seconds, index, key, what, outcome, detail[:200]))
                    slowest = sorted(slowest, reverse=True)[:10]
                if peak_rss_mib() - peak_before > 1:
                    grown = peak_rss_mib() - peak_before
                    memory = sorted(memory + [(grown, f"{index} {key}: {what}")], reverse=True)[:5]
                if cli_every and index % cli_every == 0 and not outcome.startswith("FAIL"):
                    cli_checked += 1
                    problem = run_cli_case(mutated, model_path, outcome in ("identical", "renamed"))
                    if problem:
                        cli_failures += 1
                        failures.append({"case": index, "file": key, "mutation": what, "outcome": "FAIL-cli",
                                         "detail": problem})
                done += 1
                if log is not None and done % 500 == 0:
                    log(f"{done} cases, {time.perf_counter() - started:.0f} s, failures {len(failures)}")

            if crafted:
                section = sections["crafted_headers"] = Section("crafted_headers")
                for item in crafted_headers(corpus, models, quick):
                    if out_of_time():
                        break
                    peak_before = peak_rss_mib()
                    outcome, detail, seconds = run_case(item.data, item.original, models[item.model], timeout)
                    if item.must_decode and outcome not in ("identical", "renamed") and not outcome.startswith("FAIL"):
                        outcome, detail = "FAIL-valid-file-refused", f"{outcome}: {detail}"
                    if not outcome.startswith("FAIL"):
                        problem = run_cli_case(item.data, paths[item.model], outcome in ("identical", "renamed"))
                        if problem:
                            outcome, detail = "FAIL-cli", problem
                    section.add(item.name, outcome, detail, seconds, peak_before)
                if log is not None:
                    log(f"crafted headers: {dict(section.outcomes)}")

                section = sections["crafted_weights"] = Section("crafted_weights")
                genuine = Path(paths["rgb"])
                from safetensors import safe_open
                from safetensors.torch import load_file

                with safe_open(str(genuine), framework="pt") as handle:
                    description = json.loads(handle.metadata()["vaezip"])
                state = load_file(str(genuine))
                target = Path(folder) / "crafted.safetensors"
                wrng = random.Random(seed + 1)
                named = weights_named(description, state)
                for index in range(len(named) + weights_cases):
                    if out_of_time():
                        break
                    if index < len(named):
                        label, data = named[index]
                    else:
                        data, label = mutate_weights(wrng, description, state)
                        label = f"{index}: {label}"
                    peak_before = peak_rss_mib()
                    outcome, detail, seconds = run_weights_case(data, target, timeout)
                    section.add(label, outcome, detail, seconds, peak_before)
                if log is not None:
                    log(f"crafted weights: {dict(section.outcomes)}")

            if adversarial:
                section = sections["adversarial"] = Section("adversarial")
                nrng = np.random.default_rng(seed)
                arng = random.Random(seed + 2)
                suite = adversarial_suite(quick=quick)
                for index in range(len(suite) + adversarial_cases):
                    if out_of_time():
                        break
                    if index < len(suite):
                        content, mode, width, height, variant = suite[index]
                        image = adversarial_image(content, mode, width, height, nrng, variant)
                        tile = 8 if max(width, height) >= 8 else None
                        label = f"{content} {mode} {width}x{height} v{variant}"
                    else:
                        image, label, tile = random_adversarial(arng, nrng)
                    model = models["grey" if image.mode in ("L", "LA") else "rgb"]
                    peak_before = peak_rss_mib()
                    outcome, detail, seconds = run_round_trip(image, model, timeout, tile)
                    section.add(label, outcome, detail, seconds, peak_before)
                    if log is not None and (index + 1) % 200 == 0:
                        log(f"adversarial: {index + 1} cases, failures {len(section.failures)}")
            if binary_cases:
                section = sections[BINARY_SECTION] = Section(BINARY_SECTION)
                shipped = shipped_models()
                binary = binary_corpus(shipped)
                brng = random.Random(seed + 3)
                binary_keys = sorted(binary)
                for index in range(binary_cases):
                    if out_of_time():
                        break
                    key = binary_keys[index % len(binary_keys)]
                    data, original, model = binary[key]
                    mutated, what = mutate_binary(brng, data)
                    peak_before = peak_rss_mib()
                    outcome, detail, seconds = run_case(mutated, original, shipped[model], timeout)
                    if cli_every and index % cli_every == 0 and not outcome.startswith("FAIL"):
                        problem = run_cli_case(mutated, ROOT / "pretrained" / f"{model}.safetensors",
                                               outcome in ("identical", "renamed"))
                        if problem:
                            outcome, detail = "FAIL-cli", problem
                    section.add(f"{index} {key}: {what}", outcome, detail, seconds, peak_before)
                    if log is not None and (index + 1) % 1000 == 0:
                        log(f"binary formats 10 to 23: {index + 1} cases, failures {len(section.failures)}")
        finally:
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - started
    errors = {k[len("error:"):]: v for k, v in sorted(outcomes.items()) if k.startswith("error:")}
    section_failures = [f for section in sections.values() for f in section.failures]
    every_rejection = [(s, f"mutations: {i} {k}: {w}", o[len("error:"):], d) for s, i, k, w, o, d in slowest]
    every_rejection += [(t, f"{section.name}: {c}", e, m)
                        for section in sections.values() for t, c, e, m in section.slowest]
    every_rejection = sorted(every_rejection, reverse=True)[:10]
    every_growth = [(m, f"mutations: {c}") for m, c in memory]
    every_growth += [(m, f"{section.name}: {c}") for section in sections.values() for m, c in section.memory]
    return {
        "cases": done,
        "total_cases": done + sum(sum(section.outcomes.values()) for section in sections.values()),
        "seed": seed,
        "seconds": round(elapsed, 1),
        "timeout_s": timeout,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "corpus": {key: len(corpus[key][0]) for key in keys},
        "mutation_kinds": dict(sorted(kinds.items())),
        "rejected_by_class": errors,
        "rejected": sum(errors.values()),
        "decoded_identical": outcomes.get("identical", 0),
        "decoded_same_pixels_renamed": outcomes.get("renamed", 0),
        "tracebacks": outcomes.get("FAIL-traceback", 0),
        "wrong_images": outcomes.get("FAIL-wrong-image", 0),
        "timeouts": outcomes.get("FAIL-timeout", 0),
        "bad_messages": outcomes.get("FAIL-message", 0),
        "cli_checked": cli_checked,
        "cli_failures": cli_failures,
        "files_left_behind": sum(1 for f in failures if f["outcome"] == "FAIL-cli" and "left behind" in f["detail"]),
        "slowest_rejections": [
            {"seconds": round(s, 4), "case": i, "file": k, "mutation": w, "error": o[len("error:"):], "message": d}
            for s, i, k, w, o, d in slowest
        ],
        "slowest_rejections_overall": [{"seconds": round(t, 4), "case": c, "error": e, "message": m}
                                       for t, c, e, m in every_rejection],
        "largest_peak_memory_growth": [{"mib": round(m, 1), "case": c}
                                       for m, c in sorted(every_growth, reverse=True)[:10]],
        "sections": {name: section.summary() for name, section in sections.items()},
        "example_per_outcome": examples,
        "failures": (failures + section_failures)[:50],
        "mutation_failure_count": len(failures),
        "failure_count": len(failures) + len(section_failures),
    }


def to_markdown(report: dict) -> str:
    lines = [
        "# vaezip decoder fuzz report",
        "",
        f"{report['total_cases']} cases (seed {report['seed']}) in {report['seconds']} s, per-case timeout "
        f"{report['timeout_s']} s, peak memory (ru_maxrss) {report['peak_rss_mib']} MiB; "
        f"{report['cases']} mutated files of format 2, corpus sizes {report['corpus']}.",
    ]
    if report["cases"]:
        lines += ["", "| mutations: outcome | count |", "|---|---|"]
        for name, count in report["rejected_by_class"].items():
            lines.append(f"| rejected: {name} | {count} |")
        for key in ("decoded_identical", "decoded_same_pixels_renamed", "tracebacks", "wrong_images", "timeouts",
                    "bad_messages", "cli_checked", "cli_failures", "files_left_behind"):
            lines.append(f"| {key.replace('_', ' ')} | {report[key]} |")
        lines += ["", "Mutation kinds: " + ", ".join(f"{k} {v}" for k, v in report["mutation_kinds"].items())]
    for name, section in report["sections"].items():
        lines += ["", f"| {name.replace('_', ' ')}: outcome ({section['cases']} cases) | count |", "|---|---|"]
        lines += [f"| {outcome} | {count} |" for outcome, count in section["outcomes"].items()]
    lines += ["", "## Slowest rejections (all sections)", ""]
    for item in report["slowest_rejections_overall"]:
        lines.append(f"- {item['seconds']} s, {item['case']} -> {item['error']}: {item['message']}")
    lines += ["", "## Largest growth of the peak memory", ""]
    for item in report["largest_peak_memory_growth"]:
        lines.append(f"- +{item['mib']} MiB: {item['case']}")
    lines += ["", f"## Failures ({report['failure_count']}, first 50)", ""]
    for item in report["failures"]:
        where = (f"case {item['case']} ({item['file']}): {item['mutation']}" if "section" not in item
                 else f"{item['section']}: {item['case']}")
        lines.append(f"- {where} -> {item['outcome']}")
        lines.append("  ```\n  " + item["detail"].replace("\n", "\n  ") + "\n  ```")
    return "\n".join(lines) + "\n"


def checked_kernels() -> None:
    """--boundscheck: the kernels compiled with numba's bounds checks, in a cache folder of this run's (the usual
    cache keeps the unchecked forms), and their fallback to the plain forms made an error: an IndexError inside
    them then fails its case (a traceback) instead of being retried by the plain forms."""
    if "numba" in sys.modules:
        raise SystemExit("--boundscheck: numba was imported before its settings could be made")
    os.environ["NUMBA_BOUNDSCHECK"] = "1"
    cache = tempfile.mkdtemp(prefix="vaezip-fuzz-boundscheck-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["NUMBA_CACHE_DIR"] = cache
    from codec import kernels

    def fail(reason: str, error: BaseException | None = None) -> None:
        raise RuntimeError(f"a compiled kernel failed under bounds checking: {reason}") from error

    kernels.disable = fail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="random mutations of the .vz corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--cli-every", type=int, default=50, help="also run every N-th case through the CLI (0: never)")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (reports cases done)")
    parser.add_argument("--no-crafted", action="store_true", help="skip the crafted headers and crafted weights")
    parser.add_argument("--weights-cases", type=int, default=1000,
                        help="random crafted weights files, after the named ones")
    parser.add_argument("--adversarial", action="store_true", help="also run the adversarial round-trip suite")
    parser.add_argument("--adversarial-cases", type=int, default=200,
                        help="random adversarial images after the fixed suite (with --adversarial)")
    parser.add_argument("--binary-cases", type=int, default=0,
                        help="mutations of format 10 to 23 files made with the shipped models (binary header, "
                             "the predictor's tiles, bits-back)")
    parser.add_argument("--boundscheck", action="store_true",
                        help="compile the coder's kernels with numba's bounds checks (in a cache of their own) and "
                             "count a kernel that fails (its fallback to the plain forms) as a failure: an index "
                             "out of range shows up, where the compiled forms would read past an array silently")
    parser.add_argument("--memory-limit-gb", type=float, default=8.0,
                        help="cap this process's address space (RLIMIT_AS; 0: no cap), so that a case which "
                             "would take the machine's memory fails as a MemoryError instead")
    parser.add_argument("--report", type=Path, required=True, help="summary: .json, or .md for markdown")
    parser.add_argument("--markdown", action="store_true", help="also write a .md next to a .json report")
    args = parser.parse_args(argv)
    if args.boundscheck:
        checked_kernels()
    import torch

    torch.set_num_threads(1)
    if args.memory_limit_gb > 0:
        limit = int(args.memory_limit_gb * 2**30)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    report = fuzz(args.cases, args.seed, args.timeout, args.cli_every,
                  time_limit=None if args.minutes is None else args.minutes * 60,
                  log=lambda line: print(line, file=sys.stderr, flush=True), crafted=not args.no_crafted,
                  weights_cases=args.weights_cases, adversarial=args.adversarial,
                  adversarial_cases=args.adversarial_cases, binary_cases=args.binary_cases)
    if args.report.suffix == ".md":
        args.report.write_text(to_markdown(report))
    else:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
        if args.markdown:
            args.report.with_suffix(".md").write_text(to_markdown(report))
    summary = {k: report[k] for k in ("total_cases", "cases", "rejected", "decoded_identical",
                                      "decoded_same_pixels_renamed", "tracebacks", "wrong_images", "timeouts",
                                      "bad_messages", "cli_failures", "files_left_behind", "failure_count",
                                      "peak_rss_mib")}
    summary["sections"] = {name: section["outcomes"] for name, section in report["sections"].items()}
    summary["slowest_rejection"] = (report["slowest_rejections_overall"] or [None])[0]
    print(json.dumps(summary))
    return 1 if report["failure_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
