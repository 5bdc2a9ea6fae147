#!/usr/bin/env bash
# The shipped models against the classical codecs on the issue-5 target rows, each into docs/results/models/SET:
#   mnist-test (first 2,000, one archive, model mnist), imagenette32-val (first 2,000, one archive, photo),
#   kodak (all 24, one file per image, photo), photos-wikimedia (all 24, or the first WIKIMEDIA_LIMIT; one file per image),
#   and gray8bit (first 2, one file per image, photo-gray; no issue target).
# About an hour on a 2-core CPU (40 minutes with WIKIMEDIA_LIMIT=12); vaezip coding is nearly all of it.
# It made docs/results/models/ on 2026-11-23, the README's rows of the first shipped models as that day's coder
# coded them. Run today it measures today's coder (classical codings, today's predictor) with those models: other
# figures, replacing the committed ones (--force).
set -euo pipefail
cd "$(dirname "$0")/.."
VAEZIP="${VAEZIP:-.venv/bin/vaezip}"
[ -x "$VAEZIP" ] || VAEZIP=vaezip
OUT=docs/results/models
"$VAEZIP" bench mnist-test -n 2000 -m pretrained/mnist.safetensors -c classical,vaezip-archive -o "$OUT/mnist-test" --force
"$VAEZIP" bench imagenette32-val -n 2000 -m pretrained/photo.safetensors -c classical,vaezip-archive \
    -o "$OUT/imagenette32-val" --force
"$VAEZIP" bench kodak -n 24 -m pretrained/photo.safetensors -c classical,vaezip -o "$OUT/kodak" --force
"$VAEZIP" bench photos-wikimedia -n "${WIKIMEDIA_LIMIT:-24}" -m pretrained/photo.safetensors -c classical,vaezip \
    -o "$OUT/photos-wikimedia" --force
"$VAEZIP" bench gray8bit -n 2 -m pretrained/photo-gray.safetensors -c classical,vaezip -o "$OUT/gray8bit" --force
