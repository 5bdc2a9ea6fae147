"""The bound (negative ELBO, bits per real subpixel) of a model on a set of images, with the KL of each
latent group, i.e. where the bits go."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from vaezip.model import HierarchicalVAE


# Posterior samples per forward pass of the importance-weighted bound: K copies of a batch at once would take K
# times the memory.
IMPORTANCE_CHUNK = 8


@dataclass(frozen=True)
class GroupKL:
    group: int
    stage: int
    resolution: str  # e.g. "8x8" for a 32x32 input, or "1/4" when images (or tiles) differ in size
    latent_dims: int  # latent dimensions per image (their mean where images differ in size)
    bpsp: float  # bits per real subpixel this group costs


@dataclass(frozen=True)
class EvalResult:
    bound_bpsp: float
    nll_bpsp: float
    kl_bpsp: float
    groups: tuple[GroupKL, ...]
    images: int
    subpixels: int
    # With `samples` K > 1: the K-sample importance-weighted bound, what Monte-Carlo bits-back
    # (`compress --samples K`) pays instead of the ELBO (up to its discretisation); else None.
    importance_bpsp: float | None = None


def batches_of(images, batch_size: int, crop: int | None = None):
    """Yield (B, C, H, W) uint8 arrays: slices of a stacked set, or one image at a time from a list.
    `crop` takes the centre crop (for quick validation of large images)."""
    if isinstance(images, np.ndarray):
        data = images
        if crop is not None and (data.shape[1] > crop or data.shape[2] > crop):
            top, left = (data.shape[1] - min(crop, data.shape[1])) // 2, (data.shape[2] - min(crop, data.shape[2])) // 2
            data = data[:, top : top + crop, left : left + crop]
        for start in range(0, len(data), batch_size):
            yield np.ascontiguousarray(data[start : start + batch_size].transpose(0, 3, 1, 2))
        return
    for image in images:
        if crop is not None:
            top, left = max(0, (image.shape[0] - crop) // 2), max(0, (image.shape[1] - crop) // 2)
            image = image[top : top + crop, left : left + crop]
        yield np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def tiled_batches(images, batch_size: int, tile: int, stride: int):
    """Yield ((B, C, th, tw) uint8 tiles, (B, 1, th, tw) float mask of real pixels): the images cut and padded
    exactly as the coder cuts them, so the bound is the one a .vz file pays (tiles see no neighbours)."""
    from codec.tiling import split_tiles

    pending: dict[tuple[int, int], list] = {}  # padded tile shape -> tiles waiting for a full batch
    for image in images:  # H, W, C
        for piece in split_tiles(np.ascontiguousarray(image.transpose(2, 0, 1)), tile, stride):
            waiting = pending.setdefault(piece.pixels.shape[1:], [])
            waiting.append(piece)
            if len(waiting) == batch_size:
                yield _stack_tiles(waiting)
                waiting.clear()
    for waiting in pending.values():
        if waiting:
            yield _stack_tiles(waiting)


def _stack_tiles(pieces) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.stack([piece.pixels for piece in pieces])  # B, C, th, tw
    return pixels, valid_mask(pixels.shape[2:], [piece.valid for piece in pieces])


def valid_mask(padded: tuple[int, int], valid: list[tuple[int, int]]) -> np.ndarray:
    """(B, 1, th, tw) float32: 1 on each padded tile's real pixels (its top-left h x w), 0 on the padding."""
    mask = np.zeros((len(valid), 1, *padded), dtype=np.float32)
    for index, (height, width) in enumerate(valid):
        mask[index, 0, :height, :width] = 1.0
    return mask


