"""The one bridge from the model (torch) to codec/ (numpy): implements codec.protocol.LatentModel.

Encoder and decoder must compute bit-identical distributions. Two ways, chosen by the file's format version:
- integer (format 2, what vaezip writes): model/integer.py computes every parameter and table exactly, so
  any machine, thread count, kernel or device gives the same bits (IntegerPass);
- float (format 1, still read): both sides run the same batches, the same kernels
  (deterministic algorithms, no TF32, no cuDNN autotuning, CODING_THREADS) and the pixel tables in the same
  row chunks, which holds only on the same kind of machine (TorchPass).
"""

from __future__ import annotations

import contextlib
import functools
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from codec.errors import CodingError
from codec.latents import LatentGrid, binary_kl_bits, gaussian_kl_bits
from codec.protocol import BinaryParams, LatentParams
from codec.tiling import Tile, shape_batches
from vaezip.evaluate import repeatable_sampling, valid_mask
from vaezip.model import HierarchicalVAE
from vaezip.model import kernels
from vaezip.model.estimator import bfloat16_estimator
from vaezip.model.integer import MEAN_LIMIT, ONE, IntegerVAE, fixed_to_float, latent_to_fixed
from vaezip.model.likelihood import OPTIMAL_SIGMA_CODES, optimal_log_sigma, optimal_sigma_codes
from vaezip.process_settings import cudnn_flags, torch_threads

# Rows of a tile batch whose probability tables are built at once: bounds the (B, K, rows, W, 256) temporary.
TABLE_ELEMENTS = 2**25
# oneDNN chooses its kernels by thread count: for batches of 1 to 3 tiles, 1 and 2 threads gave different
# floats (measured 2026-11-23, tiny and photo models), so a file coded on one machine failed to decode on
# another. Coding therefore runs on this many threads everywhere.
CODING_THREADS = 2
BOUND_BATCH_PIXELS = 2**16  # pixels per batch of TorchLatentModel.tile_bounds
# Pixels per chunk of integer tables: the torch form's (N, 256) temporaries stay in a CPU's caches; the
# compiled kernel has none of that size, and larger chunks spend less on per-call overhead; on a GPU every
# chunk is a dozen kernel launches and a copy to the host, so a chunk is a whole default batch (16 tiles of
# 32x32; its temporaries stay within a few hundred MB; not yet measured on a device).
INTEGER_TABLE_PIXELS = 1024
KERNEL_TABLE_PIXELS = 16384
DEVICE_TABLE_PIXELS = 16384


@contextmanager
def deterministic_kernels(pin_threads: bool = True):
    """Pin every setting that can change the floats between two runs of the same computation (the float path;
    the integer path needs none of it, and `pin_threads=False` leaves torch's thread count alone, changes made
    inside included: compress gives a thread back mid-coding).

    On CUDA: deterministic cuDNN kernels, no autotuning, no TF32. On the CPU, oneDNN computes fixed shapes
    deterministically for a fixed thread count (CODING_THREADS), while torch.use_deterministic_algorithms
    would switch it off (20x slower convolutions), so it is not used; the pixel checksum guards the result.
    """
    # torch's thread count in any thread, and cuDNN's flags, which calls in several threads share (process_settings.py)
    threads = contextlib.nullcontext() if not pin_threads else torch_threads(lambda host: CODING_THREADS)
    with threads, cudnn_flags().held(lambda host: (True, False, False, False)), torch.inference_mode():
        yield


def _to_numpy(tensor: torch.Tensor, batch: int) -> np.ndarray:
    return tensor.float().cpu().numpy().astype(np.float64).reshape(batch, -1)  # B, D


