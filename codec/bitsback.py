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

The stream's order: the tiles in raster order (formats 1 to 6), or (formats 7 on, `model_last`) the tiles the
model does not code first, then the model's, each part in raster order. Then the model's tiles run in batches
of `max_batch` instead of in the short runs between predictor tiles (kodim23: 191 model tiles in 75 batches
became 197 in 16; its model path 7.3 -> 5.0 s to encode, 4.3 -> 3.4 s to decode), and the predictor's tiles
are the model's initial bits. The header holds the order as runs
(`order_runs`); the decoder rebuilds it (`order_from_runs`).

Format 9's predictor tiles (PREDICTIVE_ADAPTIVE; format 10's PREDICTIVE_LEAST_SQUARES, 12's PREDICTIVE_CASCADE, 13's
PREDICTIVE_PARITY, 14's PREDICTIVE_WIDE and 15's PREDICTIVE_STAGED too) learn statistics of their values' contexts
over the stream, in the order the decoder pops them: the reverse of the pushes. The encoder therefore records every
such tile first, in that order, once the kinds and the order are fixed (encode_tiles), and pushes the recordings; a
tile the encoder decides on while pushing (one that cannot pop at a stream's start) takes the stateless
PREDICTIVE_FITTED instead.

Format 16 (PREDICTIVE_SECTIONS): where the predictor codes every tile of a stream, the encoder cuts it into sections
of whole tile rows (section_runs), each coded on a stack of its own from initial statistics and reading nothing of
the others (tilekinds.py: sections), and pushes their words as one batch each; pricing codes the sections side by
side (price_sections), and so does the decoder (decode_tiles), one a core. Formats 19 and 20 code a section in the
staged cascade's small-image or photograph profile instead (PREDICTIVE_SMALL_SECTIONS, PREDICTIVE_PHOTO_SECTIONS):
sections_kinds says which the encoder prices for each section, by the sizes of the images it holds parts of.

How each kind of batch is pushed and popped (direct, bits-back, raw, whitened, predictive, predictive with
neighbours) is declared once, in tilekinds.py; this module chooses the kinds and the batches, and replays them.
Only valid pixels are coded; padding is recreated by edge replication (tiling.pad_tile).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from codec import predictive, tilekinds
from codec.ans import Stack
from codec.errors import CodingError
from codec.latents import LatentGrid
from codec.protocol import LatentModel
from codec.tiling import Tile, TileSpec
# The tile kinds (each one's push and pop) live in tilekinds.py; their names and `whitening` stay importable here.
from codec.tilekinds import (  # noqa: F401
    BITSBACK, DIRECT, PREDICTIVE, PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_ADAPTIVE, PREDICTIVE_BLEND, PREDICTIVE_CASCADE,
    PREDICTIVE_FITTED, PREDICTIVE_LAPLACE, PREDICTIVE_LEAST_SQUARES, PREDICTIVE_NEIGHBOURS, PREDICTIVE_PARITY,
    PREDICTIVE_PHOTO_SECTIONS, PREDICTIVE_REFINED_SECTIONS, PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS,
    PREDICTIVE_SMALL_SECTIONS, PREDICTIVE_STAGED, PREDICTIVE_WIDE, RAW, WHITENED, Stream, raw_bits, whitening,
)

KINDS = tuple(kind.name for kind in tilekinds.KINDS)  # every kind's name, in tilekinds.KINDS's order
# The predictor kinds the encoder may write, each with its residual model (codec/predictive.py): PREDICTIVE_STAGED
# (formats 15 and 16, the default; a stream the predictor codes alone is format 16's sections of it instead,
# PREDICTIVE_SECTIONS: price_sections), PREDICTIVE_WIDE (format 14), PREDICTIVE_PARITY (format 13),
# PREDICTIVE_CASCADE (format 12), PREDICTIVE_LEAST_SQUARES (formats 10 and 11), PREDICTIVE_ADAPTIVE (format 9),
# PREDICTIVE_FITTED (format 8), PREDICTIVE_BLEND (formats 6 and 7), PREDICTIVE_LAPLACE (format 5) and
# PREDICTIVE_NEIGHBOURS (what files of formats 1 to 4 hold).
PREDICTORS = {kind: tilekinds.RESIDUALS[kind] for kind in (
    PREDICTIVE_STAGED, PREDICTIVE_WIDE, PREDICTIVE_PARITY, PREDICTIVE_CASCADE, PREDICTIVE_LEAST_SQUARES,
    PREDICTIVE_ADAPTIVE, PREDICTIVE_FITTED, PREDICTIVE_BLEND, PREDICTIVE_LAPLACE, PREDICTIVE_NEIGHBOURS)}
# The predictor kinds whose statistics run over the stream (predictive.STATEFUL): every such tile is recorded before
# any push (see the module's doc).
STATEFUL = frozenset(kind for kind, residuals in PREDICTORS.items() if residuals in predictive.STATEFUL)
# The predictor kind of the tiles decided on while pushing (those that cannot pop): a STATEFUL kind's tiles take
# the stateless kind both extend.
STATELESS = {kind: PREDICTIVE_FITTED for kind in STATEFUL}


def without_bits(predictor: str = PREDICTIVE_STAGED) -> tuple[str, ...]:
    """What a tile that cannot pop is coded as: the cheapest, the first of these on a tie (the order is part of
    what the encoder writes)."""
    if predictor not in PREDICTORS:
        raise CodingError(f"unknown predictor kind {predictor!r}; known: {', '.join(PREDICTORS)}")
    return (STATELESS.get(predictor, predictor), DIRECT, WHITENED)


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


class Reordered:
    """The read-only sequence base[order[0]], base[order[1]], ... (int index or slice): tiles or specs in stream
    order, from those in raster order."""

    def __init__(self, base: Sequence, order: Sequence[int]):
        self.base, self.order = base, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.base[k] for k in self.order[index]]
        return self.base[self.order[index]]


