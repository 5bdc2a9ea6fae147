"""The float network's estimate of tiles' costs, computed with numpy from the weights file: no torch.

The default compress first prices a sample of each image's tiles (vaezip/archive.py `_price_sample`, the early
exit), and on most photographs that is all the model does: the sample rules it out against the predictor's
stream, and the file is that stream. Priced by torch, the sample cost the import of torch (1.2-2 s on the 2-core
machine), longer than everything else in the command; here it is the same negative ELBO (one posterior sample:
each latent group's KL in closed form, plus the mixture's NLL of the valid pixels) in float32 numpy, beside
the predictor's stream rather than before it. Like every estimate it only chooses (whether the model runs, and
which tiles it codes) and is reported with a "~"; no decoder computes it, so it needs no exactness, only accuracy:
on kodim23's 48-tile sample it is within a posterior sample's noise of torch's (tests/test_estimate.py holds the
two to each other at the posterior means).

It covers the networks the zoo ships: Gaussian latent groups (absolute or residual posteriors), the discretized
logistic mixture (channels coupled or not), no pixel context, no binary or global latents. `unsupported` names
what a model has beyond that; such a model is priced by torch as before.

Activations are channels-last (B, H, W, C), so that a convolution is one matrix product over its im2col rows
(the weights are rearranged once, at loading), in batches of BATCH_PIXELS whose rows stay in cache."""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from codec.tiling import ceil_to, shape_batches
from vaezip.config import ModelConfig, mixture_param_count
from vaezip.errors import CheckpointError
from vaezip.process_settings import blas_threads

__all__ = ["BATCH_PIXELS", "NumpyEstimator", "unsupported"]

LN2 = math.log(2.0)
# torch's softplus returns x itself where beta * x exceeds this (F.softplus's default threshold)
SOFTPLUS_THRESHOLD = 20.0
# As vaezip/model/likelihood.py's HALF_BIN and MIN_LOG_SCALE (a test holds them equal; that module imports torch)
HALF_BIN = 1.0 / 255.0
MIN_LOG_SCALE = -7.0
# Pixels per batch: 8 tiles of 32x32 (kodim23's sample of 48, 2-core EPYC: 0.37 s in batches of 8, 0.47 s in one)
BATCH_PIXELS = 8 * 32 * 32
# A matrix product's rows per BLAS call, each call on one BLAS thread, the calls shared among threads of this
# process: the figures are those of these calls whatever the count of threads. OpenBLAS on several threads sums
# otherwise than on one with some kernels (its Haswell ones, which AMD's Zen cores take: kodim23's tiles moved in
# their eighth digit), and the early exit's count follows what else runs (archive._price_sample).
ROWS_PER_PRODUCT = 2048


def unsupported(config: ModelConfig) -> str | None:
    """What of `config` this estimator does not compute (None: it computes the whole bound)."""
    if config.likelihood != "logistic-mixture":
        return f"the {config.likelihood} likelihood"
    if config.pixel_context:
        return "a pixel context"
    if config.binary_groups:
        return "binary latent groups"
    if config.global_latents:
        return "global latents"
    return None


