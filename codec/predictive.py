"""Predictive coding of one tile without the model: a stream's first tiles, and any tile it codes for less.

Bits-back needs bits on the stack before it can pop latents, so the first tiles of a stream are coded
without popping anything. Raw bytes cost 8 bits per subpixel and latents at their prior means predict a
tile poorly; a local predictor (the idea of JPEG-LS and CALIC) costs 3.78 bits per subpixel on 32x32 tiles
of scikit-image's colour photographs, where its two scale constants were chosen, and 3.66 on Kodak's
(`python scripts/predictor_rate.py skimage-rgb --grid`), against the photo model's bound of 3.45 there.
It beats the photo model on one Kodak tile in five (smooth skies, flat walls, sharp edges), so bitsback.py
lets it take those tiles anywhere in the stream. With its neighbours as context (`Context`; the decoder has
the tiles below and to the right first) Kodak's tiles cost it 3.63 instead of 3.73 (`python
scripts/tile_costs.py photo kodak --limit 24`).

Each value is predicted from its four causal neighbours, left a, above b, above-left c, above-right d:
    med  = the median edge detector of (a, b, c)              (JPEG-LS)
    pred = med + (previous channel's value - its med)         (channel 1 on: colour edges coincide)
and coded over 0..255 around mean clip(pred, 0, 255) with a std that grows with the local activity
(|a - c| + |b - c| + |b - d|) / 3 and with the residuals of the left and upper neighbours (and of the previous
channel at this pixel). Missing neighbours: a <- b <- 128 at the left edge and corner, b, c, d <- a or b at
the top and right edges.

Three residual models (`distribution`): GAUSSIAN, constriction's quantized Gaussian (tile kinds of formats
1 to 4), and LAPLACE, a Laplace of the same variance (scale std / sqrt(2)) as explicit tables
(`laplace_tables`, format 5): the residuals have heavy tails, and the Laplace prices the same means and stds
4.7 % lower on Kodak's tiles, 2.7 % on scikit-image's (`python scripts/predictor_rate.py SET`). BLEND
(format 6) replaces the median edge by a blend of seven predictions weighted by how well each did on the
neighbours, with other channel shares and a fitted std, and codes with the Laplace's tables: 7.8 % less than
LAPLACE on Kodak's tiles (see "the blend" below). FITTED (format 8) codes the blend's residuals with integer
tables fitted on photographs instead, chosen by the std and by where the mean fell between two integers: 1.6 %
less than BLEND on Kodak's tiles (see "fitted residual tables" below). ADAPTIVE (format 9) corrects each value's
mean and std by statistics of its context over the stream's earlier values (see "adaptive contexts" below);
LEAST_SQUARES (format 10) blends its mean once more with a local least-squares prediction, the weights solved
for each value on the values around it (codec/kernels.py: "local least squares"), 3.1 % less than ADAPTIVE on
Kodak's 128x128 tiles. CASCADE (format 12) codes LEAST_SQUARES's values in raster order (a fuller least-squares
window), grows each std with the fit's error and with how far the two predictions lie apart, corrects each mean and
std again by a second stage of context statistics, and codes with residual tables of its own (codec/kernels.py:
"the cascade"): 1.2 % less than LEAST_SQUARES on Kodak's 128x128 tiles. PARITY (format 13) is CASCADE whose
second stage's contexts also hold each value's place on the image's 2x2 grid (codec/kernels.py: PARITY_CONTEXTS):
0.66 % less than CASCADE on every third Kodak image's tiles, 0.22 % on 23 of photos_train's training photographs.
WIDE (format 14) is PARITY whose blends also judge each predictor by its errors two to the left and two above
(codec/kernels.py: WIDE_FAR): 0.26 % less than PARITY on every third Kodak image's tiles of 256, 0.27 % on those
23 photographs. STAGED (format 15) is WIDE whose std also reads the residuals two to the left and two above and
whose contexts adapt in a third stage, keyed on the signed residuals left of and above each value
(codec/kernels.py: "the staged cascade"): 0.23 % less than WIDE on every third Kodak image's tiles of 256, 0.42 %
on those 23 photographs. Format 16 codes STAGED's tiles in sections, each starting from initial_statistics
(codec/tilekinds.py: PREDICTIVE_SECTIONS). SMALL (format 19) is STAGED with numbers and residual tables fitted on
Imagenette's training thumbnails and its channels coded last first, in sections of its own
(PREDICTIVE_SMALL_SECTIONS): 0.96 % less than STAGED's sections on the first 2,000 validation thumbnails as one
archive (see "the small-image profile" below). PHOTO (format 20) is STAGED with its numbers chosen again, all together,
and residual tables fitted for them, on photos_train's training photographs, in sections of its own
(PREDICTIVE_PHOTO_SECTIONS) for photographs (see "the photograph profile" below).

Pixel (y, x) depends only on pixels of wavefront 2y' + x' < 2y + x, so the decoder pops a whole wavefront at
a time (2h + w - 2 of them, channel by channel), not h x w pixels one by one (but the CASCADES, which
the compiled kernels pop pixel by pixel in raster order). Where numba is installed a BLEND or FITTED tile is coded
instead by codec/kernels.py, pixel by pixel in one compiled call: the same bits. Encoder and decoder compute
every number with the same elementwise float64 operations (+, -, *, /, abs, min, max, and the least-squares
kinds' sqrt: exactly rounded, no transcendental functions), so both sides give constriction identical means and
stds on any machine. The Laplace tables add codec/exact.py's exp and running products,
built from exactly rounded operations too; FITTED's tables are integers read from a file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec import kernels
from codec.ans import RawParts, Stack, Tables, check_tables
from codec.errors import CodingError
from codec.exact import deterministic_exp

NEUTRAL = 128.0  # the prediction of the first pixel, which has no neighbours
STD_FLOOR = 0.6  # std of a value in a perfectly flat neighbourhood (in pixel values)
STD_GAIN = 0.4  # std per unit of local activity
GAUSSIAN, LAPLACE = "gaussian", "laplace"  # the residual distributions (see the module's doc)
BLEND = "blend"  # a blend of predictors, with Laplace residuals and a fitted scale (format 6; see _blend_encoder)
# The blend's means and stds, its residuals coded with tables fitted on real photographs instead of Laplaces, the
# mean's quarter between integers choosing among four (format 8; see "fitted residual tables" below).
FITTED = "blend-fitted"
BLENDS = (BLEND, FITTED)  # the distributions of the blend predictor with a numpy coder
# FITTED with each value's mean and std corrected by statistics of its context over the values coded before it
# in the stream (format 9; see "adaptive contexts" in codec/kernels.py): coded by the kernels only.
ADAPTIVE = "blend-adaptive"
# ADAPTIVE with each value's blended mean blended again with a local least-squares prediction (format 10; see
# "local least squares" in codec/kernels.py): coded by the kernels only, with ADAPTIVE's context statistics.
LEAST_SQUARES = "blend-least-squares"
# LEAST_SQUARES in raster order, with a std that also reads the least-squares fit, a second stage of context
# statistics and residual tables of its own (format 12; see "the cascade" in codec/kernels.py): kernels only.
CASCADE = "blend-cascade"
# CASCADE with each value's column and row parity in its second stage's contexts, CASCADE's tables (format 13).
PARITY = "blend-cascade-parity"
# PARITY whose blends also weigh each predictor by its errors two to the left and two above (codec/kernels.py:
# WIDE_FAR), PARITY's statistics and CASCADE's tables (format 14).
WIDE = "blend-cascade-wide"
# WIDE whose std also reads the residuals two to the left and two above, with a third stage of context statistics
# keyed on the signed residuals left and above (codec/kernels.py: "the staged cascade"): WIDE's numbers and CASCADE's
# tables (format 15).
STAGED = "blend-cascade-staged"
# STAGED with the numbers of SMALL_PROFILE and residual tables of its own, both fitted on small images (Imagenette's
# training thumbnails), its channels coded last first (format 19; see "the small-image profile" below).
SMALL = "blend-cascade-staged-small"
# STAGED with the numbers of PHOTO_PROFILE, chosen all together on photos_train's training photographs, and residual
# tables of its own fitted on them for those numbers (format 20; see "the photograph profile" below).
PHOTO = "blend-cascade-staged-photo"
# PHOTO whose values are coded as binary decisions refined by an adaptive model (codec/kernels.py: "the
# refinement"; format 21).
REFINED = "blend-cascade-staged-photo-refined"
# REFINED whose refinement also reads where the earlier channels' gradients carried over put the value against its
# mean (codec/kernels.py: REFINE_ACROSS_GROUPS; format 22).
REFINED_ACROSS = "blend-cascade-staged-photo-refined-across"
# SMALL (its numbers, tables and channel order) refined as REFINED_ACROSS is (format 22): Imagenette's first 1,000
# 32x32 validation thumbnails as one stream 1.63 % smaller than SMALL (its first 1,000 training ones 1.05 %).
SMALL_ACROSS = "blend-cascade-staged-small-refined-across"
REFINEMENTS = (REFINED, REFINED_ACROSS, SMALL_ACROSS)  # coded as binary decisions, with a Refinement
ACROSS = (REFINED_ACROSS, SMALL_ACROSS)  # whose refinement reads the earlier channels' gradients too
SMALL_PROFILES = (SMALL, SMALL_ACROSS)  # with the small-image profile's numbers, tables and channel order
# raster order, a cascade's numbers and tables
CASCADES = (CASCADE, PARITY, WIDE, STAGED, SMALL, PHOTO) + REFINEMENTS
# whose second stage reads the values' parity (its statistics after the cascade's)
PARITIES = (PARITY, WIDE, STAGED, SMALL, PHOTO) + REFINEMENTS
STAGES = (STAGED, SMALL, PHOTO) + REFINEMENTS  # with the staged cascade's third stage
# the distributions whose tiles carry AdaptiveState over the stream
STATEFUL = (ADAPTIVE, LEAST_SQUARES, CASCADE, PARITY, WIDE, STAGED, SMALL, PHOTO) + REFINEMENTS
# those that blend in the least-squares prediction
LEAST_SQUARES_KINDS = (LEAST_SQUARES, CASCADE, PARITY, WIDE, STAGED, SMALL, PHOTO) + REFINEMENTS
DISTRIBUTIONS = (GAUSSIAN, LAPLACE, BLEND, FITTED, ADAPTIVE, LEAST_SQUARES, CASCADE, PARITY, WIDE, STAGED, SMALL,
                 PHOTO) + REFINEMENTS
_LEVELS = 256  # values 0..255


@dataclass(frozen=True)
class Context:
    """Pixels next to a tile that the decoder knows before it pops the tile, in the tile's own orientation:
    the row above it (C, w), the column left of it (C, h), and the pixel above-left (C,), needed when both
    are there. They become the first row and column of the predictor's frame, so the tile's edges are
    predicted from real neighbours (see the module's doc for what that saves)."""

    above: np.ndarray | None = None
    left: np.ndarray | None = None
    corner: np.ndarray | None = None


@dataclass(frozen=True)
class Recorded:
    """What the compiled encoder pushed for one blend tile (`encode(..., record=True)`): each value's table row
    of its distribution's cumulatives and the value, in pop order. push_recorded pushes the same values again
    onto any stack, the same words as encoding the tile there, without predicting anything: the encoder prices
    every tile on a stack of its own first (bitsback.price_without_model) and codes many of them again."""

    distribution: str
    rows: np.ndarray  # (N,) int32
    values: np.ndarray  # (N,) uint8
    decisions: np.ndarray | None = None  # REFINEMENTS': (2, D) int32, each decision's (or rest's) start and frequency

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.values.nbytes + (0 if self.decisions is None else self.decisions.nbytes)


def encode(stack: Stack, pixels: np.ndarray, context: Context = Context(), distribution: str = GAUSSIAN,
           record: bool = False, state: "AdaptiveState | None" = None) -> Recorded | None:
    """Push the valid pixels (C, h, w) uint8 of one tile, their residuals coded with `distribution`. With
    `record`, what the compiled kernels pushed (for push_recorded), or None where the numpy coder pushed it.
    The STATEFUL ones need the stream's `state` (updated), as the decoder will have it when it pops this
    tile."""
    _check_distribution(distribution)
    if distribution in STATEFUL:
        recorded = record_adaptive(pixels, context, _state_for(distribution, state), distribution)
        push_rows(stack, recorded)
        return recorded if record else None
    channels, height, width = pixels.shape
    values, top, left = _frame(pixels.astype(np.float64), context)
    # The kernels read the values as table columns unchecked: uint8 only (the numpy coder checks the rest).
    if distribution in BLENDS and pixels.dtype == np.uint8:
        compiled = _blend_compiled(stack, values, top, left, True, distribution, record)
        if compiled is not None:
            return compiled[1]
    if distribution in BLENDS:
        means, stds = _blend_encoder(values, top, left)
    else:
        means, stds = _parameters(values, *_all_positions(values.shape[1], values.shape[2]))
    # Keep the tile's own positions: (C, h * w), row-major.
    means, stds = (a.reshape(values.shape)[:, top:, left:].reshape(channels, -1) for a in (means, stds))
    order = _decode_order(pixels.shape)  # (C * h * w,) into the flattened (C, h, w) arrays
    symbols = pixels.reshape(-1).astype(np.int32)[order]
    _push(stack, symbols, means.reshape(-1)[order], stds.reshape(-1)[order], distribution)
    return None


def push_recorded(stack: Stack, recorded: Recorded) -> bool:
    """Push a recorded tile (see Recorded) onto `stack`: the words `encode` would push for it there. False,
    and the stack untouched, where the compiled kernels are not to be used on this stack (encode it then)."""
    count = len(recorded.rows) if recorded.decisions is None else recorded.decisions.shape[1]
    forms = stack.kernel_forms(count) if recorded.decisions is None else kernels.always()
    if forms is None:
        return False
    parts = stack.raw_parts(room=count)  # a push writes at most one word per value (or decision)
    try:
        if recorded.decisions is not None:
            position, head = forms["_push_decisions"](recorded.decisions, count, parts.buffer, parts.length,
                                                      np.uint64(parts.head))
        else:
            position, head = forms["_push"](_blend_cumulative(_table_distribution(recorded.distribution)),
                                            recorded.rows.astype(np.int64),
                                            recorded.values.astype(np.int64), parts.buffer, parts.length,
                                            np.uint64(parts.head))
    except Exception as error:  # noqa: BLE001 - as _blend_compiled: the kernels' compile failing here
        kernels.disable(f"{type(error).__name__}: {error}", error)
        if recorded.decisions is None:
            return False
        position, head = kernels.PLAIN_FORMS["_push_decisions"](recorded.decisions, count, parts.buffer,
                                                                 parts.length, np.uint64(parts.head))
    stack.set_raw_parts(RawParts(int(head), parts.buffer, position))
    return True


def decode(stack: Stack, channels: int, height: int, width: int, context: Context = Context(),
           distribution: str = GAUSSIAN, state: "AdaptiveState | None" = None) -> np.ndarray:
    """Pop the valid pixels (C, h, w) uint8 of one tile pushed by `encode` with the same context and
    distribution (and for STATEFUL ones the same `state`, updated as the encoder's was)."""
    _check_distribution(distribution)
    # Entries of the tile not yet decoded are never read (BLEND: read as the zeros they are, as its encoder does).
    if distribution in STATEFUL:
        values, top, left = _frame(np.zeros((channels, height, width)), _context_in_order(context, distribution))
        tile = _adaptive_decoder(stack, values, top, left, _state_for(distribution, state), distribution)
        return _coding_order(tile, distribution)
    values, top, left = _frame(np.zeros((channels, height, width)), context)
    if distribution in BLENDS:
        return _blend_decoder(stack, values, top, left, distribution)
    residuals = np.zeros_like(values)
    if top or left:
        # The context's residuals, as the encoder computed them: its means read only context pixels.
        known = np.ones(values.shape[1:], dtype=bool)
        known[top:, left:] = False
        ys, xs = np.nonzero(known)
        means, _ = _parameters(values, ys, xs)
        residuals[:, ys, xs] = np.abs(values[:, ys, xs] - means)
    for ys, xs in _wavefronts(height, width):
        ys, xs = ys + top, xs + left
        neighbours = _neighbours(values, residuals, ys, xs)
        previous = None
        for channel in range(channels):
            mean, std = _channel_parameters(neighbours, channel, previous)
            decoded = _pop(stack, mean, std, distribution).astype(np.float64)
            values[channel, ys, xs] = decoded
            residuals[channel, ys, xs] = np.abs(decoded - mean)
            previous = (decoded, neighbours[0][channel], residuals[channel, ys, xs])
    return values[:, top:, left:].astype(np.uint8)


def _push(stack: Stack, symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, distribution: str) -> None:
    """The blends' `means` are their unrounded ones (_blend_mean), the tables' rows round them."""
    if distribution in BLENDS:
        stack.push_categorical(symbols, _blend_rows(means, stds, distribution))
    elif distribution in TABLE_LEVELS:
        stack.push_categorical(symbols, _laplace_rows(means, stds, distribution))
    else:
        stack.push_gaussian(symbols, means, stds, 0, _LEVELS - 1)


def _pop(stack: Stack, means: np.ndarray, stds: np.ndarray, distribution: str) -> np.ndarray:
    if distribution in BLENDS:
        return stack.pop_categorical(_blend_rows(means, stds, distribution))
    if distribution in TABLE_LEVELS:
        return stack.pop_categorical(_laplace_rows(means, stds, distribution))
    return stack.pop_gaussian(means, stds, 0, _LEVELS - 1)


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise CodingError(f"unknown residual distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")


# The Laplace's stds take one of SCALE_LEVELS values, STD_FLOOR * 2**(j / 8), each predictor std rounded to the
# nearest in log2 (within 4.4 %: ~0.1 % of its bits): the tables of every level are then built once and a
# table row is a slice of them (the decoder builds ~300 small tables per tile).
SCALE_STEPS_PER_OCTAVE = 8
SCALE_LEVELS = 72  # up to STD_FLOOR * 2**8.9 = 280, above any std the predictor gives on 0..255
# The levels of each distribution with tables, (first, count): std STD_FLOOR * 2**(j / 8) for j = first ..
# first + count - 1. BLEND's stds fall below STD_FLOOR where the neighbours were predicted well, to its
# smallest, BLEND_STD_WEIGHTS[1][0] = 0.26, in channels after the first, which rounds to level -10 (std 0.252):
# a flat tile costs 0.24 bits a value instead of format 5's 0.55.
BLEND_LOWEST_LEVEL = -10
TABLE_LEVELS = {LAPLACE: (0, SCALE_LEVELS), BLEND: (BLEND_LOWEST_LEVEL, SCALE_LEVELS - BLEND_LOWEST_LEVEL)}


def laplace_tables(means: np.ndarray, stds: np.ndarray, distribution: str = LAPLACE) -> Tables:
    """Checked frequency tables (N, 256), rows summing to 2**24, of the values 0..255 under Laplaces around
    integer means (N,) in 0..255, the tails folded into the end bins, of the variance of a Gaussian of std
    `stds` (N,) rounded to its level (scale std / sqrt(2); the levels of `distribution`, LAPLACE or BLEND).
    Every entry is the same on every machine (see _level_tables and _every_table)."""
    if distribution not in TABLE_LEVELS:
        raise CodingError(f"no Laplace tables for {distribution!r}; known: {', '.join(TABLE_LEVELS)}")
    means, stds = np.asarray(means, dtype=np.float64), np.asarray(stds, dtype=np.float64)
    if means.ndim != 1 or stds.shape != means.shape:
        raise CodingError(f"means and stds must be (N,), got {means.shape} and {stds.shape}")
    if not (np.all(means == np.floor(means)) and np.all((means >= 0) & (means < _LEVELS))):
        raise CodingError("Laplace residual means must be integers in 0..255")
    if not np.all(np.isfinite(stds) & (stds > 0)):
        raise CodingError("Laplace residual stds must be finite and > 0")
    return _laplace_rows(means, stds, distribution)


def _laplace_rows(means: np.ndarray, stds: np.ndarray, distribution: str = LAPLACE) -> Tables:
    """laplace_tables without checking its arguments: the predictor's own means and stds."""
    every, edges = _every_table(*TABLE_LEVELS[distribution])
    row = np.searchsorted(edges, stds) * _LEVELS + means.astype(np.int64)  # (N,); beyond the last edge: the top level
    return Tables(every.rows[row], every.sums[row])


# A Laplace table row is integer frequencies summing to 2**24, each at least LAPLACE_MIN_FREQUENCY: integers
# sum exactly in any order (a float row's sum would depend on the summation order, and constriction divides by
# it), and no entry is below codec/ans.py's floor for the last one (16 of 2**24), which therefore never moves.
LAPLACE_TOTAL = 2**24
LAPLACE_MIN_FREQUENCY = 16


@functools.lru_cache(maxsize=None)  # one entry per TABLE_LEVELS value
def _every_table(first: int, count: int) -> tuple[Tables, np.ndarray]:
    """The table of every (level, mean) of levels `first` .. `first + count - 1` (TABLE_LEVELS), row
    level * 256 + mean, (count * 256, 256) float32 (format 5's: 18 MiB, BLEND's 20.5 MiB):
    frequency floor(p * (2**24 - 16 * 256)) + 16 for each probability p of _level_tables, the mean's own
    value taking what makes the row sum 2**24; checked once by codec/ans.py as any table is. And the level
    edges.

    Built once per process, so it is built fast: the frequency of each of _level_tables' probabilities first
    (the same floor of the same product wherever the value lands in the table), then every row of a level
    as a window of its offsets (value v of mean c is offset v - c), all in float32 (integers <= 2**24)."""
    inner, tails, centre_at_end, edges = _level_tables(first, count)
    spread = float(LAPLACE_TOTAL - LAPLACE_MIN_FREQUENCY * _LEVELS)
    frequency = lambda p: (np.floor(p * spread) + LAPLACE_MIN_FREQUENCY).astype(np.float32)  # noqa: E731
    inner_f, tails_f, end_f = frequency(inner), frequency(tails), frequency(centre_at_end)  # (J, 511), (J, 256), (J,)
    # windows[j, s] = inner_f[j, s : s + 256]; mean c's row is the window starting at offset -c, s = 255 - c.
    windows = np.lib.stride_tricks.sliding_window_view(inner_f, _LEVELS, axis=1)  # (J, 256, 256)
    frequencies = np.ascontiguousarray(windows[:, ::-1]).reshape(count * _LEVELS, _LEVELS)  # (R, 256)
    level, centre = np.divmod(np.arange(count * _LEVELS), _LEVELS)  # (R,) each
    # The end bins hold their tails, or the mean's own bin at an end.
    frequencies[:, 0] = np.where(centre == 0, end_f[level], tails_f[level, centre])
    frequencies[:, -1] = np.where(centre == _LEVELS - 1, end_f[level], tails_f[level, _LEVELS - 1 - centre])
    rows = np.arange(len(centre))
    frequencies[rows, centre] += LAPLACE_TOTAL - frequencies.sum(axis=1, dtype=np.float64)  # exact integers
    every = check_tables(frequencies)  # integers < 2**24: exact in float32
    for array in (every.rows, every.sums):
        array.flags.writeable = False
    return every, edges


@functools.lru_cache(maxsize=None)  # one entry per TABLE_LEVELS value
def _level_tables(first: int, count: int) -> tuple[np.ndarray, ...]:
    """Per level j = first .. first + count - 1 (std s_j = STD_FLOOR * 2**(j / 8), Laplace scale b = s_j / sqrt(2), h =
    exp(-1 / (2b)), q = h * h): `inner` (J, 511), the mass of the value at offset o = -255..255 from the mean, 1 - h
    at o = 0 and h (1 - q) q**(|o| - 1) / 2 elsewhere; `tails` (J, 256), the mass beyond the inner edge of a value
    at distance d, h q**(d - 1) / 2 (an end bin's, its tail included; d = 0 unused); `centre_at_end` (J,), the
    mean's own bin at 0 or 255, 1 - h / 2; `edges` (J - 1,), the geometric midpoints between levels. exp is
    codec/exact.py's and powers of q are running products: the same bits on every machine. Read-only."""
    steps = np.arange(first, first + count, dtype=np.float64) / SCALE_STEPS_PER_OCTAVE
    stds = STD_FLOOR * deterministic_exp(steps * 0.6931471805599453)  # (J,)
    edges = STD_FLOOR * deterministic_exp((steps[1:] - 0.5 / SCALE_STEPS_PER_OCTAVE) * 0.6931471805599453)
    scale = stds * 0.7071067811865476  # std / sqrt(2)
    h = deterministic_exp(-0.5 / scale)  # (J,) in (0, 1)
    q = h * h
    powers = np.empty((count, _LEVELS))  # (J, 256): q**(d - 1) at d = 1..255, column 0 unused
    powers[:, 0] = 0.0
    powers[:, 1] = 1.0
    powers[:, 2:] = q[:, None]
    powers[:, 1:] = np.multiply.accumulate(powers[:, 1:], axis=1)  # left to right: the same products everywhere
    tails = powers * (0.5 * h)[:, None]  # (J, 256)
    side = tails[:, 1:] * (1.0 - q)[:, None]  # (J, 255): offsets 1..255
    inner = np.concatenate([side[:, ::-1], (1.0 - h)[:, None], side], axis=1)  # (J, 511)
    for array in (inner, tails, edges):
        array.flags.writeable = False
    centre_at_end = 1.0 - 0.5 * h
    centre_at_end.flags.writeable = False
    return inner, tails, centre_at_end, edges


# ---------------------------------------------------------------------------------------------- fitted residual tables
#
# FITTED (format 8) codes the blend's residuals with tables fitted on real photographs (photos_train's training
# photographs: scripts/fit_residual_tables.py) instead of Laplaces: the residuals' real shape, and where the
# mean fell between two integers. One table of the offsets -255..255 per std level and quarter of the mean:
# 41 levels four to the octave (each two of BLEND's levels: their edges are every other of BLEND's) and
# FITTED_BINS quarters, (mean - rounded mean + 1/2) * 4 floored. They are integers (each >= 16, each table
# summing to 2**24) in fitted_residuals.npy, pinned by its sha256: the file is part of format 8. A row (mean,
# level, quarter) is the offsets of its values, the tails folded into the end bins: integer sums, so every row
# sums to 2**24 on every machine. Real coding of 32x32 tiles every 96 pixels against BLEND's Laplaces: Kodak
# 3.2118 -> 3.1613 bits per subpixel (-1.6 %), gray8bit -1.9 %, Wikimedia photographs -0.9 % (`python
# scripts/predictor_rate.py SET`; how the tables' shape was chosen: docs/results/predictor).

FITTED_BINS = 4
FITTED_LEVEL_STEP = 2  # BLEND's levels per FITTED level
FITTED_TABLE_FILE = Path(__file__).with_name("fitted_residuals.npy")
FITTED_TABLE_SHA256 = "52fdd555d159313d78f37489ea761dd09de058528b883176da94b968079f98a7"
# CASCADE's tables: the same levels and quarters, fitted on what the cascade codes (its means and levels after both
# stages) of photos_train's training photographs, 128x128 tiles (`python scripts/fit_residual_tables.py --cascade`):
# Kodak's tiles 0.3 % below FITTED's tables for the same rows. Part of format 12.
CASCADE_TABLE_FILE = Path(__file__).with_name("cascade_residuals.npy")
CASCADE_TABLE_SHA256 = "552afe9e5d4dcf1f2b70a621418293e6225b3455e316e52f77b9e1a651b79f91"
# SMALL's tables: the same levels and quarters, fitted on what SMALL codes of Imagenette's training thumbnails (every
# third, as one stream: `python scripts/small_profile.py --tables`). Part of format 19.
SMALL_TABLE_FILE = Path(__file__).with_name("small_residuals.npy")
SMALL_TABLE_SHA256 = "4027729c06ddadd7e1165b9cd8fb887247c5337a7a0b092803545c4b3ace79e6"
# PHOTO's tables: the same levels and quarters, fitted on what PHOTO codes of photos_train's training photographs
# (every one, each as a section: `python scripts/photo_profile.py --tables`). Part of format 20.
PHOTO_TABLE_FILE = Path(__file__).with_name("photo_residuals.npy")
PHOTO_TABLE_SHA256 = "dd25b44f116793358a17e5e20b2db6e6e43e73de741a95f8eac75e7586317aa9"
TABLE_SETS = (FITTED, CASCADE, SMALL, PHOTO)  # the residual models with fitted tables, each its own file
_OFFSETS = 2 * _LEVELS - 1  # -255..255


@functools.lru_cache(maxsize=1)
def fitted_levels() -> tuple[int, np.ndarray]:
    """FITTED's level count and its level edges (count - 1,), read-only: every other edge of BLEND's levels,
    level k holding BLEND's levels FITTED_LEVEL_STEP * k and the next."""
    edges = np.ascontiguousarray(_level_tables(*TABLE_LEVELS[BLEND])[3][FITTED_LEVEL_STEP - 1 :: FITTED_LEVEL_STEP])
    edges.flags.writeable = False
    return len(edges) + 1, edges


def fitted_bins(means: np.ndarray, rounded: np.ndarray, bins: int = FITTED_BINS) -> np.ndarray:
    """The quarter (0..FITTED_BINS - 1, float64; other `bins` for scripts/fit_residual_tables.py --variants) of
    each mean in [0, 255] between its rounded value's halves; clamped both ways (mean + 1/2 can round up to an
    integer)."""
    return np.minimum(np.maximum(np.floor((means - rounded + 0.5) * bins), 0.0), bins - 1.0)


def _table_file(tables: str) -> tuple[Path, str, int]:
    """A table set's file, its sha256 and the format it is part of (read when asked: tests move them)."""
    if tables == CASCADE:
        return CASCADE_TABLE_FILE, CASCADE_TABLE_SHA256, 12
    if tables == SMALL:
        return SMALL_TABLE_FILE, SMALL_TABLE_SHA256, 19
    if tables == PHOTO:
        return PHOTO_TABLE_FILE, PHOTO_TABLE_SHA256, 20
    return FITTED_TABLE_FILE, FITTED_TABLE_SHA256, 8


@functools.lru_cache(maxsize=len(TABLE_SETS))
def _fitted_offsets(tables: str = FITTED) -> np.ndarray:
    """The fitted tables (41 levels, FITTED_BINS, 511) int64 of a table set's file (TABLE_SETS), checked: its
    sha256, shape, every entry >= LAPLACE_MIN_FREQUENCY, every table summing to 2**24. Read-only."""
    path, digest, version = _table_file(tables)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CodingError(f"format {version}'s residual tables are missing ({path}: {error.strerror})") from None
    if hashlib.sha256(raw).hexdigest() != digest:
        raise CodingError(f"format {version}'s residual tables ({path}) are not the ones vaezip was built with")
    offsets = np.load(io.BytesIO(raw), allow_pickle=False).astype(np.int64)
    levels, _ = fitted_levels()
    if offsets.shape != (levels, FITTED_BINS, _OFFSETS) or offsets.min() < LAPLACE_MIN_FREQUENCY or \
            not np.all(offsets.sum(axis=2) == LAPLACE_TOTAL):
        raise CodingError(f"format {version}'s residual tables ({path}) are malformed")
    offsets.flags.writeable = False
    return offsets


@functools.lru_cache(maxsize=len(TABLE_SETS))
def _fitted_every_table(tables: str = FITTED) -> tuple[Tables, np.ndarray]:
    """Every row of FITTED, row (level * FITTED_BINS + quarter) * 256 + mean, (levels * 4 * 256, 256) float32
    (41 MiB), and the level edges: the reference the coders' rows (_blend_rows) and cumulatives
    (_fitted_cumulative) are held to; checked as any table is."""
    count = len(_fitted_offsets(tables).reshape(-1, _OFFSETS))
    every = check_tables(_fitted_rows(np.repeat(np.arange(count), _LEVELS), np.tile(np.arange(_LEVELS), count),
                                      tables))
    for array in (every.rows, every.sums):
        array.flags.writeable = False
    return every, fitted_levels()[1]


@functools.lru_cache(maxsize=len(TABLE_SETS))
def _fitted_cumulative(tables: str = FITTED) -> np.ndarray:
    """kernels.left_cumulatives of _fitted_every_table's rows (R, 257) int32, read-only (what the compiled
    kernels code with), without building the rows: a row's running sum up to value s < 255 is the table's
    running sum up to offset s - mean (its folded bin 0 holds every offset below), and each row sums to 2**24,
    so constriction's scale is one float32 for all; a row's cumulatives are then a window of one per-table
    array, as its frequencies are. The same integers (tests compare them), in a third of the time."""
    prefix = _fitted_windows(tables)[1]  # (T, 511)
    symbols = _LEVELS
    scale = np.float32((1 << kernels.PRECISION) - symbols) / np.float32(LAPLACE_TOTAL)  # as left_cumulatives
    # scaled[t, i] = floor(float32(running sum of offsets 0..i) * scale): float32 products as constriction's
    scaled = (prefix[:, : _OFFSETS - 1].astype(np.float32) * scale).astype(np.int32)  # (T, 510)
    # Mean c, value s = 1..255: the running sum before s is offsets 0 .. 254 - c + s, i.e. window 255 - c of 255.
    windows = np.lib.stride_tricks.sliding_window_view(scaled, symbols - 1, axis=1)[:, 255::-1]  # (T, 256, 255)
    cumulative = np.empty((len(prefix), symbols, symbols + 1), dtype=np.int32)
    cumulative[:, :, 0] = 0
    np.add(windows, np.arange(1, symbols, dtype=np.int32), out=cumulative[:, :, 1:symbols])
    cumulative[:, :, symbols] = 1 << kernels.PRECISION
    cumulative = cumulative.reshape(-1, symbols + 1)
    cumulative.flags.writeable = False
    return cumulative


def clear_table_caches() -> None:
    """Forget every table set read and built (_fitted_offsets and what is made from it): for scripts and tests that
    put other tables or files in place (the next coding reads the files again)."""
    for cached in (_fitted_offsets, _fitted_windows, _fitted_cumulative, _fitted_every_table, _refine_tables):
        cached.cache_clear()


def _blend_edges(distribution: str) -> np.ndarray:
    """A blend distribution's level edges."""
    return fitted_levels()[1] if distribution in TABLE_SETS else _every_table(*TABLE_LEVELS[BLEND])[1]


def _blend_cumulative(distribution: str) -> np.ndarray:
    """constriction's left cumulatives of a blend distribution's table rows (R, 257): what the compiled kernels
    code with."""
    return _fitted_cumulative(distribution) if distribution in TABLE_SETS else _every_cumulative(*TABLE_LEVELS[BLEND])


def _blend_rows(means: np.ndarray, stds: np.ndarray, distribution: str) -> Tables:
    """The table rows of a blend's unrounded means (N,) in [0, 255] and stds (N,)."""
    rounded = _rounded(means)
    if distribution == BLEND:
        return _laplace_rows(rounded, stds, BLEND)
    # Only the rows asked for (the numpy coder codes a stream's first tiles, a few rows at a time), not all
    # 41,984 of _fitted_every_table built first.
    table = np.searchsorted(fitted_levels()[1], stds) * FITTED_BINS + fitted_bins(means, rounded).astype(np.int64)
    frequencies = _fitted_rows(table, rounded.astype(np.int64))
    # What check_tables gives for these rows (each sums to exactly 2**24, every entry >= 16), without its passes.
    return Tables(frequencies, np.full(len(frequencies), np.float32(LAPLACE_TOTAL)))


def _fitted_rows(table: np.ndarray, centre: np.ndarray, tables: str = FITTED) -> np.ndarray:
    """The rows (N, 256) float32 of a table set's tables `table` (N,) around integer means `centre` (N,): value v
    takes the offset v - c, values 0 and 255 the tails beyond them too (integer sums: every row sums to 2**24)."""
    windows, prefix = _fitted_windows(tables)
    frequencies = windows[table, centre]  # (N, 256), a copy
    frequencies[:, 0] = prefix[table, 255 - centre]  # offsets -255..-c
    frequencies[:, -1] = prefix[table, -1] - prefix[table, 509 - centre]  # offsets 255 - c..255
    return frequencies


@functools.lru_cache(maxsize=len(TABLE_SETS))
def _fitted_windows(tables: str = FITTED) -> tuple[np.ndarray, np.ndarray]:
    """A view (T, 256, 256) float32 of a table set's tables, [t, c] the row of mean c before its ends are folded
    (built on demand, not materialised), and the tables' running sums (T, 511) int64; read-only."""
    offsets = _fitted_offsets(tables).reshape(-1, _OFFSETS)
    as_float = offsets.astype(np.float32)  # integers < 2**24: exact
    as_float.flags.writeable = False
    windows = np.lib.stride_tricks.sliding_window_view(as_float, _LEVELS, axis=1)[:, ::-1]  # [t, c] starts at 255 - c
    prefix = np.cumsum(offsets, axis=1)
    prefix.flags.writeable = False
    return windows, prefix


def _frame(tile: np.ndarray, context: Context) -> tuple[np.ndarray, int, int]:
    """The tile (C, h, w) float64 inside its context: (C, h + top, w + left) and the tile's offsets (top, left)."""
    channels, height, width = tile.shape
    top, left = int(context.above is not None), int(context.left is not None)
    shapes = {"above": (channels, width), "left": (channels, height), "corner": (channels,)}
    for name, shape in shapes.items():
        part = getattr(context, name)
        if part is not None and part.shape != shape:
            raise CodingError(f"context.{name} must be {shape}, got {part.shape}")
    if top and left and context.corner is None:
        raise CodingError("a context with a row above and a column left needs the corner pixel")
    values = np.zeros((channels, height + top, width + left))
    values[:, top:, left:] = tile
    if top:
        values[:, 0, left:] = context.above
    if left:
        values[:, top:, 0] = context.left
    if top and left:
        values[:, 0, 0] = context.corner
    return values, top, left


# ---------------------------------------------------------------------------------------------- adaptive contexts
#
# ADAPTIVE (format 9) is FITTED with each value's mean moved by the mean residual of the values coded before it in
# its context, and its std scaled by how their residuals compared with their stds (codec/kernels.py: "adaptive
# contexts"), over the stream's ADAPTIVE tiles in the order the decoder pops them, not only the tile's own values
# (a 32x32 tile is too few to learn 8,019 contexts from): AdaptiveState carries the statistics from tile to tile.
# Kodak's 24 as 32x32 tiles in the decoder's order, the whole stream adaptive: 3.00 % fewer bits than FITTED (the
# contexts and ADAPT_TUNING chosen on 23 of photos_train's training photographs, 4.72 % fewer there; `python
# scripts/adaptive_contexts.py SET`). Its statistics change value by value, so it has no numpy coder: the kernels
# code it, compiled, or as plain Python where numba is missing (the same numbers, slowly).


def _table_distribution(distribution: str) -> str:
    """The distribution whose tables (rows, edges, bins) `distribution` codes with: ADAPTIVE's and LEAST_SQUARES's
    are FITTED's, CASCADE's, SMALL's and PHOTO's their own, PARITY's, WIDE's and STAGED's CASCADE's, SMALL_ACROSS's
    SMALL's and the other refinements' PHOTO's."""
    if distribution in (ADAPTIVE, LEAST_SQUARES):
        return FITTED
    if distribution in SMALL_PROFILES:
        return SMALL
    if distribution in REFINEMENTS:
        return PHOTO
    return CASCADE if distribution in (PARITY, WIDE, STAGED) else distribution


# Format 16's sections (codec/tilekinds.py: PREDICTIVE_SECTIONS) each start their statistics from this state instead
# of zeros: STAGED's statistics after the tiles of 8 of photos_train's training photographs (every 13th, tiles of
# 256, in the decoder's order), times 0.25 (the same means and ratios, weighing a quarter as many values, so that a
# section's own values outweigh them sooner: 0.25 beat 1, 0.5, 0.125 and 0.0625 on Kodak), stored as float32 in
# initial_statistics.npz and pinned by the sha256 of those float32 values (`python scripts/initial_statistics.py`
# makes the file). A section then codes its first values as if it came after photographs, not after nothing:
# Kodak's every third image 0.18 % smaller in one section than in format 15's chain from zeros, 0.06 % in two
# (`python scripts/cascade.py kodak --every 3 --tile 256 --sections`). Part of format 16.
INITIAL_STATISTICS_FILE = Path(__file__).with_name("initial_statistics.npz")
INITIAL_STATISTICS_SHA256 = "d925d57fa1fc6f265d7159facde61711af3d18919510fbf4f1394efcc934dc03"


@functools.lru_cache(maxsize=1)
def initial_statistics() -> np.ndarray:
    """The sections' initial statistics (kernels.ADAPT_STATISTICS, 4) float64, read-only, checked: the file's
    float32 values' sha256 and shape, every count and expectation finite and at least 0."""
    path = INITIAL_STATISTICS_FILE
    try:
        with np.load(path, allow_pickle=False) as stored:
            values = np.ascontiguousarray(stored["sums"], dtype="<f4")
    except (OSError, KeyError, ValueError) as error:
        raise CodingError(f"format 16's initial statistics are missing or unreadable ({path}: {error})") from None
    if hashlib.sha256(values.tobytes()).hexdigest() != INITIAL_STATISTICS_SHA256:
        raise CodingError(f"format 16's initial statistics ({path}) are not the ones vaezip was built with")
    sums = values.astype(np.float64)
    if sums.shape != (kernels.ADAPT_STATISTICS, 4) or not np.all(np.isfinite(sums)) or sums[:, 1:].min() < 0:
        raise CodingError(f"format 16's initial statistics ({path}) are malformed")
    sums.flags.writeable = False
    return sums


class AdaptiveState:
    """The STATEFUL distributions' context statistics (kernels.ADAPT_STATISTICS, 4) float64, a context's four side
    by side (ADAPTIVE's first, then CASCADE's second stage, then PARITY's, which WIDE and STAGED share, then STAGED's
    third stage): zeros at a stream's start, then updated by each STATEFUL tile coded, in the decoder's order.
    Encoder and decoder hold one each and must code the same tiles in the same order with it. A tile's coding
    replaces `sums` with an updated array and never writes the one it read: a caller may keep that one to undo
    the tile."""

    def __init__(self, sums: np.ndarray | None = None, refinement: "Refinement | None" = None):
        self.sums = np.zeros((kernels.ADAPT_STATISTICS, 4)) if sums is None else sums
        self.refinement = refinement  # REFINEMENTS', made by its first tile; changed in place, never undone

    def copy(self) -> "AdaptiveState":
        return AdaptiveState(self.sums.copy(), self.refinement)

    @classmethod
    def initial(cls) -> "AdaptiveState":
        """A format-16 section's statistics as it starts (initial_statistics: read-only, which a coding never
        writes)."""
        return cls(initial_statistics())


class Refinement:
    """REFINEMENTS' adaptive model as a stream starts (codec/kernels.py: "the refinement"): its counters at one half,
    no counts yet, the mixer's weights on the table's probability alone, its map the identity. ~6 MB (REFINED's ten
    groups of counters; ACROSS's fifteen ~9 MB): one a section, changed in place by each tile coded."""

    def __init__(self, distribution: str = REFINED):
        groups = kernels.REFINE_WIDEST if distribution in ACROSS else kernels.REFINE_GROUPS
        self.distribution = distribution
        self.counters = np.full((groups, kernels.REFINE_SLOTS), 32768 << 8, np.int32)  # 16-bit probability, count
        rows = kernels.REFINE_DECISIONS * 3  # decision x channel class
        self.weights = np.zeros((rows * kernels.REFINE_MIXER_LEVELS, groups + 2), np.int64)
        self.weights[:, 0] = 1 << 16
        # the plain form: the compiled one (once the kernels are built), called from Python, would first load (or
        # compile) a form of its own for that call, ~0.13 s of a decode's start, in each section's thread
        squash = kernels.PLAIN_FORMS["_refine_squash"]
        identity = [16 * squash((b - kernels.REFINE_BUCKETS // 2) * 128, kernels.REFINE_KNOTS)
                    for b in range(kernels.REFINE_BUCKETS)]
        self.maps = np.tile(np.array(identity, np.int64), (rows * kernels.REFINE_LEVELS, 1))


@functools.lru_cache(maxsize=2)
def _refine_tables(tables: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A refinement's read-only tables: its residual tables' (`tables`: PHOTO's or SMALL's) running sums (T, 511)
    int64, stretch, reciprocals."""
    prefix = np.cumsum(_fitted_offsets(tables).reshape(-1, _OFFSETS).astype(np.int64), axis=1)
    prefix.flags.writeable = False
    return prefix, kernels.refine_stretch(), kernels.refine_reciprocals()


def _state_for(distribution: str, state: AdaptiveState | None) -> AdaptiveState:
    if state is None:
        raise CodingError(f"{distribution} tiles are coded with their stream's AdaptiveState; none was given")
    return state


_NO_WORDS = np.zeros(0, dtype=np.uint32)  # the bulk handed to a kernel that only records (encode: nothing popped)


def record_adaptive(pixels: np.ndarray, context: Context, state: AdaptiveState,
                    distribution: str = ADAPTIVE) -> Recorded:
    """What `distribution` (STATEFUL) pushes for the valid pixels (C, h, w) uint8 of one tile after the tiles that
    updated `state` (updated by this one), without pushing it (push_rows pushes it)."""
    if distribution not in STATEFUL:
        raise CodingError(f"{distribution} tiles carry no statistics over the stream")
    if pixels.dtype != np.uint8:
        raise CodingError(f"{distribution} codes uint8 pixels, got {pixels.dtype}")
    ordered = _coding_order(pixels, distribution)
    values, top, left = _frame(ordered.astype(np.float64), _context_in_order(context, distribution))
    _, coded, _, _, decisions = _adaptive_run(values, top, left, True, state, _NO_WORDS, 0, 0, distribution)
    return Recorded(distribution, coded[0].astype(np.int32), coded[1].astype(np.uint8), decisions)


def _coding_order(array: np.ndarray | None, distribution: str) -> np.ndarray | None:
    """A tile (C, h, w) or a part of its context (C, ...) with its channels in the order `distribution` codes them
    (its own inverse): SMALL's and SMALL_ACROSS's last first (on Imagenette's training thumbnails blue, green, red
    cost 0.17 % less than red, green, blue), the others' as they are."""
    if distribution not in SMALL_PROFILES or array is None:
        return array
    return np.ascontiguousarray(array[::-1])


def _context_in_order(context: Context, distribution: str) -> Context:
    return Context(*(_coding_order(part, distribution) for part in (context.above, context.left, context.corner)))


def push_rows(stack: Stack, recorded: Recorded) -> None:
    """Push a recorded tile onto `stack`: by the compiled kernels where they are to be used on it (push_recorded),
    else by constriction with the same table rows (the same words)."""
    if push_recorded(stack, recorded):
        return
    tables = _table_distribution(recorded.distribution)
    if tables not in TABLE_SETS:
        raise CodingError(f"no table rows for recorded {recorded.distribution} tiles without the kernels")
    table, centre = np.divmod(recorded.rows.astype(np.int64), _LEVELS)
    rows = Tables(_fitted_rows(table, centre, tables), np.full(len(table), np.float32(LAPLACE_TOTAL)))
    stack.push_categorical(recorded.values.astype(np.int32), rows)


def _adaptive_decoder(stack: Stack, values: np.ndarray, top: int, left: int, state: AdaptiveState,
                      distribution: str) -> np.ndarray:
    """Pop a tile of `distribution` (STATEFUL) into the frame `values` (C, H, W) (context filled in, tile zeros),
    updating `state`."""
    parts = stack.raw_parts()
    frame, _, position, head, _ = _adaptive_run(values, top, left, False, state, parts.buffer, parts.length,
                                                parts.head, distribution)
    stack.set_raw_parts(RawParts(int(head), parts.buffer, position))
    return _tile_of(frame, values, top, left)


def _adaptive_run(values: np.ndarray, top: int, left: int, encode: bool, state: AdaptiveState,
                  words: np.ndarray, length: int, head: int, distribution: str):
    """_kernel_tile for `distribution` (STATEFUL) by kernels.always()'s forms, falling back to the plain Python
    ones where the compiled ones fail here; `state` changes only once a run succeeded."""
    forms = kernels.always()
    refinement = None
    if distribution in REFINEMENTS:
        # changed in place (a copy a tile would cost ~6-9 MB); a compile that fails does so before it runs
        state.refinement = refinement = state.refinement or Refinement(distribution)
        if refinement.distribution != distribution:
            raise CodingError(f"a stream's {refinement.distribution} tiles and {distribution} ones share no model")
    try:
        work = state.sums.copy()
        result = _kernel_tile(forms, values, top, left, encode, distribution, words, length, head, work, refinement)
    except Exception as error:  # noqa: BLE001 - numba's first-call compile failing on this platform
        if forms is kernels.PLAIN_FORMS:
            raise
        kernels.disable(f"{type(error).__name__}: {error}", error)
        work = state.sums.copy()
        result = _kernel_tile(kernels.PLAIN_FORMS, values, top, left, encode, distribution, words, length, head,
                              work, refinement)
    state.sums = work
    return result


# ---------------------------------------------------------------------------------------------- the model


def _median_edge(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    low, high = np.minimum(a, b), np.maximum(a, b)
    return np.where(c >= high, low, np.where(c <= low, high, a + b - c))


def _neighbours(values: np.ndarray, residuals: np.ndarray, ys: np.ndarray, xs: np.ndarray):
    """For positions (ys, xs): the median-edge prediction, the activity and the neighbour residual term,
    each (C, N). Reads only causal pixels (out-of-range or undecoded entries are selected away)."""
    width = values.shape[2]
    has_up, has_left, has_right = ys > 0, xs > 0, xs < width - 1
    up_row, left_col, right_col = np.maximum(ys - 1, 0), np.maximum(xs - 1, 0), np.minimum(xs + 1, width - 1)
    up = values[:, up_row, xs]
    a = np.where(has_left, values[:, ys, left_col], np.where(has_up, up, NEUTRAL))
    b = np.where(has_up, up, a)
    c = np.where(has_up & has_left, values[:, up_row, left_col], b)
    d = np.where(has_up & has_right, values[:, up_row, right_col], b)
    activity = (np.abs(a - c) + np.abs(b - c) + np.abs(b - d)) / 3.0
    near = (np.where(has_left, residuals[:, ys, left_col], 0.0) + np.where(has_up, residuals[:, up_row, xs], 0.0)) / 2.0
    return _median_edge(a, b, c), activity, near


def _channel_parameters(neighbours, channel: int, previous):
    """Mean and std (N,) of one channel; `previous` = (values, med, residuals) of the channel before, or None."""
    med, activity, near = neighbours
    mean, active = med[channel], activity[channel]
    if previous is not None:
        prev_values, prev_med, prev_residual = previous
        mean = mean + (prev_values - prev_med)
        active = (active + prev_residual) / 2.0
    mean = np.minimum(np.maximum(mean, 0.0), 255.0)
    return mean, STD_FLOOR + STD_GAIN * (active + near[channel])


def _parameters(values: np.ndarray, ys: np.ndarray, xs: np.ndarray):
    """Every position at once (the encoder): means and stds (C, N), the numbers the decoder computes.

    Two passes: the means read pixel values only; the stds also read the neighbours' residuals, which need
    the means."""
    channels = values.shape[0]
    residuals = np.zeros_like(values)
    means, stds = np.empty((channels, len(ys))), np.empty((channels, len(ys)))
    for _ in range(2):
        neighbours = _neighbours(values, residuals, ys, xs)
        for channel in range(channels):
            previous = None
            if channel:
                previous = (values[channel - 1, ys, xs], neighbours[0][channel - 1], residuals[channel - 1, ys, xs])
            means[channel], stds[channel] = _channel_parameters(neighbours, channel, previous)
        residuals[:, ys, xs] = np.abs(values[:, ys, xs] - means)
    return means, stds


# ---------------------------------------------------------------------------------------------- order


def _all_positions(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.divmod(np.arange(height * width), width)
    return ys, xs


@functools.lru_cache(maxsize=64)
def _wavefronts(height: int, width: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(ys, xs) of each wavefront 2y + x = t, t ascending; y ascending within one (read-only arrays, kept for
    the next tile of this size)."""
    fronts = []
    for t in range(2 * (height - 1) + width):
        ys = np.arange(max(0, (t - width + 2) // 2), min(height - 1, t // 2) + 1)
        fronts.append((ys, t - 2 * ys))
    for array in (a for front in fronts for a in front):
        array.flags.writeable = False
    return tuple(fronts)


@functools.lru_cache(maxsize=64)
def _decode_order(shape: tuple[int, int, int]) -> np.ndarray:
    """Indices into a flattened (C, h, w) array, (C * h * w,), in the order the decoder pops the values:
    wavefront by wavefront, channel by channel within one (read-only, kept for the next tile of this size)."""
    channels, height, width = shape
    order = np.concatenate([channel * height * width + ys * width + xs
                            for ys, xs in _wavefronts(height, width) for channel in range(channels)])
    order.flags.writeable = False
    return order


# ---------------------------------------------------------------------------------------------- the blend
#
# BLEND (format 6) predicts each value by a blend of BLEND_PREDICTORS predictors of its causal neighbours, each
# weighted by how well it predicted the neighbours (the idea of JPEG XL's weighted predictor), adds fixed
# shares of the earlier channels' errors at the same pixel, and codes the residual with a Laplace whose std is
# a linear function of the activity, the neighbours' residuals and the earlier channels' residuals. Predictors
# and gains chosen, std weights fitted, on photos_train's first 40 images (scripts/predictor_blend.py; figures
# in docs/results/predictor). Every number is built from +, -, *, / and floor in a fixed order, as the rest
# of this module: the same on every machine.

BLEND_PREDICTORS = 7  # median edge, a + b - c, a + d - b, (a + b) / 2, (a + d) / 2, a, b
assert BLEND_PREDICTORS == kernels.BLEND_SUBS  # the kernels' blend reads the first BLEND_SUBS predictors' errors
BLEND_ERROR_DIAGONAL = 0.5  # the above-left and above-right neighbours' errors count half
BLEND_ERROR_FLOOR = 1.0  # a predictor's weight is 1 / (its neighbours' errors + this)**2
# A channel after the first adds the spatial error of the channel before (x BLEND_GAIN_PREVIOUS) and, from the
# third on, of the first (x BLEND_GAIN_FIRST); the second channel adds the first's whole.
BLEND_GAIN_PREVIOUS, BLEND_GAIN_FIRST = 0.8, 0.2
# std = w0 + w1 activity + w2 (left + above residual) / 2 + w3 (above-left + above-right residual) / 2
#       + w4 (the channel before's residual here) + w5 (the first channel's, from the third channel on),
# per channel class (the first channel, the others).
BLEND_STD_WEIGHTS = ((0.554, 0.157, 0.775, 0.32, 0.0, 0.0), (0.26, 0.0, 0.68, 0.318, 0.195, 0.052))


def _blend_encoder(values: np.ndarray, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """The blend's unrounded means and its stds (C, H * W) of every position of the frame `values` (C, H, W)
    (the context's entries are not used), the numbers _blend_decoder computes."""
    channels, height, width = values.shape
    frame, errors, residuals = _blend_frames(values)
    _blend_context(frame, errors, residuals, height, width, top, left)
    sources, around = _gather_plan(height, width)
    at = np.flatnonzero(~_context_mask(height, width, top, left))
    means, stds = np.zeros((channels, height * width)), np.zeros((channels, height * width))
    means[:, at], stds[:, at] = _blend_positions(frame, errors, residuals, at, sources[:, at], around[:, at])
    return means, stds


def _blend_positions(frame, errors, residuals, at, sources, around) -> tuple[np.ndarray, np.ndarray]:
    """Unrounded means and stds (C, N) at the flat positions `at` (N,) of `frame`, whose values are all known;
    fills their errors and residuals in (all of them before any is read, as the decoder has its neighbours'
    when it gets there). `sources`, `around`: _gather_plan's columns for `at`."""
    subs, activity = _sub_predictions(frame, sources)
    here = frame[:, at]  # (C, N)
    errors[:, :, at] = np.abs(here - subs)
    spatial = _blend(subs, errors, around)
    means = np.stack([_blend_mean(spatial, channel, here) for channel in range(len(here))])
    residuals[:, at] = np.abs(here - _rounded(means))
    base = _blend_std_base(activity, *_residual_terms(residuals, around))
    prior = residuals[:, at]
    stds = np.stack([_blend_std(base, channel, prior) for channel in range(len(here))])
    return means, stds


def _blend_decoder(stack: Stack, values: np.ndarray, top: int, left: int, distribution: str) -> np.ndarray:
    """Pop a tile pushed with `distribution` (BLENDS) into the frame `values` (C, H, W) (context filled in, tile
    zeros): in one compiled call where numba is there (codec/kernels.py), else wavefront by wavefront; the
    same pixels."""
    compiled = _blend_compiled(stack, values, top, left, False, distribution)
    if compiled is not None:
        return compiled[0]
    channels, height, width = values.shape
    frame, errors, residuals = _blend_frames(values)
    _blend_context(frame, errors, residuals, height, width, top, left)
    for at, sources, around in _blend_wavefronts(height, width, top, left):
        subs, activity = _sub_predictions(frame, sources)
        spatial = _blend(subs, errors, around)
        base = _blend_std_base(activity, *_residual_terms(residuals, around))
        here, prior = np.zeros((channels, len(at))), np.zeros((channels, len(at)))
        for channel in range(channels):
            mean = _blend_mean(spatial, channel, here)
            std = _blend_std(base, channel, prior)
            decoded = _pop(stack, mean, std, distribution).astype(np.float64)
            here[channel], prior[channel] = decoded, np.abs(decoded - _rounded(mean))
        frame[:, at], residuals[:, at] = here, prior
        errors[:, :, at] = np.abs(here - subs)
    return frame[:, :-1].reshape(values.shape)[:, top:, left:].astype(np.uint8)


def _blend_compiled(stack: Stack, values: np.ndarray, top: int, left: int, encode: bool,
                    distribution: str, record: bool = False) -> tuple[np.ndarray, Recorded | None] | None:
    """A tile of `distribution` (BLENDS) coded by the compiled kernels (codec/kernels.py) instead of the numpy
    coder, the same bits: popped into the frame `values` (C, H, W) (context filled in, tile zeros), or, with
    `encode`, the tile `values` holds pushed; its pixels returned, with what was pushed where `encode` and
    `record` (else None). None where the kernels are not to be used (the stack untouched)."""
    channels, height, width = values.shape
    count = channels * (height - top) * (width - left)  # values to code
    forms = stack.kernel_forms(count)
    if forms is None:
        return None
    parts = stack.raw_parts(room=count if encode else 0)  # a push writes at most one word per value
    try:
        frame, coded, position, head, _ = _kernel_tile(forms, values, top, left, encode, distribution, parts.buffer,
                                                        parts.length, parts.head, kernels.NO_ADAPTATION)
        if encode:
            position, head = forms["_push"](_blend_cumulative(distribution), coded[0], coded[1], parts.buffer,
                                            position, np.uint64(head))
    except Exception as error:  # noqa: BLE001 - numba's first-call compile failing on this platform
        kernels.disable(f"{type(error).__name__}: {error}", error)
        return None
    stack.set_raw_parts(RawParts(int(head), parts.buffer, position))
    recorded = None
    if encode and record:
        recorded = Recorded(distribution, coded[0].astype(np.int32), coded[1].astype(np.uint8))
    return _tile_of(frame, values, top, left), recorded


def _tile_of(frame: np.ndarray, values: np.ndarray, top: int, left: int) -> np.ndarray:
    """The tile's pixels (C, h, w) uint8 of a kernel's frame (C, M + 1) of the frame `values` (C, H, W)."""
    return frame[:, :-1].reshape(values.shape)[:, top:, left:].astype(np.uint8)


def _kernel_tile(forms: dict, values: np.ndarray, top: int, left: int, encode: bool, distribution: str,
                 words: np.ndarray, length: int, head: int, adaptive: np.ndarray,
                 refinement: Refinement | None = None):
    """One tile of `distribution` (BLENDS or STATEFUL) through `forms["_code_tile"]` (codec/kernels.py): popped
    from the stack (`words`, its bulk's `length`, `head`) into the frame `values` (C, H, W) (context filled in,
    tile zeros), or with `encode` the values `values` holds taken (nothing pushed). `adaptive`: a STATEFUL
    distribution's statistics (AdaptiveState.sums), updated in place, or kernels.NO_ADAPTATION; `refinement`:
    REFINEMENTS' model, updated in place. (The kernel's frame (C, M + 1), each value's (table row, value) in pop
    order (2, N) where `encode`, the stack's bulk length and head, and REFINEMENTS' decisions (2, D) where `encode`,
    else None.)"""
    channels, height, width = values.shape
    count = channels * (height - top) * (width - left)  # values to code
    least_squares = distribution in LEAST_SQUARES_KINDS
    cascade = distribution in CASCADES
    extra = kernels.LS_BLENDED if least_squares else 0
    frame, errors, residuals = _blend_frames(values, BLEND_PREDICTORS + extra, signed=distribution in STAGES)
    moments = _zeroed_moments(kernels.LS_RING * width, channels, cascade) if least_squares else kernels.NO_MOMENTS
    positions, fronts = (_raster_pop_order if cascade else _blend_pop_order)(height, width, top, left)
    known, known_fronts = _context_order(height, width, top, left)
    sources, around = _gather_plan(height, width)
    tables = _table_distribution(distribution)
    edges = _blend_edges(tables)
    # A refined tile's values are decided bit by bit (and its rest coded from the tables' masses), never popped with
    # the table rows' cumulatives: those are not built for it (PHOTO's are 43 MB, ~0.05-0.15 s of a decode's CPU).
    cumulative = _NO_CUMULATIVE if refinement is not None else _blend_cumulative(tables)
    bins = FITTED_BINS if tables in TABLE_SETS else 1
    coded = np.empty((2, count if encode else 0), dtype=np.int64)  # (table row, value) per value, in pop order
    if distribution in (SMALL, PHOTO) + REFINEMENTS:
        numbers = SMALL_PROFILE if distribution in SMALL_PROFILES else PHOTO_PROFILE
    elif distribution == STAGED:
        numbers = staged_profile()
    else:
        std_weights, diagonal, floor = ((_CASCADE_STD_WEIGHTS, CASCADE_ERROR_DIAGONAL, CASCADE_ERROR_FLOOR) if cascade
                                        else (_BLEND_STD_WEIGHTS, BLEND_ERROR_DIAGONAL, BLEND_ERROR_FLOOR))
        numbers = Profile(kernels.ADAPT_TUNING, kernels.CASCADE_TUNING if cascade else kernels.NO_CASCADE,
                          kernels.WIDE_FAR if distribution == WIDE else kernels.NO_FAR, kernels.NO_STAGES,
                          std_weights, diagonal, floor)

    refine = kernels.NO_REFINEMENT
    used = np.zeros(1, np.int64)
    if refinement is not None:
        prefix, stretch, reciprocal = _refine_tables(tables)
        # each value at most 2 + REFINE_MAGNITUDES decisions and its rest
        record = np.empty((2, count * (3 + kernels.REFINE_MAGNITUDES) if encode else 0), np.int32)
        refine = (prefix, refinement.counters, refinement.weights, refinement.maps,
                  np.zeros((channels, height * width + 1), np.int64), record)
    else:
        stretch = reciprocal = kernels.NO_REFINE_TABLE

    def run(frame_, positions_, fronts_, coded_, encode_, adaptive_, refine_):
        return forms["_code_tile"](
            frame_, errors, residuals, positions_, fronts_, sources, around, numbers.std_weights, _BLEND_GAINS,
            numbers.diagonal, numbers.floor, edges, cumulative, _LEVELS, bins, words, length, np.uint64(head), coded_,
            encode_, adaptive_, numbers.adapt, numbers.cascade, distribution in PARITIES, numbers.far, numbers.staged,
            moments, width, *refine_, used, stretch, reciprocal)

    if len(known):
        # The context's errors and residuals (_blend_context's), its values taken as they are, in a frame whose
        # tile is zeros (the decoder's): a context pixel at the left edge has a tile pixel as its above-right
        # neighbour. Wavefront by wavefront, each reads only the context before it, as computing them all at
        # once does. No statistics change: the context's values were coded (and counted) with their own tiles.
        masked = frame
        if encode:
            masked = frame.copy()
            masked[:, positions] = 0.0
        run(masked, known, known_fronts, np.empty((2, channels * len(known)), dtype=np.int64), True,
            kernels.NO_ADAPTATION, kernels.NO_REFINEMENT)
    position, head = run(frame, positions, fronts, coded, encode, adaptive, refine)
    decisions = refine[5][:, : used[0]].copy() if refinement is not None and encode else None
    return frame, coded, position, head, decisions


_scratch = threading.local()  # each thread's buffer for LEAST_SQUARES's running sums
# _kernel_tile's cumulatives for a refined tile, which reads none: read-only int32 as _blend_cumulative's (numba types a
# writable array apart, and would compile _code_tile again for it)
_NO_CUMULATIVE = np.zeros((0, _LEVELS + 1), np.int32)
_NO_CUMULATIVE.flags.writeable = False


def _zeroed_moments(positions: int, channels: int, columns: bool) -> np.ndarray:
    """LEAST_SQUARES's running sums of a tile, zeros (positions: kernels.LS_RING rows of the frame; the channels'
    LS_MOMENTS side by side, and with `columns` (the cascade's) their column sums after them, see kernels.LS_RING): a
    view of this thread's buffer, kept from tile to tile for the thread's life (a 128x128 colour tile's is 3.3 MB,
    the cascade's 6.6 MB)."""
    width = sum(kernels.LS_MOMENTS[min(c, 2)] for c in range(channels)) * (2 if columns else 1)
    buffer = getattr(_scratch, "moments", None)
    if buffer is None or buffer.size < positions * width:
        buffer = _scratch.moments = np.empty(positions * width)
    moments = buffer[: positions * width].reshape(positions, width)
    moments.fill(0.0)
    return moments


_BLEND_STD_WEIGHTS = np.array(BLEND_STD_WEIGHTS)  # (2, 6)
_BLEND_GAINS = np.array([BLEND_GAIN_PREVIOUS, BLEND_GAIN_FIRST])
# CASCADE's std weights (BLEND_STD_WEIGHTS's terms) and the blend's error floor and diagonal share, chosen with
# kernels.CASCADE_TUNING (see "the cascade" there).
CASCADE_STD_WEIGHTS = ((0.935, 0.265, 0.407, 0.192, 0.0, 0.0), (0.341, 0.0, 0.68, 0.167, 0.146, 0.065))
CASCADE_ERROR_DIAGONAL, CASCADE_ERROR_FLOOR = 0.625, 1.6875
_CASCADE_STD_WEIGHTS = np.array(CASCADE_STD_WEIGHTS)  # (2, 6)
for _array in (_BLEND_STD_WEIGHTS, _BLEND_GAINS, _CASCADE_STD_WEIGHTS):
    _array.flags.writeable = False


@dataclass(frozen=True)
class Profile:
    """A cascade's free numbers, as codec/kernels.py's _code_tile takes them: the adaptive contexts' tuning (5,: as
    kernels.ADAPT_TUNING), the cascade's (6,: CASCADE_TUNING), the blends' shares of the errors two away (2,:
    WIDE_FAR), the staged cascade's (4,: STAGED_TUNING), the std weights (2, 6) and the blend's error diagonal
    share and floor."""

    adapt: np.ndarray
    cascade: np.ndarray
    far: np.ndarray
    staged: np.ndarray
    std_weights: np.ndarray
    diagonal: float
    floor: float


def _frozen(profile: Profile) -> Profile:
    """A profile whose arrays are read-only (shared by every coding)."""
    for array in (profile.adapt, profile.cascade, profile.far, profile.staged, profile.std_weights):
        array.flags.writeable = False
    return profile


def staged_profile() -> Profile:
    """STAGED's numbers (format 15's, and format 16's sections'), from which the other profiles were searched: read
    from codec/kernels.py's constants at each call, where scripts put others in place while they search them."""
    return Profile(kernels.ADAPT_TUNING, kernels.CASCADE_TUNING, kernels.WIDE_FAR, kernels.STAGED_TUNING,
                   _CASCADE_STD_WEIGHTS, CASCADE_ERROR_DIAGONAL, CASCADE_ERROR_FLOOR)


# ---------------------------------------------------------------------------------------------- the small-image profile
#
# SMALL (format 19) is STAGED with other numbers, other residual tables and its channels coded last first (blue, green,
# red), all chosen on Imagenette's training thumbnails (32x32, never its validation images): the numbers by coordinate
# descent from STAGED's on every 23rd thumbnail as one stream, the tables fitted on every third with those numbers
# (`python scripts/small_profile.py`). On small images whose statistics run over many of them (an archive of
# thumbnails) SMALL codes for about 1 % less than STAGED; on photographs it codes for more. The encoder prices a
# stream of small images' sections both ways and keeps the cheaper for each (codec/bitsback.py: price_sections).
SMALL_PROFILE = _frozen(Profile(
    adapt=np.array([149.0, 19.5, 0.651, 0.469, 3.3]),
    cascade=np.array([0.118, 0.33, 0.138, 0.17, 0.884, 0.553]),
    far=np.array([0.446, 0.5]),
    staged=np.array([0.085, 0.47, 1.14, 0.598]),
    std_weights=np.array([[1.54, 0.368, 0.635, 0.221, 0.0, 0.0], [0.648, 0.0, 0.668, 0.346, 0.102, 0.0494]]),
    diagonal=0.625,
    floor=3.1,
))


# ------------------------------------------------------------------------------------------- the photograph profile
#
# PHOTO (format 20) is STAGED with other numbers and other residual tables. STAGED's numbers were chosen a few at a
# time as its stages came (formats 12 to 15, each on tiles of 128 or one chain, the others held); PHOTO's were chosen
# again all together by coordinate descent from STAGED's on every 13th of photos_train's training photographs (23),
# each as one section, as format 16 codes it, and its tables fitted for them on every training photograph
# (`python scripts/photo_profile.py`; never on a benchmark set). The encoder codes the sections of a stream of images
# of PHOTO_PROFILE_VALUES values or more each by PHOTO (or, below SMALL_PROFILE_VALUES, by SMALL where that codes a
# section in fewer words: codec/bitsback.py, sections_kinds).
PHOTO_PROFILE = _frozen(Profile(
    adapt=np.array([119.0, 14.9, 0.7, 0.196, 2.93]),
    cascade=np.array([0.286, 0.63, 0.24, 0.351, 1.35, 0.625]),
    far=np.array([0.65, 0.65]),
    staged=np.array([0.1, 0.585, 1.35, 0.52]),
    std_weights=np.array([[1.22, 0.265, 0.37, 0.192, 0.0, 0.0], [0.488, 0.0, 0.476, 0.167, 0.12, 0.0455]]),
    diagonal=0.625,
    floor=2.41,
))


@functools.lru_cache(maxsize=64)
def _blend_pop_order(height: int, width: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """The tile's flat positions, wavefront after wavefront (P,), and where each wavefront starts (F + 1,),
    for the compiled kernels (read-only)."""
    return _flat_fronts([at for at, _, _ in _blend_wavefronts(height, width, top, left)])


@functools.lru_cache(maxsize=64)
def _raster_pop_order(height: int, width: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """CASCADE's pop order: the tile's flat positions in raster order (P,), each a wavefront of its own (P + 1,)
    (read-only)."""
    ys, xs = np.mgrid[top:height, left:width]
    positions = (ys * width + xs).reshape(-1).astype(np.int64)
    starts = np.arange(len(positions) + 1, dtype=np.int64)
    for array in (positions, starts):
        array.flags.writeable = False
    return positions, starts


@functools.lru_cache(maxsize=64)
def _context_order(height: int, width: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """The context's flat positions of a (height, width) frame (its first `top` rows and `left` columns),
    wavefront after wavefront of the whole frame (P,), and where each wavefront starts (F + 1,) (read-only)."""
    known = _context_mask(height, width, top, left)
    fronts = (ys * width + xs for ys, xs in _wavefronts(height, width))
    return _flat_fronts([at[known[at]] for at in fronts])


def _flat_fronts(fronts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Wavefronts of flat positions as the kernels take them: all positions in order (P,) and where each
    wavefront starts (F + 1,), read-only (an empty wavefront is an empty range)."""
    positions = np.concatenate(fronts) if fronts else np.zeros(0, dtype=np.int64)
    starts = np.cumsum([0] + [len(at) for at in fronts])
    for array in (positions, starts):
        array.flags.writeable = False
    return positions, starts


@functools.lru_cache(maxsize=None)  # one entry per TABLE_LEVELS value
def _every_cumulative(first: int, count: int) -> np.ndarray:
    """constriction's left cumulative frequencies of every row of _every_table (count * 256, 257), read-only:
    what the compiled kernels code with."""
    cumulative = kernels.left_cumulatives(_every_table(first, count)[0].rows)
    cumulative.flags.writeable = False
    return cumulative


def _blend_context(frame, errors, residuals, height: int, width: int, top: int, left: int) -> None:
    """Fill in the errors and residuals of the context's positions (its row above and column left of the tile,
    where it has them), computed in one go from `frame` with every tile value 0: what the decoder has before it
    pops the tile (a context pixel at the left edge has a tile pixel as its above-right neighbour), so encoder
    and decoder compute the same. Their means and stds are not wanted."""
    if not (top or left):
        return
    known = _context_mask(height, width, top, left)
    masked = frame.copy()
    masked[:, :-1][:, ~known] = 0.0  # the decoder's frame: no-op there
    at = np.flatnonzero(known)
    sources, around = _gather_plan(height, width)
    _blend_positions(masked, errors, residuals, at, sources[:, at], around[:, at])


def _context_mask(height: int, width: int, top: int, left: int) -> np.ndarray:
    """(H * W,) bool: the flat positions of a (height, width) frame that its first `top` rows and `left`
    columns (the context) hold."""
    known = np.zeros((height, width), dtype=bool)
    known[:top], known[:, :left] = True, True
    return known.reshape(-1)


def _blend_frames(values: np.ndarray, predictors: int = BLEND_PREDICTORS,
                  signed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame (C, H, W) flattened with one more cell, NEUTRAL, that missing neighbours read: (C, H * W + 1);
    and zeroed errors (K, C, H * W + 1) and residuals (C, H * W + 1), whose extra cell (0) missing neighbours read;
    with `signed` (STAGED's) residuals (2C, H * W + 1), the signed ones after them."""
    channels = values.shape[0]
    frame = np.concatenate([values.reshape(channels, -1), np.full((channels, 1), NEUTRAL)], axis=1)
    return frame, np.zeros((predictors, *frame.shape)), np.zeros(((2 if signed else 1) * channels, frame.shape[1]))


@functools.lru_cache(maxsize=64)
def _gather_plan(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For every flat position y * width + x of a (height, width) frame, the flat indices (4, H * W) of its
    neighbours a, b, c, d under _neighbours' rules for missing ones (H * W, the extra cell, where none is left:
    NEUTRAL), and of its left, above, above-left and above-right neighbours (4, H * W) (the extra cell, 0, where
    one is outside the frame). Read-only, kept for the next tile of this size."""
    ys, xs = _all_positions(height, width)
    missing = height * width
    has_up, has_left, has_right = ys > 0, xs > 0, xs < width - 1
    left = np.where(has_left, ys * width + xs - 1, missing)
    up = np.where(has_up, (ys - 1) * width + xs, missing)
    up_left = np.where(has_up & has_left, (ys - 1) * width + xs - 1, missing)
    up_right = np.where(has_up & has_right, (ys - 1) * width + xs + 1, missing)
    a = np.where(has_left, left, np.where(has_up, up, missing))
    b = np.where(has_up, up, a)
    c = np.where(has_up & has_left, up_left, b)
    d = np.where(has_up & has_right, up_right, b)
    plan = np.stack([a, b, c, d]), np.stack([left, up, up_left, up_right])
    for array in plan:
        array.flags.writeable = False
    return plan


@functools.lru_cache(maxsize=64)
def _blend_wavefronts(height: int, width: int, top: int, left: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per wavefront of the tile at (top, left) of a (height, width) frame: its flat positions (N,) and their
    _gather_plan columns (4, N) each (read-only, kept for the next tile of this shape and context)."""
    sources, around = _gather_plan(height, width)
    fronts = []
    for ys, xs in _wavefronts(height - top, width - left):
        at = (ys + top) * width + xs + left
        fronts.append((at, sources[:, at], around[:, at]))
    for array in (a for front in fronts for a in front):
        array.flags.writeable = False
    return tuple(fronts)


def _sub_predictions(frame: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each predictor's value (K, C, N) and the activity (C, N) from the neighbours a, b, c, d at `sources`
    (4, N) of `frame` (C, H * W + 1)."""
    gathered = frame[:, sources]  # (C, 4, N)
    a, b, c, d = gathered[:, 0], gathered[:, 1], gathered[:, 2], gathered[:, 3]  # (C, N) each
    activity = (np.abs(a - c) + np.abs(b - c) + np.abs(b - d)) / 3.0
    subs = np.stack([_median_edge(a, b, c), a + b - c, a + d - b, (a + b) / 2.0, (a + d) / 2.0, a, b])
    return subs, activity


def _blend(subs: np.ndarray, errors: np.ndarray, around: np.ndarray) -> np.ndarray:
    """The predictors' values (K, C, N) blended (C, N), each weighted by 1 / (its errors (K, C, H * W + 1) at
    the neighbours `around` (4, N) + floor)**2."""
    gathered = errors[:, :, around]  # (K, C, 4, N)
    left, up, up_left, up_right = gathered[:, :, 0], gathered[:, :, 1], gathered[:, :, 2], gathered[:, :, 3]
    spread = left + up + BLEND_ERROR_DIAGONAL * (up_left + up_right) + BLEND_ERROR_FLOOR
    weights = 1.0 / (spread * spread)
    # Running sums over k = 0 up (accumulate adds each term to the sum before it): one fixed order of additions.
    total = np.add.accumulate(weights, axis=0)[-1]
    weighted = np.add.accumulate(weights * subs, axis=0)[-1]
    return weighted / total


def _blend_mean(spatial: np.ndarray, channel: int, here: np.ndarray) -> np.ndarray:
    """Mean (N,) of `channel` from the blends (C, N) and the values of the earlier channels here (C, N), in
    [0, 255], unrounded: BLEND's tables round it (_rounded), FITTED's take its quarter too."""
    mean = spatial[channel]
    if channel == 1:
        mean = mean + (here[0] - spatial[0])
    elif channel > 1:
        mean = mean + (BLEND_GAIN_PREVIOUS * (here[channel - 1] - spatial[channel - 1])
                       + BLEND_GAIN_FIRST * (here[0] - spatial[0]))
    return np.minimum(np.maximum(mean, 0.0), 255.0)


def _rounded(mean: np.ndarray) -> np.ndarray:
    """The integer mean of a blend's mean in [0, 255]: the table row's centre, and what residuals are taken from."""
    return np.floor(mean + 0.5)


def _blend_std_base(activity: np.ndarray, near: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """The std's terms that do not wait for the earlier channels, every channel at once (C, N): w0 + w1
    activity + w2 near + w3 diagonal, each channel with its class's weights, added in that order."""
    w = _std_weight_columns(len(activity))
    return w[0] + w[1] * activity + w[2] * near + w[3] * diagonal


@functools.lru_cache(maxsize=8)
def _std_weight_columns(channels: int) -> np.ndarray:
    """BLEND_STD_WEIGHTS per channel: (6, C, 1), channel 0 the first class's, the others the second's."""
    columns = np.array([BLEND_STD_WEIGHTS[min(channel, 1)] for channel in range(channels)]).T[:, :, None]
    columns.flags.writeable = False
    return columns


def _blend_std(base: np.ndarray, channel: int, prior: np.ndarray) -> np.ndarray:
    """Std (N,) of `channel`'s residual from its _blend_std_base row; `prior` (C, N) holds the earlier
    channels' residuals here."""
    w = BLEND_STD_WEIGHTS[min(channel, 1)]
    std = base[channel]
    if channel > 0:
        std = std + w[4] * prior[channel - 1]
    if channel > 1:
        std = std + w[5] * prior[0]
    return std


def _residual_terms(residuals: np.ndarray, around: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left + above) / 2 and (above-left + above-right) / 2 of the residuals (C, H * W + 1) at `around` (4, N),
    (C, N) each."""
    gathered = residuals[:, around]  # (C, 4, N)
    left, up, up_left, up_right = gathered[:, 0], gathered[:, 1], gathered[:, 2], gathered[:, 3]
    return (left + up) / 2.0, (up_left + up_right) / 2.0
