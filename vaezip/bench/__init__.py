"""Benchmark engine behind ``vaezip bench``: classical lossless codecs, a runner shared with
learned codecs, and CSV / markdown / chart reports."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from .classical import (CODEC_NAMES, Aggregate, ClassicalCodec, Codec, Row, aggregate,
                        available_codecs, get_codecs, library_versions, make_codec, run)
from .report import read_csv, write_report

__all__ = [
    "CODEC_NAMES", "Aggregate", "ClassicalCodec", "Codec", "Row", "aggregate", "available_codecs",
    "get_codecs", "library_versions", "make_codec", "run", "read_csv", "write_report",
    "run_benchmark",
]


def run_benchmark(sources: Sequence[str], *, codecs: Sequence[str] | None = None,
                  extra_codecs: Sequence[Codec] = (), out_dir: str | os.PathLike | None = None,
                  limit: int | None = None, command: str | None = None,
                  progress: Callable[[Row], None] | None = None) -> tuple[list[Row], dict[str, Path]]:
    """Load each source with :func:`vaezip.data.load`, run the classical ``codecs`` (names,
    default ``CODEC_NAMES``; unavailable ones skipped) plus ``extra_codecs`` (e.g. vaezip),
    and write a report to ``out_dir`` if given.  Returns ``(rows, written files)``."""
    from vaezip.data import load

    cs: list = list(get_codecs(codecs)) + list(extra_codecs)
    rows: list[Row] = []
    for src in sources:
        iset = load(src, limit=limit)
        rows += run(iset, cs, dataset=iset.name, progress=progress)
    files = write_report(rows, out_dir, codecs=cs, command=command) if out_dir is not None else {}
    return rows, files
