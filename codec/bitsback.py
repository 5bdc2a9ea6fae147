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

How each kind of batch is pushed and popped (direct, bits-back, raw, whitened, predictive, predictive with
neighbours) is declared once, in tilekinds.py; this module chooses the kinds and the batches, and replays them.
Only valid pixels are coded; padding is recreated by edge replication (tiling.pad_tile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from codec import tilekinds
from codec.ans import Stack
from codec.errors import CodingError
from codec.latents import LatentGrid
from codec.protocol import LatentModel
from codec.tiling import Tile, TileSpec
# The tile kinds (each one's push and pop) live in tilekinds.py; their names and `whitening` stay importable here.
from codec.tilekinds import (  # noqa: F401
    BITSBACK, DIRECT, PREDICTIVE, PREDICTIVE_BLEND, PREDICTIVE_LAPLACE, PREDICTIVE_NEIGHBOURS, RAW, WHITENED, Stream,
    raw_bits, whitening,
)

KINDS = tuple(kind.name for kind in tilekinds.KINDS)  # every kind's name, in tilekinds.KINDS's order
# The predictor kinds the encoder may write, each with its residual model (codec/predictive.py):
# PREDICTIVE_BLEND (format 6, the default), PREDICTIVE_LAPLACE (format 5) and PREDICTIVE_NEIGHBOURS (what files
# of formats 1 to 4 hold).
PREDICTORS = {kind: tilekinds.RESIDUALS[kind] for kind in (PREDICTIVE_BLEND, PREDICTIVE_LAPLACE, PREDICTIVE_NEIGHBOURS)}


def without_bits(predictor: str = PREDICTIVE_BLEND) -> tuple[str, ...]:
    """What a tile that cannot pop is coded as: the cheapest, the first of these on a tie (the order is part of
    what the encoder writes)."""
    if predictor not in PREDICTORS:
        raise CodingError(f"unknown predictor kind {predictor!r}; known: {', '.join(PREDICTORS)}")
    return (predictor, DIRECT, WHITENED)


WITHOUT_BITS = without_bits()
assert all(tilekinds.BY_NAME[kind].written and not tilekinds.BY_NAME[kind].needs_bits
           for predictor in PREDICTORS for kind in without_bits(predictor))

Schedule = list[tuple[str, int]]  # [(kind, n_tiles), ...] in encoding order
ProgressFn = Callable[[int, int], None]  # on_batch(n_tiles_done, n_tiles_total)


@dataclass(frozen=True)
class TileStats:
    ideal_bits: float  # bits-back: KL (analytic) + -log2 p(x | z); importance-weighted: -log2 mean_k w_k;
    # direct: -log2 p(x | z = prior means);
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
    bitsback_kind: str = BITSBACK,
    predictor: str = PREDICTIVE_BLEND,
) -> EncodeResult:
    """Code `tiles` (stream order) onto an empty stack."""
    stack = Stack()
    schedule, stats = encode_tiles(stack, tiles, model, grid, max_batch, margin_bits, on_batch, model_bits,
                                   bitsback_kind, predictor)
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
    bitsback_kind: str = BITSBACK,
    predictor: str = PREDICTIVE_BLEND,
    priced: Sequence[tuple[str, float]] | None = None,
) -> tuple[Schedule, list[TileStats]]:
    """Push `tiles` onto `stack`, which may already hold bits (they then serve as initial bits).

    bitsback_kind: the kind of the batches that pop latents: BITSBACK, or an importance-weighted one
    (tilekinds.importance_kind(K): K network passes per tile for the K-sample bound), with single-tile
    BITSBACK batches where the stack holds too few bits for it (a stream's start).

    predictor: the predictor kind of the tiles coded without the model (PREDICTORS: PREDICTIVE_BLEND;
    PREDICTIVE_LAPLACE for a file of format 5, PREDICTIVE_NEIGHBOURS for one of formats 1 to 4).

    model_bits: what bits-back is expected to cost for each tile (the model's negative ELBO with one posterior
    sample will do). A tile that the local predictor or whitened raw bytes code for less is coded that way
    wherever it falls in the stream, in a batch of its own; bits-back batches then run between such tiles.
    Without it only the first tiles (nothing to pop yet) are coded without the model. `priced`: what
    price_without_model(tiles, predictor) gives, where the caller has it already."""
    if max_batch < 1 or margin_bits < 0:
        raise CodingError(f"max_batch must be >= 1 and margin_bits >= 0, got {max_batch}, {margin_bits}")
    if model_bits is not None and len(model_bits) != len(tiles):
        raise CodingError(f"model_bits has {len(model_bits)} entries for {len(tiles)} tiles")
    fallbacks = without_bits(predictor)
    alone = [None] * len(tiles) if model_bits is None else _cheaper_without_model(tiles, model_bits, predictor, priced)
    stream = Stream(len(tiles), lambda k: tiles[k].pixels, model, grid, margin_bits)
    schedule: Schedule = []
    stats: list[TileStats] = []
    done, target = 0, 1
    while done < len(tiles):
        before = stack.num_valid_bits()
        if alone[done] is not None:
            n, kind = 1, alone[done]
            ideal = tilekinds.BY_NAME[kind].push(stack, tiles[done : done + 1], done, stream)
        else:
            n = min(target, _same_shape_run(tiles, done, max_batch, alone))
            kind = bitsback_kind
            n, ideal, halved = _try_bitsback(stack, tiles, done, n, stream, kind)
            if ideal is None and kind != BITSBACK:
                # Too few bits for K samples of even one tile (a stream's start): plain bits-back, one sample.
                kind = BITSBACK
                n, ideal, halved = _try_bitsback(stack, tiles, done, 1, stream, kind)
            if ideal is None:
                n, target = 1, 1
                kind, ideal = _encode_without_bits(stack, tiles, done, stream, fallbacks)
            else:
                target = n if halved else min(2 * target, max_batch)
        stats += _share(ideal, stack.num_valid_bits() - before, not tilekinds.BY_NAME[kind].needs_bits)
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
    stream = Stream(len(specs), tiles.__getitem__, model, grid, margin_bits)
    done = 0
    for (name, n), start in reversed(list(zip(schedule, starts))):
        kind = tilekinds.BY_NAME[name]
        if kind.needs_bits and stack.num_valid_bits() < margin_bits:
            raise CodingError(
                f"payload exhausted: {stack.num_valid_bits()} bits left before the bits-back batch of tiles "
                f"{start}..{start + n - 1}, a genuine stream holds at least {margin_bits}"
            )
        pixels = kind.pop(stack, specs[start : start + n], start, stream)
        tiles[start : start + n] = list(pixels)
        done += n
        if on_batch is not None:
            on_batch(done, len(specs))
    return tiles  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- one batch


