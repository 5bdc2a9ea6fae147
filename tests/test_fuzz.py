"""The decoder under mutated files (scripts/fuzz.py): every case is a clean rejection or the original images.

The fast subset runs in the normal suite; the full run (10,000 cases) is `-m slow` or
`python scripts/fuzz.py --cases 10000 --report fuzz.json`.
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


def test_fuzz_fast(tiny_weights, tmp_path):
    report = fuzz.fuzz(400, seed=12345, timeout=60.0, cli_every=40, model_path=tiny_weights[3])
    assert report["cases"] == 400
    check(report)
    (tmp_path / "report.md").write_text(fuzz.to_markdown(report))


@pytest.mark.slow
def test_fuzz_full(tiny_weights):
    report = fuzz.fuzz(10_000, seed=0, timeout=60.0, cli_every=50, model_path=tiny_weights[3])
    check(report)
