"""Ship a training run as a model in pretrained/: EMA weights as safetensors, sha256, config, provenance and
figures measured here (the bound with `vaezip.evaluate`, the achieved rate by really compressing).

    python scripts/ship_model.py runs/mnist mnist --recipe mnist \
        --data "mnist-train (MNIST train split, 59,000 images)" --terms "MNIST: Y. LeCun, C. Cortes, C. Burges" \
        --compute "2-core CPU, 60 minutes" --eval mnist-test --eval-limit 2000 --code-limit 0 \
        --bench docs/results/models/mnist-test/summary.csv

The shipped models: `bash scripts/ship_models.sh`, after `bash scripts/bench_models.sh` (whose rates
`--bench` reads). To refresh only the achieved rates of shipped weights after a new bench, without exporting
(an export by a newer vaezip writes other metadata, hence another sha256):

    python scripts/ship_model.py --refresh photo --bench docs/results/models/kodak/summary.csv ...
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.ans import constriction_version  # noqa: E402
# The format of the model path's files, which refreshed figures are of (format 6: the predictor's blend tiles).
from codec.container import ORDER_VERSION as VZ_VERSION  # noqa: E402
from vaezip import data as datasets  # noqa: E402
from vaezip.api import compress_images, load_model  # noqa: E402
from vaezip.checkpoint import export_weights, load_checkpoint, sha256_file  # noqa: E402
from vaezip.config import FORMAT_VERSION  # noqa: E402
from vaezip.evaluate import evaluate  # noqa: E402
from vaezip.zoo import MANIFEST, PRETRAINED_DIR  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--default", choices=["colour", "grey"], help="make it the default for these images")
    parser.add_argument("--data", required=True, help="what it was trained on")
    parser.add_argument("--terms", required=True, help="the training data's terms")
    parser.add_argument("--compute", required=True, help="where and how long it trained")
    parser.add_argument("--status", default="", help="e.g. 'interim'")
    parser.add_argument("--eval", action="append", default=[], help="data set for the bound (repeatable)")
    parser.add_argument("--eval-limit", type=int, default=2000)
    parser.add_argument("--tile", type=int, help="evaluate the bound on tiles, as the coder cuts images")
    parser.add_argument("--code-limit", type=int, default=200, help="images compressed for the achieved rate (0: none; take it from --bench)")
    parser.add_argument("--half", action="store_true",
                        help="store the weights as float16 (half the file; the figures are of that model)")
    parser.add_argument("--recipe", help="the scripts/recipes.py recipe that made the run (recorded)")
    parser.add_argument("--bench", type=Path, action="append", default=[],
                        help="a `vaezip bench` summary.csv: its vaezip rows for this model become figures")
    if len(sys.argv) > 1 and sys.argv[1] == "--refresh":
        refresh(sys.argv[2:])
        return
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.run)
    PRETRAINED_DIR.mkdir(exist_ok=True)
    weights = PRETRAINED_DIR / f"{args.name}.safetensors"
    digest = export_weights(checkpoint, weights, args.name, half=args.half)
    loaded = load_model(weights)
    figures = {}
    for source in args.eval:
        images = datasets.load(source, limit=args.eval_limit, channels=loaded.model.config.image_channels)
        result = evaluate(loaded.model, images.images, batch_size=64, tile=args.tile)
        cut = f", {args.tile}x{args.tile} tiles" if args.tile else ""
        figures[f"{source} bound (first {len(images)}{cut})"] = round(result.bound_bpsp, 4)
        print(f"{source}: bound {result.bound_bpsp:.4f} on the first {len(images)}", flush=True)
        if args.code_limit == 0:
            continue
        coded = images.subset(range(min(args.code_limit, len(images))))
        pil = [(f"{i}.png", Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)) for i, image in enumerate(coded)]
        started = time.perf_counter()
        packed = compress_images(pil, loaded, device="cpu")
        figures[f"{source} achieved, one archive of the first {len(pil)}"] = round(packed.achieved_bpsp, 4)
        figures[f"{source} bound of those {len(pil)} as coded"] = round(packed.bound_bpsp, 4)
        print(f"{source}: bound {result.bound_bpsp:.4f}; archive of {len(pil)}: achieved {packed.achieved_bpsp:.4f} "
              f"vs bound {packed.bound_bpsp:.4f} in {time.perf_counter() - started:.1f} s", flush=True)

    for summary in args.bench:
        figures.update(bench_figures(summary, digest, loaded.model.config.image_channels))

    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"format_version": 1, "models": {}}
    counters = checkpoint.get("counters", {})
    manifest["models"][args.name] = {
        "file": weights.name,
        "sha256": digest,
        "bytes": weights.stat().st_size,
        "channels": loaded.model.config.image_channels,
        "config": checkpoint["model_config"],
        "train_config": checkpoint["train_config"],
        "data": args.data,
        "terms": args.terms,
        "steps": int(checkpoint["step"]),
        "images_seen": int(counters.get("images_seen", 0)),
        "compute": args.compute,
        "figures": figures,
        "measured_on": f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}",
        "status": args.status,
        "init": checkpoint.get("init"),
        "recipe": f"python scripts/recipes.py train {args.recipe}" if args.recipe else None,
        "constriction": constriction_version(),
        "vz_format": VZ_VERSION,
        "weights_format": FORMAT_VERSION,
    }
    if args.default:
        manifest.setdefault("defaults", {})[args.default] = args.name
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"{weights}: sha256 {digest}; manifest updated")


def refresh(argv: list[str]) -> None:
    """--refresh NAME --bench SUMMARY...: replace a shipped model's bench figures, keeping its weights."""
    parser = argparse.ArgumentParser(prog="ship_model.py --refresh")
    parser.add_argument("name")
    parser.add_argument("--bench", type=Path, action="append", required=True)
    args = parser.parse_args(argv)
    manifest = json.loads(MANIFEST.read_text())
    entry = manifest["models"][args.name]
    weights = PRETRAINED_DIR / entry["file"]
    if sha256_file(weights) != entry["sha256"]:
        sys.exit(f"{weights}: sha256 does not match the manifest")
    fresh = {}
    for summary in args.bench:
        fresh.update(bench_figures(summary, entry["sha256"], entry["channels"]))
    stale = [key for key in entry["figures"] if key.endswith(" achieved") or key.endswith(") bound")]
    entry["figures"] = {**{k: v for k, v in entry["figures"].items() if k not in stale}, **fresh}
    entry["measured_on"] = f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}"
    entry["vz_format"] = VZ_VERSION  # the figures are of files in the format vaezip writes now
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"{args.name}: {len(fresh)} bench figures refreshed")