def _try_bitsback(
    stack: Stack, tiles: Sequence[Tile], start: int, n: int, stream: Stream, kind: str = BITSBACK
) -> tuple[int, np.ndarray | None, bool]:
    """Push tiles[start : start + n] as one bits-back batch, halving it while popping the latents runs the
    stack dry (each failed try is undone on a clone). (tiles pushed, their ideal bits or None if not even one
    tile could pop, whether the batch was halved)."""
    ideal, halved = None, False
    tile_kind = tilekinds.by_name(kind)
    if not tile_kind.needs_bits:
        raise CodingError(f"{kind} is not a kind that pops latents")
    push = tile_kind.push
    while stack.num_valid_bits() >= stream.margin_bits:  # with fewer bits there is nothing to pop
        snapshot = stack.clone()
        ideal = push(stack, tiles[start : start + n], start, stream)
        if ideal is not None:
            break
        stack.restore(snapshot)  # undo the unfaithful pops
        if n == 1:
            break
        n, halved = n // 2, True
    return n, ideal, halved


def _encode_without_bits(
    stack: Stack, tiles: Sequence[Tile], index: int, stream: Stream, kinds: Sequence[str] = WITHOUT_BITS
) -> tuple[str, np.ndarray]:
    """Push tiles[index] without popping anything, as the cheapest of `kinds` (without_bits(...)): (kind, ideal
    bits (1,)).

    Each kind is tried on a clone and the one whose stack grew least is kept. The predictor won on every
    photograph and digit tried (even a digit with the mnist model); raw bytes win on noise, and prior-mean
    latents stay for models that predict well without latents."""
    best = None
    for kind in kinds:
        trial = stack.clone()
        ideal = tilekinds.BY_NAME[kind].push(trial, tiles[index : index + 1], index, stream)
        grown = trial.num_valid_bits() - stack.num_valid_bits()
        if best is None or grown < best[0]:
            best = (grown, kind, ideal, trial)
    _, kind, ideal, trial = best
    stack.restore(trial)
    return kind, ideal


def _push_without_bits(kind: str, stack: Stack, tiles: Sequence[Tile], index: int, model: LatentModel) -> np.ndarray:
    """Push tiles[index] as `kind`, one of without_bits(...). Its ideal bits (1,)."""
    return tilekinds.BY_NAME[kind].push(stack, tiles[index : index + 1], index, _stream(tiles, model))