def model_last(alone: Sequence[str | None]) -> list[int] | None:
    """Format 7's stream order: the tiles coded without the model (`alone[k]` not None) in raster order, then
    the others in raster order; None where that is the raster order itself."""
    order = [k for k, kind in enumerate(alone) if kind is not None] + [k for k, kind in enumerate(alone) if kind is None]
    return None if order == sorted(order) else order


def order_runs(order: Sequence[int]) -> tuple[int, ...]:
    """The header's form of a model_last order: run lengths over the raster tiles, alternately of tiles that
    keep their place in the first part and tiles moved to the second part, starting with the first part
    (a first run of 0 where tile 0 moves); no empty run after the first."""
    moved = np.zeros(len(order), dtype=bool)
    split = next((p for p in range(1, len(order)) if order[p] < order[p - 1]), len(order))
    moved[list(order[split:])] = True
    runs, current, length = [], False, 0
    for flag in moved:
        if flag != current:
            runs.append(length)
            current, length = flag, 0
        length += 1
    runs.append(length)
    if order_from_runs(runs, len(order)) != list(order):
        raise CodingError("the stream order is not of the form model_last writes")
    return tuple(runs)


def order_from_runs(runs: Sequence[int], total: int) -> list[int]:
    """The stream order (raster tile index at each stream position) that `order_runs` describes."""
    if sum(runs) != total or any(n < 1 for n in runs[1:]) or (runs and runs[0] < 0):
        raise CodingError(f"the stream order's runs {tuple(runs)[:8]} do not cover the {total} tiles once")
    first, second, start = [], [], 0
    for index, n in enumerate(runs):
        (second if index % 2 else first).extend(range(start, start + n))
        start += n
    return first + second


@dataclass(frozen=True)
class EncodeResult:
    words: np.ndarray  # (W,) uint32, the payload
    schedule: Schedule
    stats: list[TileStats]  # one per tile, stream order
    order: list[int] | None = None  # the stream order (model_last), None for raster order


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
    predictor: str = PREDICTIVE_STAGED,
    model_last_order: bool = False,
) -> EncodeResult:
    """Code `tiles` (raster order) onto an empty stack; `model_last_order` (with model_bits): in the stream order
    of formats 7 on, model_last."""
    stack = Stack()
    order = None
    priced = None
    if model_last_order and model_bits is not None:
        priced = price_without_model(tiles, predictor, record_below=model_bits)
        order = model_last(cheaper_without_model(tiles, model_bits, predictor, priced))
    schedule, stats = encode_tiles(stack, tiles, model, grid, max_batch, margin_bits, on_batch, model_bits,
                                   bitsback_kind, predictor, priced, order)
    return EncodeResult(stack.words(), schedule, stats, order)


