#!/usr/bin/env bash
# One prepared GPU window (the workplace's `device` tool: one lent H200, ~10 minutes a call): the checks
# that need a GPU, in one call, with their results brought back.
#
#   bash scripts/gpu_window.sh stage    # here, before the window: wheels, images, CPU-made files (~2 min)
#   (the device call `stage` prints: its command is `bash scripts/gpu_window.sh run`, carry .gpu and .whl)
#   bash scripts/gpu_window.sh check DIR  # here, after it: DIR = the call's files_at; decodes the GPU's files
#
# `run` (there) decodes on the GPU the files made here on the CPU, encodes the same images on the GPU and
# decodes them on that machine's CPU (torch 2.11 there, 2.13 here), brings those files back for `check`,
# times kodim23 each way on the GPU (scripts/coding_speed.py, twice: the first pays CUDA's and numba's
# start), the training throughput of the presets (scripts/throughput.py), and a 25-Mpixel mosaic of the two Kodak
# images (scripts/make_mosaic.py) with --fast on every core and on two (its 16 sections: what more cores buy).
# Every result lands in $OUT.
#
# What it cannot do: train on photos_train. The working tree travels whole (tracked files, ~57 MB with
# pretrained/) and a call carries at most 64 MiB, so the 46 MB of photos_train and the 35 MB of Imagenette
# 32x32 do not fit beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-}"
case "$action" in
stage)
  P="${PYTHON:-.venv/bin/python}"
  DATA="${VAEZIP_DATA:-../shared/data}"
  rm -rf .gpu && mkdir -p .gpu/data/kodak .whl
  grep -qx '/.gpu/' .gitignore || { echo "scripts/gpu_window.sh: add /.gpu/ to .gitignore first" >&2; exit 1; }
  cp "$DATA/kodak/kodim05.png" "$DATA/kodak/kodim23.png" .gpu/data/kodak/
  version=$("$P" -c "import constriction, importlib.metadata as m; print(m.version('constriction'))")
  ls .whl/constriction-"$version"-*.whl >/dev/null 2>&1 || "$P" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "constriction==$version"
  VAEZIP_DATA=.gpu/data "$P" scripts/portability.py encode .gpu/cpu/files --shipped
  tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  carried=$(du -cb .gpu .whl | tail -1 | cut -f1)
  echo "staged: .gpu and .whl, $((carried / 1000)) kB beside $((tracked / 1000000)) MB of tracked files (limit 64 MiB)"
  echo "device run: command 'bash scripts/gpu_window.sh run', carry [\".gpu\", \".whl\"], timeout_s 540"
  ;;
run)
  : "${OUT:?run this on the device machine, where OUT is set}"
  # A rehearsal here: OUT=/tmp/out PYTHON=.venv/bin/python GPU_WINDOW_DEVICE=cpu bash scripts/gpu_window.sh run
  python3() { "${PYTHON:-python3}" "$@"; }
  device="${GPU_WINDOW_DEVICE:-cuda}"
  python3 -c "import constriction" 2>/dev/null ||
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD" VAEZIP_DATA="$PWD/.gpu/data" PYTHONUNBUFFERED=1
  set +e  # every step reports; one failure does not hide the others
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/machine.txt"
  echo "== files made on this project's CPU, decoded on the GPU"
  python3 scripts/portability.py decode .gpu/cpu/files --shipped --device "$device" | tee "$OUT/cpu-to-gpu.json"
  echo "== files made on the GPU, decoded on that machine's CPU"
  rm -rf /tmp/gpu && mkdir -p /tmp/gpu && cp -r .gpu/cpu/weights /tmp/gpu/weights  # the same tiny models' files
  python3 scripts/portability.py encode /tmp/gpu/files --shipped --device "$device"
  python3 scripts/portability.py decode /tmp/gpu/files --shipped --device cpu | tee "$OUT/gpu-to-cpu.json"
  tar -C /tmp/gpu -cf "$OUT/gpu-files.tar" files
  echo "== kodim23 each way on the GPU"
  for round in 1 2; do
    python3 scripts/coding_speed.py .gpu/data/kodak/kodim23.png --device "$device" | tee "$OUT/speed-$device-$round.txt"
  done
  echo "== training throughput on the GPU"
  timeout 120 "${PYTHON:-python3}" scripts/throughput.py --presets cpu gpu --size 32 --device "$device" | tee "$OUT/throughput.txt"
  echo "== a 25-Mpixel photograph (16 sections) with --fast on every core of that machine, then on two"
  python3 scripts/make_mosaic.py .gpu/data/kodak 8 8 /tmp/mosaic.png
  timeout 150 "${PYTHON:-python3}" scripts/coding_speed.py /tmp/mosaic.png --fast | tee "$OUT/mosaic-every-core.txt"
  timeout 150 taskset -c 0,1 "${PYTHON:-python3}" scripts/coding_speed.py /tmp/mosaic.png --fast | tee "$OUT/mosaic-two-cores.txt"
  ;;
check)
  dir="${2:?give the files_at folder of the device call}"
  P="${PYTHON:-.venv/bin/python}"
  rm -rf .gpu/back && mkdir -p .gpu/back && tar -C .gpu/back -xf "$dir/gpu-files.tar"
  cp -r .gpu/cpu/weights .gpu/back/weights
  echo "files made on the GPU, decoded here (made -> decoded: result per file):"
  for setting in "" "ONEDNN_MAX_CPU_ISA=AVX2" "ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1"; do
    echo "  ${setting:-default}: $(env $setting VAEZIP_DATA=.gpu/data "$P" scripts/portability.py decode .gpu/back/files --shipped)"
  done
  ;;
*)
  echo "usage: bash scripts/gpu_window.sh stage | run | check DIR" >&2
  exit 2
  ;;
esac
