#!/usr/bin/env bash
# The pixel-context head's coding orders compared at equal training (issue 14's ablation of DVAE++'s
# multi-scale conditional decoder): a fresh head of width 64 on the shipped photo2, trained alone (the VAE
# frozen) for STEPS steps of 32 crops on photo2's data, seed 0, one thread; in the row order and in the
# multi-scale order. Then the tiled bound (32x32, as files are cut) of photo2 and of both, on Kodak and on
# photos_train's validation split.
#
#   bash scripts/context_ablation.sh [STEPS] [WORK]        (defaults 1500, /tmp/vaezip-context)
#
# Needs ../shared/data. Prints every bound; the runs stay under WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-1500}
WORK=${2:-/tmp/vaezip-context}
VAEZIP=${VAEZIP:-.venv/bin/vaezip}
DATA="photos-train@3+imagenette32-train@1"
for order in rows scales; do
  if [ ! -e "$WORK/$order/last.pt" ]; then
    OMP_NUM_THREADS=1 "$VAEZIP" train "$DATA" --init photo2 --pixel-context 64 --context-order "$order" \
      --train-only-context --lr 1e-3 --steps "$STEPS" --seed 0 --threads 1 --out "$WORK/$order"
  fi
done
for model in photo2 "$WORK/rows" "$WORK/scales"; do
  for set in kodak photos-train-val; do
    echo "== $model on $set (32x32 tiles)"
    OMP_NUM_THREADS=1 "$VAEZIP" eval "$model" "$set" --tile 32 | grep -i "bound"
  done
done