def decode(
    words: np.ndarray,
    schedule: Schedule,
    specs: Sequence[TileSpec],
    model: LatentModel,
    grid: LatentGrid = LatentGrid(),
    on_batch: ProgressFn | None = None,
    order: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Inverse of `encode`: padded tiles (C, Th, Tw) uint8 in raster order. Raises CodingError unless every
    word of `words` is consumed (a strong check that model, schedule and payload all match)."""
    stack = Stack.from_words(words)
    tiles = decode_tiles(stack, schedule, specs, model, grid, on_batch, order=order)
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
    predictor: str = PREDICTIVE_STAGED,
    priced: Sequence[tuple[str, float]] | None = None,
    order: Sequence[int] | None = None,
) -> tuple[Schedule, list[TileStats]]:
    """Push `tiles` onto `stack`, which may already hold bits (they then serve as initial bits).

    bitsback_kind: the kind of the batches that pop latents: BITSBACK, or an importance-weighted one
    (tilekinds.importance_kind(K): K network passes per tile for the K-sample bound), with single-tile
    BITSBACK batches where the stack holds too few bits for it (a stream's start).

    predictor: the predictor kind of the tiles coded without the model (PREDICTORS: PREDICTIVE_STAGED;
    PREDICTIVE_WIDE for a file of format 14, PREDICTIVE_PARITY for one of format 13, PREDICTIVE_CASCADE for one of
    format 12, PREDICTIVE_LEAST_SQUARES for one of format 10 or 11, PREDICTIVE_ADAPTIVE for one of format 9,
    PREDICTIVE_FITTED for one of format 8, PREDICTIVE_BLEND for one of format 6 or 7, PREDICTIVE_LAPLACE for one of
    format 5, PREDICTIVE_NEIGHBOURS for one of formats 1 to 4).

    model_bits: what bits-back is expected to cost for each tile (the model's negative ELBO with one posterior
    sample will do). A tile that the local predictor or whitened raw bytes code for less is coded that way
    wherever it falls in the stream, in a batch of its own; bits-back batches then run between such tiles.
    Without it only the first tiles (nothing to pop yet) are coded without the model. `priced`: what
    price_without_model(tiles, predictor) gives, where the caller has it already (its recorded tiles are
    pushed again, not predicted again).

    order: the stream order (formats 7 on: model_last of the tiles' choices), tiles[order[p]] at stream position p;
    None: raster order. The schedule and the stats are in stream order."""
    if max_batch < 1 or margin_bits < 0:
        raise CodingError(f"max_batch must be >= 1 and margin_bits >= 0, got {max_batch}, {margin_bits}")
    if model_bits is not None and len(model_bits) != len(tiles):
        raise CodingError(f"model_bits has {len(model_bits)} entries for {len(tiles)} tiles")
    alone = [None] * len(tiles) if model_bits is None else cheaper_without_model(tiles, model_bits, predictor, priced)
    raster = tiles
    replays = {k: price.recorded for k, price in enumerate(priced or ())
               if getattr(price, "recorded", None) is not None}
    sections = {price.section[0]: price.coded for price in priced or () if getattr(price, "coded", None) is not None}
    if order is not None:
        if list(order) != (model_last(alone) or list(range(len(tiles)))):
            # Another order could put a predictor tile before the neighbours it reads.
            raise CodingError("the stream order must be model_last of the tiles' choices")
        tiles, alone = Reordered(tiles, order), [alone[k] for k in order]
    else:
        order = range(len(tiles))
    # The adaptive tiles in the decoder's order (the last pushed first), each recorded after those before it.
    adaptive = [order[p] for p in range(len(order) - 1, -1, -1) if alone[p] in STATEFUL]
    if adaptive and not _chain_holds(priced, raster, adaptive):
        recording = Stream(len(raster), lambda k: raster[k].pixels)
        replays.update({k: tilekinds.record_adaptive(raster[k], k, recording, predictor) for k in adaptive})
    stream = Stream(len(raster), lambda k: raster[k].pixels, model, grid, margin_bits, replays, sections=sections)
    position = np.empty(len(order), dtype=np.int64)
    position[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    schedule: Schedule = []
    stats: list[TileStats] = []
    done, target = 0, 1
    while done < len(tiles):
        before = stack.num_valid_bits()
        if alone[done] in SECTION_KINDS:
            n, kind = _section_batch(priced, order, alone, done), alone[done]
            ideal = tilekinds.BY_NAME[kind].push(stack, tiles[done : done + n], order[done], stream)
        elif alone[done] is not None:
            n, kind = 1, alone[done]
            ideal = tilekinds.BY_NAME[kind].push(stack, tiles[done : done + 1], order[done], stream)
        else:
            n = min(target, _same_shape_run(tiles, done, max_batch, alone))
            kind = bitsback_kind
            n, ideal, halved = _try_bitsback(stack, tiles, done, n, stream, kind, order[done])
            if ideal is None and kind != BITSBACK:
                # Too few bits for K samples of even one tile (a stream's start): plain bits-back, one sample.
                kind = BITSBACK
                n, ideal, halved = _try_bitsback(stack, tiles, done, 1, stream, kind, order[done])
            if ideal is None:
                n, target = 1, 1
                # The predictor reads the tile's neighbours below and to the right: only where the decoder has
                # them first (later in the stream; always so in raster order).
                fallbacks = tuple(candidate for candidate in without_bits(predictor) if candidate not in PREDICTORS
                                  or _context_decoded_first(raster[order[done]], order[done], position))
                kind, ideal = _encode_without_bits(stack, tiles, done, stream, fallbacks, order[done])
            else:
                target = n if halved else min(2 * target, max_batch)
        stats += _share(ideal, stack.num_valid_bits() - before, not tilekinds.BY_NAME[kind].needs_bits)
        schedule.append((kind, n))
        done += n
        if on_batch is not None:
            on_batch(done, len(tiles))
    return schedule, stats


def _section_batch(priced: Sequence[Price], order: Sequence[int], alone: Sequence[str | None], done: int) -> int:
    """The tile count of the section (price_sections's) that starts at stream position `done`: its tiles must
    follow one another in raster order there, every one coded in it."""
    first, n = priced[order[done]].section
    if first != order[done] or any(order[done + k] != first + k or alone[done + k] != alone[done]
                                   for k in range(n)):
        raise CodingError(f"the section of raster tiles {first}..{first + n - 1} is not whole at stream position "
                          f"{done}")
    return n


def decode_tiles(
    stack: Stack,
    schedule: Schedule,
    specs: Sequence[TileSpec],
    model: LatentModel,
    grid: LatentGrid = LatentGrid(),
    on_batch: ProgressFn | None = None,
    margin_bits: int = 64,
    order: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Pop the tiles that `encode_tiles` pushed with this `schedule` (and stream `order`, as there); the last
    batch comes off first. The tiles come back in raster order.

    A genuine stream holds at least `margin_bits` (the encoder's) before every bits-back batch, so a payload
    that runs short is refused there, before the model runs (see check_payload_size). Every other kind may
    cost nothing at all (a black tile): popping them from an empty stack is legitimate."""
    check_payload_size(stack, schedule, margin_bits)
    tiles: list[np.ndarray | None] = [None] * len(specs)
    stream = Stream(len(specs), tiles.__getitem__, model, grid, margin_bits)
    if order is None:
        order = range(len(specs))
    elif len(order) != len(specs):
        raise CodingError(f"the stream order holds {len(order)} tiles, the images {len(specs)}")
    else:
        specs = Reordered(specs, order)
    starts = _check_schedule(schedule, specs)
    done = 0
    batches = list(reversed(list(zip(schedule, starts))))  # in pop order
    # Deferred batches (format 16's sections) decode in a pool, one a core, while the batches popped after them
    # are taken off the stack; a batch of another kind waits for them first (it may read their tiles).
    pending: list[tuple[int, int, Future]] = []
    pool: ThreadPoolExecutor | None = None

    def place(start: int, n: int, pixels) -> None:
        nonlocal done
        for offset, tile in enumerate(pixels):
            tiles[order[start + offset]] = tile
        done += n
        if on_batch is not None:
            on_batch(done, len(specs))

    def settle() -> None:
        for start, n, later in pending:
            place(start, n, later.result())
        pending.clear()

    try:
        for ((name, n), start), run in zip(batches, _kernel_runs(batches, specs)):
            kind = tilekinds.BY_NAME[name]
            if kind.deferred:
                if any(order[start + k] != order[start] + k for k in range(n)):
                    raise CodingError(f"the section at stream position {start} is not raster tiles in a row")
                decode = kind.pop(stack, specs[start : start + n], order[start], stream)
                pool = pool or ThreadPoolExecutor(max_workers=section_workers(), thread_name_prefix="vaezip-section")
                pending.append((start, n, pool.submit(decode)))
                continue
            settle()
            if kind.needs_bits and stack.num_valid_bits() < margin_bits:
                raise CodingError(
                    f"payload exhausted: {stack.num_valid_bits()} bits left before the bits-back batch of tiles "
                    f"{start}..{start + n - 1} of the stream, a genuine stream holds at least {margin_bits}"
                )
            stack.kernel_run_values = run
            place(start, n, kind.pop(stack, specs[start : start + n], order[start], stream))
        settle()
    except BaseException:
        _abandon(pool)
        pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    stack.kernel_run_values = 0
    return tiles  # type: ignore[return-value]


def _kernel_runs(batches, specs) -> list[int]:
    """For each batch (in pop order: ((kind, n), start) each) the values of it and of the batches popped
    right after it that the compiled kernels code (the blend predictor's tiles): a stream's predictor tiles
    come off one after another (formats 7 and 8 push them first), and copying the stack's words out of
    constriction once pays for the whole run (without it a large image's first predictor tiles, under a stack
    of millions of words, would go to the numpy coder one by one). 0 for the other kinds."""
    runs, run = [0] * len(batches), 0
    for index in range(len(batches) - 1, -1, -1):
        (name, n), start = batches[index]
        if tilekinds.RESIDUALS.get(name) in (*predictive.BLENDS, *predictive.STATEFUL):
            run += sum(spec.shape[0] * spec.valid[0] * spec.valid[1] for spec in specs[start : start + n])
        else:
            run = 0
        runs[index] = run
    return runs


# ---------------------------------------------------------------------------------------------- one batch


def _try_bitsback(
    stack: Stack, tiles: Sequence[Tile], start: int, n: int, stream: Stream, kind: str = BITSBACK,
    raster_index: int | None = None,
) -> tuple[int, np.ndarray | None, bool]:
    """Push tiles[start : start + n] (the first of them raster tile `raster_index`, `start` where None) as one
    bits-back batch, halving it while popping the latents runs the stack dry (each failed try is undone on a
    clone). (tiles pushed, their ideal bits or None if not even one tile could pop, whether the batch was
    halved)."""
    ideal, halved = None, False
    tile_kind = tilekinds.by_name(kind)
    if not tile_kind.needs_bits:
        raise CodingError(f"{kind} is not a kind that pops latents")
    push = tile_kind.push
    while stack.num_valid_bits() >= stream.margin_bits:  # with fewer bits there is nothing to pop
        snapshot = stack.clone()
        ideal = push(stack, tiles[start : start + n], start if raster_index is None else raster_index, stream)
        if ideal is not None:
            break
        stack.restore(snapshot)  # undo the unfaithful pops
        if n == 1:
            break
        n, halved = n // 2, True
    return n, ideal, halved


def _encode_without_bits(
    stack: Stack, tiles: Sequence[Tile], index: int, stream: Stream, kinds: Sequence[str] = WITHOUT_BITS,
    raster_index: int | None = None,
) -> tuple[str, np.ndarray]:
    """Push tiles[index] (raster tile `raster_index`, `index` where None) without popping anything, as the
    cheapest of `kinds` (without_bits(...)): (kind, ideal bits (1,)).

    Each kind is tried on a clone and the one whose stack grew least is kept. The predictor won on every
    photograph and digit tried (even a digit with the mnist model); raw bytes win on noise, and prior-mean
    latents stay for models that predict well without latents."""
    best = None
    for kind in kinds:
        trial = stack.clone()
        ideal = tilekinds.BY_NAME[kind].push(trial, tiles[index : index + 1],
                                             index if raster_index is None else raster_index, stream)
        grown = trial.num_valid_bits() - stack.num_valid_bits()
        if best is None or grown < best[0]:
            best = (grown, kind, ideal, trial)
    _, kind, ideal, trial = best
    stack.restore(trial)
    return kind, ideal


def _context_decoded_first(tile: Tile, index: int, position: np.ndarray) -> bool:
    """Whether the decoder has the neighbours below and to the right of raster tile `index` before it: each
    at a later stream position (`position[k]`: raster tile k's)."""
    below, right = tile.neighbours
    needed = [index + below] if below else []
    needed += [index + right] if right else []
    needed += [index + below + right] if below and right else []
    return all(position[k] > position[index] for k in needed)


def _push_without_bits(kind: str, stack: Stack, tiles: Sequence[Tile], index: int, model: LatentModel) -> np.ndarray:
    """Push tiles[index] as `kind`, one of without_bits(...). Its ideal bits (1,)."""
    return tilekinds.BY_NAME[kind].push(stack, tiles[index : index + 1], index, _stream(tiles, model))


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


# At most this many bytes of the predictor's recorded pushes (Price.recorded) are kept by one encoder: ~15 KB a
# 32x32 colour tile, so every predictor tile of a 4-megapixel photograph.
RECORD_BYTES = 64 * 2**20


class Price(tuple):
    """A tile's (kind, bits) without the model, as price_without_model gives it (it unpacks as that pair and
    compares as one), and the predictor's push of it where that was kept (`recorded`, predictive.Recorded, or
    None): encode_tiles pushes a recorded tile again instead of predicting it again, the same words. An adaptive
    tile's recording holds only after the same tiles in the same order: `chain`, the tiles its pricing recorded as
    adaptive, in that order (one list shared by the prices of one call), or None. A section kind's (SECTION_KINDS)
    tile's price names its section (`section`) and holds it coded (`coded`, pushed as it is), and no recording."""

    recorded: predictive.Recorded | None
    chain: list[Tile] | None
    section: tuple[int, int] | None  # a section kind's: its section's first tile and tile count
    coded: tilekinds.CodedSection | None  # a section kind's: its section coded (one for all its tiles)

    def __new__(cls, kind: str, bits: float, recorded: predictive.Recorded | None = None,
                chain: list[Tile] | None = None, section: tuple[int, int] | None = None,
                coded: tilekinds.CodedSection | None = None) -> "Price":
        price = super().__new__(cls, (kind, bits))
        price.recorded, price.chain, price.section, price.coded = recorded, chain, section, coded
        return price


def price_without_model(tiles: Sequence[Tile], predictor: str = PREDICTIVE_STAGED,
                        record_below: Sequence[float] | None = None, record_bytes: int = RECORD_BYTES) -> list[Price]:
    """Per tile of a stream (a whole image's tiles at least: the predictor reads each tile's neighbours below
    and to the right) the cheaper of `predictor` and WHITENED, and its exact cost in bits: what a tile coded
    without the model costs wherever it falls in the stream. With `record_below` (bits per tile: what the model
    is expected to cost), the predictor's push of each tile it codes for less is kept with its price, up to
    `record_bytes` in all (Price.recorded; the compiled coder's tiles only)."""
    if record_below is not None and len(record_below) != len(tiles):
        raise CodingError(f"{len(record_below)} limits for {len(tiles)} tiles")
    without_bits(predictor)  # refuses an unknown predictor kind
    if predictor in STATEFUL:
        return _price_adaptive(tiles, predictor, record_below, record_bytes)
    stream = Stream(len(tiles), lambda k: tiles[k].pixels, recordings=None if record_below is None else {})
    priced, kept = [], 0
    for index, tile in enumerate(tiles):
        trial = Stack()
        tilekinds.BY_NAME[predictor].push(trial, tiles[index : index + 1], index, stream)
        recorded = stream.recordings.pop(index, None) if stream.recordings is not None else None
        costs = {predictor: trial.num_valid_bits(), WHITENED: raw_bits(tile)}
        kind = min(costs, key=costs.get)
        recorded = _kept(recorded if kind == predictor else None, costs[kind], record_below, index,
                         record_bytes - kept)
        kept += 0 if recorded is None else recorded.nbytes
        priced.append(Price(kind, costs[kind], recorded))
    return priced


def _kept(recorded: predictive.Recorded | None, bits: float, record_below: Sequence[float] | None, index: int,
          room: int) -> predictive.Recorded | None:
    """`recorded` where price_without_model keeps it: a tile the predictor codes for less than the model's
    expected cost, within the bytes left (`room`); else None."""
    if recorded is None or record_below is None or bits >= record_below[index] or recorded.nbytes > room:
        return None
    return recorded


def _pushed_bits(recorded: predictive.Recorded) -> int:
    """What a recorded tile costs: its exact bits pushed alone onto an empty stack."""
    trial = Stack()
    predictive.push_rows(trial, recorded)
    return trial.num_valid_bits()


def _price_adaptive(tiles: Sequence[Tile], predictor: str, record_below: Sequence[float] | None,
                    record_bytes: int) -> list[Price]:
    """price_without_model for a predictor whose statistics run over the stream (STATEFUL): they run over
    the tiles in the order the decoder pops them where none goes to the model (the reverse of raster order), a tile
    that WHITENED codes for less leaving them as they were. Where some go to the model the coded tiles'
    statistics run over fewer tiles: then these are estimates, and encode_tiles records those tiles again."""
    stream = Stream(len(tiles), lambda k: tiles[k].pixels)
    priced: list[Price | None] = [None] * len(tiles)
    chain: list[Tile] = []
    kept = 0
    for index in range(len(tiles) - 1, -1, -1):
        before = stream.adaptive.sums  # a recording replaces the array, never writes it (AdaptiveState)
        recorded = tilekinds.record_adaptive(tiles[index], index, stream, predictor)
        costs = {predictor: _pushed_bits(recorded), WHITENED: raw_bits(tiles[index])}
        kind = min(costs, key=costs.get)
        if kind != predictor:
            stream.adaptive.sums = before
        else:
            chain.append(tiles[index])
        recorded = _kept(recorded if kind == predictor else None, costs[kind], record_below, index,
                         record_bytes - kept)
        kept += 0 if recorded is None else recorded.nbytes
        priced[index] = Price(kind, costs[kind], recorded, chain)
    return priced  # type: ignore[return-value]


def _chain_holds(priced: Sequence | None, tiles: Sequence[Tile], adaptive: Sequence[int]) -> bool:
    """Whether the recordings of `priced` (price_without_model's) are what the adaptive tiles `adaptive` (raster
    indices into `tiles`, in the decoder's order) push: every one recorded, by one pricing whose statistics ran
    over these very tiles in this order."""
    if not priced or len(priced) != len(tiles):
        return False
    chains = {id(price.chain) for price in priced if getattr(price, "chain", None) is not None}
    chain = getattr(priced[adaptive[0]], "chain", None)
    return len(chains) == 1 and chain is not None and len(chain) == len(adaptive) and \
        all(chain[n] is tiles[k] and priced[k].recorded is not None for n, k in enumerate(adaptive))


# Format 16's sections (tilekinds.PREDICTIVE_SECTIONS), as the encoder cuts a stream (section_count): as many as it
# holds SECTION_VALUES values (SMALL_IMAGE_SECTIONS times that where its images hold fewer each: an archive of
# thumbnails) up to SECTIONS_NEAR, and beyond that one per LARGE_SECTION_VALUES values, at most SECTIONS_MOST; each a
# run of whole tile rows, cut at the row ends nearest to equal shares of the values (cut_sections). A section's
# statistics start again (from their initial state) and its first row reads nothing below it, ~3-5 kbit each: Kodak's
# every third image costs 0.06 % less in two sections than format 15's one chain from zeros (0.18 % less in one
# section), Imagenette's first 2,000 32x32 validation images as one archive 0.02 % less in two sections of 1,000
# (`python scripts/cascade.py SET --sections`; in sections of 171 images they cost 0.11 % more than one stream);
# every third Wikimedia photograph 0.01 % less in two, 0.06 % more in four; every third gray8bit photograph 0.01 % more
# in two, 0.05 % in four, 0.12 % in eight. Sections decode side by side, one a core: two suit a 2-core machine. A
# larger image takes one more section per LARGE_SECTION_VALUES values, each of them ~0.02 % of a 12-Mpixel grey
# photograph (1.5 bits per value; less where a value costs more), so that a camera's photograph uses the cores of a
# larger machine (24 Mpixel in colour: 16 sections, at ~4 kbit each ~0.03 % more than two); gray8bit's largest,
# 12.1 M values: 2, 3, 4 and 8 sections 1.5254, +0.02 %, +0.04 % and +0.12 % (`python scripts/cascade.py gray8bit
# --tile 256 --counts 2 3 4 8`). A section holds at most SECTION_TILES tiles.
SECTION_VALUES = 2**19
SECTIONS_NEAR = 2
LARGE_SECTION_VALUES = 2**22
SECTIONS_MOST = 16
SMALL_IMAGE_SECTIONS = 4
SECTION_TILES = 4096  # codec/header.py's MAX_BATCH


# formats 16, 19, 20, 21 and 22 (its two)
SECTION_KINDS = (PREDICTIVE_SECTIONS, PREDICTIVE_SMALL_SECTIONS, PREDICTIVE_PHOTO_SECTIONS, PREDICTIVE_REFINED_SECTIONS,
                 PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS)
SMALL_KINDS = (PREDICTIVE_SMALL_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS)  # in a small-image profile


def section_count(values: int, images: int) -> int:
    """How many sections the encoder cuts a stream of `values` values of `images` images into (before
    cut_sections meets its rows)."""
    least = SECTION_VALUES * (SMALL_IMAGE_SECTIONS if images and values / images < SECTION_VALUES else 1)
    return max(1, min(SECTIONS_MOST, max(min(SECTIONS_NEAR, values // least), values // LARGE_SECTION_VALUES)))


# Images of fewer values than this each are small: their sections are priced in format 19's small-image profile too
# (sections_kinds). A photograph's are not: the profile codes them for more (every third Kodak image +0.84 %:
# `python scripts/small_profile.py --price kodak --every 3 --each`).
SMALL_PROFILE_VALUES = 2**19
# Images of this many values or more each (those a section holds parts of) are coded by format 20's photograph profile
# instead of format 16's staged cascade, and so is every section of their stream (sections_kinds): Kodak's 24 0.50 %
# smaller, photos_train's 30 validation photographs (384x384) 0.38 % (`python scripts/photo_profile.py --price SET`).
# Not smaller images': a format-20 file's header holds two bytes an image more than format 16's (format 18's layout),
# more than the profile saves on an image of a few hundred values (~0.3 % of its bytes); from 2^14 values (a 74x74
# colour image, ~3-4 kB) it saves ~10. A cautious line, not a measured one: on Imagenette's 32x32 thumbnails (3,072
# values) the profile still saves ~4 bytes an image (0.27 %), where the small-image profile saves more.
PHOTO_PROFILE_VALUES = 2**14
# A format-19 file's header holds two bytes an image more than a format-16 file's (format 18's layout: each image's
# metadata count and depth): a section priced against format 16's is kept in the small-image profile only where its
# words save more than that for each image that ends in it, and one word, so that such a file is never the larger
# (against format 20's photograph profile, whose file holds those bytes too, the words alone decide).
SMALL_HEADER_BITS = 16


def _values_and_images(tiles: Sequence[Tile]) -> tuple[int, int]:
    """The values of a stream of tiles (raster order) and its images (each image's last tile has no neighbour)."""
    values = sum(tile.pixels.shape[0] * tile.valid[0] * tile.valid[1] for tile in tiles)
    return values, sum(1 for tile in tiles if tile.neighbours == (0, 0))


def section_runs(tiles: Sequence[Tile]) -> list[int] | None:
    """How the encoder cuts a stream of tiles (raster order: images after one another, each image's tiles row
    after row) into sections: their tile counts; None where a section would hold more than SECTION_TILES."""
    return cut_sections(tiles, section_count(*_values_and_images(tiles)))


def section_kinds(tiles: Sequence[Tile], allowed: Sequence[str] = SECTION_KINDS) -> tuple[str, ...]:
    """The section kinds the encoder prices a stream of tiles with where the stream is one section (sections_kinds),
    keeping the cheapest (the first on a tie; price_sections), of those `allowed` (the formats that may be written:
    SECTION_KINDS, or format 19's first two, or format 16's alone)."""
    return sections_kinds(tiles, [len(tiles)], allowed)[0]


def sections_kinds(tiles: Sequence[Tile], runs: Sequence[int],
                   allowed: Sequence[str] = SECTION_KINDS) -> list[tuple[str, ...]]:
    """The section kinds the encoder prices each section of a stream with (`runs`: their tile counts), by the sizes of
    the images each holds parts of (image_shares), of those `allowed`: format 20's photograph profile where it is
    allowed (refined as the newest format allowed refines it) and the images of a section hold PHOTO_PROFILE_VALUES
    values or more each on average, and then in every section (the file holds format 18's layout either way), else
    format 16's; and, for a section whose images hold fewer than SMALL_PROFILE_VALUES, a small-image profile too
    where one is allowed (format 22's refined, else format 19's). So a photograph
    archived with thumbnails is coded in the photograph profile, and they as small images."""
    shares = image_shares(tiles)
    averages = [_average_image_values(tiles[first: first + n], shares[first: first + n])
                for first, n in zip(_starts(runs), runs)]
    photo = PREDICTIVE_PHOTO_SECTIONS in allowed and any(average >= PHOTO_PROFILE_VALUES for average in averages)
    # the newest refinement of the photograph profile that is allowed (format 22's, 21's), else the profile itself
    profile = next((kind for kind in (PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_REFINED_SECTIONS) if kind in allowed),
                   PREDICTIVE_PHOTO_SECTIONS)
    first = profile if photo else PREDICTIVE_SECTIONS
    # the newest small-image profile allowed: format 22's refined, else format 19's
    small = next((kind for kind in (PREDICTIVE_SMALL_ACROSS_SECTIONS, PREDICTIVE_SMALL_SECTIONS) if kind in allowed),
                 None)
    return [(first, small) if small and average < SMALL_PROFILE_VALUES else (first,) for average in averages]


def image_shares(tiles: Sequence[Tile]) -> list[float]:
    """Each tile's share of its image's values (a stream in raster order: an image's last tile has no neighbour;
    tiles after the last such are taken as one image), so that a run of the stream's tiles holds the sum of its
    shares in images: a section of a photograph a fraction of one, a section of thumbnails their count."""
    shares, image = [], []
    for tile in tiles:
        image.append(tile.pixels.shape[0] * tile.valid[0] * tile.valid[1])
        if tile.neighbours == (0, 0):
            shares += [values / max(1, sum(image)) for values in image]
            image = []
    return shares + [values / max(1, sum(image)) for values in image]


def _average_image_values(tiles: Sequence[Tile], shares: Sequence[float]) -> float:
    """The values an image holds on average over the images (`shares`: image_shares's, of these tiles or of the
    stream they are a run of) that the tiles are parts of, each weighed by its share here."""
    images = sum(shares)
    values = sum(tile.pixels.shape[0] * tile.valid[0] * tile.valid[1] for tile in tiles)
    return values / images if images else math.inf


def cut_sections(tiles: Sequence[Tile], sections: int) -> list[int] | None:
    """A stream of tiles cut into at most `sections` runs of whole tile rows, at the row ends nearest to equal
    shares of its values: their tile counts; None where one would hold more than SECTION_TILES."""
    ends, values, count = [], [], 0  # after each row: its last tile's index + 1 and the values up to it
    for index, tile in enumerate(tiles):
        count += tile.pixels.shape[0] * tile.valid[0] * tile.valid[1]
        if tile.neighbours[1] == 0 or index == len(tiles) - 1:  # a row ends: no neighbour to its right
            ends.append(index + 1)
            values.append(count)
    sections = max(1, min(sections, len(ends)))
    cuts = [0]
    for share in range(1, sections):
        row = min(range(len(ends)), key=lambda r: abs(values[r] - share * count / sections))
        if ends[row] > cuts[-1] and ends[row] < len(tiles):
            cuts.append(ends[row])
    runs = [after - before for before, after in zip(cuts, [*cuts[1:], len(tiles)])]
    return None if max(runs, default=0) > SECTION_TILES else runs


def section_spans(tiles: Sequence[Tile]) -> list[tuple[int, int] | None]:
    """Each tile's section (its first tile and tile count) as section_runs cuts the stream; Nones without sections."""
    runs = section_runs(tiles)
    if runs is None:
        return [None] * len(tiles)
    return [(first, n) for first, n in zip(_starts(runs), runs) for _ in range(n)]


def _starts(runs: Sequence[int]) -> list[int]:
    """The first tile of each section of `runs` (their tile counts, in stream order)."""
    return np.cumsum([0, *runs[:-1]]).tolist()


def _abandon(pool: ThreadPoolExecutor | None) -> None:
    """Leave a pool's sections behind on a failure or an interrupt (Ctrl-C, SIGTERM): those queued are dropped,
    those running finish in their threads unused (a compiled call cannot be stopped), and the caller goes on at
    once; waiting for them took up to minutes on a forged 100-Mpixel file (the CLI then ends the process)."""
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def price_sections(tiles: Sequence[Tile], runs: Sequence[int] | None = None, progress: ProgressFn | None = None,
                   kinds: Sequence[str] | None = None,
                   allowed: Sequence[str] = SECTION_KINDS) -> list[Price] | None:
    """price_without_model for formats 16, 19 and 20: each tile's exact cost as its section of `runs`
    (section_runs's by default; None where the stream cannot be cut) codes it, each section coded by each of `kinds`
    (SECTION_KINDS), or by default each of those sections_kinds chooses of `allowed` for the images it holds parts of
    (a photograph archived with thumbnails: its sections in the photograph profile, theirs as small images' too), and
    kept in the one whose words are fewest (the small-image profile's counted with SMALL_HEADER_BITS for each image
    that ends in the section and one word more, where format 16's is priced beside it), every section priced at
    once, one a core. Each price names its kind, its section (Price.section) and holds it coded (Price.coded:
    encode_tiles pushes those words as they are), not the tiles' recordings: a section's words take ~3 bits a value
    where its recordings took 5 bytes, so that a photograph of any size is recorded once. `progress(tiles priced,
    tiles)` is called in the calling thread as each section is done: most of a photograph's compress."""
    runs = section_runs(tiles) if runs is None else list(runs)
    if runs is None or not tiles:
        return None
    starts = _starts(runs)
    if sum(runs) != len(tiles) or any(n < 1 or n > SECTION_TILES for n in runs):
        raise CodingError(f"sections of {runs[:8]} tiles do not cut a stream of {len(tiles)}")
    kinds_of = sections_kinds(tiles, runs, allowed) if kinds is None else [tuple(kinds)] * len(runs)
    for chosen in kinds_of:
        if not chosen or any(kind not in SECTION_KINDS for kind in chosen):
            raise CodingError(f"sections are coded as one of {', '.join(SECTION_KINDS)}, not {chosen}")

    def price(first: int, n: int, kinds: tuple[str, ...]) -> tuple[str, tilekinds.CodedSection, list[int]]:
        cheapest, lowest = None, 0
        ending = sum(1 for tile in tiles[first: first + n] if tile.neighbours == (0, 0))  # the images that end here
        for kind in kinds:
            recorded = tilekinds.record_section(tiles[first: first + n], first, tilekinds.SECTION_DISTRIBUTIONS[kind])
            coded = tilekinds.code_section(recorded)
            cost = 32 * len(coded.words)
            if kind in SMALL_KINDS and PREDICTIVE_SECTIONS in kinds:  # its header against format 16's
                cost += SMALL_HEADER_BITS * ending + 32
            if cheapest is None or cost < lowest:
                cheapest, lowest = (kind, coded, [_pushed_bits(replay) for replay in recorded]), cost
        return cheapest

    pool = ThreadPoolExecutor(max_workers=min(len(runs), section_workers()))
    try:
        pending = {pool.submit(price, first, n, chosen): n for first, n, chosen in zip(starts, runs, kinds_of)}
        if progress is not None:
            done = 0
            for future in as_completed(pending):
                done += pending[future]
                progress(done, len(tiles))
        sections = [future.result() for future in pending]  # in submission order: the sections' own
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown(wait=True)
    return [Price(kind, bits, section=(first, n), coded=coded)
            for first, n, (kind, coded, alone) in zip(starts, runs, sections) for bits in alone]


def sections_hold(tiles: Sequence[Tile], priced: Sequence[Price] | None,
                  model_bits: Sequence[float] | None = None) -> bool:
    """Whether a stream is coded in sections as price_sections priced it: every tile cheaper there than as raw
    bytes (WHITENED), and than the model's expected cost (`model_bits`, where the model may code)."""
    return priced is not None and len(priced) == len(tiles) and all(
        price[1] < raw_bits(tile) and (model_bits is None or price[1] < model_bits[k])
        for k, (tile, price) in enumerate(zip(tiles, priced)))


def price_stream(tiles: Sequence[Tile], predictor: str, model_bits: Sequence[float] | None,
                 progress: ProgressFn | None = None, allowed: Sequence[str] = SECTION_KINDS) -> list[Price]:
    """The prices of a stream coded without the model where that is cheaper than `model_bits`: its sections, each in
    the kinds sections_kinds chooses of those `allowed` for its images (price_sections, reporting to `progress`), where
    they hold (sections_hold), else `predictor`'s (price_without_model, format 15's chain for PREDICTIVE_STAGED)."""
    priced = price_sections(tiles, progress=progress, allowed=allowed)
    return priced if sections_hold(tiles, priced, model_bits) else price_without_model(tiles, predictor, model_bits)


def section_workers() -> int:
    """The threads that code sections side by side: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


def cheaper_without_model(
    tiles: Sequence[Tile], model_bits: Sequence[float], predictor: str = PREDICTIVE_STAGED,
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
        # a batch through the model runs its tiles at once (a section's, coded one by one, may differ)
        if kind.uses_model and any(s.shape != specs[start].shape for s in specs[start : start + n]):
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
