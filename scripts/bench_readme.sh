#!/usr/bin/env bash
# Regenerates docs/results/ (results.md, results.csv, summary.csv, bpsp_bars.png, scatter_vaezip.png): the
# default bench's report. It is the default `vaezip bench` run (all default data sets, their default limits,
# every classical codec, vaezip per image and as one archive, shipped default models), under a minute on a
# 2-core CPU (27 s on 2026-12-07). Extra arguments go to `vaezip bench`, e.g. `--model runs/photo --model runs/mnist`.
# Needs the data root (../shared/data or $VAEZIP_DATA) and the bench extra (imagecodecs, matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."
VAEZIP="${VAEZIP:-.venv/bin/vaezip}"
[ -x "$VAEZIP" ] || VAEZIP=vaezip
exec "$VAEZIP" bench --out docs/results --force "$@"
