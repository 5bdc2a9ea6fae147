"""Bits-back coding of a stream of tiles through a hierarchical latent model (see protocol.py).

One bits-back batch of B tiles, craystack style (push = on top of the stack, pop = off the top):

    encoder                                        decoder (the mirror image, run backwards)
    swap the top two 16-bit chunks                 for g in groups:    z_g <- pop(prior_g)
    for g in groups:    z_g <- pop(posterior_g)    for c in 0..C-1:    x_c <- pop(likelihood_c)
    for c in C-1..0:    push(x_c, likelihood_c)    for g in G-1..0:    push(z_g, posterior_g)
    for g in G-1..0:    push(z_g, prior_g)         swap the top two 16-bit chunks

Net cost: -log P(x | z) + log Q(z | x) - log P(z), the negative ELBO (plus a little for the latent grid, see
latents.py). The decoder pops group 0 first and channel 0 first, so channels couple R -> G -> B. Posterior
pops use a window around the posterior mean (latents.pop_posterior), and the swap (_swap_top) makes the first
pop of a batch read older bits: both keep leaky tail bins from being popped (see there for the measurements).

Popping z needs bits on the stack: from an empty stack the "sample" is a constant, not a posterior sample.
The first tiles of a stream (empty stack) are therefore coded without popping anything, each as the cheapest
of: the local predictor of predictive.py (no model; the usual choice on photographs), the model with every
latent at its prior mean (only the pixels are pushed), or whitened raw bytes. Then bits-back batches grow
1, 2, 4, ... up to `max_batch` tiles. Before each batch the encoder keeps a clone of the stack; if popping the
latents left fewer than `margin_bits` valid bits, the pops were not faithful samples: the clone is restored,
the batch halved and retried, and a batch of 1 that still fails is coded without popping. Given the model's
expected cost of each tile, any tile that the predictor (or raw bytes) codes for less is coded so, anywhere
in the stream (photographs: ~1 tile in 5, see encode_tiles). The schedule [(kind, n_tiles), ...] goes into
the file header; the decoder replays it backwards (last batch first) and must end with an empty stack.

Only valid pixels are coded; padding is recreated by edge replication (tiling.pad_tile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from codec import predictive
from codec.ans import Stack
from codec.errors import CodingError
from codec.latents import LatentGrid, gaussian_kl_bits, pop_posterior, pop_prior, push_posterior, push_prior
from codec.pixels import batch_pixels, pop_pixels, push_pixels
from codec.protocol import LatentModel, LatentParams, ModelPass
from codec.tiling import Tile, TileSpec, pad_tile

DIRECT = "direct"
BITSBACK = "bitsback"
RAW = "raw"  # a first tile where the model without latents is worse than 8 bits per subpixel (read only)
WHITENED = "whitened"  # the same, its bytes whitened first: what the encoder writes instead of RAW
PREDICTIVE = "predictive"  # a tile coded by the local predictor of predictive.py alone (read only)
# The same, the tile turned by 180 degrees and predicted from its neighbours below and to the right, which the
# decoder has by then (see _context): what the encoder writes instead of PREDICTIVE.
PREDICTIVE_NEIGHBOURS = "predictive-neighbours"
KINDS = (DIRECT, BITSBACK, RAW, WHITENED, PREDICTIVE, PREDICTIVE_NEIGHBOURS)
WITHOUT_BITS = (PREDICTIVE_NEIGHBOURS, DIRECT, WHITENED)  # what a tile that cannot pop is coded as: the cheapest

Schedule = list[tuple[str, int]]  # [(kind, n_tiles), ...] in encoding order
ProgressFn = Callable[[int, int], None]  # on_batch(n_tiles_done, n_tiles_total)


@dataclass(frozen=True)
class TileStats:
    ideal_bits: float  # bits-back: KL (analytic) + -log2 p(x | z); direct: -log2 p(x | z = prior means);
    # predictive and raw: their exact cost
    net_bits: float  # the batch's real change of stack size, shared among its tiles in proportion to ideal_bits
    direct: bool


@dataclass(frozen=True)
class EncodeResult:
    words: np.ndarray  # (W,) uint32, the payload
    schedule: Schedule
    stats: list[TileStats]  # one per tile, stream order


# ---------------------------------------------------------------------------------------------- public API


def encode(
    tiles: Sequence[Tile],
    model: LatentModel,
    grid: LatentGrid = LatentGrid(),
    max_batch: int = 16,
    margin_bits: int = 64,
    on_batch: ProgressFn | None = None,
    model_bits: Sequence[float] | None = None,
) -> EncodeResult:
    """Code `tiles` (stream order) onto an empty stack."""
    stack = Stack()
    schedule, stats = encode_tiles(stack, tiles, model, grid, max_batch, margin_bits, on_batch, model_bits)
    return EncodeResult(stack.words(), schedule, stats)


def decode(
    words: np.ndarray,
    schedule: Schedule,
    specs: Sequence[TileSpec],
    model: LatentModel,
    grid: LatentGrid = LatentGrid(),
    on_batch: ProgressFn | None = None,
) -> list[np.ndarray]:
    """Inverse of `encode`: padded tiles (C, Th, Tw) uint8 in stream order. Raises CodingError unless every
    word of `words` is consumed (a strong check that model, schedule and payload all match)."""
    stack = Stack.from_words(words)
    tiles = decode_tiles(stack, schedule, specs, model, grid, on_batch)
    if not stack.is_empty():
        raise CodingError(f"decoding left {stack.num_valid_bits()} bits on the stack: wrong model or corrupt data")
    return tiles


def encode_tiles(
    stack: Stack,
    tiles: Sequence[Tile],
    model: LatentModel,
    grid: LatentGrid = LatentGrid(),
    max_batch: int = 16,
    margin_bits: int = 64,
    on_batch: ProgressFn | None = None,
    model_bits: Sequence[float] | None = None,
) -> tuple[Schedule, list[TileStats]]:
    """Push `tiles` onto `stack`, which may already hold bits (they then serve as initial bits).

    model_bits: what bits-back is expected to cost for each tile (the model's negative ELBO with one posterior
    sample will do). A tile that the local predictor or whitened raw bytes code for less is coded that way
    wherever it falls in the stream, in a batch of its own; bits-back batches then run between such tiles.
    Without it only the first tiles (nothing to pop yet) are coded without the model."""
    if max_batch < 1 or margin_bits < 0:
        raise CodingError(f"max_batch must be >= 1 and margin_bits >= 0, got {max_batch}, {margin_bits}")
    if model_bits is not None and len(model_bits) != len(tiles):
        raise CodingError(f"model_bits has {len(model_bits)} entries for {len(tiles)} tiles")
    alone = [None] * len(tiles) if model_bits is None else _cheaper_without_model(tiles, model_bits)
    schedule: Schedule = []
    stats: list[TileStats] = []
    done, target = 0, 1
    while done < len(tiles):
        before = stack.num_valid_bits()
        if alone[done] is not None:
            n, kind = 1, alone[done]
            ideal = _push_without_bits(kind, stack, tiles, done, model)
        else:
            n = min(target, _same_shape_run(tiles, done, max_batch, alone))
            n, ideal, halved = _try_bitsback(stack, tiles, done, n, model, grid, margin_bits)
            if ideal is None:
                n, target = 1, 1
                kind, ideal = _encode_without_bits(stack, tiles, done, model)
            else:
                kind = BITSBACK
                target = n if halved else min(2 * target, max_batch)
        stats += _share(ideal, stack.num_valid_bits() - before, kind != BITSBACK)
        schedule.append((kind, n))
        done += n
        if on_batch is not None:
            on_batch(done, len(tiles))
    return schedule, stats


def decode_tiles(
    stack: Stack,
    schedule: Schedule,
    specs: Sequence[TileSpec],
    model: LatentModel,
    grid: LatentGrid = LatentGrid(),
    on_batch: ProgressFn | None = None,
    margin_bits: int = 64,
) -> list[np.ndarray]:
    """Pop the tiles that `encode_tiles` pushed with this `schedule`; the last batch comes off first.

    A genuine stream holds at least `margin_bits` (the encoder's) before every bits-back batch, so a payload
    that runs short is refused there, before the model runs (see check_payload_size). Every other kind may
    cost nothing at all (a black tile): popping them from an empty stack is legitimate."""
    check_payload_size(stack, schedule, margin_bits)
    starts = _check_schedule(schedule, specs)
    tiles: list[np.ndarray | None] = [None] * len(specs)
    done = 0
    for (kind, n), start in reversed(list(zip(schedule, starts))):
        batch_specs = specs[start : start + n]
        if kind == BITSBACK and stack.num_valid_bits() < margin_bits:
            raise CodingError(
                f"payload exhausted: {stack.num_valid_bits()} bits left before the bits-back batch of tiles "
                f"{start}..{start + n - 1}, a genuine stream holds at least {margin_bits}"
            )
        if kind in (RAW, WHITENED):
            pixels = _decode_raw(stack, batch_specs, key=start if kind == WHITENED else None)
        elif kind == PREDICTIVE:
            pixels = _decode_predictive(stack, batch_specs)
        elif kind == PREDICTIVE_NEIGHBOURS:
            spec = batch_specs[0]
            context = _context(start, spec.valid, spec.neighbours, len(specs), tiles.__getitem__)
            pixels = _decode_predictive(stack, batch_specs, context)
        elif kind == DIRECT:
            pixels = _decode_direct(stack, batch_specs, model)
        else:
            pixels = _decode_bitsback(stack, batch_specs, model, grid)
        tiles[start : start + n] = list(pixels)
        done += n
        if on_batch is not None:
            on_batch(done, len(specs))
    return tiles  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- one batch


def _try_bitsback(
    stack: Stack, tiles: Sequence[Tile], start: int, n: int, model: LatentModel, grid: LatentGrid, margin_bits: int
) -> tuple[int, np.ndarray | None, bool]:
    """Push tiles[start : start + n] as one bits-back batch, halving it while popping the latents runs the
    stack dry (each failed try is undone on a clone). (tiles pushed, their ideal bits or None if not even one
    tile could pop, whether the batch was halved)."""
    ideal, halved = None, False
    while stack.num_valid_bits() >= margin_bits:  # with fewer bits there is nothing to pop
        snapshot = stack.clone()
        ideal = _encode_bitsback(stack, tiles[start : start + n], model, grid, margin_bits)
        if ideal is not None:
            break
        stack.restore(snapshot)  # undo the unfaithful pops
        if n == 1:
            break
        n, halved = n // 2, True
    return n, ideal, halved


def _encode_bitsback(
    stack: Stack, tiles: Sequence[Tile], model: LatentModel, grid: LatentGrid, margin_bits: int
) -> np.ndarray | None:
    """Push one bits-back batch; per-tile ideal bits (B,), or None if popping the latents ran the stack dry
    (the caller then restores its clone: the stack is left half-done)."""
    pixels, mask = batch_pixels(tiles)  # (B, C, H, W), (B, H, W)
    batch = model.begin(pixels.shape, pixels)
    _swap_top(stack)
    ks, priors, kl = [], [], np.zeros(len(tiles))  # kl: (B,) bits
    for g in range(batch.num_groups):
        p = _params(batch, g, len(tiles), need_posterior=True)
        k = pop_posterior(stack, grid, p.post_mean, p.post_std)  # (B, D)
        batch.set_latent(g, grid.values(k))
        ks.append(k)
        priors.append((p.prior_mean, p.prior_std))
        kl += gaussian_kl_bits(p.post_mean, p.post_std, p.prior_mean, p.prior_std).sum(axis=1)
    if stack.num_valid_bits() < margin_bits:
        return None
    pixel_bits = push_pixels(stack, batch, pixels, mask)
    for k, (mean, std) in reversed(list(zip(ks, priors))):  # group 0 last, so that the decoder pops it first
        push_prior(stack, grid, k, mean, std)
    return kl + pixel_bits


def _decode_bitsback(stack: Stack, specs: Sequence[TileSpec], model: LatentModel, grid: LatentGrid) -> np.ndarray:
    shape = (len(specs), *specs[0].shape)
    batch = model.begin(shape, None)
    ks = []
    for g in range(batch.num_groups):
        p = _params(batch, g, len(specs), need_posterior=False)
        k = pop_prior(stack, grid, p.prior_mean, p.prior_std)  # (B, D)
        batch.set_latent(g, grid.values(k))
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
            posteriors.append((p.post_mean, p.post_std))
            again.set_latent(g, grid.values(k))
    for k, (mean, std) in reversed(list(zip(ks, posteriors))):  # group 0 last: the encoder popped it first
        push_posterior(stack, grid, k, mean, std)
    _swap_top(stack)  # its own inverse: undoes the encoder's swap
    return pixels


def _encode_without_bits(stack: Stack, tiles: Sequence[Tile], index: int, model: LatentModel) -> tuple[str, np.ndarray]:
    """Push tiles[index] without popping anything, as the cheapest kind of WITHOUT_BITS: (kind, ideal bits (1,)).

    Each kind is tried on a clone and the one whose stack grew least is kept. The predictor won on every
    photograph and digit tried (even a digit with the mnist model); raw bytes win on noise, and prior-mean
    latents stay for models that predict well without latents."""
    best = None
    for kind in WITHOUT_BITS:
        trial = stack.clone()
        ideal = _push_without_bits(kind, trial, tiles, index, model)
        grown = trial.num_valid_bits() - stack.num_valid_bits()
        if best is None or grown < best[0]:
            best = (grown, kind, ideal, trial)
    _, kind, ideal, trial = best
    stack.restore(trial)
    return kind, ideal


def _push_without_bits(kind: str, stack: Stack, tiles: Sequence[Tile], index: int, model: LatentModel) -> np.ndarray:
    """Push tiles[index] as `kind`, one of WITHOUT_BITS. Its ideal bits (1,)."""
    if kind == PREDICTIVE_NEIGHBOURS:
        return _encode_predictive(stack, tiles, index)
    if kind == DIRECT:
        return _encode_direct(stack, [tiles[index]], model)
    return _encode_raw(stack, tiles[index], key=index)


def _encode_predictive(stack: Stack, tiles: Sequence[Tile], index: int) -> np.ndarray:
    """The valid pixels through predictive.py, turned by 180 degrees, with their neighbours below and to the
    right as context: no model, no bits needed on the stack. Its exact bits (1,)."""
    before = stack.num_valid_bits()
    tile = tiles[index]
    context = _context(index, tile.valid, tile.neighbours, len(tiles), lambda k: tiles[k].pixels)
    predictive.encode(stack, np.ascontiguousarray(tile.valid_pixels[:, ::-1, ::-1]), context)
    return np.array([float(stack.num_valid_bits() - before)])


def _encode_direct(stack: Stack, tiles: Sequence[Tile], model: LatentModel) -> np.ndarray:
    """Latents at their prior means, pixels pushed: needs no bits on the stack. Per-tile bits (B,)."""
    pixels, mask = batch_pixels(tiles)
    batch = _prior_mean_pass(model, pixels.shape)
    return push_pixels(stack, batch, pixels, mask)


def _decode_direct(stack: Stack, specs: Sequence[TileSpec], model: LatentModel) -> np.ndarray:
    batch = _prior_mean_pass(model, (len(specs), *specs[0].shape))
    return pop_pixels(stack, batch, specs)


def _raw_bits(tile: Tile) -> float:
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


def _encode_raw(stack: Stack, tile: Tile, key: int) -> np.ndarray:
    """The valid pixels of one tile at 8 bits each (uniform, whitened): no model, no bits needed on the stack."""
    values = tile.valid_pixels.reshape(-1)
    stack.push_uniform(values + whitening(key, values.size), 256)  # uint8: wraps mod 256
    return np.array([_raw_bits(tile)])


def _decode_raw(stack: Stack, specs: Sequence[TileSpec], key: int | None) -> np.ndarray:
    """A raw tile (key None: its bytes as they are, as older files have them) or a whitened one."""
    (c, th, tw), (h, w) = _single_tile(specs, "raw")
    values = stack.pop_uniform(c * h * w, 256).astype(np.uint8)
    if key is not None:
        values = values - whitening(key, values.size)  # uint8: wraps mod 256
    return pad_tile(values.reshape(c, h, w), th, tw)[None]


def _decode_predictive(stack: Stack, specs: Sequence[TileSpec], context: predictive.Context | None = None) -> np.ndarray:
    """A PREDICTIVE tile (context None) or a PREDICTIVE_NEIGHBOURS one (coded turned by 180 degrees)."""
    (c, th, tw), (h, w) = _single_tile(specs, "predictive")
    if context is None:
        return pad_tile(predictive.decode(stack, c, h, w), th, tw)[None]
    turned = predictive.decode(stack, c, h, w, context)
    return pad_tile(np.ascontiguousarray(turned[:, ::-1, ::-1]), th, tw)[None]


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


def _single_tile(specs: Sequence[TileSpec], kind: str) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """Padded shape and valid extent of the one tile of a raw or predictive batch."""
    if len(specs) != 1:
        raise CodingError(f"a {kind} batch holds exactly one tile")
    return specs[0].shape, specs[0].valid


def _prior_mean_pass(model: LatentModel, shape: tuple[int, ...]) -> ModelPass:
    # A prior-only pass on both sides (the encoder needs no posterior here), so both compute the same floats.
    batch = model.begin(shape, None)
    for g in range(batch.num_groups):
        p = _params(batch, g, shape[0], need_posterior=False)
        batch.set_latent(g, np.array(p.prior_mean, dtype=np.float64, copy=True))
    return batch


# ---------------------------------------------------------------------------------------------- helpers

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


def _params(batch: ModelPass, group: int, b: int, need_posterior: bool) -> LatentParams:
    """The model's parameters for `group`, checked for shape: everything (B, D) float64."""
    p = batch.latent_params(group)
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


def _checked_posteriors(posteriors, ks: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """A pass's posteriors(), checked as _params checks parameters: one (mean, std) per group, each shaped
    like that group's latents, finite, stds > 0."""
    if len(posteriors) != len(ks):
        raise CodingError(f"model gave posteriors for {len(posteriors)} groups, not {len(ks)}")
    checked = []
    for g, ((mean, std), k) in enumerate(zip(posteriors, ks)):
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if mean.shape != k.shape or std.shape != k.shape:
            raise CodingError(f"posterior of group {g} must be {k.shape}, got {mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std) & (std > 0))):
            raise CodingError(f"posterior of group {g}: means must be finite, stds finite and > 0")
        checked.append((mean, std))
    return checked


# ---------------------------------------------------------------------------------------------- schedule


def _same_shape_run(tiles: Sequence[Tile], start: int, limit: int, alone: Sequence[str | None]) -> int:
    """How many tiles from `start` on (at most `limit`) share the padded shape of tiles[start] and go to
    bits-back (`alone[k]` is None)."""
    shape = tiles[start].pixels.shape
    n = 1
    while n < limit and start + n < len(tiles) and tiles[start + n].pixels.shape == shape and alone[start + n] is None:
        n += 1
    return n


def _cheaper_without_model(tiles: Sequence[Tile], model_bits: Sequence[float]) -> list[str | None]:
    """Per tile PREDICTIVE_NEIGHBOURS or WHITENED where that kind's exact cost is below `model_bits`, else None."""
    kinds: list[str | None] = []
    for index, (tile, expected) in enumerate(zip(tiles, model_bits)):
        trial = Stack()
        _encode_predictive(trial, tiles, index)
        costs = {PREDICTIVE_NEIGHBOURS: trial.num_valid_bits(), WHITENED: _raw_bits(tile)}
        kind = min(costs, key=costs.get)
        kinds.append(kind if costs[kind] < expected else None)
    return kinds


def check_payload_size(stack: Stack, schedule: Schedule, margin_bits: int = 64) -> None:
    """Refuse a payload too small for its schedule before decoding anything.

    Why it holds for every genuine stream: after a bits-back batch the encoder's stack holds at least
    `margin_bits` (it undoes any batch whose pops left fewer, and pushes never shrink an ANS stack), and every
    later batch only pushes. So the whole payload of a stream with any bits-back batch holds at least
    `margin_bits`. Streams of other kinds only may be empty: an all-black image costs no payload word."""
    if stack.num_valid_bits() < margin_bits and any(kind == BITSBACK for kind, _ in schedule):
        raise CodingError(
            f"payload too small: {stack.num_valid_bits()} bits for a schedule with bits-back batches, "
            f"which need at least {margin_bits}"
        )


def _check_schedule(schedule: Schedule, specs: Sequence[TileSpec]) -> list[int]:
    """Validate a schedule against the tiles it must cover; the first tile index of each batch."""
    starts, start = [], 0
    for kind, n in schedule:
        if kind not in KINDS or not isinstance(n, int) or n < 1:
            raise CodingError(f"bad schedule entry ({kind!r}, {n!r})")
        if start + n > len(specs):
            raise CodingError(f"schedule covers more than the {len(specs)} tiles")
        if any(s.shape != specs[start].shape for s in specs[start : start + n]):
            raise CodingError(f"schedule batch at tile {start} mixes padded shapes")
        starts.append(start)
        start += n
    if start != len(specs):
        raise CodingError(f"schedule covers {start} tiles, expected {len(specs)}")
    return starts


def _share(ideal: np.ndarray, net: int, direct: bool) -> list[TileStats]:
    """Split a batch's net bits among its tiles in proportion to their ideal bits."""
    total = float(ideal.sum())
    weights = ideal / total if total > 0 else np.full(len(ideal), 1.0 / len(ideal))
    return [TileStats(float(i), float(net * w), direct) for i, w in zip(ideal, weights)]
