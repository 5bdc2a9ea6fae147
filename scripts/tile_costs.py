"""Where a model's bits go inside the coder's tiles, and what the model-free predictor costs instead.

For every whole tile of the first N images (all pixels real): the bound (KL + NLL, one posterior sample, as
`vaezip eval --tile`), the NLL by distance from the tile's edge, and the real cost of coding that tile with
codec/predictive.py, alone and with its neighbours below and to the right as context (what the encoder
writes). Prints the mean bound, the predictor's rates, the rate if each tile took the cheaper of the model
and the predictor (what `vaezip compress` does), and the ring NLLs.

    python scripts/tile_costs.py photo kodak --limit 4
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import bitsback, predictive  # noqa: E402
from codec.ans import Stack  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import data as datasets  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.evaluate import repeatable_sampling  # noqa: E402
from vaezip.model.layers import bernoulli_kl, gaussian_kl  # noqa: E402


def predictive_bits(tiles, index: int, neighbours: bool) -> int:
    """The predictor's real cost of a tile through format 8's blend with fitted tables (what the encoder writes; figures in docs/
    from before 2026-12-03 were measured with format 3's Gaussian, later ones of that day with format 5's
    Laplace)."""
    stack = Stack()
    if neighbours:
        bitsback._encode_predictive(stack, tiles, index, bitsback.PREDICTIVE_FITTED)
    else:
        predictive.encode(stack, np.ascontiguousarray(tiles[index].valid_pixels), distribution=predictive.BLEND)
    return stack.num_valid_bits()


@torch.no_grad()
def model_bits(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile bound bits (B,) and NLL bits per subpixel position (B, H, W), one posterior sample."""
    side = pixels.shape[-1]
    walk = model.walk(pixels, len(pixels), side, side)
    kl = torch.zeros(len(pixels), dtype=torch.float64)
    for _ in range(walk.num_groups):
        step = walk.step()
        if step.binary:  # Bernoulli logits: z itself, as the coder codes it
            latent = torch.bernoulli(torch.sigmoid(step.post_mean))
            kl += bernoulli_kl(step.post_mean, step.prior_mean).flatten(1).sum(1).double()
        else:
            latent = step.post_mean + step.post_std * torch.randn_like(step.post_std)
            kl += gaussian_kl(step.post_mean, step.post_std, step.prior_mean, step.prior_std).flatten(1).sum(1).double()
        walk.advance(latent)
    params = walk.pixel_params()
    if getattr(model.likelihood, "side_bits", 0.0):  # an optimal-sigma model: each tile's own sigma (its 7 bits
        params = model.likelihood.with_sigma(params, pixels, None)  # a channel are left out of the per-pixel map)
    nll = -model.likelihood.log_prob(params, pixels).double() / math.log(2)  # B, H, W bits
    return kl / math.log(2) + nll.flatten(1).sum(1), nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--tile", type=int, default=32)
    args = parser.parse_args()
    model = load_model(args.model).model.eval()
    images = datasets.load(args.dataset, limit=args.limit).images
    side = args.tile
    nll_map = torch.zeros(side, side, dtype=torch.float64)  # bits per subpixel position, summed over tiles
    totals = {"bound": 0.0, "alone": 0.0, "neighbours": 0.0, "cheaper alone": 0.0, "cheaper neighbours": 0.0}
    tiles_done, predictor_wins, channels = 0, 0, 1
    with repeatable_sampling(0, "cpu"):
        for image in images:  # H, W, C
            tiles = split_tiles(np.ascontiguousarray(image.transpose(2, 0, 1)), side, model.config.stride)
            whole = [k for k, t in enumerate(tiles) if t.valid == (side, side) and t.pixels.shape[1:] == (side, side)]
            for start in range(0, len(whole), 64):
                chosen = whole[start : start + 64]
                pixels = torch.from_numpy(np.stack([tiles[k].pixels for k in chosen]))
                bound, nll = model_bits(model, pixels)
                channels = pixels.shape[1]
                nll_map += nll.sum(0) / channels
                alone = torch.tensor([predictive_bits(tiles, k, False) for k in chosen], dtype=torch.float64)
                near = torch.tensor([predictive_bits(tiles, k, True) for k in chosen], dtype=torch.float64)
                totals["bound"] += float(bound.sum())
                totals["alone"] += float(alone.sum())
                totals["neighbours"] += float(near.sum())
                totals["cheaper alone"] += float(torch.minimum(bound, alone).sum())
                totals["cheaper neighbours"] += float(torch.minimum(bound, near).sum())
                predictor_wins += int((near < bound).sum())
                tiles_done += len(chosen)
    if not tiles_done:
        sys.exit(f"no whole {side}x{side} tiles in the first {args.limit} images of {args.dataset}")
    values = tiles_done * channels * side * side
    rate = {name: total / values for name, total in totals.items()}
    print(f"{args.model} on {args.dataset} (first {args.limit}), {tiles_done} whole {side}x{side} tiles")
    print(f"bound {rate['bound']:.4f} bpsp; predictor alone {rate['alone']:.4f}, "
          f"with its neighbours {rate['neighbours']:.4f}")
    print(f"the cheaper of model and predictor per tile: {rate['cheaper alone']:.4f} (predictor alone), "
          f"{rate['cheaper neighbours']:.4f} (with neighbours; the predictor takes {predictor_wins / tiles_done:.1%})")
    mean_map = nll_map / tiles_done
    for ring in range(4):
        inside = torch.zeros(side, side, dtype=torch.bool)
        inside[ring : side - ring, ring : side - ring] = True
        inner = torch.zeros_like(inside)
        inner[ring + 1 : side - ring - 1, ring + 1 : side - ring - 1] = True
        print(f"NLL of ring {ring} (pixels {ring} from the edge): {mean_map[inside & ~inner].mean():.4f} bpsp")
    quarter = side // 4
    print(f"NLL of the middle half: {mean_map[quarter:-quarter, quarter:-quarter].mean():.4f} bpsp")


if __name__ == "__main__":
    main()