def _positions(order, phase: int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (n each, on the pixels' device) of the pixels of `phase`, in raster order: the
    order codec/pixels.py gives their tables in."""
    rows, columns = order.positions(phase, *pixels.shape[2:])
    return (torch.from_numpy(np.asarray(rows)).to(pixels.device), torch.from_numpy(np.asarray(columns)).to(pixels.device))


class TorchPass:
    """codec.protocol.ModelPass over one batch of tiles."""

    def __init__(self, model: HierarchicalVAE, device: torch.device, shape, pixels: np.ndarray | None):
        batch, _, height, width = shape
        self.model = model
        self.device = device
        self.batch = batch
        tensor = None if pixels is None else torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
        self.walk = model.walk(tensor, batch, height, width)
        self.num_groups = self.walk.num_groups
        self._latent_shape: torch.Size | None = None
        self._pixel_params: torch.Tensor | None = None
        # A context model codes its pixels phase by phase; one phase's refined parameters serve its channels.
        self.pixel_phases = None if model.context is None else model.context.order.phase_map(height, width)
        self._phase: int | None = None
        self._phase_params: torch.Tensor | None = None

    def latent_params(self, group: int) -> LatentParams:
        if group != self.walk.group:
            raise RuntimeError(f"latent_params({group}) called at group {self.walk.group}")
        step = self.walk.step()
        self._latent_shape = step.prior_mean.shape  # B, Z, h, w
        post_mean = post_std = None
        if step.post_mean is not None:
            post_mean, post_std = _to_numpy(step.post_mean, self.batch), _to_numpy(step.post_std, self.batch)
        return LatentParams(
            _to_numpy(step.prior_mean, self.batch), _to_numpy(step.prior_std, self.batch), post_mean, post_std
        )

    def set_latent(self, group: int, values: np.ndarray) -> None:
        latent = torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(self._latent_shape)).to(self.device)
        self.walk.advance(latent)
        if self.walk.group == self.num_groups:
            self._pixel_params = self.walk.pixel_params()  # B, P, H, W

    def pixel_table(
        self, channel: int, pixels: np.ndarray, phase: int | None = None, mask: np.ndarray | None = None
    ) -> np.ndarray:
        if self._pixel_params is None:
            raise RuntimeError("pixel_table before every latent group was set")
        if (phase is None) != (self.pixel_phases is None):
            raise RuntimeError("a context model's tables come by phase, and only a context model's do")
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        if phase is not None:
            return self._phase_table(channel, tensor, phase, mask)
        params = self._pixel_params
        batch, _, height, width = params.shape
        per_row = batch * self.model.config.num_mixtures * width * 256
        rows = max(1, TABLE_ELEMENTS // per_row)
        tables = np.empty((batch, height, width, 256), dtype=np.float32)
        for top in range(0, height, rows):
            chunk = self.model.likelihood.channel_table(
                params[:, :, top : top + rows], tensor[:, :, top : top + rows], channel
            )  # B, rows, W, 256
            tables[:, top : top + rows] = chunk.cpu().numpy()
        return tables

    def _phase_table(self, channel: int, pixels: torch.Tensor, phase: int, mask: np.ndarray) -> np.ndarray:
        rows, columns = _positions(self.model.context.order, phase, pixels)
        if channel == 0 or self._phase != phase:
            # Channel 0 comes first on both sides, before any pixel of this phase is known.
            valid = torch.from_numpy(np.ascontiguousarray(mask[:, None])).to(self.device, torch.float32)
            base = self._pixel_params[:, :, rows, columns].unsqueeze(2)  # B, P, 1, n
            self._phase_params = self.model.context.phase(base, pixels, valid, phase)
            self._phase = phase
        table = self.model.likelihood.channel_table(
            self._phase_params, pixels[:, :, rows, columns].unsqueeze(2), channel
        )  # B, 1, n, 256
        return table[:, 0].cpu().numpy()


class IntegerPass:
    """codec.protocol.ModelPass over one batch of tiles, through the integer-exact model."""

    exact_tables = True  # codec.protocol: every table row is integer frequencies / 2**24 in a fresh array

    def __init__(self, model: IntegerVAE, device: torch.device, shape, pixels: np.ndarray | None):
        batch, _, height, width = shape
        self.model, self.device, self.batch = model, device, batch
        tensor = None if pixels is None else torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
        self.walk = model.walk(tensor, batch, height, width)
        self.num_groups = self.walk.num_groups
        # A context model codes its pixels phase by phase; one phase's refined parameters serve its channels.
        self.pixel_phases = None if model.context is None else model.context.order.phase_map(height, width)
        self._phase: int | None = None
        self._phase_params: torch.Tensor | None = None  # B * n, P: the refined parameters of self._phase
        self._latent_shape: torch.Size | None = None
        self._pixel_params: torch.Tensor | None = None
        self._flat_params: torch.Tensor | None = None  # N, P: the pixel parameters one row per pixel
        self._splits: dict[tuple[int, int], object] = {}  # the likelihood's split of each chunk of _flat_params
        # An optimal-sigma Gaussian's tables need each tile's sigma codes (codec.protocol: side symbols).
        self.side_size = OPTIMAL_SIGMA_CODES if getattr(model.likelihood, "optimal", False) else 0
        self.side_count = shape[1] if self.side_size else 0  # one sigma per channel
        self._network_params: torch.Tensor | None = None  # B, P, H, W before any side parameters

    def latent_params(self, group: int) -> LatentParams | BinaryParams:
        if group != self.walk.group:
            raise RuntimeError(f"latent_params({group}) called at group {self.walk.group}")
        prior_mean, prior_std, post_mean, post_std = self.walk.step()  # B, Z, h, w integers each
        self._latent_shape = prior_mean.shape
        if prior_std is None:  # a binary group: frequencies of z = 1 out of 2**24
            ones = lambda q: None if q is None else q.cpu().numpy().astype(np.int64).reshape(self.batch, -1)  # noqa: E731
            return BinaryParams(ones(prior_mean), ones(post_mean))
        flat = lambda q: None if q is None else fixed_to_float(q).reshape(self.batch, -1)  # noqa: E731
        return LatentParams(flat(prior_mean), flat(prior_std), flat(post_mean), flat(post_std))

    def set_latent(self, group: int, values: np.ndarray) -> None:
        fixed = latent_to_fixed(np.asarray(values).reshape(self._latent_shape))
        self.walk.advance(torch.from_numpy(fixed).to(self.device))
        if self.walk.group == self.num_groups:
            self._pixel_params = self.walk.pixel_params()  # B, P, H, W
            if self.side_size:
                self._network_params, self._pixel_params = self._pixel_params, None

    def choose_side(self, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """codec.protocol.ModelPass.choose_side (the encoder): each tile's optimal sigma codes (B, C), from
        the means at its valid pixels (mask (B, H, W))."""
        means = self._network_params.double() / ONE  # B, C, H, W: the integer model's means, exactly
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        valid = torch.from_numpy(np.ascontiguousarray(mask[:, None])).to(self.device)
        return optimal_sigma_codes(means.clamp(-MEAN_LIMIT, MEAN_LIMIT), tensor, valid).cpu().numpy()

    def set_side(self, symbols: np.ndarray) -> None:
        """codec.protocol.ModelPass.set_side: each tile's sigma codes (B, C) -> the tables' log sigmas,
        appended to the means in fixed point (exact: multiples of 2**-4 in 2**-14 units)."""
        codes = torch.from_numpy(np.asarray(symbols, dtype=np.int64)).to(self.device)
        log_sigma_q = optimal_log_sigma(codes) * ONE  # B, C integers
        means = self._network_params
        self._pixel_params = torch.cat([means, log_sigma_q.to(means.dtype)[:, :, None, None].expand_as(means)], 1)
        self._flat_params, self._splits = None, {}

    def posteriors(self, pixels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """codec.protocol.ModelPass.posteriors: each group's (mean, std), (B, D) float64 each."""
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        flat = lambda q: fixed_to_float(q).reshape(self.batch, -1)  # noqa: E731
        ones = lambda q: q.cpu().numpy().astype(np.int64).reshape(self.batch, -1)  # noqa: E731
        return [(ones(mean), None) if std is None else (flat(mean), flat(std))
                for mean, std in self.walk.posteriors(tensor)]

    def pixel_table(
        self, channel: int, pixels: np.ndarray, phase: int | None = None, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, H, W, 256) float32 probabilities: the integer frequencies / 2**24, exactly. Built in chunks of
        pixels (small for the torch form, whose (N, 256) temporaries should stay in the CPU's caches); every
        pixel's table is computed on its own, so the chunking changes nothing."""
        if self._pixel_params is None:
            raise RuntimeError("pixel_table before every latent group (and any side symbols) was set")
        if (phase is None) != (self.pixel_phases is None):
            raise RuntimeError("a context model's tables come by phase, and only a context model's do")
        if phase is not None:
            return self._phase_table(channel, pixels, phase, mask)
        batch, _, height, width = pixels.shape
        if self._flat_params is None:
            params = self._pixel_params
            self._flat_params = params.permute(0, 2, 3, 1).reshape(batch * height * width, params.shape[1])  # N, P
        values = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))).to(self.device)
        values = values.reshape(batch * height * width, -1)  # N, C
        tables = np.empty((batch * height * width, 256), dtype=np.float32)
        likelihood = self.model.likelihood
        on_cpu = self._flat_params.device.type == "cpu"
        compiled = on_cpu and kernels.AVAILABLE
        chunk = KERNEL_TABLE_PIXELS if compiled else INTEGER_TABLE_PIXELS if on_cpu else DEVICE_TABLE_PIXELS
        # The mixtures' split, shared by the channels of a chunk (only the compiled kernel's path takes it).
        split_of = getattr(likelihood, "split", None) if compiled else None
        for start in range(0, len(values), chunk):
            stop = start + chunk
            flat = self._flat_params[start:stop]
            if split_of is None:
                likelihood.probabilities(flat, values[start:stop], channel, tables[start:stop])
                continue
            if (start, stop) not in self._splits:
                self._splits[start, stop] = split_of(flat)
            likelihood.probabilities(flat, values[start:stop], channel, tables[start:stop], self._splits[start, stop])
        return tables.reshape(batch, height, width, 256)

    def _phase_table(self, channel: int, pixels: np.ndarray, phase: int, mask: np.ndarray) -> np.ndarray:
        """(B, n, 256) probabilities of the n pixels of `phase`."""
        batch, channels = pixels.shape[:2]
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        rows, columns = _positions(self.model.context.order, phase, tensor)
        if channel == 0 or self._phase != phase:
            # Channel 0 comes first on both sides, before any pixel of this phase is known.
            valid = torch.from_numpy(np.ascontiguousarray(mask[:, None])).to(self.device, torch.float64)
            base = self._pixel_params[:, :, rows, columns].unsqueeze(2)  # B, P, 1, n
            refined = self.model.context.phase(base, tensor, valid, phase)  # B, P, 1, n
            self._phase_params = refined.permute(0, 2, 3, 1).reshape(-1, refined.shape[1])  # B * n, P
            self._phase = phase
        values = tensor[:, :, rows, columns].permute(0, 2, 1).reshape(-1, channels)  # B * n, C
        tables = np.empty((len(values), 256), dtype=np.float32)  # B * n, 256
        self.model.likelihood.probabilities(self._phase_params, values, channel, tables)
        return tables.reshape(batch, -1, 256)


