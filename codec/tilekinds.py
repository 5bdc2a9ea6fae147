"""Tile kinds: the ways one batch of tiles is coded on the stack, each declared once here, craystack style.

A schedule (codec/bitsback.py) is a list of batches (kind, n_tiles). Each kind is one `TileKind`: its name in a
schedule, its one-letter code in a file's header (format 1 and 2's JSON string, formats 3 to 5's byte), a one-line
summary, the format versions whose files may hold it, and one (push, pop) pair:

    push(stack, tiles, start, stream) -> ideal bits per tile (B,), or None
    pop(stack, specs, start, stream)  -> the padded tiles (B, C, Th, Tw) uint8

`start` is the raster index of the batch's first tile (its place among the images' tiles in image and tile
order, whatever the stream's order: codec/bitsback.py), `stream` what else a kind may need (the model, the latent
grid, the stream's other tiles: `Stream`). pop undoes push exactly: the decoder pops the batches last first,
so every batch after this one is decoded when it pops. Only bits-back (plain or importance-weighted) pops
before it pushes; its push returns None when those pops ran the stack dry (the caller then restores its clone of the stack).

The header's checks (codec/header.py), the decoder's dispatch (bitsback.decode_tiles) and the table of tile
kinds in docs/FORMAT.md follow `KINDS` (tests/test_tile_kinds.py holds the docs to it). Adding a kind is a
new format version (docs/FORMAT.md, Versioning): the old readers refuse the new code.

Only valid pixels are coded; padding is recreated by edge replication (tiling.pad_tile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from codec import predictive
from codec.ans import Stack
from codec.errors import CodingError
from codec.exact import deterministic_exp, deterministic_log2
from codec.latents import (
    BINARY_TOTAL, LatentGrid, group_kl_bits, group_values, pop_group_posterior, pop_group_prior,
    pop_posterior, pop_prior, push_group_posterior, push_group_prior, push_posterior, push_prior,
)
from codec.pixels import batch_pixels, pixel_steps, pop_pixels, push_pixels, push_steps, valid_mask
from codec.protocol import BinaryParams, LatentModel, LatentParams, ModelPass
from codec.tiling import Tile, TileSpec, pad_tile


@dataclass(frozen=True)
class Stream:
    """What a kind's push or pop may need besides its own tiles."""

    total: int  # tiles in the stream
    # Padded pixels (C, Th, Tw) of tile k of the stream: the encoder has them all, the decoder those it has
    # decoded (the batches after this one), None for the others.
    pixels_of: Callable[[int], np.ndarray | None]
    model: LatentModel | None = None  # the kinds coded by the model need it
    grid: LatentGrid = field(default_factory=LatentGrid)
    margin_bits: int = 64  # bits-back: fewer valid bits than this after popping the latents is running dry
    # The predictor's recorded pushes of tiles priced before (predictive.Recorded, by raster index), pushed
    # again as they are instead of predicted again: the same words (the encoder's; a decoder has none).
    replays: Mapping[int, predictive.Recorded] = field(default_factory=dict)
    # Where a pricing pass keeps the predictor's pushes (by raster index), or None: none kept.
    recordings: dict[int, predictive.Recorded] | None = None
    # Format 16's sections coded already (CodedSection, by their first tile's raster index), pushed as they are
    # (the encoder's: bitsback.price_sections codes each section while it prices it).
    sections: Mapping[int, "CodedSection"] = field(default_factory=dict)
    # The stateful predictor kinds' context statistics (PREDICTIVE_ADAPTIVE, _LEAST_SQUARES, _CASCADE, _PARITY,
    # _WIDE and _STAGED): a decoder's, updated by each such tile it pops (the encoder records its tiles in that order
    # first, on a stream of their own: bitsback.encode_tiles).
    adaptive: predictive.AdaptiveState = field(default_factory=predictive.AdaptiveState)


PushFn = Callable[[Stack, Sequence[Tile], int, Stream], "np.ndarray | None"]
PopFn = Callable[[Stack, Sequence[TileSpec], int, Stream], np.ndarray]


@dataclass(frozen=True)
class TileKind:
    name: str  # in a schedule, (name, n_tiles)
    code: str  # one ASCII letter: the kind in a header (formats 1, 2: a JSON string; formats 3 to 5: its byte)
    summary: str  # one line: docs/FORMAT.md's table of tile kinds says exactly this
    formats: tuple[int, ...]  # the format versions whose files may hold it
    written: bool  # the encoder writes it today; else only files of earlier versions hold it (read only)
    single: bool  # a batch holds exactly one tile (else 1 .. max_batch tiles)
    uses_model: bool  # coded through the model's tables (else no model is involved)
    needs_bits: bool  # pops before it pushes: needs bits on the stack (a genuine stream holds margin_bits)
    push: PushFn
    pop: PopFn
    samples: int = 1  # model rows per tile (importance-weighted bits-back: its K)
    # pop takes the batch's words off the stack and returns, instead of the tiles, a function of no arguments
    # that decodes them (a list of padded tiles) from those words alone (any thread, any time before a later batch
    # reads them): PREDICTIVE_SECTIONS, whose sections bitsback.decode_tiles decodes side by side.
    deferred: bool = False


# ---------------------------------------------------------------------------------------------- direct