def _layout(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the network (vaezip/model/vae.py's modules) and its shape, for `config`."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, outputs: int, inputs: int, kernel: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (outputs, inputs, kernel, kernel), (outputs,)

    stages, factor = config.stages, config.stem_factor
    conv("encoder.stem", stages[0].width, config.image_channels * factor * factor, 3)
    for s, stage in enumerate(stages):
        for block in range(stage.encoder_blocks):
            conv(f"encoder.stages.{s}.{block}.conv_in", stage.width, stage.width, 3)
            conv(f"encoder.stages.{s}.{block}.conv_out", stage.width, stage.width, 3)
        if s + 1 < len(stages):
            conv(f"encoder.downsamples.{s}", stages[s + 1].width, stage.width, 2)
            conv(f"decoder.upsamples.{s}", stage.width, stages[s + 1].width, 1)
    shapes["decoder.initial"] = (1, stages[-1].width, 1, 1)
    block = 0
    for stage in reversed(stages):
        width, latents = stage.width, stage.latent_channels
        for _ in range(stage.latent_groups):
            name = f"decoder.blocks.{block}"
            conv(f"{name}.prior_head", 2 * latents + width, width, 3)
            conv(f"{name}.posterior_head", 2 * latents, 2 * width, 3)
            conv(f"{name}.latent_projection", width, latents, 1)
            conv(f"{name}.residual.conv_in", width, width, 3)
            conv(f"{name}.residual.conv_out", width, width, 3)
            block += 1
    params = mixture_param_count(config.image_channels, config.num_mixtures, config.channel_coupling)
    shapes["decoder.head.weight"], shapes["decoder.head.bias"] = (stages[0].width, params, factor, factor), (params,)
    return shapes


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _softplus_ln2(x: np.ndarray) -> np.ndarray:
    """softplus with beta = ln 2 (vaezip/model/layers.py SOFTPLUS_BETA): log2(1 + 2**x)."""
    scaled = x * LN2
    return np.where(scaled > SOFTPLUS_THRESHOLD, x,
                    np.log1p(np.exp(np.minimum(scaled, SOFTPLUS_THRESHOLD))) / LN2).astype(np.float32)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.float32(0.0), x)


class NumpyEstimator:
    """A HierarchicalVAE's estimate pass (vaezip/coding.py tile_bounds with estimate=True) from its tensors."""

    def __init__(self, config: ModelConfig, tensors: dict[str, np.ndarray]):
        problem = unsupported(config)
        if problem is not None:
            raise ValueError(f"the numpy estimator does not compute {problem}")
        layout = _layout(config)
        found = {name: tuple(array.shape) for name, array in tensors.items()}
        if found != layout:
            wrong = sorted(set(found) ^ set(layout)) or sorted(k for k in layout if found[k] != layout[k])
            raise ValueError(f"the weights do not fit the config ({', '.join(wrong[:3])})")
        # .sharing: the threads the products of the batch this thread prices are shared among (_product; None: none)
        self._batch = threading.local()
        self.config = config
        # name -> (matrix (k * k * C_in, C_out) in im2col order (row, column, channel), bias (C_out,), k)
        self._convs: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        for key, shape in layout.items():
            name = key[: -len(".weight")]
            if not key.endswith(".weight") or name == "decoder.head":
                continue
            outputs, inputs, kernel, _ = shape
            matrix = tensors[key].astype(np.float32).transpose(2, 3, 1, 0).reshape(kernel * kernel * inputs, outputs)
            self._convs[name] = (np.ascontiguousarray(matrix), tensors[f"{name}.bias"].astype(np.float32), kernel)
        head = tensors["decoder.head.weight"].astype(np.float32)  # C_in, P, f, f
        self._head = (np.ascontiguousarray(head.reshape(head.shape[0], -1)),
                      tensors["decoder.head.bias"].astype(np.float32))
        self._initial = tensors["decoder.initial"].astype(np.float32).reshape(-1)  # W_last

    @classmethod
    def from_file(cls, path: str | Path, sha256: str, config: ModelConfig) -> NumpyEstimator | None:
        """The estimator of a weights file whose sha256 a manifest records (checked before anything is parsed;
        safetensors executes no code), or None where numpy does not hold its tensors as they are (bfloat16, say,
        which torch's loader reads; that loader also names whatever else is wrong with the file)."""
        from safetensors.numpy import load

        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"cannot read {path.name}: {error.strerror or error}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CheckpointError(
                f"{path.name}: sha256 {actual[:16]}... does not match the manifest's {sha256[:16]}...")
        try:
            tensors = load(data)
        except Exception:  # noqa: BLE001 - a dtype numpy lacks, or a damaged file: safetensors raises several types
            return None
        if not all(np.issubdtype(array.dtype, np.floating) for array in tensors.values()):
            return None
        try:
            return cls(config, tensors)
        except ValueError:  # tensors that do not fit the config
            return None

    @classmethod
    def from_model(cls, model) -> NumpyEstimator | None:
        """The estimator of a model loaded already (a HierarchicalVAE): its weights as it holds them, so that it
        prices what it codes; None where numpy does not compute its network."""
        tensors = {name: value.detach().cpu().float().numpy() for name, value in model.state_dict().items()}
        try:
            return cls(model.config, tensors)
        except ValueError:
            return None

    # ------------------------------------------------------------------------------------------------ network

    def _conv(self, x: np.ndarray, name: str) -> np.ndarray:
        """x (B, H, W, C_in) -> (B, H', W', C_out): 3x3 (padding 1), 2x2 (stride 2) or 1x1, as the model's."""
        matrix, bias, kernel = self._convs[name]
        batch, height, width, channels = x.shape
        if kernel == 1:
            rows = x.reshape(-1, channels)
        elif kernel == 2:  # stride 2: each output's 2x2 window, (row, column, channel) as the matrix's rows
            height, width = height // 2, width // 2
            rows = x.reshape(batch, height, 2, width, 2, channels).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 4 * channels)
        else:
            padded = np.zeros((batch, height + 2, width + 2, channels), np.float32)
            padded[:, 1:-1, 1:-1] = x
            columns = np.empty((batch, height, width, 3, 3, channels), np.float32)
            for i in range(3):
                for j in range(3):
                    columns[:, :, :, i, j] = padded[:, i : i + height, j : j + width]
            rows = columns.reshape(-1, 9 * channels)
        out = self._product(rows, matrix)
        out += bias
        return out.reshape(batch, height, width, -1)

    def _product(self, rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """rows (N, K) @ matrix (K, M), float32, as ROWS_PER_PRODUCT-row calls (shared among the batch's threads,
        where it has several)."""
        if len(rows) <= ROWS_PER_PRODUCT:
            return rows @ matrix
        out = np.empty((len(rows), matrix.shape[1]), np.float32)
        starts = range(0, len(rows), ROWS_PER_PRODUCT)

        def product(start: int) -> None:
            np.matmul(rows[start : start + ROWS_PER_PRODUCT], matrix, out=out[start : start + ROWS_PER_PRODUCT])

        sharing = getattr(self._batch, "sharing", None)
        if sharing is None:
            for start in starts:
                product(start)
        else:
            for _ in sharing.map(product, starts):
                pass
        return out

    def _residual(self, x: np.ndarray, name: str) -> np.ndarray:
        return x + self._conv(_silu(self._conv(_silu(x), f"{name}.conv_in")), f"{name}.conv_out")

    def _bound_bits(self, pixels: np.ndarray, mask: np.ndarray, rng) -> np.ndarray:
        """pixels (B, C, H, W) uint8 (H and W multiples of the stride), mask (B, H, W) of the valid ones -> (B,)
        the negative ELBO in bits at one posterior sample (rng.standard_normal draws it)."""
        config = self.config
        batch, channels, height, width = pixels.shape
        factor, stages = config.stem_factor, config.stages
        unit = (pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(0, 2, 3, 1)  # B, H, W, C
        # pixel_unshuffle's channel order (channel, row, column) on a channels-last grid
        x = unit.reshape(batch, height // factor, factor, width // factor, factor, channels)
        x = x.transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // factor, width // factor, -1)
        h = self._conv(x, "encoder.stem")
        activations = []  # one per stage, highest resolution first: B, H_s, W_s, width_s
        for s, stage in enumerate(stages):
            for block in range(stage.encoder_blocks):
                h = self._residual(h, f"encoder.stages.{s}.{block}")
            activations.append(h)
            if s + 1 < len(stages):
                h = self._conv(h, f"encoder.downsamples.{s}")
        low_height, low_width = activations[-1].shape[1:3]
        h = np.broadcast_to(self._initial, (batch, low_height, low_width, len(self._initial))).copy()
        kl = np.zeros(batch)
        stage_now, block = len(stages) - 1, 0
        for s in reversed(range(len(stages))):
            for _ in range(stages[s].latent_groups):
                while stage_now > s:  # nearest upsampling, then the 1x1 convolution
                    stage_now -= 1
                    h = self._conv(h.repeat(2, axis=1).repeat(2, axis=2), f"decoder.upsamples.{stage_now}")
                name, z = f"decoder.blocks.{block}", stages[s].latent_channels
                out = self._conv(_silu(h), f"{name}.prior_head")  # B, h, w, 2z + width
                prior_mean, prior_std = out[..., :z], _softplus_ln2(out[..., z : 2 * z]) + np.float32(config.min_std)
                feature = out[..., 2 * z :]
                post = self._conv(_silu(np.concatenate([h, activations[s]], axis=-1)), f"{name}.posterior_head")
                if config.residual_posterior:
                    post_mean = prior_mean + post[..., :z]
                    post_std = np.maximum(prior_std * _softplus_ln2(post[..., z:]), np.float32(config.min_std))
                else:
                    post_mean, post_std = post[..., :z], _softplus_ln2(post[..., z:]) + np.float32(config.min_std)
                latent = post_mean + post_std * rng.standard_normal(post_mean.shape, dtype=np.float32)
                group = (np.log(prior_std / post_std) + (post_std**2 + (post_mean - prior_mean) ** 2)
                         / (2 * prior_std**2) - 0.5)  # B, h, w, z: KL(q || p) in nats
                kl += group.reshape(batch, -1).sum(1, dtype=np.float64)
                h = self._residual(h + feature + self._conv(latent, f"{name}.latent_projection"), f"{name}.residual")
                block += 1
        while stage_now > 0:
            stage_now -= 1
            h = self._conv(h.repeat(2, axis=1).repeat(2, axis=2), f"decoder.upsamples.{stage_now}")
        matrix, bias = self._head  # the stride-f transposed convolution: each input position gives f x f outputs
        params = self._product(h.reshape(-1, h.shape[-1]), matrix).reshape(batch, height // factor, width // factor,
                                                                             -1, factor, factor)
        params = params.transpose(0, 1, 4, 2, 5, 3).reshape(batch, height, width, -1) + bias  # B, H, W, P
        nll = -(self._log_probs(params, pixels.transpose(0, 2, 3, 1), unit) * mask).reshape(batch, -1).sum(
            1, dtype=np.float64)
        return (kl + nll) / LN2

    def _log_probs(self, params: np.ndarray, pixels: np.ndarray, unit: np.ndarray) -> np.ndarray:
        """The mixture's log-probability (nats) of each pixel (B, H, W) (vaezip/model/likelihood.py LogisticMixture
        log_prob): params (B, H, W, P), pixels (B, H, W, C) 0..255, unit the same in [-1, 1]."""
        k, channels = self.config.num_mixtures, self.config.image_channels
        coupled = self.config.channel_coupling and channels == 3
        shape = (*params.shape[:3], k, channels)
        logits = params[..., :k]  # B, H, W, K
        means = params[..., k : k + k * channels].reshape(shape)
        log_scales = np.maximum(params[..., k + k * channels : k + 2 * k * channels].reshape(shape), MIN_LOG_SCALE)
        coeffs = np.tanh(params[..., k + 2 * k * channels :].reshape(*shape[:4], 3)) if coupled else None
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_weights = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # B, H, W, K
        with np.errstate(over="ignore", invalid="ignore"):
            for c in range(channels):
                mean = means[..., c]
                if coeffs is not None and c == 1:
                    mean = mean + coeffs[..., 0] * unit[..., 0:1]
                elif coeffs is not None and c == 2:
                    mean = mean + coeffs[..., 1] * unit[..., 0:1] + coeffs[..., 2] * unit[..., 1:2]
                inverse_scale = np.exp(-log_scales[..., c])
                centred = unit[..., c : c + 1] - mean
                value = pixels[..., c : c + 1]
                upper = np.where(value == 255, np.inf, inverse_scale * (centred + HALF_BIN)).astype(np.float32)
                lower = np.where(value == 0, -np.inf, inverse_scale * (centred - HALF_BIN)).astype(np.float32)
                gap = np.maximum(upper - lower, np.float32(1e-30))
                log_weights = log_weights + (-_softplus(-upper) - _softplus(lower) + np.log(-np.expm1(-gap)))
        top = log_weights.max(axis=-1, keepdims=True)
        return (top + np.log(np.exp(log_weights - top).sum(axis=-1, keepdims=True)))[..., 0]

    # ------------------------------------------------------------------------------------------------ tiles

    def tile_bounds(self, tiles: Sequence, seed: int = 0, rng=None,
                    threads: int | Callable[[], int | None] | None = None) -> list[float]:
        """The negative ELBO (bits, one posterior sample, valid pixels only) of each tile (codec/tiling.py Tile:
        padded pixels (C, H, W) and valid extent), in batches of equal padded shape. `rng` (numpy's Generator
        interface: standard_normal) draws the posterior samples; by default one seeded with `seed`. `threads`:
        the threads that share the matrix products (None: one), or what a function returns before each batch: the
        count never changes the figures (each product's rows go in calls of ROWS_PER_PRODUCT on one BLAS thread,
        threadpoolctl; a test holds the counts to each other)."""
        rng = np.random.default_rng(seed) if rng is None else rng
        # OpenBLAS's idle threads spin between products, and beside busy threads on a 2-core machine that costs them
        # a core (kodim23's compress, 2-core EPYC: the predictor's stream 1.6-1.9 s with two BLAS threads, 1.2-1.4 s
        # with one). silu's exp(-x) overflows to inf for a very negative x, where x / (1 + inf) is the right 0.
        threads_now = threads if callable(threads) else lambda: threads
        with np.errstate(over="ignore"):
            return self._tile_bounds(tiles, rng, threads_now)

    def _tile_bounds(self, tiles: Sequence, rng, threads_now: Callable[[], int | None]) -> list[float]:
        stride = self.config.stride
        bounds = [0.0] * len(tiles)
        with contextlib.ExitStack() as held, blas_threads(1):
            sharing = None
            for chosen in shape_batches(tiles, BATCH_PIXELS, stride):
                pixels = np.stack([tiles[k].pixels for k in chosen])  # B, C, H, W
                height, width = pixels.shape[2:]
                padded_height, padded_width = ceil_to(height, stride), ceil_to(width, stride)
                # Edge-replicated to the stride, those pixels not counted (vaezip/model/vae.py pad_to_stride)
                pixels = np.pad(pixels, ((0, 0), (0, 0), (0, padded_height - height), (0, padded_width - width)),
                                mode="edge")
                mask = np.zeros((len(chosen), padded_height, padded_width), np.float32)
                for row, k in enumerate(chosen):
                    valid_height, valid_width = tiles[k].valid
                    mask[row, :valid_height, :valid_width] = 1.0
                wanted = threads_now() or 1  # the caller's count (archive: bitsback.section_workers, the cores)
                if wanted > 1 and sharing is None:
                    sharing = held.enter_context(ThreadPoolExecutor(wanted, "vaezip-estimate"))
                self._batch.sharing = sharing if wanted > 1 else None
                try:
                    for k, bits in zip(chosen, self._bound_bits(pixels, mask, rng)):
                        bounds[k] = float(bits)
                finally:
                    self._batch.sharing = None
        return bounds