def _encode_predictive(
    stack: Stack, tiles: Sequence[Tile], index: int, predictor: str = PREDICTIVE_BLEND
) -> np.ndarray:
    """tiles[index] as `predictor` (one of PREDICTORS): no model, no bits needed on the stack. Its exact bits (1,)."""
    without_bits(predictor)  # refuses an unknown predictor kind
    return _push_without_bits(predictor, stack, tiles, index, None)


def _stream(tiles: Sequence[Tile], model: LatentModel | None) -> Stream:
    return Stream(len(tiles), lambda k: tiles[k].pixels, model)


# ---------------------------------------------------------------------------------------------- schedule


def _same_shape_run(tiles: Sequence[Tile], start: int, limit: int, alone: Sequence[str | None]) -> int:
    """How many tiles from `start` on (at most `limit`) share the padded shape of tiles[start] and go to
    bits-back (`alone[k]` is None)."""
    shape = tiles[start].pixels.shape
    n = 1
    while n < limit and start + n < len(tiles) and tiles[start + n].pixels.shape == shape and alone[start + n] is None:
        n += 1
    return n


def price_without_model(tiles: Sequence[Tile], predictor: str = PREDICTIVE_BLEND) -> list[tuple[str, float]]:
    """Per tile of a stream (a whole image's tiles at least: the predictor reads each tile's neighbours below
    and to the right) the cheaper of `predictor` and WHITENED, and its exact cost in bits: what a tile coded
    without the model costs wherever it falls in the stream."""
    priced = []
    for index, tile in enumerate(tiles):
        trial = Stack()
        _encode_predictive(trial, tiles, index, predictor)
        costs = {predictor: trial.num_valid_bits(), WHITENED: raw_bits(tile)}
        kind = min(costs, key=costs.get)
        priced.append((kind, costs[kind]))
    return priced


def _cheaper_without_model(
    tiles: Sequence[Tile], model_bits: Sequence[float], predictor: str = PREDICTIVE_BLEND,
    priced: Sequence[tuple[str, float]] | None = None,
) -> list[str | None]:
    """Per tile `predictor` or WHITENED where that kind's exact cost is below `model_bits`, else None."""
    if priced is None:
        priced = price_without_model(tiles, predictor)
    if len(priced) != len(tiles):
        raise CodingError(f"{len(priced)} prices for {len(tiles)} tiles")
    return [kind if cost < expected else None for (kind, cost), expected in zip(priced, model_bits)]


def check_payload_size(stack: Stack, schedule: Schedule, margin_bits: int = 64) -> None:
    """Refuse a payload too small for its schedule before decoding anything.

    Why it holds for every genuine stream: after a bits-back batch the encoder's stack holds at least
    `margin_bits` (it undoes any batch whose pops left fewer, and pushes never shrink an ANS stack), and every
    later batch only pushes. So the whole payload of a stream with any bits-back batch holds at least
    `margin_bits`. Streams of other kinds only may be empty: an all-black image costs no payload word."""
    if stack.num_valid_bits() < margin_bits and any(_needs_bits(kind) for kind, _ in schedule):
        raise CodingError(
            f"payload too small: {stack.num_valid_bits()} bits for a schedule with bits-back batches, "
            f"which need at least {margin_bits}"
        )


def _check_schedule(schedule: Schedule, specs: Sequence[TileSpec]) -> list[int]:
    """Validate a schedule against the tiles it must cover; the first tile index of each batch."""
    starts, start = [], 0
    for name, n in schedule:
        kind = tilekinds.by_name(name)
        if not isinstance(n, int) or n < 1:
            raise CodingError(f"bad schedule entry ({name!r}, {n!r})")
        if kind.single and n != 1:
            raise CodingError(f"schedule batch at tile {start}: a {name} batch holds exactly one tile, not {n}")
        if start + n > len(specs):
            raise CodingError(f"schedule covers more than the {len(specs)} tiles")
        if any(s.shape != specs[start].shape for s in specs[start : start + n]):
            raise CodingError(f"schedule batch at tile {start} mixes padded shapes")
        starts.append(start)
        start += n
    if start != len(specs):
        raise CodingError(f"schedule covers {start} tiles, expected {len(specs)}")
    return starts


def _needs_bits(name: str) -> bool:
    kind = tilekinds.BY_NAME.get(name) if isinstance(name, str) else None
    return kind is not None and kind.needs_bits


def _share(ideal: np.ndarray, net: int, direct: bool) -> list[TileStats]:
    """Split a batch's net bits among its tiles in proportion to their ideal bits."""
    total = float(ideal.sum())
    weights = ideal / total if total > 0 else np.full(len(ideal), 1.0 / len(ideal))
    return [TileStats(float(i), float(net * w), direct) for i, w in zip(ideal, weights)]