def _push_direct(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
    """Latents at their prior means, pixels pushed: needs no bits on the stack. Per-tile bits (B,)."""
    pixels, mask = batch_pixels(tiles)
    batch = _prior_mean_pass(stream.model, pixels.shape)
    return push_pixels(stack, batch, pixels, mask)


def _pop_direct(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
    batch = _prior_mean_pass(stream.model, (len(specs), *specs[0].shape))
    return pop_pixels(stack, batch, specs)


def _prior_mean_pass(model: LatentModel, shape: tuple[int, ...]) -> ModelPass:
    # A prior-only pass on both sides (the encoder needs no posterior here), so both compute the same floats.
    batch = model.begin(shape, None)
    for g in range(batch.num_groups):
        p = _params(batch, g, shape[0], need_posterior=False)
        if isinstance(p, BinaryParams):  # a Bernoulli's most likely value (z = 1 on a tie)
            batch.set_latent(g, (p.prior_ones >= BINARY_TOTAL // 2).astype(np.float64))
        else:
            batch.set_latent(g, np.array(p.prior_mean, dtype=np.float64, copy=True))
    return batch


# ---------------------------------------------------------------------------------------------- bits-back


def _push_bitsback(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray | None:
    """Push one bits-back batch (bitsback.py's docstring); per-tile ideal bits (B,), or None if popping the
    latents ran the stack dry (the caller then restores its clone: the stack is left half-done)."""
    model, grid = stream.model, stream.grid
    pixels, mask = batch_pixels(tiles)  # (B, C, H, W), (B, H, W)
    batch = model.begin(pixels.shape, pixels)
    _swap_top(stack)
    ks, params, kl = [], [], np.zeros(len(tiles))  # kl: (B,) bits
    for g in range(batch.num_groups):
        p = _params(batch, g, len(tiles), need_posterior=True)
        k = pop_group_posterior(stack, grid, p)  # (B, D)
        batch.set_latent(g, group_values(grid, p, k))
        ks.append(k)
        params.append(p)
        kl += group_kl_bits(p).sum(axis=1)
    if stack.num_valid_bits() < stream.margin_bits:
        return None
    pixel_bits = push_pixels(stack, batch, pixels, mask)
    for k, p in reversed(list(zip(ks, params))):  # group 0 last, so that the decoder pops it first
        push_group_prior(stack, grid, k, p)
    return kl + pixel_bits


def _pop_bitsback(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
    model, grid = stream.model, stream.grid
    shape = (len(specs), *specs[0].shape)
    batch = model.begin(shape, None)
    ks = []
    for g in range(batch.num_groups):
        p = _params(batch, g, len(specs), need_posterior=False)
        k = pop_group_prior(stack, grid, p)  # (B, D)
        batch.set_latent(g, group_values(grid, p, k))
        ks.append(k)
    pixels = pop_pixels(stack, batch, specs)  # (B, C, H, W)
    # The posteriors the encoder popped with, now that the pixels are known; pushing the latents back with
    # them returns the bits the encoder borrowed.
    if hasattr(batch, "posteriors"):
        posteriors = _checked_posteriors(batch.posteriors(pixels), ks)
    else:  # a second pass, now with pixels
        again = model.begin(shape, pixels)
        posteriors = []
        for g, k in enumerate(ks):
            p = _params(again, g, len(specs), need_posterior=True)
            posteriors.append((p.post_ones, None) if isinstance(p, BinaryParams) else (p.post_mean, p.post_std))
            again.set_latent(g, group_values(grid, p, k))
    for k, posterior in reversed(list(zip(ks, posteriors))):  # group 0 last: the encoder popped it first
        push_group_posterior(stack, grid, k, posterior)
    _swap_top(stack)  # its own inverse: undoes the encoder's swap
    return pixels



_CHUNK = 2**16  # _swap_top exchanges two chunks of 16 bits


def _swap_top(stack: Stack) -> None:
    """Exchange the top two 16-bit chunks of the stack (pop a, pop b, push a, push b: its own inverse).

    Why: a pop reads the quantile that the last push left in the low bits of the coder's state. After pushing
    a symbol of probability 2**-24 (a leaky bin far in a tail) that quantile is fully determined, and a pop
    over the same bins returns the same symbol again: one latent stuck in a tail, batch after batch. Seen with
    the toy model before posterior windows existed (one tile per batch with its top latent at +15.86, ~5000
    extra bits each); windows make it rare, the swap makes the first pop of a batch read older bits anyway.
    """
    a = stack.pop_uniform(1, _CHUNK)
    b = stack.pop_uniform(1, _CHUNK)
    stack.push_uniform(a, _CHUNK)
    stack.push_uniform(b, _CHUNK)


def _params(batch: ModelPass, group: int, b: int, need_posterior: bool) -> LatentParams | BinaryParams:
    """The model's parameters for `group`, checked for shape: everything (B, D) float64 (a binary group's
    frequencies: (B, D) int64, their range checked where they are coded)."""
    p = batch.latent_params(group)
    if isinstance(p, BinaryParams):
        arrays = [p.prior_ones] + ([p.post_ones] if need_posterior else [])
        if any(a is None for a in arrays):
            raise CodingError(f"model gave no posterior for group {group} in a pass begun with pixels")
        arrays = [np.asarray(a) for a in arrays]
        if arrays[0].ndim != 2 or arrays[0].shape[0] != b or any(a.shape != arrays[0].shape for a in arrays):
            raise CodingError(f"binary latent parameters of group {group} must be ({b}, D), got "
                              f"{[a.shape for a in arrays]}")
        if not all(np.all(np.isfinite(a)) and np.all(a == np.floor(a)) for a in arrays):
            raise CodingError(f"binary latent parameters of group {group} must be integer frequencies")
        arrays = [a.astype(np.int64) for a in arrays]
        return BinaryParams(arrays[0], arrays[1] if need_posterior else None)
    arrays = [p.prior_mean, p.prior_std] + ([p.post_mean, p.post_std] if need_posterior else [])
    if any(a is None for a in arrays):
        raise CodingError(f"model gave no posterior for group {group} in a pass begun with pixels")
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    if arrays[0].ndim != 2 or arrays[0].shape[0] != b or any(a.shape != arrays[0].shape for a in arrays):
        raise CodingError(f"latent parameters of group {group} must all be ({b}, D), got {[a.shape for a in arrays]}")
    means, stds = arrays[0::2], arrays[1::2]
    if not all(np.all(np.isfinite(m)) for m in means) or not all(np.all(np.isfinite(s) & (s > 0)) for s in stds):
        raise CodingError(f"latent parameters of group {group}: means must be finite, stds finite and > 0")
    if need_posterior:
        return LatentParams(*arrays)
    return LatentParams(arrays[0], arrays[1])


def _checked_posteriors(posteriors, ks: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """A pass's posteriors(), checked as _params checks parameters: one (mean, std) per group (a binary
    group's (frequencies of z = 1, None)), each shaped like that group's latents, finite, stds > 0."""
    if len(posteriors) != len(ks):
        raise CodingError(f"model gave posteriors for {len(posteriors)} groups, not {len(ks)}")
    checked = []
    for g, ((mean, std), k) in enumerate(zip(posteriors, ks)):
        if std is None:  # binary: its frequencies' range is checked where they are coded
            ones = np.asarray(mean)
            if ones.shape != k.shape or not (np.all(np.isfinite(ones)) and np.all(ones == np.floor(ones))):
                raise CodingError(f"binary posterior of group {g} must be {k.shape} integer frequencies")
            checked.append((ones.astype(np.int64), None))
            continue
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if mean.shape != k.shape or std.shape != k.shape:
            raise CodingError(f"posterior of group {g} must be {k.shape}, got {mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std) & (std > 0))):
            raise CodingError(f"posterior of group {g}: means must be finite, stds finite and > 0")
        checked.append((mean, std))
    return checked


# ---------------------------------------------------------------------------------------------- importance-weighted

# Monte-Carlo bits-back (Ruan et al., ICML 2021, "Improving lossless compression rates via Monte Carlo
# bits-back coding"), the coding counterpart of DVAE##'s importance-weighted bound. Per tile, K latent samples
# z_1..z_K are popped with the posterior and one of them, j, with probability w_j / sum_k w_k, where
# w_k = p(x, z_k) / q(z_k | x); the other samples are pushed back with the posterior, the pixels with p(x | z_j),
# z_j with the prior and j with a uniform distribution over K. Net cost: log K - log sum_k w_k, the K-sample
# importance-weighted bound (in expectation), below the ELBO that plain bits-back pays; the price is K
# network passes and pixel tables per tile, each way.
#
# The decoder pops j, z_j (prior) and the pixels (p(x | z_j)), then the other samples (posterior, now that the
# pixels are known), recomputes every w_k and pushes j and all K samples back. Both sides compute the weights
# from the same integers: pixel tables and latent parameters of the integer model (a tile's are the same in
# any batch), logarithms from codec/exact.py, sums in fixed point (int64).
LOG_WEIGHT_BITS = 20  # log2-weights as integers in 2**-20 bit units
SAMPLE_COUNTS = (2, 4, 8, 16)  # K of the importance-weighted kinds (one kind each: a file names its K per batch)
_LOG2_E = 1.4426950408889634
_LN_2 = 0.6931471805599453


def _fixed(bits: np.ndarray) -> np.ndarray:
    """Bits (float64, computed identically on both sides) -> int64 units of 2**-LOG_WEIGHT_BITS."""
    return np.rint(np.clip(bits, -(2.0**40), 2.0**40) * 2.0**LOG_WEIGHT_BITS).astype(np.int64)


def _log2_density(z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log2 N(z; mean, std) without its constant (which cancels in p(z) / q(z)): exact operations only."""
    u = (z - mean) / std
    return -0.5 * u * u * _LOG2_E - deterministic_log2(std)


def _log_weights(steps, ks, posteriors, priors, grid: LatentGrid, tiles: int, samples: int) -> np.ndarray:
    """(tiles, samples) int64: log2 w_k = log2 p(x | z_k) + log2 p(z_k) - log2 q(z_k | x), fixed point. Rows of
    the batch are sample k of tile t at t * samples + k."""
    rows = tiles * samples
    total = np.zeros(rows, dtype=np.int64)
    for symbols, tables, tile_of_pixel in steps:
        probability = tables.rows[np.arange(len(symbols)), symbols].astype(np.float64) / tables.sums
        # integers below 2**46 per tile: float64 sums of them are exact, in any order
        total -= np.bincount(tile_of_pixel, weights=_fixed(-deterministic_log2(probability)), minlength=rows).astype(np.int64)
    for k, (post_mean, post_std), (prior_mean, prior_std) in zip(ks, posteriors, priors):
        z = grid.values(k)  # (rows, D)
        terms = _fixed(_log2_density(z, prior_mean, prior_std) - _log2_density(z, post_mean, post_std))
        total += terms.sum(axis=1)
    return total.reshape(tiles, samples)


def _index_tables(log_weights: np.ndarray) -> np.ndarray:
    """(B, K) float32 tables of the sample index: probability of j proportional to w_j, as integer frequencies
    f / 2**24, every f >= 1 (the coder's resolution; one division and one product per entry, then floor, so
    the same on every machine), the remainder to the first largest."""
    shifted = (log_weights - log_weights.max(axis=1, keepdims=True)).astype(np.float64)  # <= 0, exact
    weights = np.floor(deterministic_exp(np.maximum(shifted * 2.0**-LOG_WEIGHT_BITS, -60.0) * _LN_2) * 2.0**24)
    weights = np.maximum(weights, 1.0)  # (B, K) integers <= 2**24: their sum is exact
    samples = log_weights.shape[1]
    frequencies = np.floor(weights / weights.sum(axis=1, keepdims=True) * float(2**24 - samples)) + 1.0
    largest = np.argmax(frequencies, axis=1)
    frequencies[np.arange(len(frequencies)), largest] += 2.0**24 - frequencies.sum(axis=1)
    return (frequencies * 2.0**-24).astype(np.float32)


def _importance_bits(log_weights: np.ndarray) -> np.ndarray:
    """Per tile, what importance-weighted bits-back costs: -log2 of the mean weight, bits (B,) (a report only)."""
    nats = log_weights * (2.0**-LOG_WEIGHT_BITS * _LN_2)
    most = nats.max(axis=1)
    mean = np.log(np.exp(nats - most[:, None]).mean(axis=1)) + most
    return -mean / _LN_2


def _importance_pass(model: LatentModel, pixels: np.ndarray, samples: int):
    """A pass over every tile repeated `samples` times: (pass, pixels) of the B * K rows."""
    every = np.repeat(pixels, samples, axis=0)  # (B * K, C, H, W): sample k of tile t at t * K + k
    return _without_phases(model.begin(every.shape, every)), every


def _gaussian(p: LatentParams | BinaryParams) -> LatentParams:
    """Importance-weighted bits-back weighs samples by Gaussian densities (_log_weights): a binary group is
    refused."""
    if isinstance(p, BinaryParams):
        raise CodingError("importance-weighted bits-back needs a model without binary latent groups")
    return p


def _without_phases(batch: ModelPass) -> ModelPass:
    """The pass, refused if it codes pixels in phases or from side symbols: pixel_steps (a pass's pixels at
    once, from the latents alone) cannot."""
    if getattr(batch, "pixel_phases", None) is not None:
        raise CodingError("importance-weighted bits-back needs a model without a pixel-context head")
    if getattr(batch, "side_size", 0):
        raise CodingError("importance-weighted bits-back needs a model without per-tile side symbols")
    return batch


def _push_importance(samples: int) -> PushFn:
    def push(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray | None:
        model, grid = stream.model, stream.grid
        pixels, mask = batch_pixels(tiles)  # (B, C, H, W), (B, H, W)
        b = len(tiles)
        batch, every = _importance_pass(model, pixels, samples)
        _swap_top(stack)
        ks, posteriors, priors = [], [], []
        for g in range(batch.num_groups):
            p = _gaussian(_params(batch, g, b * samples, need_posterior=True))
            k = pop_posterior(stack, grid, p.post_mean, p.post_std)  # (B * K, D)
            batch.set_latent(g, grid.values(k))
            ks.append(k)
            posteriors.append((p.post_mean, p.post_std))
            priors.append((p.prior_mean, p.prior_std))
        if stack.num_valid_bits() < stream.margin_bits:  # popping j below only takes more: spare the tables
            return None
        steps = pixel_steps(batch, every, np.repeat(mask, samples, axis=0))
        log_weights = _log_weights(steps, ks, posteriors, priors, grid, b, samples)
        chosen = stack.pop_categorical(_index_tables(log_weights)).astype(np.int64)  # (B,)
        if stack.num_valid_bits() < stream.margin_bits:
            return None
        mine = np.arange(b) * samples + chosen  # the chosen sample's row of each tile, ascending
        others = np.setdiff1d(np.arange(b * samples), mine)
        for k, (mean, std) in reversed(list(zip(ks, posteriors))):  # the decoder pops group 0 first
            push_posterior(stack, grid, k[others], mean[others], std[others])
        push_steps(stack, steps, mine)
        for k, (mean, std) in reversed(list(zip(ks, priors))):
            push_prior(stack, grid, k[mine], mean[mine], std[mine])
        stack.push_uniform(chosen, samples)
        return _importance_bits(log_weights)

    return push


def _pop_importance(samples: int) -> PopFn:
    def pop(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
        model, grid = stream.model, stream.grid
        b = len(specs)
        chosen = stack.pop_uniform(b, samples).astype(np.int64)  # (B,)
        alone = _without_phases(model.begin((b, *specs[0].shape), None))
        chosen_ks = []
        for g in range(alone.num_groups):
            p = _gaussian(_params(alone, g, b, need_posterior=False))
            k = pop_prior(stack, grid, p.prior_mean, p.prior_std)  # (B, D)
            alone.set_latent(g, grid.values(k))
            chosen_ks.append(k)
        pixels = pop_pixels(stack, alone, specs)  # (B, C, H, W)
        batch, every = _importance_pass(model, pixels, samples)
        mine = np.arange(b) * samples + chosen
        others = np.setdiff1d(np.arange(b * samples), mine)
        ks, posteriors, priors = [], [], []
        for g in range(batch.num_groups):
            p = _gaussian(_params(batch, g, b * samples, need_posterior=True))
            k = np.empty(p.post_mean.shape, dtype=np.int64)  # (B * K, D)
            k[mine] = chosen_ks[g]
            k[others] = pop_posterior(stack, grid, p.post_mean[others], p.post_std[others])
            batch.set_latent(g, grid.values(k))
            ks.append(k)
            posteriors.append((p.post_mean, p.post_std))
            priors.append((p.prior_mean, p.prior_std))
        steps = pixel_steps(batch, every, np.repeat(valid_mask(specs), samples, axis=0))
        stack.push_categorical(chosen, _index_tables(_log_weights(steps, ks, posteriors, priors, grid, b, samples)))
        for k, (mean, std) in reversed(list(zip(ks, posteriors))):  # group 0 last: the encoder popped it first
            push_posterior(stack, grid, k, mean, std)
        _swap_top(stack)
        return pixels

    return pop


def importance_kind(samples: int) -> str:
    """The tile kind of importance-weighted bits-back with `samples` (one of SAMPLE_COUNTS) samples per tile."""
    if samples not in SAMPLE_COUNTS:
        raise CodingError(f"importance-weighted bits-back takes {', '.join(map(str, SAMPLE_COUNTS))} samples, "
                          f"not {samples}")
    return f"bitsback-iw{samples}"


# ---------------------------------------------------------------------------------------------- raw bytes


def raw_bits(tile: Tile) -> float:
    """What a raw or whitened tile costs: 8 bits per valid subpixel."""
    return 8.0 * tile.pixels.shape[0] * tile.valid[0] * tile.valid[1]


def whitening(key: int, n: int) -> np.ndarray:
    """n pseudo-random bytes for raw tile number `key` of a stream (splitmix64 of key * 2^32 + index).

    Why: raw bytes are what later bits-back pops read as their "random" bits. A near-white sky pushes
    0xFE, 0xFE, ...: every latent then comes out at the same extreme quantile of its posterior, and the
    first bits-back tile after it drew latents whose prior was ~400 standard deviations off (kodim20: that
    tile's KL was 1.06 M bits; its real cost only stayed small because the grid caps it). Adding a fixed
    pseudo-random byte to each value (mod 256) costs nothing and makes those bits look uniform.
    """
    with np.errstate(over="ignore"):
        x = (np.uint64(key) << np.uint64(32)) + np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(56)).astype(np.uint8)


def _push_raw(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
    """The valid pixels of one tile at 8 bits each, as they are (what files of earlier versions hold)."""
    (tile,) = _one_tile(tiles, RAW)
    stack.push_uniform(tile.valid_pixels.reshape(-1), 256)
    return np.array([raw_bits(tile)])


def _push_whitened(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
    """The valid pixels of one tile at 8 bits each, whitened (see whitening): no model, no bits needed."""
    (tile,) = _one_tile(tiles, WHITENED)
    values = tile.valid_pixels.reshape(-1)
    stack.push_uniform(values + whitening(start, values.size), 256)  # uint8: wraps mod 256
    return np.array([raw_bits(tile)])


def _pop_raw(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
    return _pop_bytes(stack, specs, None)


def _pop_whitened(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
    return _pop_bytes(stack, specs, start)


def _pop_bytes(stack: Stack, specs: Sequence[TileSpec], key: int | None) -> np.ndarray:
    """A raw tile (key None: its bytes as they are, as older files have them) or a whitened one."""
    (c, th, tw), (h, w) = _single_tile(specs, "raw")
    values = stack.pop_uniform(c * h * w, 256).astype(np.uint8)
    if key is not None:
        values = values - whitening(key, values.size)  # uint8: wraps mod 256
    return pad_tile(values.reshape(c, h, w), th, tw)[None]


# ---------------------------------------------------------------------------------------------- predictive


def _push_predictive(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
    """The valid pixels of one tile through predictive.py, no context (what files of earlier versions hold)."""
    (tile,) = _one_tile(tiles, PREDICTIVE)
    before = stack.num_valid_bits()
    predictive.encode(stack, tile.valid_pixels)
    return np.array([float(stack.num_valid_bits() - before)])


def _pop_predictive(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
    (c, th, tw), (h, w) = _single_tile(specs, "predictive")
    return pad_tile(predictive.decode(stack, c, h, w), th, tw)[None]


def _push_neighbours(distribution: str) -> PushFn:
    def push(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
        """The valid pixels through predictive.py with `distribution`, turned by 180 degrees, with their
        neighbours below and to the right as context: no model, no bits needed on the stack. Its exact bits (1,)."""
        (tile,) = _one_tile(tiles, f"predictive ({distribution})")
        before = stack.num_valid_bits()
        replay = stream.replays.get(start)
        if replay is None or replay.distribution != distribution or not predictive.push_recorded(stack, replay):
            context = _context(start, tile.valid, tile.neighbours, stream.total, stream.pixels_of)
            recorded = predictive.encode(stack, _turned(tile), context, distribution,
                                         record=stream.recordings is not None)
            if recorded is not None:
                stream.recordings[start] = recorded
        return np.array([float(stack.num_valid_bits() - before)])

    return push


def _push_stateful(distribution: str) -> PushFn:
    def push(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
        """A stateful predictor tile (PREDICTIVE_ADAPTIVE, _LEAST_SQUARES, _CASCADE, _PARITY, _WIDE or
        _STAGED): what was recorded for it (record_adaptive) pushed. Its statistics run in the decoder's order,
        the reverse of the pushes, so every such tile of a stream is recorded first, in that order
        (bitsback.encode_tiles), and pushed from its recording here. Its exact bits (1,)."""
        _one_tile(tiles, f"predictive ({distribution})")
        replay = stream.replays.get(start)
        if replay is None or replay.distribution != distribution:
            raise CodingError(f"tile {start}: an adaptive predictor tile is pushed from its stream's recording, "
                              "and none was made (bitsback.encode_tiles records them)")
        before = stack.num_valid_bits()
        predictive.push_rows(stack, replay)
        return np.array([float(stack.num_valid_bits() - before)])

    return push


def record_adaptive(tile: Tile, index: int, stream: Stream, kind: str) -> predictive.Recorded:
    """What `kind` (PREDICTIVE_ADAPTIVE, _LEAST_SQUARES, _CASCADE, _PARITY, _WIDE or _STAGED) pushes for raster tile
    `index` of `stream` after the stateful tiles the decoder pops before it (their statistics: stream.adaptive,
    updated by this one), turned and with its context as _push_neighbours codes it."""
    context = _context(index, tile.valid, tile.neighbours, stream.total, stream.pixels_of)
    return predictive.record_adaptive(_turned(tile), context, stream.adaptive, RESIDUALS[kind])


def _pop_neighbours(distribution: str) -> PopFn:
    def pop(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> np.ndarray:
        spec = specs[0]
        context = _context(start, spec.valid, spec.neighbours, stream.total, stream.pixels_of)
        (c, th, tw), (h, w) = _single_tile(specs, "predictive")
        turned = predictive.decode(stack, c, h, w, context, distribution, stream.adaptive)
        return _unturned(turned, th, tw)[None]

    return pop


# ---------------------------------------------------------------------------------------------- sections
#
# Format 16 (PREDICTIVE_SECTIONS): a batch of n consecutive raster tiles is a section, coded on a stack of its own
# with the staged cascade (predictive.STAGED), its statistics starting from predictive.initial_statistics(), each
# tile's context only the section's own tiles. A section reads nothing of the rest of the stream, nor the rest of
# the stream anything of it but its pixels, so a decoder decodes the sections of a stream side by side, one a core
# (bitsback.decode_tiles). The section's stack's words (constriction's, its head included) are pushed onto the
# stream's stack as uniform 16-bit halves, low half first, after their count (two halves, low first): exactly 32
# bits a word.

PREDICTIVE_SECTIONS = "predictive-sections"
# Format 19: a section as PREDICTIVE_SECTIONS's, its tiles coded by the staged cascade's small-image profile
# (predictive.SMALL); the encoder prices a stream of small images' sections both ways (bitsback.price_sections).
PREDICTIVE_SMALL_SECTIONS = "predictive-small-sections"
# Format 20: a section as PREDICTIVE_SECTIONS's, its tiles coded by the staged cascade's photograph profile
# (predictive.PHOTO); the encoder codes a stream of photographs' sections so (bitsback.sections_kinds).
PREDICTIVE_PHOTO_SECTIONS = "predictive-photo-sections"
# Format 21: a section as PREDICTIVE_PHOTO_SECTIONS's, each value coded as binary decisions refined by an adaptive
# model (predictive.REFINED); the encoder codes a stream of photographs' sections so (bitsback.sections_kinds).
PREDICTIVE_REFINED_SECTIONS = "predictive-refined-sections"
# Format 22: a section as PREDICTIVE_REFINED_SECTIONS's, its refinement also reading where the earlier channels'
# gradients carried over put each value against its mean (predictive.REFINED_ACROSS); the encoder codes a stream of
# photographs' sections so (bitsback.sections_kinds).
PREDICTIVE_ACROSS_SECTIONS = "predictive-refined-across-sections"
# Format 22: a section as PREDICTIVE_SMALL_SECTIONS's, refined as PREDICTIVE_ACROSS_SECTIONS's are
# (predictive.SMALL_ACROSS); the encoder prices small images' sections so where format 22 may be written.
PREDICTIVE_SMALL_ACROSS_SECTIONS = "predictive-small-refined-across-sections"
SECTION_DISTRIBUTIONS = {PREDICTIVE_SECTIONS: predictive.STAGED, PREDICTIVE_SMALL_SECTIONS: predictive.SMALL,
                         PREDICTIVE_PHOTO_SECTIONS: predictive.PHOTO, PREDICTIVE_REFINED_SECTIONS: predictive.REFINED,
                         PREDICTIVE_ACROSS_SECTIONS: predictive.REFINED_ACROSS,
                         PREDICTIVE_SMALL_ACROSS_SECTIONS: predictive.SMALL_ACROSS}
_HALVES = 2**16


def section_neighbours(index: int, neighbours: tuple[int, int], end: int) -> tuple[int, int]:
    """The neighbours (below, right) that the context of raster tile `index` reads in a section that ends before
    raster tile `end`: those in the section, and the one to the right only where the corner between them is too
    (a context with a row above and a column left has its corner)."""
    below, right = neighbours
    below = below if below and index + below < end else 0
    right = right if right and index + right < end and (not below or index + below + right < end) else 0
    return below, right


def record_section(tiles: Sequence[Tile], first: int,
                   distribution: str = predictive.STAGED) -> list[predictive.Recorded]:
    """What a section of `tiles` (raster tiles first .. first + n - 1) pushes for each of them, in raster order:
    each tile recorded after the tiles the decoder pops before it (those after it), the statistics starting from
    the initial ones. `distribution`: its section kind's (SECTION_DISTRIBUTIONS)."""
    end, state = first + len(tiles), predictive.AdaptiveState.initial()
    recorded: list[predictive.Recorded] = [None] * len(tiles)  # type: ignore[list-item]
    for offset in range(len(tiles) - 1, -1, -1):
        tile, index = tiles[offset], first + offset
        context = _context(index, tile.valid, section_neighbours(index, tile.neighbours, end), end,
                           lambda k: tiles[k - first].pixels)
        recorded[offset] = predictive.record_adaptive(_turned(tile), context, state, distribution)
    return recorded


@dataclass(frozen=True)
class CodedSection:
    """A section's own stack, coded: its words, and each tile's exact bits on it (n,), in raster order."""

    words: np.ndarray  # (W,) uint32
    bits: np.ndarray  # (n,) float64
    distribution: str = predictive.STAGED  # what coded its tiles (SECTION_DISTRIBUTIONS)


def code_section(recorded: Sequence[predictive.Recorded]) -> CodedSection:
    """A section's tiles' recordings (record_section's, raster order) pushed onto a stack of their own."""
    section, bits = Stack(), []
    for replay in recorded:
        before = section.num_valid_bits()
        predictive.push_rows(section, replay)
        bits.append(float(section.num_valid_bits() - before))
    distribution = recorded[0].distribution if recorded else predictive.STAGED
    return CodedSection(section.words(), np.array(bits), distribution)


def _push_sections(kind: str) -> PushFn:
    distribution = SECTION_DISTRIBUTIONS[kind]

    def push(stack: Stack, tiles: Sequence[Tile], start: int, stream: Stream) -> np.ndarray:
        """A section (raster tiles start .. start + n - 1) coded on a stack of its own (the stream's CodedSection
        where it has one of n tiles coded so, else recorded and coded here), and that stack's words onto `stack`.
        Each tile's exact bits on the section's stack (n,)."""
        coded = stream.sections.get(start)
        if coded is None or len(coded.bits) != len(tiles) or coded.distribution != distribution:
            coded = code_section(record_section(tiles, start, distribution))
        halves = np.ascontiguousarray(coded.words, dtype="<u4").view("<u2").astype(np.int32)
        stack.push_uniform(np.concatenate([[len(coded.words) & 0xFFFF, len(coded.words) >> 16], halves]), _HALVES)
        return coded.bits

    return push


def _pop_sections(kind: str) -> PopFn:
    distribution = SECTION_DISTRIBUTIONS[kind]

    def pop(stack: Stack, specs: Sequence[TileSpec], start: int, stream: Stream) -> Callable[[], list[np.ndarray]]:
        """A section's words taken off `stack`; returns what decodes its tiles from them (deferred:
        decode_section)."""
        low, high = (int(half) for half in stack.pop_uniform(2, _HALVES))
        count = low | high << 16
        if 32 * count > stack.num_bits():
            raise CodingError(f"a section of {count} words on a stack of {stack.num_bits() // 32}")
        words = stack.pop_uniform(2 * count, _HALVES).astype("<u2").view("<u4").astype(np.uint32)
        specs_ = list(specs)
        return lambda: decode_section(words, specs_, start, distribution)

    return pop


def decode_section(words: np.ndarray, specs: Sequence[TileSpec], first: int,
                   distribution: str = predictive.STAGED) -> list[np.ndarray]:
    """The padded tiles (C, Th, Tw) uint8 of a section (raster tiles first .. first + n - 1; their padded shapes may
    differ) from its stack's words, last tile first, as record_section recorded them with `distribution`; every word
    must be consumed."""
    section, end = Stack.from_words(words), first + len(specs)
    state = predictive.AdaptiveState.initial()
    tiles: list[np.ndarray] = [None] * len(specs)  # type: ignore[list-item]
    for offset in range(len(specs) - 1, -1, -1):
        spec, index = specs[offset], first + offset
        context = _context(index, spec.valid, section_neighbours(index, spec.neighbours, end), end,
                           lambda k: tiles[k - first])
        (c, th, tw), (h, w) = spec.shape, spec.valid
        turned = predictive.decode(section, c, h, w, context, distribution, state)
        tiles[offset] = _unturned(turned, th, tw)
    if not section.is_empty():
        raise CodingError(f"a section's words hold more than its {len(specs)} tiles")
    return tiles


def _turned(tile: Tile) -> np.ndarray:
    """A tile's valid pixels (C, h, w) turned by 180 degrees, as the predictor codes them (_context: its neighbours
    below and to the right become the row above and the column to the left)."""
    return np.ascontiguousarray(tile.valid_pixels[:, ::-1, ::-1])


def _unturned(turned: np.ndarray, th: int, tw: int) -> np.ndarray:
    """The padded tile (C, th, tw) of pixels the predictor decoded turned (_turned's inverse, padding recreated)."""
    return pad_tile(np.ascontiguousarray(turned[:, ::-1, ::-1]), th, tw)


def _context(
    index: int, valid: tuple[int, int], neighbours: tuple[int, int], total: int, pixels_of: Callable
) -> predictive.Context:
    """Context for tile `index` turned by 180 degrees: its neighbours below and to the right (padded tiles
    from `pixels_of(k)`) become the row above and the column to the left. The decoder pops the stream last
    tile first, so it has them when this tile comes off: the decoded tiles after a predictive tile are its
    context, as the tiles before a pixel are in a raster-order codec."""
    (h, w), (below, right) = valid, neighbours
    if below < 0 or right < 0 or index + below + right >= total:
        raise CodingError(f"tile {index}: neighbours {neighbours} outside the stream of {total} tiles")

    def neighbour(offset: int) -> np.ndarray:
        pixels = pixels_of(index + offset)
        if pixels is None:
            raise CodingError(f"tile {index}: its neighbour {index + offset} is not decoded yet")
        return pixels

    above = neighbour(below)[:, 0, :w][:, ::-1] if below else None
    left = neighbour(right)[:, :h, 0][:, ::-1] if right else None
    corner = neighbour(below + right)[:, 0, 0] if below and right else None
    return predictive.Context(above, left, corner)


# ---------------------------------------------------------------------------------------------- helpers


def _single_tile(specs: Sequence[TileSpec], kind: str) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """Padded shape and valid extent of the one tile of a raw or predictive batch."""
    if len(specs) != 1:
        raise CodingError(f"a {kind} batch holds exactly one tile")
    return specs[0].shape, specs[0].valid


def _one_tile(tiles: Sequence[Tile], kind: str) -> Sequence[Tile]:
    if len(tiles) != 1:
        raise CodingError(f"a {kind} batch holds exactly one tile")
    return tiles


# ---------------------------------------------------------------------------------------------- the registry

DIRECT = "direct"
BITSBACK = "bitsback"
RAW = "raw"  # a first tile where the model without latents is worse than 8 bits per subpixel (read only)
WHITENED = "whitened"  # the same, its bytes whitened first: what the encoder writes instead of RAW
PREDICTIVE = "predictive"  # a tile coded by the local predictor of predictive.py alone (read only)
# The same, the tile turned by 180 degrees and predicted from its neighbours below and to the right, which the
# decoder has by then (see _context): what the encoder writes instead of PREDICTIVE (in formats 1 to 4).
PREDICTIVE_NEIGHBOURS = "predictive-neighbours"
# The same with Laplace residuals (predictive.LAPLACE): what the encoder wrote instead in format 5.
PREDICTIVE_LAPLACE = "predictive-laplace"
# The same through the blend of predictors (predictive.BLEND): what the encoder wrote instead in formats 6 and 7.
PREDICTIVE_BLEND = "predictive-blend"
# The same with residual tables fitted on photographs (predictive.FITTED): what the encoder writes instead (format 8).
PREDICTIVE_FITTED = "predictive-fitted"
# The same with each value's mean and std corrected by its context's statistics over the stream's such tiles
# decoded before it (predictive.ADAPTIVE): what the encoder writes instead (format 9).
PREDICTIVE_ADAPTIVE = "predictive-adaptive"
# The same with each value's mean blended again with a local least-squares prediction (predictive.LEAST_SQUARES),
# sharing the statistics: what the encoder writes instead (format 10).
PREDICTIVE_LEAST_SQUARES = "predictive-least-squares"
# The same in raster order, its std reading the least-squares fit too, a second stage of context statistics and
# residual tables of its own (predictive.CASCADE): what the encoder writes instead (format 12).
PREDICTIVE_CASCADE = "predictive-cascade"
# The same with each value's column and row parity in its second stage's contexts (predictive.PARITY): what the
# encoder writes instead (format 13).
PREDICTIVE_PARITY = "predictive-parity"
# The same whose blends also weigh each predictor by its errors two to the left and two above (predictive.WIDE):
# what the encoder writes instead (format 14).
PREDICTIVE_WIDE = "predictive-wide"
# The same whose std also reads the residuals two to the left and two above, with a third stage of context statistics
# (predictive.STAGED): what the encoder writes instead (format 15).
PREDICTIVE_STAGED = "predictive-staged"
# The residual distribution (predictive.py's residual model) of each predictor kind with neighbours.
RESIDUALS = {PREDICTIVE_NEIGHBOURS: predictive.GAUSSIAN, PREDICTIVE_LAPLACE: predictive.LAPLACE,
             PREDICTIVE_BLEND: predictive.BLEND, PREDICTIVE_FITTED: predictive.FITTED,
             PREDICTIVE_ADAPTIVE: predictive.ADAPTIVE, PREDICTIVE_LEAST_SQUARES: predictive.LEAST_SQUARES,
             PREDICTIVE_CASCADE: predictive.CASCADE, PREDICTIVE_PARITY: predictive.PARITY,
             PREDICTIVE_WIDE: predictive.WIDE, PREDICTIVE_STAGED: predictive.STAGED}

# In the order of docs/FORMAT.md's table. RAW and PREDICTIVE were last written before format 2 existed.
KINDS: tuple[TileKind, ...] = (
    TileKind(
        DIRECT, "d", "every latent at its prior mean (nothing popped), the valid pixels pushed through the model",
        formats=tuple(range(1, 24)), written=True, single=False, uses_model=True, needs_bits=False,
        push=_push_direct, pop=_pop_direct,
    ),
    TileKind(
        BITSBACK, "b", "bits-back: the latents popped with the posterior, the valid pixels pushed through the "
        "model, the latents pushed with the prior",
        formats=tuple(range(1, 24)), written=True, single=False, uses_model=True, needs_bits=True,
        push=_push_bitsback, pop=_pop_bitsback,
    ),
    TileKind(
        RAW, "r", "the valid pixels at 8 bits each, as they are",
        formats=(1,), written=False, single=True, uses_model=False, needs_bits=False,
        push=_push_raw, pop=_pop_raw,
    ),
    TileKind(
        WHITENED, "w", "the valid pixels at 8 bits each, whitened: value i pushed as (v + whitening(t, i)) mod 256",
        formats=tuple(range(1, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_whitened, pop=_pop_whitened,
    ),
    TileKind(
        PREDICTIVE, "p", "the valid pixels through the local predictor of codec/predictive.py, without context",
        formats=(1,), written=False, single=True, uses_model=False, needs_bits=False,
        push=_push_predictive, pop=_pop_predictive,
    ),
    TileKind(
        PREDICTIVE_NEIGHBOURS, "q", "the valid pixels through the local predictor, turned by 180 degrees, with "
        "the tiles below and to the right as context",
        formats=tuple(range(1, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_neighbours(RESIDUALS[PREDICTIVE_NEIGHBOURS]), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_NEIGHBOURS]),
    ),
    TileKind(
        PREDICTIVE_LAPLACE, "e", "as q, each value's residual coded with a Laplace of the same mean and variance "
        "(its std rounded to a level) instead of a Gaussian",
        formats=tuple(range(5, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_neighbours(RESIDUALS[PREDICTIVE_LAPLACE]), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_LAPLACE]),
    ),
    TileKind(
        PREDICTIVE_BLEND, "f", "as q, each value predicted by a blend of predictors weighted by their errors "
        "around it, its residual coded with a Laplace of a fitted std (codec/predictive.py: BLEND)",
        formats=tuple(range(6, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_neighbours(RESIDUALS[PREDICTIVE_BLEND]), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_BLEND]),
    ),
    TileKind(
        PREDICTIVE_FITTED, "g", "as f, each residual coded with a table fitted on photographs, chosen by its std "
        "and by the quarter its mean falls in between integers (codec/predictive.py: FITTED)",
        formats=tuple(range(8, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_neighbours(RESIDUALS[PREDICTIVE_FITTED]), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_FITTED]),
    ),
    TileKind(
        PREDICTIVE_ADAPTIVE, "h", "as g, each value's mean and std corrected by the statistics of its context over "
        "the values of the stream's h tiles decoded before it (codec/predictive.py: ADAPTIVE)",
        formats=tuple(range(9, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_stateful(predictive.ADAPTIVE), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_ADAPTIVE]),
    ),
    TileKind(
        PREDICTIVE_LEAST_SQUARES, "m", "as h, each value's mean blended again with a local least-squares prediction "
        "from the values around it decoded before it, by their errors on its neighbours; the same statistics as "
        "h's (codec/predictive.py: LEAST_SQUARES)",
        formats=tuple(range(10, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_stateful(predictive.LEAST_SQUARES), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_LEAST_SQUARES]),
    ),
    TileKind(
        PREDICTIVE_CASCADE, "n", "as m, its values in raster order, each value's std grown by the least-squares "
        "fit's error over its window and by how far the two predictions lie apart, its mean and std corrected "
        "again by a second stage of context statistics, its residuals coded with tables of its own "
        "(codec/predictive.py: CASCADE)",
        formats=tuple(range(12, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_stateful(predictive.CASCADE), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_CASCADE]),
    ),
    TileKind(
        PREDICTIVE_PARITY, "o", "as n, its second stage's contexts also holding each value's column and row parity "
        "(codec/predictive.py: PARITY)",
        formats=tuple(range(13, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_stateful(predictive.PARITY), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_PARITY]),
    ),
    TileKind(
        PREDICTIVE_WIDE, "s", "as o, each predictor's blend weight also reading its errors two columns to the left and "
        "two rows above; the same statistics as o's (codec/predictive.py: WIDE)",
        formats=tuple(range(14, 24)), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_stateful(predictive.WIDE), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_WIDE]),
    ),
    TileKind(
        PREDICTIVE_STAGED, "t", "as s, each value's std also grown by the residuals two columns to the left and two "
        "rows above, its mean and std corrected again by a third stage of context statistics, keyed on the signed "
        "residuals left of and above it (codec/predictive.py: STAGED)",
        formats=(15, 16, 17, 18, 19, 20, 21, 22, 23), written=True, single=True, uses_model=False, needs_bits=False,
        push=_push_stateful(predictive.STAGED), pop=_pop_neighbours(RESIDUALS[PREDICTIVE_STAGED]),
    ),
    TileKind(
        PREDICTIVE_SECTIONS, "u", "a section: its tiles as t's, on a stack of their own whose words are pushed as "
        "uniform 16-bit halves after their count, their statistics starting from the initial ones, their context "
        "only the section's tiles (codec/tilekinds.py: sections)",
        formats=(16, 17, 18, 19, 20, 21, 22, 23), written=True, single=False, uses_model=False, needs_bits=False,
        push=_push_sections(PREDICTIVE_SECTIONS), pop=_pop_sections(PREDICTIVE_SECTIONS), deferred=True,
    ),
    TileKind(
        PREDICTIVE_SMALL_SECTIONS, "v", "a section as u's, its tiles coded by the staged cascade's small-image "
        "profile: other numbers and residual tables, fitted on small images, each pixel's channels coded last first "
        "(codec/predictive.py: SMALL)",
        formats=(19, 20, 21, 22, 23), written=True, single=False, uses_model=False, needs_bits=False,
        push=_push_sections(PREDICTIVE_SMALL_SECTIONS), pop=_pop_sections(PREDICTIVE_SMALL_SECTIONS), deferred=True,
    ),
    TileKind(
        PREDICTIVE_PHOTO_SECTIONS, "x", "a section as u's, its tiles coded by the staged cascade's photograph "
        "profile: its numbers chosen again all together and residual tables fitted for them, on photographs "
        "(codec/predictive.py: PHOTO)",
        formats=(20, 21, 22, 23), written=True, single=False, uses_model=False, needs_bits=False,
        push=_push_sections(PREDICTIVE_PHOTO_SECTIONS), pop=_pop_sections(PREDICTIVE_PHOTO_SECTIONS), deferred=True,
    ),
    TileKind(
        PREDICTIVE_REFINED_SECTIONS, "y", "a section as x's, each value coded as binary decisions about its residual, "
        "each decision's probability the residual table's refined by an adaptive model of counters in contexts, a "
        "probability map and a mixer, all in integers (codec/predictive.py: REFINED; codec/kernels.py: the "
        "refinement)",
        formats=(21, 22, 23), written=True, single=False, uses_model=False, needs_bits=False,
        push=_push_sections(PREDICTIVE_REFINED_SECTIONS), pop=_pop_sections(PREDICTIVE_REFINED_SECTIONS),
        deferred=True,
    ),
    TileKind(
        PREDICTIVE_ACROSS_SECTIONS, "z", "a section as y's, its refinement's counters in five groups of contexts more: "
        "where the earlier channels' gradients carried over to this channel (in the first channel, spatial "
        "predictions) put the value against its mean, and its mixer learning twice as fast (codec/predictive.py: "
        "REFINED_ACROSS; codec/kernels.py: REFINE_ACROSS_GROUPS)",
        formats=(22, 23), written=True, single=False, uses_model=False, needs_bits=False,
        push=_push_sections(PREDICTIVE_ACROSS_SECTIONS), pop=_pop_sections(PREDICTIVE_ACROSS_SECTIONS),
        deferred=True,
    ),
    TileKind(
        PREDICTIVE_SMALL_ACROSS_SECTIONS, "a", "a section as v's, each value coded as binary decisions refined as z's "
        "are (codec/predictive.py: SMALL_ACROSS)",
        formats=(22, 23), written=True, single=False, uses_model=False, needs_bits=False,
        push=_push_sections(PREDICTIVE_SMALL_ACROSS_SECTIONS), pop=_pop_sections(PREDICTIVE_SMALL_ACROSS_SECTIONS),
        deferred=True,
    ),
    *(TileKind(
        importance_kind(samples), code, f"importance-weighted (Monte-Carlo) bits-back with {samples} posterior samples "
        "per tile: one chosen in proportion to its weight p(x, z) / q(z given x), the others pushed back",
        formats=tuple(range(4, 24)), written=True, single=False, uses_model=True, needs_bits=True,
        push=_push_importance(samples), pop=_pop_importance(samples), samples=samples,
    ) for samples, code in zip(SAMPLE_COUNTS, "ijkl")),
)
BY_NAME: dict[str, TileKind] = {kind.name: kind for kind in KINDS}
BY_CODE: dict[str, TileKind] = {kind.code: kind for kind in KINDS}
assert len(BY_NAME) == len(BY_CODE) == len(KINDS) and all(len(k.code) == 1 and k.code.isascii() for k in KINDS)


def valid_kinds(version: int | None = None) -> str:
    """The kinds (of files of format `version`, or of any format) for an error message: 'd (direct), ...'."""
    return ", ".join(f"{k.code!r} ({k.name})" for k in KINDS if version is None or version in k.formats)


def by_name(name: object) -> TileKind:
    """The kind of a schedule entry; CodingError (naming every valid kind) for anything else."""
    kind = BY_NAME.get(name) if isinstance(name, str) else None
    if kind is None:
        raise CodingError(f"unknown tile kind {str(name)[:40]!r}; valid kinds: {valid_kinds()}")
    return kind
