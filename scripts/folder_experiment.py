"""A newcomer's training run, as issue 16 describes it: a folder of 3,000 CIFAR-10 training images as PNG
files, `vaezip train FOLDER` for 30 minutes with the defaults (it fine-tunes the shipped photo model, holds
out images of the folder, and at the end codes held-out images with the new model, the shipped one, WebP and
JPEG-XL for real), the model installed by name, then 20 of the images compressed into an archive with it and
decompressed by name in a fresh process.

    python scripts/folder_experiment.py [--minutes 30] [--work /tmp/vaezip-folder] [--images 3000]

Needs ../shared/data/cifar10_subset4k. Everything it writes goes under --work (and the user model folder,
$VAEZIP_MODELS, which it points there too); the output of each command is shown as it runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_subset4k" / "cifar10_train_first4000.npz"


def run(command: list[str], env: dict[str, str]) -> None:
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vaezip-folder"))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--name", default="cifar-folder")
    args = parser.parse_args()
    if not CIFAR.exists():
        sys.exit(f"{CIFAR} is missing: this experiment needs ../shared/data")
    folder, run_dir = args.work / "images", args.work / "run"
    if run_dir.exists():
        sys.exit(f"{run_dir} exists: remove {args.work} for a new experiment")
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(CIFAR) as data:
        images = data["x"][: args.images]  # N, 32, 32, 3 uint8
    for index, pixels in enumerate(images):
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{index:05d}.png")
    print(f"{len(images)} PNG files in {folder}")

    env = dict(os.environ, VAEZIP_MODELS=str(args.work / "models"))
    vaezip = str(Path(sys.executable).with_name("vaezip"))
    run([vaezip, "train", str(folder), "--out", str(run_dir), "--minutes", repr(args.minutes),
         "--name", args.name], env)
    run([vaezip, "models"], env)
    # The last 20 images of the folder as one archive (the model path: an archive of 32x32 photos is where the
    # model beats the classical codings), decoded by the model's name in a fresh process.
    samples = sorted(folder.iterdir())[-20:]
    packed, unpacked = args.work / "samples.vz", args.work / "decoded"
    run([vaezip, "compress", *map(str, samples), "-m", args.name, "-o", str(packed), "--force"], env)
    run([vaezip, "info", str(packed)], env)
    run([vaezip, "decompress", str(packed), "-d", str(unpacked), "--force"], env)
    same = all(np.array_equal(np.asarray(Image.open(sample)), np.asarray(Image.open(unpacked / sample.name)))
               for sample in samples)
    print(f"{len(samples)} images decoded by the model's name in a fresh process: {'identical' if same else 'DIFFERENT'}")
    sys.exit(0 if same else 1)

if __name__ == "__main__":
    main()
