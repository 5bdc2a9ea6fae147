"""The portability matrix: files made under one kernel setting must decode bit-exactly under every other.

    python scripts/portability.py encode FOLDER [--shipped]   # writes FOLDER/*.vz under the current settings
    python scripts/portability.py decode FOLDER [--shipped]   # decodes every FOLDER/*.vz, checks the pixels
                                   # (the tiny models' weights: FOLDER/../weights, made by the first of them)
    python scripts/portability.py matrix [--shipped]          # both, under every setting of SETTINGS, each in
                                                              # a fresh process; prints the matrix

Settings stand in for other machines: ONEDNN_MAX_CPU_ISA=AVX2 (a laptop CPU), ATEN_CPU_CAPABILITY=avx2 and
=default (older and non-x86 CPUs), 1 and 3 threads. With CUDA_VISIBLE_DEVICES set and a GPU present, add
`--device cuda` to encode or decode on the GPU. Images: every mode (L, LA, RGB, RGBA, P) and an archive,
coded model-only (every tile through bits-back, so the network and its tables decide every bit) by seeded
untrained tiny models; with --shipped also a photograph crop (or a synthetic photo-like image) coded by the
shipped default models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SETTINGS = {
    "default": {},
    "avx2-onednn": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx2-aten": {"ATEN_CPU_CAPABILITY": "avx2"},
    "generic-aten": {"ATEN_CPU_CAPABILITY": "default"},
    "1-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "3-threads": {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"},
}


def test_images(shipped: bool) -> dict[str, list[tuple[str, Image.Image]]]:
    """File name -> the images it holds (deterministic: the decoder side rebuilds them to compare)."""
    rng = np.random.default_rng(13)
    y, x = np.mgrid[0:40, 0:44]
    smooth = np.clip(120 + 60 * np.sin(x / 5.0)[..., None] + 40 * np.cos(y / 4.0)[..., None]
                     + rng.normal(0, 8, (40, 44, 3)), 0, 255).astype(np.uint8)
    alpha = np.clip(255 - 4 * x - 2 * y, 0, 255).astype(np.uint8)
    palette = Image.fromarray(smooth, "RGB").quantize(colors=48, method=Image.Quantize.MEDIANCUT, dither=0)
    grey = smooth[..., 1]
    images = {
        "rgb.vz": [("rgb.png", Image.fromarray(smooth, "RGB"))],
        "rgba.vz": [("rgba.png", Image.fromarray(np.dstack([smooth, alpha]), "RGBA"))],
        "l.vz": [("l.png", Image.fromarray(grey, "L"))],
        "la.vz": [("la.png", Image.fromarray(np.dstack([grey, alpha]), "LA"))],
        "p.vz": [("p.png", palette)],
        "archive.vz": [("a.png", Image.fromarray(smooth[:24, :20], "RGB")), ("b.png", Image.fromarray(smooth[5:, 3:], "RGB"))],
    }
    if shipped:
        from vaezip.data import data_root

        kodak = data_root() / "kodak" / "kodim05.png"  # $VAEZIP_DATA where set: both sides must see the same
        photo = Image.open(kodak).convert("RGB").crop((64, 64, 160, 128)) if kodak.is_file() else Image.fromarray(
            np.clip(np.kron(smooth, np.ones((2, 2, 1))), 0, 255).astype(np.uint8)[:64, :80], "RGB")
        images["photo-shipped.vz"] = [("photo.png", photo)]
        images["grey-shipped.vz"] = [("grey.png", photo.convert("L"))]
    return images


def make_models(folder: Path) -> None:
    """The seeded untrained tiny models as weights files, made once: random initialisation itself differs
    between kernel settings (torch's vectorized samplers), so every process must load the same files."""
    from conftest import make_tiny_weights

    folder.mkdir(parents=True, exist_ok=True)
    for channels, name in ((1, "tiny-grey"), (3, "tiny-rgb")):
        if not (folder / f"{name}.safetensors").is_file():
            make_tiny_weights(folder / f"{name}.safetensors", channels, name)


def _models(folder: Path):
    from vaezip.api import load_model

    make_models(folder)
    return {1: load_model(folder / "tiny-grey.safetensors"), 3: load_model(folder / "tiny-rgb.safetensors")}


def encode(folder: Path, shipped: bool, device: str) -> None:
    from vaezip.api import compress_images

    folder.mkdir(parents=True, exist_ok=True)
    models = _models(folder.parent / "weights")
    for name, images in test_images(shipped).items():
        if "shipped" in name:
            result = compress_images(images, None, device=device)  # the default model of the mode
        else:
            model = models[1 if images[0][1].mode in ("L", "LA") else 3]
            result = compress_images(images, model, tile=16, device=device, predictor=False)
        (folder / name).write_bytes(result.data)


def decode(folder: Path, shipped: bool, device: str) -> dict[str, str]:
    """File name -> "ok" or the reason it failed."""
    from vaezip.api import decompress_images, read_header

    outcome = {}
    models = {m.name: m for m in _models(folder.parent / "weights").values()}
    for name, images in test_images(shipped).items():
        data = (folder / name).read_bytes()
        try:
            model = models.get(read_header(data).model_name)  # None: the shipped model named in the file
            decoded = decompress_images(data, model, device=device)
            same = [(n, im.mode) for n, im in decoded] == [(n, im.mode) for n, im in images] and all(
                np.array_equal(np.asarray(a), np.asarray(b)) for (_, a), (_, b) in zip(decoded, images))
            outcome[name] = "ok" if same else "WRONG PIXELS"
        except Exception as error:  # noqa: BLE001 - reported, not raised: the matrix shows every cell
            outcome[name] = f"FAILED: {str(error)[:120]}"
    return outcome


def _run(command: list[str], setting: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **SETTINGS[setting]}
    return subprocess.run([sys.executable, __file__, *command], capture_output=True, text=True, env=env,
                          timeout=1800)


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.vz")))).hexdigest()[:16]


def matrix(shipped: bool) -> dict:
    """Encode under every setting (fresh processes), check the bytes agree, decode every setting's files under
    the default and the default's files under every setting."""
    extra = ["--shipped"] if shipped else []
    report = {"encode": {}, "decode": {}}
    with tempfile.TemporaryDirectory() as scratch:
        make_models(Path(scratch) / "weights")
        folders = {}
        for setting in SETTINGS:
            folders[setting] = Path(scratch) / setting
            made = _run(["encode", str(folders[setting]), *extra], setting)
            if made.returncode != 0:
                raise SystemExit(f"encode under {setting} failed: {made.stderr[-2000:]}")
            report["encode"][setting] = digest(folders[setting])
        pairs = [("default", s) for s in SETTINGS] + [(s, "default") for s in SETTINGS if s != "default"]
        for made_under, decoded_under in pairs:
            result = _run(["decode", str(folders[made_under]), *extra], decoded_under)
            if result.returncode != 0:
                raise SystemExit(f"decode under {decoded_under} failed: {result.stderr[-2000:]}")
            report["decode"][f"{made_under} -> {decoded_under}"] = json.loads(result.stdout.splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["encode", "decode", "matrix"])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--shipped", action="store_true", help="also code images with the shipped default models")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.action == "encode":
        encode(args.folder, args.shipped, args.device)
    elif args.action == "decode":
        print(json.dumps(decode(args.folder, args.shipped, args.device)))
    else:
        report = matrix(args.shipped)
        print("files (sha256 of all bytes) made under each setting:")
        for setting, value in report["encode"].items():
            print(f"  {setting:14s} {value}")
        print("decoded (made under -> decoded under: files ok / files):")
        for pair, outcome in report["decode"].items():
            good = sum(v == "ok" for v in outcome.values())
            bad = {k: v for k, v in outcome.items() if v != "ok"}
            print(f"  {pair:32s} {good}/{len(outcome)}" + (f"  {bad}" if bad else ""))


if __name__ == "__main__":
    main()
