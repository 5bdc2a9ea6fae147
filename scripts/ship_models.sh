#!/usr/bin/env bash
# Ships the models of pretrained/ (export, sha256, bounds, manifest entry) from their finished runs
# (scripts/recipes.py) and the achieved rates of scripts/bench_models.sh (run that first). A few minutes on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
P="${PYTHON:-.venv/bin/python}"
R=docs/results/models
IMAGENETTE_TERMS="Imagenette images are ImageNet images: ImageNet terms of access (non-commercial research and education)"
SK_RGB="scikit-image samples (see ../shared/data README): astronaut public domain (NASA); chelsea, coffee CC0; ihc no known copyright restrictions; motorcycle pair from the Middlebury 2014 stereo benchmark, terms not stated"
SK_GREY="grey samples: camera, brick, grass, gravel, cell, microaneurysms CC0; coins no known copyright restrictions; text, clock_motion public domain; moon, page terms not stated"
"$P" scripts/ship_model.py runs/mnist mnist --recipe mnist \
  --data "mnist-train: MNIST training split less 1,000 held-out images (59,000 images, 28x28 grey)" \
  --terms "MNIST (Y. LeCun, C. Cortes, C. Burges); commonly cited under CC BY-SA 3.0" \
  --compute "2-core CPU (shared with other work), 60 minutes, 11,377 steps of 32" \
  --status "the digit specialist (vaezip compress -m mnist); not a default" \
  --eval mnist-test --eval-limit 2000 --code-limit 0 --bench $R/mnist-test/summary.csv
"$P" scripts/ship_model.py runs/photo photo --default colour --recipe photo \
  --data "stage 1 (imagenette32 recipe): Imagenette 32x32 train split less 473 held out (8,996 images); stage 2 (photo recipe): half the batches 32x32 crops of scikit-image's six colour sample photos (skimage-rgb), half Imagenette 32x32 train" \
  --terms "$IMAGENETTE_TERMS; $SK_RGB" \
  --compute "stage 1: 1 NVIDIA H100 (bf16), ~21 minutes, 32,401 steps of 32; stage 2: 2-core CPU, 41 minutes, 16,000 steps of 32" \
  --eval imagenette32-val --eval kodak --eval photos-wikimedia --tile 32 --eval-limit 2000 --code-limit 0 \
  --bench $R/imagenette32-val/summary.csv --bench $R/kodak/summary.csv --bench $R/photos-wikimedia/summary.csv
"$P" scripts/ship_model.py runs/photo-gray photo-gray --default grey --recipe photo-gray \
  --data "photo made grey (red-channel marginal), then: scikit-image's eleven grey samples (skimage-gray, weight 2), its six colour samples and Imagenette 32x32 train converted to luma (weight 1 each)" \
  --terms "$IMAGENETTE_TERMS; $SK_RGB; $SK_GREY" \
  --compute "photo's compute, then 2-core CPU, ~38 minutes, 15,000 steps of 32" \
  --status "no grey target row; coded end to end on the first 2 gray8bit images" \
  --eval gray8bit --eval kodak --tile 32 --eval-limit 2000 --code-limit 0 \
  --bench $R/gray8bit/summary.csv
PHOTOS_TRAIN_TERMS="photos_train: wallpaper collections and packages under free licences (Unsplash, Pexels, CC0, CC-BY, CC-BY-SA, GPL/LGPL), each photograph's source and licence in ../shared/data/photos_train/PROVENANCE.tsv"
# photo2 (the colour default since 2026-12-02): its Kodak files come from
#   vaezip bench kodak -n 24 -m pretrained/photo2.safetensors -c vaezip -o docs/results/photo2/kodak-vaezip
#   vaezip bench kodak -n 24 -m pretrained/photo2.safetensors -c vaezip-model -o docs/results/photo2/kodak-vaezip-model
"$P" scripts/ship_model.py runs/photo2 photo2 --default colour --recipe photo2 \
  --data "photo (see its entry), then: 32x32 crops of photos_train (327 real photographs less the 30 of its validation split, weight 3) and Imagenette 32x32 train (weight 1)" \
  --terms "$IMAGENETTE_TERMS; $SK_RGB; $PHOTOS_TRAIN_TERMS" \
  --compute "photo's compute, then 2-core CPU (one thread, shared with other work), 123 minutes, 7,001 steps of 32 at lr 2e-4 with a time-planned cosine decay (stopped 12 minutes early)" \
  --eval kodak --eval photos-train-val --eval imagenette32-val --tile 32 --eval-limit 2000 --code-limit 0 \
  --bench docs/results/photo2/kodak-vaezip/summary.csv --bench docs/results/photo2/kodak-vaezip-model/summary.csv
# photo-gray2 (the grey default since 2026-12-04): its gray8bit files come from
#   vaezip bench gray8bit -n 2 -m pretrained/photo-gray2.safetensors -c jpegls,vaezip -o docs/results/photo-gray2/gray8bit-2
#   vaezip bench gray8bit -n 9 -m pretrained/photo-gray2.safetensors -c jpegls,vaezip -o docs/results/photo-gray2/gray8bit
"$P" scripts/ship_model.py runs/photo-gray2 photo-gray2 --default grey --recipe photo-gray2 --half \
  --data "photo-gray's data, then: 32x32 crops of photos_train converted to luma (327 real photographs less the 30 of its validation split, weight 3), scikit-image's eleven grey samples (skimage-gray, weight 2) and Imagenette 32x32 train converted to luma (weight 1)" \
  --terms "$IMAGENETTE_TERMS; $SK_RGB; $SK_GREY; $PHOTOS_TRAIN_TERMS" \
  --compute "photo-gray's compute, then 2-core CPU (one thread, bfloat16 autocast on AMX, shared with other work), 95 minutes, 8,494 steps of 32 at lr 2e-4 with a time-planned cosine decay (beside another run on the other core)" \
  --eval gray8bit --eval kodak --tile 32 --eval-limit 2000 --code-limit 0 \
  --bench docs/results/photo-gray2/gray8bit-2/summary.csv --bench docs/results/photo-gray2/gray8bit/summary.csv