@contextmanager
def repeatable_sampling(seed: int, device: str | torch.device):
    """The bound uses one posterior sample: seed it, without disturbing the caller's (training) generators."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate(
    model: HierarchicalVAE,
    images,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    crop: int | None = None,
    tile: int | None = None,
    seed: int = 0,
    progress=None,
    samples: int = 1,
) -> EvalResult:
    """images: a stacked (N, H, W, C) uint8 array or a list of (H, W, C) arrays. `tile`: the bound of the
    images cut into tiles as the coder cuts them (`progress` then counts tiles); else of whole images.
    `samples` K > 1: also the K-sample importance-weighted bound, in a second pass over the images (K more
    posterior samples per image, drawn IMPORTANCE_CHUNK at a time, from their own seeded stream: the ELBO is
    the same with or without it; `progress` then counts every tile twice)."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    if samples > 1 and not isinstance(images, (np.ndarray, list, tuple)):
        images = list(images)  # read twice
    model.eval()
    with repeatable_sampling(seed, device):
        total_kl = None
        total_nll = 0.0
        importance_nats = 0.0
        total_subpixels = 0
        count = 0
        shapes: list[tuple[int, int, int]] = []
        sizes: set[tuple[int, int]] = set()  # (H, W) of the batches' inputs
        dims = None  # every group's latent dimensions over the batches, summed

        def batches():
            """(pixels, mask of real pixels or None) tensors on the device, batch by batch."""
            if tile is not None:
                cut = tiled_batches(images, batch_size, tile, model.config.stride)
            else:
                cut = ((batch, None) for batch in batches_of(images, batch_size, crop))
            for batch, mask in cut:
                # a batch may be a read-only view (odd-sized images): torch warns on those, and only reads them
                batch = batch if batch.flags.writeable else batch.copy()
                yield torch.from_numpy(batch).to(device), None if mask is None else torch.from_numpy(mask).to(device)

        for pixels, real in batches():
            out = model(pixels, mask=real)
            kl = out.kl_bits.double().cpu()
            total_kl = kl if total_kl is None else total_kl + kl
            total_nll += float(out.nll_bits)
            total_subpixels += int(out.subpixels.sum())
            count += pixels.shape[0]
            batch_shapes = _group_shapes(model, pixels.shape[2], pixels.shape[3])
            shapes = shapes or batch_shapes
            sizes.add((pixels.shape[2], pixels.shape[3]))
            counted = [one[3] * pixels.shape[0] for one in batch_shapes]
            dims = counted if dims is None else [a + b for a, b in zip(dims, counted)]
            if progress is not None:
                progress(pixels.shape[0])
    if total_kl is None:
        raise ValueError("no images to evaluate")
    if samples > 1:
        with repeatable_sampling(seed + 1, device):
            for pixels, real in batches():
                weights = torch.cat([model.importance_log_weights(pixels, min(IMPORTANCE_CHUNK, samples - start), real)
                                     for start in range(0, samples, IMPORTANCE_CHUNK)], 1).double()  # B, K
                importance_nats -= float((torch.logsumexp(weights, 1) - math.log(samples)).sum())
                if progress is not None:
                    progress(pixels.shape[0])
    if tile is not None:
        count = len(images)
    # Where the images (or the tiles) differ in size, a group's grid is given as its scale (a global group's is
    # one position), its dims as a mean per image.
    groups = tuple(
        GroupKL(index, stage,
                f"{h}x{w}" if len(sizes) == 1 or (h, w) == (1, 1) else f"1/{model.config.stem_factor * 2**stage}",
                round(dims[index] / count), float(total_kl[index]) / total_subpixels)
        for index, (stage, h, w, _) in enumerate(shapes)
    )
    kl_total = float(total_kl.sum()) / total_subpixels
    nll = total_nll / total_subpixels
    importance = importance_nats / total_subpixels / math.log(2) if samples > 1 else None
    return EvalResult(kl_total + nll, nll, kl_total, groups, count, total_subpixels, importance)


def _group_shapes(model: HierarchicalVAE, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(stage, h, w, latent dims) of every group for an input of this size."""
    stride = model.config.stride
    height, width = -(-height // stride) * stride, -(-width // stride) * stride
    result = []
    if model.config.global_latents:  # the global group comes first: one position per tile
        result.append((len(model.config.stages) - 1, 1, 1, model.config.global_latents))
    for stage_index in model.decoder.block_stage:
        stage = model.config.stages[stage_index]
        scale = model.config.stem_factor * 2**stage_index
        h, w = height // scale, width // scale
        result.append((stage_index, h, w, stage.latent_channels * h * w))
    return result
