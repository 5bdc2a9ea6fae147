"""Fuzz the .vz decoder: mutate real files made with an untrained tiny model and check every outcome.

    .venv/bin/python scripts/fuzz.py --cases 10000 --report fuzz-report.json [--seed 0] [--timeout 10]

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
checks and the decoder instead of stopping at a checksum. The report (JSON, plus a markdown twin when the
path ends in .md or with --markdown) lists the counts, the failures with their mutation, and the slowest
rejections.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
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


def make_model(path: Path, seed: int = 0, name: str = "tiny-rgb") -> Path:
    """An untrained tiny RGB model exported as safetensors (codes losslessly, just not compactly)."""
    import torch

    from vaezip.checkpoint import config_to_dict, export_weights
    from vaezip.config import get_preset
    from vaezip.model import HierarchicalVAE

    torch.manual_seed(seed)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=3))
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
        data = compress_images(images, loaded, tile=8, predictor=key != "rgb-tiles").data
        corpus[key] = (data, images)
    return corpus


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
         "payload-crc", "prefix-crc", "empty"],
        weights=[14, 8, 8, 5, 5, 2, 14, 18, 10, 12, 3, 1],
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


# ---------------------------------------------------------------------------------------------- running


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
         time_limit: float | None = None, log=None) -> dict:
    from vaezip.api import load_model

    with tempfile.TemporaryDirectory() as folder:
        if model_path is None:
            model_path = make_model(Path(folder) / "tiny-rgb.safetensors")
        loaded = load_model(model_path)
        corpus = make_corpus(loaded)
        keys = sorted(corpus)
        rng = random.Random(seed)
        outcomes: Counter = Counter()
        kinds: Counter = Counter()
        failures, slowest, examples = [], [], {}
        cli_checked = cli_failures = 0
        started = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _alarm)
        try:
            done = 0
            for index in range(cases):
                if time_limit is not None and time.perf_counter() - started > time_limit:
                    break
                key = keys[index % len(keys)]
                data, original = corpus[key]
                mutated, what = mutate(rng, data)
                kinds[what.split(":")[0]] += 1
                outcome, detail, seconds = run_case(mutated, original, loaded, timeout)
                outcomes[outcome] += 1
                examples.setdefault(outcome, f"{key}: {what}: {detail[:200]}")
                if outcome.startswith("FAIL"):
                    failures.append({"case": index, "file": key, "mutation": what, "outcome": outcome, "detail": detail})
                elif outcome.startswith("error"):
                    slowest.append((seconds, index, key, what, outcome, detail[:200]))
                    slowest = sorted(slowest, reverse=True)[:10]
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
        finally:
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - started
    errors = {k[len("error:"):]: v for k, v in sorted(outcomes.items()) if k.startswith("error:")}
    return {
        "cases": done,
        "seed": seed,
        "seconds": round(elapsed, 1),
        "timeout_s": timeout,
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
        "example_per_outcome": examples,
        "failures": failures[:50],
        "failure_count": len(failures),
    }


def to_markdown(report: dict) -> str:
    lines = [
        "# vaezip decoder fuzz report",
        "",
        f"{report['cases']} mutated files (seed {report['seed']}) in {report['seconds']} s, per-case timeout "
        f"{report['timeout_s']} s; corpus sizes {report['corpus']}.",
        "",
        "| outcome | count |",
        "|---|---|",
    ]
    for name, count in report["rejected_by_class"].items():
        lines.append(f"| rejected: {name} | {count} |")
    for key in ("decoded_identical", "decoded_same_pixels_renamed", "tracebacks", "wrong_images", "timeouts", "bad_messages", "cli_checked",
                "cli_failures", "files_left_behind"):
        lines.append(f"| {key.replace('_', ' ')} | {report[key]} |")
    lines += ["", "Mutation kinds: " + ", ".join(f"{k} {v}" for k, v in report["mutation_kinds"].items()), "",
              "## Slowest rejections", ""]
    for item in report["slowest_rejections"]:
        lines.append(f"- {item['seconds']} s, {item['file']}: {item['mutation']} -> {item['error']}: {item['message']}")
    lines += ["", f"## Failures ({report['failure_count']})", ""]
    for item in report["failures"]:
        lines.append(f"- case {item['case']} ({item['file']}): {item['mutation']} -> {item['outcome']}")
        lines.append("  ```\n  " + item["detail"].replace("\n", "\n  ") + "\n  ```")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--cli-every", type=int, default=50, help="also run every N-th case through the CLI (0: never)")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (reports cases done)")
    parser.add_argument("--report", type=Path, required=True, help="summary: .json, or .md for markdown")
    parser.add_argument("--markdown", action="store_true", help="also write a .md next to a .json report")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    report = fuzz(args.cases, args.seed, args.timeout, args.cli_every,
                  time_limit=None if args.minutes is None else args.minutes * 60,
                  log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.report.suffix == ".md":
        args.report.write_text(to_markdown(report))
    else:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
        if args.markdown:
            args.report.with_suffix(".md").write_text(to_markdown(report))
    print(json.dumps({k: report[k] for k in ("cases", "rejected", "decoded_identical", "decoded_same_pixels_renamed", "tracebacks", "wrong_images",
                                              "timeouts", "bad_messages", "cli_failures", "files_left_behind")}))
    return 1 if report["failure_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