def bench_figures(summary: Path, digest: str, channels: int) -> dict[str, float]:
    """The vaezip rows of a bench summary made with these weights: the report's flags name the sha256, and
    of a run with a grey and a colour model only the data sets with this model's channel count count."""
    import csv

    results = summary.with_name("results.md").read_text() if summary.with_name("results.md").exists() else ""
    if digest[:16] not in results:
        sys.exit(f"{summary}: not made with these weights (sha256 {digest[:16]}... is not in its results.md)")
    images: dict[str, set[str]] = {}  # data set -> image indices (an archive row stands for all of them)
    with open(summary.with_name("results.csv"), newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["channels"]) == channels and int(row["index"]) >= 0:
                images.setdefault(row["dataset"], set()).add(row["index"])
    figures = {}
    with open(summary, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["codec"].startswith("vaezip") or row["dataset"] not in images:
                continue
            kind = {"vaezip-archive": "one archive", "vaezip-model": "one file per image, model path only",
                    "vaezip-fast": "one file per image, --fast (no network)"}.get(row["codec"], "one file per image")
            label = f"{row['dataset']} (first {len(images[row['dataset']])} images, {kind}, vaezip bench)"
            figures[f"{label} achieved"] = round(float(row["bpsp"]), 4)
            figures[f"{label} bound"] = round(float(row["bound_bpsp"]), 4)
    return figures


if __name__ == "__main__":
    main()
