"""How far the bound that bits-back pays (the negative ELBO) is above the importance-weighted bounds, which
Monte-Carlo bits-back coding (Ruan et al. 2021) could pay instead at K forward passes per tile.

For the first whole 32x32 tiles of a data set: K posterior samples per tile, log w_k = log p(x, z_k) -
log q(z_k | x); the K-sample bound is -log(mean_k w_k). Prints it for K = 1 (the ELBO), 4, 16 and --samples.

    python scripts/iwae_gap.py photo kodak --limit 4 --tiles 192 --samples 64
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezip import data as datasets  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.evaluate import repeatable_sampling, tiled_batches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=4, help="first N images")
    parser.add_argument("--tiles", type=int, default=192, help="at most this many whole tiles")
    parser.add_argument("--samples", type=int, default=64, help="the largest K")
    args = parser.parse_args()
    model = load_model(args.model).model.eval()
    images = datasets.load(args.dataset, limit=args.limit).images
    counts = sorted({1, 4, 16, args.samples} - {k for k in (4, 16) if k > args.samples})
    nats = {k: 0.0 for k in counts}
    tiles = subpixels = 0
    with repeatable_sampling(0, "cpu"):
        for batch, mask in tiled_batches(images, 32, 32, model.config.stride):
            whole = mask.reshape(len(mask), -1).min(axis=1) == 1
            if batch.shape[2:] != (32, 32) or not whole.any():
                continue
            batch = batch[whole][: args.tiles - tiles]
            pixels = torch.from_numpy(np.ascontiguousarray(batch))
            with torch.no_grad():  # K samples in chunks of at most 8 copies of the batch: bounded memory
                weights = torch.cat([model.importance_log_weights(pixels, min(8, args.samples - start))
                                     for start in range(0, args.samples, 8)], 1).double()  # B, K
            for k in counts:
                nats[k] -= float((torch.logsumexp(weights[:, :k], 1) - math.log(k)).sum())
            tiles += len(batch)
            subpixels += batch[0].size * len(batch)
            if tiles >= args.tiles:
                break
    if not tiles:
        sys.exit(f"no whole 32x32 tiles in the first {args.limit} images of {args.dataset}")
    print(f"{args.model} on {args.dataset}: {tiles} whole 32x32 tiles from the first {args.limit} images")
    for k in counts:
        print(f"K = {k:3d}: {nats[k] / subpixels / math.log(2):.4f} bpsp" + ("  (the ELBO)" if k == 1 else ""))


if __name__ == "__main__":
    main()
