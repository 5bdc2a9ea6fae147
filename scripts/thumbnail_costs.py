"""Where the staged cascade's bits go on small images, and what two levers it has not got would buy (measured leads
for issue 14's Imagenette goal; no file format has either): each image coded as one tile with no context, its
statistics running on from image to image as in an archive (starting from format 16's initial statistics), each
value's ideal cost -log2(p) from the table row the coder pushes it with.

    python scripts/thumbnail_costs.py imagenette32-val --limit 2000 --every 5          # the 400 measured
    python scripts/thumbnail_costs.py imagenette32-val --limit 2000 --every 5 --levers

Prints the bits per subpixel of the first row, the first column, the second ones, the last ones and the rest,
the share of all bits the first row and column take against their share of the values, and each channel's cost.
`--levers` also codes the images with their channels in each of the six orders, and after two reversible colour
transforms of 8 bits (WebP's subtract-green and its red-based twin, the differences offset by 128 modulo 256).
`--model NAME` also prices each image under a model's bound (KL + NLL at one posterior sample, as `vaezip eval`)
and says how often, and by how much, the model would beat the predictor image by image:

    python scripts/thumbnail_costs.py imagenette32-val --limit 2000 --every 5 --model photo2
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import kernels, predictive  # noqa: E402
from vaezip import data  # noqa: E402


def value_costs(images, transform=lambda image: image) -> list[np.ndarray]:
    """Each image's values' ideal costs (H, W, C) in bits, coded as a stream of one-tile images after `transform`."""
    cumulative = predictive._blend_cumulative(predictive._table_distribution(predictive.STAGED))
    state = predictive.AdaptiveState.initial()
    costs = []
    for image in images:
        coded = transform(image)
        pixels = np.ascontiguousarray(coded.transpose(2, 0, 1))  # (C, H, W)
        recorded = predictive.record_adaptive(pixels, predictive.Context(), state, predictive.STAGED)
        rows, values = recorded.rows.astype(np.int64), recorded.values.astype(np.int64)
        if not np.array_equal(values.reshape(coded.shape), coded):  # pop order: raster, channels at each pixel
            raise SystemExit("the cascade's pop order is not pixel by pixel in raster order")
        probability = (cumulative[rows, values + 1] - cumulative[rows, values]) / float(1 << kernels.PRECISION)
        costs.append(-np.log2(probability).reshape(coded.shape))
    return costs


def mean_cost(costs: list[np.ndarray]) -> float:
    return float(sum(cost.sum() for cost in costs) / sum(cost.size for cost in costs))


def offset_differences(first: int):
    """A reversible 8-bit colour transform: channel `first` as it is, then each other channel minus it, plus 128,
    modulo 256."""
    def transform(image: np.ndarray) -> np.ndarray:
        wide = image.astype(np.int16)
        others = [channel for channel in range(image.shape[2]) if channel != first]
        return np.stack([wide[..., first]] + [(wide[..., k] - wide[..., first] + 128) % 256 for k in others],
                        axis=-1).astype(np.uint8)
    return transform


def model_bounds(name: str, images) -> np.ndarray:
    """Each image's bound in bits under the model `name` (KL + NLL at one posterior sample, seed 0)."""
    import torch

    from vaezip.api import load_model
    from vaezip.evaluate import repeatable_sampling

    model = load_model(name).model.eval()
    bounds = []
    with torch.no_grad(), repeatable_sampling(0, "cpu"):
        for image in images:
            out = model(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None])))  # (1, C, H, W)
            bounds.append(float(out.kl_bits.double().sum()) + float(out.nll_bits))
    return np.array(bounds)


def model_against_predictor(name: str, images, costs: list[np.ndarray]) -> None:
    predicted = np.array([cost.sum() for cost in costs])
    bounds = model_bounds(name, images)
    values = sum(cost.size for cost in costs)
    cheaper = np.minimum(predicted, bounds)
    print(f"model {name}: {bounds.sum() / values:.5f} bits per subpixel; the cheaper of the two for each image "
          f"{cheaper.sum() / values:.5f} ({100 * (cheaper.sum() / predicted.sum() - 1):+.2f} %), the model cheaper "
          f"for {100 * np.mean(bounds < predicted):.1f} % of the images")
    quantiles = np.quantile(bounds / predicted - 1, [0.01, 0.05, 0.25, 0.5])
    print("the model's cost against the predictor's, image by image, at quantiles 1, 5, 25 and 50 %: "
          + ", ".join(f"{100 * q:+.2f} %" for q in quantiles))


def where_the_bits_go(costs: list[np.ndarray]) -> None:
    shapes = {cost.shape for cost in costs}
    if len(shapes) != 1:
        raise SystemExit(f"images of one size only (got {sorted(shapes)[:3]} ...)")
    mean = np.mean(costs, axis=0)  # (H, W, C)
    parts = {"first row": mean[0], "first column": mean[1:, 0], "second row": mean[1, 1:],
             "second column": mean[2:, 1], "last row": mean[-1, 1:], "last column": mean[1:-1, -1],
             "the rest (from the third row and column on)": mean[2:, 2:]}
    for name, part in parts.items():
        print(f"{name}: {part.mean():.4f} bits per subpixel")
    height, width = mean.shape[:2]
    edge = (mean[0].sum() + mean[1:, 0].sum()) / mean.sum()
    share = (height + width - 1) / (height * width)
    print(f"the first row and column: {100 * edge:.2f} % of the bits, {100 * share:.2f} % of the values")
    print("each channel: " + ", ".join(f"{value:.4f}" for value in mean.mean(axis=(0, 1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--levers", action="store_true", help="also other channel orders and colour transforms")
    parser.add_argument("--model", help="also each image's bound under this model, against the predictor's cost")
    args = parser.parse_args()
    images = [image for image in list(data.load(args.dataset, limit=args.limit).images)[:: args.every]]
    costs = value_costs(images)
    print(f"{args.dataset}: {len(images)} images, the staged cascade {mean_cost(costs):.5f} bits per subpixel",
          flush=True)
    where_the_bits_go(costs)
    if args.model:
        model_against_predictor(args.model, images, costs)
    if not args.levers:
        return
    if images[0].shape[2] != 3:
        raise SystemExit("--levers: colour images only")
    shipped = mean_cost(costs)
    for order in itertools.permutations(range(3)):
        if order != (0, 1, 2):
            cost = mean_cost(value_costs(images, lambda image, order=order: image[..., list(order)]))
            print(f"channels in order {order}: {cost:.5f} ({100 * (cost / shipped - 1):+.2f} %)", flush=True)
    for first, name in ((1, "subtract green"), (0, "subtract red")):
        cost = mean_cost(value_costs(images, offset_differences(first)))
        print(f"{name}: {cost:.5f} ({100 * (cost / shipped - 1):+.2f} %)", flush=True)


if __name__ == "__main__":
    main()