class TorchLatentModel:
    """codec.protocol.LatentModel for a HierarchicalVAE on a device: integer-exact (portable files), or float
    (to read format-1 files)."""

    def __init__(self, model: HierarchicalVAE, device: str | torch.device = "cpu", integer: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.channels = model.config.image_channels
        self.stride = model.config.stride
        self.integer = integer
        if not integer and getattr(model.likelihood, "optimal", False):
            raise CodingError("a model with per-tile sigmas (gaussian-optimal) is coded by integers only (format "
                              "2 and later): no float-coded (format 1) file can name it")
        if not integer and model.config.binary_groups:
            raise CodingError("a model with binary latent groups is coded by integers only (format 2 and later): "
                              "no float-coded (format 1) file can name it")

    def begin(self, shape, pixels: np.ndarray | None = None):
        if self.integer:
            return IntegerPass(self.integer_model, self.device, shape, pixels)
        return TorchPass(self.model, self.device, shape, pixels)

    @torch.inference_mode()
    def tile_bounds(self, tiles: Sequence[Tile], seed: int = 0, grid: LatentGrid = LatentGrid(),
                    estimate: bool = False) -> list[float]:
        """The model's negative ELBO (bits, one posterior sample, valid pixels only) of each padded tile, in
        batches of equal padded shape. What the encoder expects bits-back to cost; it plays no part in decoding.
        For the integer model it is the integer model's (its latent parameters, latents on `grid`, its pixel
        probabilities); `estimate` takes the float network's instead, ~6x faster on a CPU and within a fraction
        of a percent (with its wide convolutions in bfloat16 where the CPU has AMX: model/estimator.py): good
        enough to choose which tiles the predictor codes, not what a report calls the bound."""
        integer = self.integer and not estimate
        network = self.estimate_network if self.integer and estimate else self.model
        bounds = [0.0] * len(tiles)
        rng = np.random.default_rng(seed)
        with repeatable_sampling(seed, self.device):
            for chosen in shape_batches(tiles, BOUND_BATCH_PIXELS):
                pixels = np.stack([tiles[k].pixels for k in chosen])  # B, C, H, W
                mask = valid_mask(pixels.shape[2:], [tiles[k].valid for k in chosen])  # B, 1, H, W
                if integer:
                    bits = self._integer_bounds(pixels, mask[:, 0].astype(bool), rng, grid)
                else:
                    tensor = torch.from_numpy(pixels).to(self.device)
                    output = network(tensor, mask=torch.from_numpy(mask).to(self.device))
                    bits = output.bound_bits.tolist()
                for k, value in zip(chosen, bits):
                    bounds[k] = float(value)
        return bounds

    @functools.cached_property
    def integer_model(self) -> IntegerVAE | None:
        """The integer-exact network (None for a float coder), made at its first use: the default compress's
        early exit prices a sample of tiles with the float network only, and is often all that runs (0.27 s
        of photo2's conversion saved)."""
        return IntegerVAE(self.model).to(self.device) if self.integer else None

    @functools.cached_property
    def estimate_network(self) -> HierarchicalVAE:
        """The float network of the integer coder's estimates, made at the first one: bfloat16_estimator's copy
        where there is one, else the model itself."""
        copy = bfloat16_estimator(self.model, self.device)
        return self.model if copy is None else copy

    def _integer_bounds(self, pixels: np.ndarray, mask: np.ndarray, rng, grid: LatentGrid) -> np.ndarray:
        """(B,) bits: analytic KL of each group at a posterior sample on the grid + the exact table cost."""
        batch = self.begin(pixels.shape, pixels)
        bits = np.zeros(len(pixels))
        for group in range(batch.num_groups):
            p = batch.latent_params(group)
            if isinstance(p, BinaryParams):
                bits += binary_kl_bits(p.post_ones, p.prior_ones).sum(axis=1)
                ones = rng.random(p.post_ones.shape) * 2.0**24 < p.post_ones
                batch.set_latent(group, ones.astype(np.float64))
                continue
            sample = p.post_mean + p.post_std * rng.standard_normal(p.post_mean.shape)
            k = np.clip(np.rint(sample / grid.step), grid.lo, grid.hi)
            bits += gaussian_kl_bits(p.post_mean, p.post_std, p.prior_mean, p.prior_std).sum(axis=1)
            batch.set_latent(group, grid.values(k))
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        if batch.side_size:
            codes = batch.choose_side(pixels, mask)  # B, S
            batch.set_side(codes)
            bits += codes.shape[1] * np.log2(batch.side_size)
        params = batch._pixel_params  # B, P, H, W
        if self.integer_model.context is not None:  # every pixel at once: the same integers as phase by phase
            valid = torch.from_numpy(np.ascontiguousarray(mask[:, None])).to(self.device, torch.float64)
            params = self.integer_model.context.forward(params, tensor, valid)
        nll = self.integer_model.likelihood.nll_bits(params, tensor).cpu().numpy()  # B, H, W
        return bits + np.where(mask, nll, 0.0).reshape(len(pixels), -1).sum(axis=1)
