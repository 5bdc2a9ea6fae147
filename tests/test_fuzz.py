"""The decoder under mutated files (scripts/fuzz.py): every case is a clean rejection or the original images.

The fast subsets run in the normal suite: random mutations of .vz files; a few of the crafted headers of
issue 19 (huge / tiny grid floats, an empty archive, 32 palette images of 10000x10000, a 16-tile batch of
1024x1024 tiles, huge tile counts with an empty payload, valid black-image files); the named crafted weights
files and a few random ones; and a small adversarial round-trip suite. The full run is `-m slow` or
`python scripts/fuzz.py --cases 10000 --adversarial --report fuzz.json`. No case is judged by its time (a busy
machine is no failure) except the per-case hang timeout, set far above any real case.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("vaezip_fuzz", ROOT / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def check(report: dict) -> None:
    assert report["failure_count"] == 0, fuzz.to_markdown(report)
    assert report["tracebacks"] == report["wrong_images"] == report["timeouts"] == 0
    assert report["files_left_behind"] == report["cli_failures"] == 0
    # The mutations reach past the checksums: header schema, limits and the decoder itself all see cases.
    for name in ("ChecksumError", "HeaderError", "TruncatedError", "IntegrityError"):
        assert report["rejected_by_class"].get(name, 0) > 0, report["rejected_by_class"]


def check_sections(report: dict, adversarial: bool = True) -> None:
    sections = report["sections"]
    headers = sections["crafted_headers"]["outcomes"]
    assert not any(outcome.startswith("FAIL") for outcome in headers), fuzz.to_markdown(report)
    assert headers.get("identical", 0) > 0, headers  # the valid black-image files decode
    assert headers.get("error:LimitError", 0) > 0 and headers.get("error:HeaderError", 0) > 0, headers
    weights = sections["crafted_weights"]["outcomes"]
    assert set(weights) <= {"error:CheckpointError", "error:ConfigError", "loaded"}, fuzz.to_markdown(report)
    assert weights.get("error:CheckpointError", 0) >= 30, weights  # every named crafted file, at least
    if adversarial:
        assert set(sections["adversarial"]["outcomes"]) == {"identical"}, fuzz.to_markdown(report)
    assert report["peak_rss_mib"] > 0


def test_fuzz_fast(tiny_weights, tmp_path):
    report = fuzz.fuzz(400, seed=12345, timeout=60.0, cli_every=40, model_path=tiny_weights[3], crafted=False)
    assert report["cases"] == 400
    check(report)
    (tmp_path / "report.md").write_text(fuzz.to_markdown(report))


def test_fuzz_crafted_weights_and_adversarial_quick(tiny_weights, tmp_path):
    report = fuzz.fuzz(0, seed=1, timeout=60.0, cli_every=0, model_path=tiny_weights[3],
                       grey_model_path=tiny_weights[1], crafted=True, weights_cases=20, adversarial=True,
                       adversarial_cases=10, quick=True)
    (tmp_path / "report.md").write_text(fuzz.to_markdown(report))
    check_sections(report)
    assert report["sections"]["adversarial"]["cases"] >= 80
    names = set(report["sections"]["crafted_headers"]["example_per_outcome"].values())
    assert names  # the report names a case per outcome


def test_fuzz_binary_formats_quick(tmp_path):
    """Mutations of today's files made with the shipped models (formats 10 to 16: bits-back, the predictor's
    least-squares and cascade tiles, with parity and without, wide, staged, in sections, the stream order, whitened
    tiles, deflated headers): every one a one-line rejection or the original images, also through the CLI."""
    report = fuzz.fuzz(0, seed=7, timeout=60.0, cli_every=15, crafted=False, binary_cases=90)
    (tmp_path / "report.md").write_text(fuzz.to_markdown(report))
    section = report["sections"][fuzz.BINARY_SECTION]
    assert section["cases"] == 90 and section["failure_count"] == 0, fuzz.to_markdown(report)
    # CRC-fixed edits reach the decoders (a damaged payload is caught by the pixels' checksum at the latest).
    outcomes = section["outcomes"]
    assert outcomes.get("error:IntegrityError", 0) > 0 and outcomes.get("error:ChecksumError", 0) > 0


def test_named_crafted_cases_are_built_as_issue_19_describes(tiny_weights):
    """The crafted files are what their names say (so the fuzz keeps testing what the issue reported)."""
    import json

    from vaezip.api import load_model

    loaded = load_model(tiny_weights[3])
    grey = load_model(tiny_weights[1])
    corpus = fuzz.make_corpus(loaded)
    crafted = {item.name: item for item in fuzz.crafted_headers(corpus, {"rgb": loaded, "grey": grey}, quick=True)}
    header = lambda name: json.loads(fuzz.split_file(crafted[name].data)[1])  # noqa: E731
    empty = header("empty archive")
    assert empty["images"] == [] and empty["coder"]["schedule"] == []
    assert empty["pixels_sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert fuzz.split_file(crafted["empty archive"].data)[2] == b""
    palettes = header("32 palette images of 10000x10000, 2 values, tiny payload")
    assert len(palettes["images"]) == 32 and {(i["width"], i["height"]) for i in palettes["images"]} == {(10000, 10000)}
    assert header("grid_bound 1e+308")["coder"]["grid_bound"] == 1e308
    batch = next(name for name in crafted if name.startswith("one 16-tile batch"))
    assert header(batch)["coder"]["tile"] == 1024 and header(batch)["coder"]["schedule"] == [["d", 16, 1]]
    valid = [item for item in crafted.values() if item.must_decode]
    assert valid and any(fuzz.split_file(item.data)[2] == b"" for item in valid)


@pytest.mark.slow
def test_fuzz_full(tiny_weights):
    report = fuzz.fuzz(10_000, seed=0, timeout=60.0, cli_every=50, model_path=tiny_weights[3],
                       grey_model_path=tiny_weights[1], crafted=True, weights_cases=1000, adversarial=True,
                       adversarial_cases=200)
    check(report)
    check_sections(report)
