"""Benchmark engine behind ``vaezip bench``: classical lossless codecs, a runner shared with
learned codecs, and CSV / markdown / chart reports."""
from __future__ import annotations

from .classical import (CODEC_NAMES, Aggregate, ClassicalCodec, Codec, Row, aggregate,
                        available_codecs, get_codecs, library_versions, make_codec, run)
from .report import read_csv, write_report

__all__ = [
    "CODEC_NAMES", "Aggregate", "ClassicalCodec", "Codec", "Row", "aggregate", "available_codecs",
    "get_codecs", "library_versions", "make_codec", "run", "read_csv", "write_report",
]

