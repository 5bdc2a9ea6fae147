"""Integer-exact inference: the same network as model/vae.py, computed so that every value that reaches the
coder is the same on every machine (CPU instruction set, thread count, GPU, torch version).

Why: float convolutions differ in their last bits between kernels (AVX-512 vs AVX2 vs ARM vs CUDA, Winograd vs
direct, one summation order or another), and a bits-back decoder that computes a probability one ulp off
decodes garbage. Following Balle, Johnston & Minnen (ICLR 2019, "Integer networks for data compression with
latent-variable models"), every number here is an integer (held in float64 or int64 tensors), and each
operation is one of:

- a sum of products of integers whose every partial sum stays below 2**53 (convolutions as unfold + matmul
  in float64, never Winograd or FFT; bounds checked when the model is built): exact in any order;
- a single IEEE-754 operation (+, -, *, /, conversion) followed by floor: correctly rounded by the standard,
  hence the same bits on every compliant machine;
- a lookup in a table of integers, one entry per fixed-point input (the non-linearities), built by
  `deterministic_exp` / `deterministic_log2` from the same basic operations only, never from a libm.

Fixed point: activations are q * 2**-FRACTION_BITS, clamped to +-ACTIVATION_LIMIT; weights are integers with
a power-of-two scale per output channel (WEIGHT_BITS bits). The integer model is a pure function of the float
weights file (rules versioned by INTEGER_RULES): the same file gives the same integer model everywhere, so a
shipped .safetensors is the integer model, and its sha256 in a .vz header pins it.

The pixel tables are integer frequencies summing to 2**24 (constriction's precision), every value >= 1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from codec.exact import deterministic_exp, deterministic_log2
from codec.latents import BINARY_FLOOR
from vaezip.config import ModelConfig
from vaezip.model import kernels
from vaezip.model.context import PixelContext
from vaezip.model.vae import HierarchicalVAE

INTEGER_RULES = 1  # bump when any rule below changes: files name the rules they were coded with
FRACTION_BITS = 14
ONE = float(2**FRACTION_BITS)
ACTIVATION_LIMIT = 2**10  # |activation| <= 1024 (the float models stay far inside)
LIMIT_Q = float(ACTIVATION_LIMIT * 2**FRACTION_BITS)
WEIGHT_BITS = 14  # |integer weight| <= 2**13
EXACT = 2.0**53  # every partial sum stays below this: float64 adds such integers exactly, in any order
FOLDED_BATCH_AREA = 16  # output maps of at most this many pixels: one GEMM for the batch (IntConv)
# Convolutions with at most this many outputs (the posterior heads) as a GEMM to every tap, then shifted sums:
# measured 4.3x faster than im2col on 16x16 maps of 128 channels, 1.8x on 8x8 of 192.
THIN_OUTPUT = 32
PROBABILITY_BITS = 24  # pixel frequencies sum to 2**24
CDF_BITS = 30  # sigmoid table resolution
MIX_BITS = 16  # mixture weights: sum of 2**16 * 2**30 over up to 64 components < 2**53
# A categorical's value weights: exp(logit - largest) * 2**24 >= 1, so the least likely value can be 2**-24 of
# the most likely (the coder's resolution); 256 of them sum below 2**32.
CATEGORICAL_BITS = 24
LOG_SCALE_RANGE = (-7.0, 8.0)  # the float likelihood clamps at -7 too; above 8 a logistic is flat on [-1, 1]
MEAN_LIMIT = 8.0
INV_SCALE_BITS = 20  # exp(-log_scale) as q * 2**-20
# A residual posterior's std ratio (layers.std_ratio) as q * 2**-18: its product with a std (< 2**24 + 2**14,
# the softplus table's largest value plus min_std) and the ratio (< 2**24 * 2**4 with the table's identity
# above) stays below 2**52 + 2**42 < 2**53, exact.
STD_RATIO_BITS = 18
# A binary latent's P(z = 1) is a frequency out of 2**PROBABILITY_BITS (the sigmoid table's 2**CDF_BITS units
# floored to it), kept in [BINARY_FLOOR, 2**PROBABILITY_BITS - BINARY_FLOOR] (codec/latents.py).


# ---------------------------------------------------------------------------------------------- exact maths


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + deterministic_exp(-x))


# ---------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """A function on fixed-point inputs (q * 2**-FRACTION_BITS): one integer value per input integer from
    `first_q` on (a direct lookup: one gather per element, the fastest exact form). Below the table: its first
    value; above it: its last value, or the input itself rescaled where `identity_above`."""

    first_q: int
    values: torch.Tensor  # (n,) float64, integer-valued
    identity_above: bool = False
    output_per_input: float = 1.0  # output units per input unit beyond the last entry (identity_above)
    # The values as int32 where they all fit (every table vaezip builds): the compiled lookup gathers half
    # the bytes, and a conversion of an int32 to float64 is exact. None on other devices.
    compact: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.values.device.type == "cpu" and bool((self.values.abs() < 2.0**31).all()):
            object.__setattr__(self, "compact", self.values.numpy().astype(np.int32))

    @staticmethod
    def build(function, low: float, high: float, output_bits: int, **options) -> "Table":
        first, last = int(round(low * ONE)), int(round(high * ONE))
        inputs = np.arange(first, last + 1, dtype=np.float64) / ONE  # exact dyadic values
        values = np.rint(function(inputs) * 2.0**output_bits)
        return Table(first, torch.from_numpy(values), output_per_input=2.0 ** (output_bits - FRACTION_BITS),
                     **options)

    def to(self, device: torch.device) -> "Table":
        return Table(self.first_q, self.values.to(device), self.identity_above, self.output_per_input)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """values[floor(index)] for float64 indices, clamped to the table: clamping first makes the truncating
        int conversion a floor (int32 indices: the fastest gather on a CPU, 5x faster than int64)."""
        index = index.clamp_(0.0, float(len(self.values) - 1)).int()
        return self.values.index_select(0, index.reshape(-1)).reshape(index.shape)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        if kernels.AVAILABLE and q.device.type == "cpu" and q.dtype == torch.float64:
            q = q.detach().contiguous()
            out = torch.empty(q.shape, dtype=torch.float64)
            try:  # the compiled form: one pass, the same integers (kernels.py)
                values = self.values.numpy() if self.compact is None else self.compact
                kernels.table_lookup(q.numpy().reshape(-1), float(self.first_q), values,
                                     self.identity_above, self.output_per_input, out.numpy().reshape(-1))
                return out
            except Exception as error:  # noqa: BLE001 - numba's first-call compile failing on this platform
                kernels.disable(f"{type(error).__name__}: {error}", error)
        return self.torch_form(q)

    def torch_form(self, q: torch.Tensor) -> torch.Tensor:
        """__call__ without the compiled kernel (the reference the tests hold it to)."""
        last = len(self.values) - 1
        out = self.lookup(q - self.first_q)
        if self.identity_above:
            out = torch.where(q > self.first_q + last, q * self.output_per_input, out)
        return out


@functools.lru_cache(maxsize=1)
def _build_tables() -> dict[str, Table]:
    low, high = LOG_SCALE_RANGE
    return {
        # silu(x) = x sigmoid(x); beyond 16 it is x within 2e-6, below -16 zero within 2e-6
        "silu": Table.build(lambda x: x * _sigmoid(x), -16.0, 16.0, FRACTION_BITS, identity_above=True),
        # the std head: softplus with beta ln 2, i.e. log2(1 + 2**x) (layers.smooth_std), without min_std
        "softplus": Table.build(lambda x: deterministic_log2(1.0 + deterministic_exp(x * 0.6931471805599453)),
                                -24.0, 24.0, FRACTION_BITS, identity_above=True),
        "tanh": Table.build(lambda x: 2.0 * _sigmoid(2.0 * x) - 1.0, -10.0, 10.0, FRACTION_BITS),
        "inv_scale": Table.build(lambda s: deterministic_exp(-s), low, high, INV_SCALE_BITS),
        "sigmoid": Table.build(_sigmoid, -24.0, 24.0, CDF_BITS),
        "exp": Table.build(deterministic_exp, -24.0, 0.0, MIX_BITS),
    }


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) from +, -, *, / and deterministic_exp only: erf(t) = 2/sqrt(pi) exp(-t**2) sum_n 2**n
    t**(2n+1) / (1 * 3 * ... * (2n+1)), a series of positive terms (no cancellation), t = |x| / sqrt(2);
    Phi(x) = (1 +- erf(t)) / 2. 160 terms: below 1e-17 relative for |x| <= 9."""
    t = np.abs(np.asarray(x, dtype=np.float64)) * 0.7071067811865476
    t2 = t * t
    term = t.copy()
    total = t.copy()
    for n in range(1, 160):
        term = term * (2.0 * t2) / float(2 * n + 1)
        total = total + term
    erf = np.minimum(total * deterministic_exp(-t2) * 1.1283791670955126, 1.0)  # 2 / sqrt(pi)
    return np.where(np.asarray(x) >= 0, 0.5 + 0.5 * erf, 0.5 - 0.5 * erf)


@functools.lru_cache(maxsize=1)
def _normal_cdf_table() -> Table:
    """The discretized Gaussian's CDF in 2**-CDF_BITS units: 0 below -9 and 2**CDF_BITS above 9 (Phi(-9) is
    1e-19), built only for Gaussian models."""
    return Table.build(_normal_cdf, -9.0, 9.0, CDF_BITS)


@functools.lru_cache(maxsize=1)
def _categorical_exp_table() -> Table:
    """exp(x) * 2**CATEGORICAL_BITS for x in [-24, 0] (below: its first value), for categorical models."""
    return Table.build(deterministic_exp, -24.0, 0.0, CATEGORICAL_BITS)


@functools.lru_cache(maxsize=1)
def _std_ratio_table() -> Table:
    """layers.std_ratio, log2(1 + 2**x), in 2**-STD_RATIO_BITS units (exactly 2**STD_RATIO_BITS at 0): only
    models with a residual posterior use it, so only they build it. Below -24 it is 0 (the std then takes
    min_std), above 24 the input itself (within 1e-7)."""
    return Table.build(lambda x: deterministic_log2(1.0 + deterministic_exp(x * 0.6931471805599453)), -24.0, 24.0,
                       STD_RATIO_BITS, identity_above=True)


# ---------------------------------------------------------------------------------------------- layers


def _quantize_weight(weight: np.ndarray, bias: np.ndarray | None, fan_in_limit: float):
    """Per output channel: integer weights (|w| <= 2**(WEIGHT_BITS-1)), exponent e (weight ~ w * 2**-e), and
    the bias at the accumulator's scale 2**-(FRACTION_BITS + e). Only exact operations (frexp, power-of-two
    scaling, rint) on the float32 values, so the integers are a pure function of the weights."""
    out = weight.shape[0]
    flat = weight.reshape(out, -1).astype(np.float64)
    largest = np.abs(flat).max(axis=1)
    _, top = np.frexp(largest)  # largest < 2**top
    exponent = np.where(largest > 0, WEIGHT_BITS - 1 - top, 0).astype(np.int64)
    if bias is not None:  # the bias must fit the accumulator exactly: |b| * 2**(FRACTION_BITS + e) < 2**50
        _, bias_top = np.frexp(np.abs(bias.astype(np.float64)))
        exponent = np.minimum(exponent, np.where(bias != 0, 50 - FRACTION_BITS - bias_top, exponent))
    exponent = np.minimum(exponent, 60)
    integers = np.rint(np.ldexp(flat, exponent[:, None]))
    biases = np.zeros(out) if bias is None else np.rint(np.ldexp(bias.astype(np.float64), exponent + FRACTION_BITS))
    worst = np.abs(integers).sum(axis=1) * fan_in_limit + np.abs(biases)
    if not np.all(worst < EXACT):
        raise ValueError("a layer's integer sums could exceed 2**53: weights too large for integer inference")
    return integers, exponent, biases


class IntConv:
    """A convolution over integer activations: unfold + one float64 matmul of integers (exact), bias,
    rescale by a power of two, round, clamp."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, padding: int = 0,
                 input_limit: float = LIMIT_Q):
        w = weight.detach().cpu().float().numpy()
        b = None if bias is None else bias.detach().cpu().float().numpy()
        self.out_channels, _, self.kernel, _ = w.shape
        self.stride, self.padding = stride, padding
        integers, exponent, biases = _quantize_weight(w, b, input_limit)
        self.weight = torch.from_numpy(integers)  # out, in * k * k
        self.bias = torch.from_numpy(biases)[:, None]  # out, 1
        self.scale = torch.from_numpy(np.ldexp(1.0, -exponent))[:, None]  # out, 1: powers of two

    def to(self, device: torch.device) -> "IntConv":
        self.weight, self.bias, self.scale = (t.to(device) for t in (self.weight, self.bias, self.scale))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape  # x: B, C_in, H, W integer-valued float64
        k, s, p = self.kernel, self.stride, self.padding
        out_hw = ((height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1)
        if batch > 1 and out_hw[0] * out_hw[1] <= FOLDED_BATCH_AREA:
            # Small maps: one GEMM over the whole batch's columns (C_in * k * k, B * L), the same exact sums;
            # per-sample GEMMs of 16 columns leave the cores idle (measured 1.7x on 4x4 maps of 128 channels).
            columns = F.unfold(x, k, padding=p, stride=s)  # B, C_in * k * k, L
            folded = columns.transpose(0, 1).reshape(columns.shape[1], -1)  # C_in * k * k, B * L
            accumulated = torch.matmul(self.weight, folded).reshape(self.out_channels, batch, -1).transpose(0, 1)
            accumulated = accumulated + self.bias  # B, out, L
        elif s == 1 and k > 1 and self.out_channels <= THIN_OUTPUT:
            accumulated = self._shifted_sums(x, out_hw) + self.bias  # B, out, L
        elif _im2col_gemm_conv(x, self.kernel, s, p):
            # Per sample im2col + GEMM (ATen's Slow2d): the same exact sums, 1.2-20x faster than one batched
            # matmul, which MKL runs on spinning threads that collapse on a busy machine.
            weight = self.weight.reshape(self.out_channels, -1, k, k)
            accumulated = F.conv2d(x, weight, None, s, p).reshape(batch, self.out_channels, -1)  # B, out, L
            accumulated += self.bias
        else:
            columns = x.reshape(batch, -1, height * width) if k == 1 and s == 1 else F.unfold(x, k, padding=p, stride=s)
            accumulated = torch.matmul(self.weight, columns) + self.bias  # B, out, L: integers < 2**53, exact
        # In place (every form's accumulator is its own): the same operations, no temporaries of its size.
        y = accumulated.mul_(self.scale).add_(0.5).floor_().clamp_(-LIMIT_Q, LIMIT_Q)
        return y.reshape(batch, self.out_channels, *out_hw)

    def _shifted_sums(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """A stride-1 convolution with few outputs as one GEMM to k * k * out channels (every kernel tap's
        products at every input pixel, no im2col copy), then the sum of the k * k shifted maps: the same
        integer products and sums as the direct form, exact in any order. (B, out, L)."""
        batch, channels, height, width = x.shape
        k, p, out = self.kernel, self.padding, self.out_channels
        taps = self.weight.reshape(out, channels, k, k).permute(2, 3, 0, 1).reshape(k * k * out, channels)
        if _im2col_gemm_conv(x, 1, 1, 0):
            products = F.conv2d(x, taps[:, :, None, None])  # B, k * k * out, H, W
        else:
            products = torch.matmul(taps, x.reshape(batch, channels, -1)).reshape(batch, -1, height, width)
        products = F.pad(products, (p, p, p, p)).reshape(batch, k, k, out, height + 2 * p, width + 2 * p)
        total = torch.zeros(batch, out, *out_hw, dtype=x.dtype, device=x.device)
        for i in range(k):
            for j in range(k):
                total += products[:, i, j, :, i : i + out_hw[0], j : j + out_hw[1]]
        return total.reshape(batch, out, -1)


@functools.lru_cache(maxsize=None)
def _direct_backend_exact(device_type: str, channels: int, kernel: int, stride: int, padding: int) -> bool:
    """Whether torch computes a float64 conv2d of this shape on this device as im2col + GEMM (products and
    sums of integers only: exact for integers below 2**53, in any order). Winograd or FFT backends would not
    be; torch versions without the backend query, and devices other than the CPU, take the matmul form."""
    select = getattr(torch._C, "_select_conv_backend", None)
    if device_type != "cpu" or select is None:
        return False
    x = torch.zeros(1, channels, 2 * kernel, 2 * kernel, dtype=torch.float64)
    w = torch.zeros(1, channels, kernel, kernel, dtype=torch.float64)
    try:
        backend = select(x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, None)
    except (TypeError, RuntimeError):
        return False
    return str(backend).rsplit(".", 1)[-1] == "Slow2d"


def _im2col_gemm_conv(x: torch.Tensor, kernel: int, stride: int, padding: int) -> bool:
    return _direct_backend_exact(x.device.type, x.shape[1], kernel, stride, padding)


def _conv(module: torch.nn.Conv2d) -> IntConv:
    return IntConv(module.weight, module.bias, module.stride[0], module.padding[0])


def _transposed_head(module: torch.nn.ConvTranspose2d) -> tuple[IntConv, int]:
    """A stride-f transposed conv with kernel f: a 1x1 conv to P * f * f channels, then pixel_shuffle."""
    weight = module.weight.detach()  # in, P, f, f
    channels_in, params, f, _ = weight.shape
    as_conv = weight.permute(1, 2, 3, 0).reshape(params * f * f, channels_in, 1, 1)
    bias = module.bias.detach().repeat_interleave(f * f)
    return IntConv(as_conv, bias), f


# ---------------------------------------------------------------------------------------------- the model


class IntegerVAE:
    """The integer twin of a HierarchicalVAE: encoder, top-down walk, pixel-context head, pixel tables."""

    def __init__(self, model: HierarchicalVAE):
        config: ModelConfig = model.config
        self.config = config
        self.device = torch.device("cpu")
        self.tables = _build_tables()
        self.residual_posterior = config.residual_posterior
        if self.residual_posterior:  # a new dict: the cached one is shared by every model
            self.tables = {**self.tables, "std_ratio": _std_ratio_table()}
        self.min_std_q = max(1.0, float(np.rint(config.min_std * ONE)))  # a std of 0 cannot be coded
        # Pixel values in fixed point: (2v - 255) / 255, exactly rounded (integer arithmetic).
        self.unit_values = torch.tensor([_round_div((2 * v - 255) * 2**FRACTION_BITS, 255) for v in range(256)],
                                        dtype=torch.float64)
        # Inner bin edges (v + 1/2 between values v and v + 1), in fixed point.
        self.edges = torch.tensor([_round_div((2 * v - 254) * 2**FRACTION_BITS, 255) for v in range(255)],
                                  dtype=torch.float64)
        encoder, decoder = model.encoder, model.decoder
        self.stem_factor = config.stem_factor
        self.stem = _conv(encoder.stem)
        self.encoder_stages = [[(_conv(b.conv_in), _conv(b.conv_out)) for b in stage] for stage in encoder.stages]
        self.downsamples = [_conv(d) for d in encoder.downsamples]
        self.initial = torch.from_numpy(np.rint(decoder.initial.detach().cpu().double().numpy() * ONE))
        self.blocks = [
            {
                "prior": _conv(b.prior_head), "posterior": _conv(b.posterior_head),
                "projection": _conv(b.latent_projection), "residual": (_conv(b.residual.conv_in), _conv(b.residual.conv_out)),
                "z": b.latent_channels, "binary": b.binary,
            }
            for b in decoder.blocks
        ]
        self.block_stage = list(decoder.block_stage)
        self.upsamples = [_conv(u) for u in decoder.upsamples]
        self.head, self.head_factor = _transposed_head(decoder.head)
        self.global_latents = config.global_latents
        self.global_posterior = self.global_projection = None
        if config.global_latents:
            self.global_posterior = _conv(decoder.global_posterior)
            self.global_projection = _conv(decoder.global_projection)
        self.context = None if model.context is None else IntegerContext(model.context, self)
        # Upper edges of values -1 .. 255: value -1's (-2**40) and 255's (2**40) put any component's index below
        # or above its table, whatever the rounding: its CDF there is exactly 0 and full.
        self.padded_edges = torch.cat([self.edges.new_tensor([-(2.0**40)]), self.edges,
                                       self.edges.new_tensor([2.0**40])])
        # The compiled kernel's copies (kernels.py; CPU only).
        self.edges_numpy = self.edges.numpy().copy()
        self.unit_values_numpy = self.unit_values.numpy().copy()
        self.likelihood = _integer_likelihood(model, self)

    def to(self, device) -> "IntegerVAE":
        device = torch.device(device)
        self.device = device
        self.tables = {name: table.to(device) for name, table in self.tables.items()}
        self.unit_values, self.edges, self.initial = (t.to(device) for t in (self.unit_values, self.edges, self.initial))
        self.padded_edges = self.padded_edges.to(device)
        self.likelihood.to(device)
        convs = [self.stem, *self.downsamples, *self.upsamples, self.head]
        if self.global_latents:
            convs += [self.global_posterior, self.global_projection]
        convs += [c for stage in self.encoder_stages for pair in stage for c in pair]
        convs += [c for block in self.blocks for c in (block["prior"], block["posterior"], block["projection"],
                                                         *block["residual"])]
        if self.context is not None:
            convs += self.context.layers
        for conv in convs:
            conv.to(device)
        return self

    # --- pieces

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        return self.tables["silu"](x)

    def residual(self, pair, x: torch.Tensor) -> torch.Tensor:
        conv_in, conv_out = pair
        return (x + conv_out(self.silu(conv_in(self.silu(x))))).clamp_(-LIMIT_Q, LIMIT_Q)

    def std(self, raw: torch.Tensor) -> torch.Tensor:
        return self.tables["softplus"](raw) + self.min_std_q

    def ones_frequency(self, logits: torch.Tensor) -> torch.Tensor:
        """A binary latent's P(z = 1) from its logit (fixed point) as an integer frequency out of
        2**PROBABILITY_BITS: the sigmoid table's value (2**-CDF_BITS units) divided by a power of two and
        floored (exact), clamped to [BINARY_FLOOR, 2**PROBABILITY_BITS - BINARY_FLOOR]."""
        scaled = self.tables["sigmoid"](logits) * 2.0 ** (PROBABILITY_BITS - CDF_BITS)
        return torch.floor(scaled).clamp_(BINARY_FLOOR, 2.0**PROBABILITY_BITS - BINARY_FLOOR)

    def residual_posterior_of(self, prior_mean: torch.Tensor, prior_std: torch.Tensor, delta: torch.Tensor,
                              raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """layers.residual_posterior on integers: mean_p + delta (exact, clamped to the activation range like
        every activation), and std_p * std_ratio(raw) * 2**-STD_RATIO_BITS by one rounding (a product of
        integers below 2**53, a power-of-two scale, floor(x + 0.5)), at least min_std."""
        mean = (prior_mean + delta).clamp_(-LIMIT_Q, LIMIT_Q)
        product = prior_std * self.tables["std_ratio"](raw)  # integers < 2**53: exact
        std = torch.floor(product.mul_(2.0**-STD_RATIO_BITS).add_(0.5)).clamp_(min=self.min_std_q)
        return mean, std

    def encode(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """pixels (B, C, H, W) uint8 -> one activation per stage (integers), highest resolution first."""
        unit = self.unit_values[pixels.long()]  # B, C, H, W
        h = self.stem(F.pixel_unshuffle(unit, self.stem_factor) if self.stem_factor > 1 else unit)
        activations = []
        for index, stage in enumerate(self.encoder_stages):
            for pair in stage:
                h = self.residual(pair, h)
            activations.append(h)
            if index < len(self.downsamples):
                h = self.downsamples[index](h)
        return activations

    def walk(self, pixels: torch.Tensor | None, batch: int, height: int, width: int) -> "IntegerWalk":
        stride = self.config.stride
        activations = None if pixels is None else self.encode(pixels)
        return IntegerWalk(self, activations, batch, (height // stride, width // stride))


class IntegerContext:
    """The causal pixel-context head (model/context.py) on integers: the same neighbours in fixed point, three
    1x1 IntConvs and the silu table. Each pixel's refinement reads only its own inputs, so refining a phase
    and refining every pixel at once give the same integers."""

    def __init__(self, context: PixelContext, model: "IntegerVAE"):
        self.model = model
        self.order = context.order
        self.layers = [_conv(context.layer_in), _conv(context.layer_mid), _conv(context.layer_out)]

    def _refine(self, params: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        layer_in, layer_mid, layer_out = self.layers
        hidden = self.model.silu(layer_in(torch.cat([params, neighbours], dim=1)))
        return (params + layer_out(self.model.silu(layer_mid(hidden)))).clamp_(-LIMIT_Q, LIMIT_Q)

    def _unit(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.unit_values[pixels.long()]  # B, C, H, W fixed point

    def forward(self, params: torch.Tensor, pixels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Every pixel at once: params (B, P, H, W) integers, pixels (B, C, H, W), valid (B, 1, H, W) 0/1."""
        return self._refine(params, self.order.all_neighbours(self._unit(pixels), valid.double(), flag_value=ONE))

    def phase(self, params: torch.Tensor, pixels: torch.Tensor, valid: torch.Tensor, phase: int) -> torch.Tensor:
        """The pixels of one phase: params (B, P, 1, n) at those pixels -> refined (B, P, 1, n)."""
        neighbours = self.order.phase_neighbours(self._unit(pixels), valid.double(), phase, params.shape[3],
                                                 flag_value=ONE)
        return self._refine(params, neighbours)


def _saturation(table: Table) -> tuple[int, int]:
    """(last index whose value is 0, first index whose value is 2**CDF_BITS) of a CDF table."""
    values = table.values.cpu()
    zero = torch.nonzero(values == 0.0)
    full = torch.nonzero(values == 2.0**CDF_BITS)
    if len(zero) == 0 or len(full) == 0 or not bool((values[1:] >= values[:-1]).all()):
        raise ValueError("a CDF table must be monotone and reach 0 and 2**CDF_BITS")
    return int(zero[-1]), int(full[0])


class CdfTable:
    """A component CDF (the logistic's sigmoid, the Gaussian's Phi) as the mixture's code reads it: the table,
    its int32 copy (the same integers < 2**31: half the bytes to fetch, 2.7x faster gathers), the compiled
    kernel's numpy copy, and where it saturates."""

    def __init__(self, table: Table):
        self.table = table
        self.saturation = _saturation(table)
        self.int32 = Table(table.first_q, table.values.int())
        self.numpy = self.int32.values.numpy().copy()
        # What the compiled kernel reads (kernels._cdf_value): the upper half of a table symmetric about its
        # middle entry (the sigmoid's and Phi's tables are, value for value), else the whole table.
        self.kernel_table, self.kernel_centre = self.numpy, -1
        values = self.numpy.astype(np.int64)
        if len(values) % 2 and np.all(values + values[::-1] == 2**CDF_BITS):
            centre = len(values) // 2
            self.kernel_table, self.kernel_centre = self.numpy[centre:].copy(), centre

    def to(self, device: torch.device) -> "CdfTable":
        self.table, self.int32 = self.table.to(device), self.int32.to(device)
        return self


def _round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves away from zero (Python integers)."""
    quotient, remainder = divmod(abs(numerator), denominator)
    quotient += 2 * remainder >= denominator
    return quotient if numerator >= 0 else -quotient


class IntegerWalk:
    """TopDownWalk on integers: `step()` gives group g's (prior mean, prior std, posterior mean, posterior std)
    as integer tensors (B, Z, h, w) in 2**-FRACTION_BITS units; `advance(z)` takes integer latents."""

    def __init__(self, model: IntegerVAE, activations, batch: int, low_hw):
        self.model = model
        self.activations = activations
        self.h = model.initial.expand(batch, -1, *low_hw).clone()
        self.group = 0
        self.stage = len(model.config.stages) - 1
        self._feature = None
        self.states: list[tuple[int, torch.Tensor]] = []  # (stage, h) that each group's step saw
        self.priors: list[tuple[torch.Tensor, torch.Tensor]] = []  # each group's prior (residual posteriors)
        self.first_block = 1 if model.global_latents else 0  # group 0 is the global group where there is one

    @property
    def num_groups(self) -> int:
        return len(self.model.blocks) + self.first_block

    def _enter_stage_of(self, group: int) -> None:
        block = group - self.first_block
        if block < 0:
            return  # the global group: before any block
        target = self.model.block_stage[block] if block < len(self.model.blocks) else 0
        while self.stage > target:
            self.stage -= 1
            up = self.h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            self.h = self.model.upsamples[self.stage](up)

    def step(self):
        """(prior mean, prior std, posterior mean, posterior std), the posterior's None without pixels; a binary
        group's: (prior frequency of z = 1, None, posterior frequency of z = 1, None) (IntegerVAE.ones_frequency).
        The global group's prior is N(0, I): 0 and 2**FRACTION_BITS, (B, D, 1, 1)."""
        if self.group < self.first_block:
            return self._global_step()
        self._enter_stage_of(self.group)
        block, model = self.model.blocks[self.group - self.first_block], self.model
        z = block["z"]
        out = block["prior"](model.silu(self.h))
        if block["binary"]:
            self._feature = out[:, z:]
            self.states.append((self.stage, self.h))
            post_ones = None
            if self.activations is not None:
                post_ones, _ = self._posterior(self.group, self.h, self.activations[self.stage])
            return model.ones_frequency(out[:, :z]), None, post_ones, None
        prior_mean, prior_std, self._feature = out[:, :z], model.std(out[:, z : 2 * z]), out[:, 2 * z :]
        self.states.append((self.stage, self.h))
        if model.residual_posterior:
            self.priors.append((prior_mean, prior_std))
        post_mean = post_std = None
        if self.activations is not None:
            post_mean, post_std = self._posterior(self.group, self.h, self.activations[self.stage])
        return prior_mean, prior_std, post_mean, post_std

    def _global_step(self):
        batch, dims = self.h.shape[0], self.model.global_latents
        prior_mean = self.h.new_zeros(batch, dims, 1, 1)
        prior_std = torch.full_like(prior_mean, ONE)
        self.states.append((self.stage, self.h))
        if self.model.residual_posterior:
            self.priors.append((prior_mean, prior_std))
        post_mean = post_std = None
        if self.activations is not None:
            post_mean, post_std = self._posterior(0, self.h, self.activations[-1])
        return prior_mean, prior_std, post_mean, post_std

    def _global_posterior(self, activation: torch.Tensor):
        """The global group's (mean, std) (B, D, 1, 1) from the top activation (B, W, h, w): its mean over the
        positions as one IEEE division of an exact integer sum, floored; then the head and the std table."""
        height, width = activation.shape[2:]
        pooled = torch.floor(activation.sum(dim=(2, 3), keepdim=True) / float(height * width))  # sums < 2**53
        out = self.model.global_posterior(self.model.silu(pooled))
        dims = self.model.global_latents
        return out[:, :dims], self.model.std(out[:, dims:])

    def _posterior(self, group: int, h: torch.Tensor, activation: torch.Tensor):
        if group < self.first_block:
            return self._global_posterior(activation)
        block = self.model.blocks[group - self.first_block]
        z = block["z"]
        out = block["posterior"](self.model.silu(torch.cat([h, activation], dim=1)))
        if block["binary"]:
            return self.model.ones_frequency(out), None
        if self.model.residual_posterior:
            prior_mean, prior_std = self.priors[group]
            return self.model.residual_posterior_of(prior_mean, prior_std, out[:, :z], out[:, z:])
        return out[:, :z], self.model.std(out[:, z:])

    def posteriors(self, pixels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """After a walk without pixels: every group's (posterior mean, posterior std) (a binary group's
        (frequency of z = 1, None)) given `pixels` and the
        latents that were set, from the states (and priors) the walk saw. The same integers as a walk begun with
        pixels (the top-down states depend on the latents only), without running the top-down path again."""
        if self.group != self.num_groups:
            raise RuntimeError(f"posteriors after {self.group} of {self.num_groups} groups")
        activations = self.model.encode(pixels)
        return [self._posterior(group, h, activations[stage]) for group, (stage, h) in enumerate(self.states)]

    def advance(self, latent_q: torch.Tensor) -> None:
        latent_q = latent_q.clamp(-LIMIT_Q, LIMIT_Q)  # genuine latents are far inside (|z| <= the grid bound)
        if self.group < self.first_block:  # the global group's latents (B, D, 1, 1) shift every position
            self.h = (self.h + self.model.global_projection(latent_q)).clamp_(-LIMIT_Q, LIMIT_Q)
            self.group += 1
            return
        block = self.model.blocks[self.group - self.first_block]
        x = (self.h + self._feature + block["projection"](latent_q)).clamp_(-LIMIT_Q, LIMIT_Q)
        self.h = self.model.residual(block["residual"], x)
        self._feature = None
        self.group += 1

    def pixel_params(self) -> torch.Tensor:
        """Mixture parameters (B, P, H, W), integers in 2**-FRACTION_BITS units."""
        if self.group != self.num_groups:
            raise RuntimeError(f"pixel_params after {self.group} of {self.num_groups} groups")
        self._enter_stage_of(self.num_groups)
        out = self.model.head(self.h)
        return F.pixel_shuffle(out, self.model.head_factor) if self.model.head_factor > 1 else out


def _frequencies(mass: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Integer masses (N, 256) of a total (N, 1) -> frequencies (N, 256) float64 integers, each >= 1, summing
    to 2**PROBABILITY_BITS: every value gets 1 first and the rest in proportion (one IEEE division, one
    multiplication and a floor: the same on every machine), the remainder to the first largest."""
    spare = float(2**PROBABILITY_BITS - 256)
    frequencies = torch.floor(mass.div_(total).mul_(spare)).add_(1.0)
    leftover = float(2**PROBABILITY_BITS) - frequencies.sum(dim=-1, keepdim=True)  # exact: integers < 2**24
    frequencies.scatter_add_(-1, frequencies.argmax(dim=-1, keepdim=True), leftover)  # the first largest
    return frequencies


class FrequencyTables:
    """What the coder and the tests call on an integer likelihood, from its `frequencies(flat, values, channel,
    windowed)`: (N, P) parameters and (N, C) pixels, one row per pixel -> (N, 256) frequencies."""

    def channel_table(self, params: torch.Tensor, pixels: torch.Tensor, channel: int,
                      windowed: bool = True) -> torch.Tensor:
        """Integer frequencies (B, H, W, 256) int64, each >= 1, every row summing to 2**PROBABILITY_BITS, of
        `channel` given the channels before it (only pixels[:, :channel] is read)."""
        batch, _, height, width = params.shape
        flat = params.permute(0, 2, 3, 1).reshape(batch * height * width, -1)  # N, P
        values = pixels.permute(0, 2, 3, 1).reshape(batch * height * width, -1)  # N, C
        return self.frequencies(flat, values, channel, windowed).long().reshape(batch, height, width, 256)

    def probabilities(self, flat: torch.Tensor, values: torch.Tensor, channel: int, out: np.ndarray) -> None:
        """probabilities(frequencies(flat, values, channel)) written into out (N, 256) float32."""
        out[:] = probabilities(self.frequencies(flat, values, channel))


class IntegerMixture(FrequencyTables):
    """The discretized logistic mixture, with or without channel coupling (likelihood.py), as integer frequency
    tables; with another CDF table, any mixture of a location-scale family (IntegerGaussian).

    All values are integers in float64 below 2**53 (the CDF sum over components runs as one float64 matmul of
    integers, exact in any order): CDF values in 2**-CDF_BITS units, mixture weights with MIX_BITS bits."""

    def __init__(self, channels: int, num_mixtures: int, model: IntegerVAE, coupling: bool = True,
                 cdf: Table | None = None):
        self.channels, self.num_mixtures, self.model = channels, num_mixtures, model
        self.coupled = coupling and channels == 3
        self.cdf = CdfTable(model.tables["sigmoid"] if cdf is None else cdf)

    def to(self, device: torch.device) -> "IntegerMixture":
        self.cdf.to(device)
        return self

    def _split(self, flat: torch.Tensor):
        """flat (N, P) parameters, one row per pixel -> per pixel and component, (N, K) each: logits, and per
        channel c means[c], inverse scales[c] (2**-INV_SCALE_BITS units), coupling coefficients (3 of them)."""
        k, c = self.num_mixtures, self.channels
        tables = self.model.tables
        low, high = LOG_SCALE_RANGE
        logits = flat[:, :k]
        means = flat[:, k : k + k * c].reshape(-1, k, c).clamp(-MEAN_LIMIT * ONE, MEAN_LIMIT * ONE)
        log_scales = flat[:, k + k * c : k + 2 * k * c].reshape(-1, k, c).clamp(low * ONE, high * ONE)
        inv_scales = tables["inv_scale"](log_scales)
        coeffs = tables["tanh"](flat[:, k + 2 * k * c :].reshape(-1, k, 3)) if self.coupled else None
        return logits, means, inv_scales, coeffs

    @staticmethod
    def _coupled_mean(means, coeffs, unit: torch.Tensor, channel: int) -> torch.Tensor:
        """(N, K) mean of `channel`, shifted by the channels before it (unit: (N, C) pixel values)."""
        mean = means[:, :, channel]
        if coeffs is not None and channel >= 1:
            for coefficient, previous in ([(0, 0)] if channel == 1 else [(1, 0), (2, 1)]):
                mean = mean + torch.floor(coeffs[:, :, coefficient] * unit[:, previous : previous + 1] / ONE + 0.5)
        return mean

    def _cdf(self, x_q: torch.Tensor, mean: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        """The component CDF (the sigmoid, or Phi) at (x - mean) * inv_scale in 2**-CDF_BITS units; x_q
        broadcasts against mean and inv_scale."""
        offset = self._offset(mean, inv_scale)
        return self.cdf.table.lookup(torch.addcmul(offset, x_q, inv_scale * 2.0**-INV_SCALE_BITS))

    def _offset(self, mean: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        """The table index of x is floor(x * inv / 2**20 + offset), offset = (2**19 - mean * inv) / 2**20 -
        first_q: (x - mean) * inv / 2**20 rounded, from the table's start. Every term is an integer below 2**53
        times a power of two, and so is their sum: exact, with an FMA or without."""
        first_q = self.cdf.table.first_q
        return (2.0 ** (INV_SCALE_BITS - 1) - mean * inv_scale).mul_(2.0**-INV_SCALE_BITS).sub_(float(first_q))

    def _value_probability(self, split, values: torch.Tensor, unit: torch.Tensor, channel: int) -> torch.Tensor:
        """(N, K) probability of each pixel's actual value of `channel` under each component, in
        2**-CDF_BITS units (>= 1), given the channels before it."""
        _, means, inv_scales, coeffs = split
        edges = self.model.edges
        value = values[:, channel : channel + 1]  # N, 1 (long)
        mean = self._coupled_mean(means, coeffs, unit, channel)
        inv = inv_scales[:, :, channel]
        upper = torch.where(value == 255, 2.0**CDF_BITS, self._cdf(edges[value.clamp(max=254)], mean, inv))
        lower = torch.where(value == 0, 0.0, self._cdf(edges[(value - 1).clamp(min=0)], mean, inv))
        return (upper - lower).clamp_(min=1.0)

    def nll_bits(self, params: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """-log2 of every pixel's joint probability under the integer mixture (before the tables' rounding to
        frequencies, which costs at most ~1e-5 bits a value): (B, H, W) float64. Two CDF values per component
        and channel instead of a table of 256: what the encoder's bound estimate needs, at a float model's
        cost."""
        batch, _, height, width = params.shape
        split = self._split(params.permute(0, 2, 3, 1).reshape(batch * height * width, -1))  # from N, P
        values = pixels.permute(0, 2, 3, 1).reshape(batch * height * width, -1).long()  # N, C
        unit = self.model.unit_values[values]
        bits = torch.zeros(len(values), dtype=torch.float64, device=params.device)
        for channel in range(self.channels):
            weights = self._weights(split, values, unit, channel)  # N, K
            probability = (weights * self._value_probability(split, values, unit, channel)).sum(dim=1)
            bits += torch.log2(weights.sum(dim=1) * 2.0**CDF_BITS) - torch.log2(probability)
        return bits.reshape(batch, height, width)

    def _weights(self, split, pixels: torch.Tensor, unit: torch.Tensor, channel: int) -> torch.Tensor:
        """(N, K) mixture weights given the channels before `channel`, integers, the largest 2**MIX_BITS."""
        logits = split[0]
        weights = self.model.tables["exp"](logits - logits.amax(dim=1, keepdim=True)).clamp_(min=1.0)
        for previous in range(channel):
            joint = weights * self._value_probability(split, pixels, unit, previous)  # < 2**46: exact
            largest = joint.amax(dim=1, keepdim=True)
            # One IEEE division and multiplication, then floor: the same on every machine.
            weights = torch.floor(joint / largest * 2.0**MIX_BITS)
        return weights

    def split(self, flat: torch.Tensor):
        """flat (N, P) parameters -> what every channel's compiled tables of these pixels start from (_split,
        as contiguous numpy arrays: logits (N, K), means and inverse scales (N, K, C), coupling coefficients
        (N, K, 3), or (N, K, 0) uncoupled): compute it once for the channels of a batch and hand it to
        `probabilities` (it depends on the parameters only, not on any pixel value)."""
        logits, means, inv_scales, coeffs = self._split(flat)
        coeffs = np.zeros((len(flat), self.num_mixtures, 0)) if coeffs is None else coeffs.numpy()
        return tuple(np.ascontiguousarray(array) for array in (logits.numpy(), means.numpy(), inv_scales.numpy(), coeffs))

    def _channel_terms(self, flat: torch.Tensor, values: torch.Tensor, channel: int, split=None):
        """The mixture of `channel` given the channels before it, per pixel and component, (N, K) each,
        contiguous: integer weights, coupled means, inverse scales. What every table form starts from.
        `split`: split(flat), where the caller has it."""
        split = self._split(flat) if split is None else split
        _, means, inv_scales, coeffs = split
        values = values.long()
        unit = self.model.unit_values[values]  # N, C
        weights = self._weights(split, values, unit, channel)
        mean = self._coupled_mean(means, coeffs, unit, channel).contiguous()
        return weights, mean, inv_scales[:, :, channel].contiguous()

    def probabilities(self, flat: torch.Tensor, values: torch.Tensor, channel: int, out: np.ndarray,
                      split=None) -> None:
        """What probabilities(frequencies(flat, values, channel)) gives, written into out (N, 256) float32:
        by the compiled kernel where there is one (CPU tensors), else by the torch form. `split`:
        split(flat), where the caller keeps it for the other channels."""
        if kernels.AVAILABLE and flat.device.type == "cpu":
            try:
                arguments = self._kernel_arguments(flat, values, channel, split)
                kernels.in_threads(kernels.frequencies_to_probabilities, arguments[:3],
                                   (*arguments[3:], PROBABILITY_BITS), out, torch.get_num_threads())
                return
            except Exception as error:  # noqa: BLE001 - numba's first-call compile failing on this platform
                kernels.disable(f"{type(error).__name__}: {error}", error)
        super().probabilities(flat, values, channel, out)

    def compiled_masses(self, flat: torch.Tensor, values: torch.Tensor, channel: int) -> torch.Tensor:
        """The compiled kernel's masses (N, 256) int64, for tests to hold to _full_masses."""
        out = np.empty((len(flat), 256), dtype=np.int64)
        kernels.masses(*self._kernel_arguments(flat, values, channel), out)
        return torch.from_numpy(out)

    def _kernel_arguments(self, flat: torch.Tensor, values: torch.Tensor, channel: int, split=None) -> tuple:
        """The table kernel's arguments: _channel_terms by its compiled form (the same integers), from
        split(flat) where the caller has it."""
        logits, means, inv_scales, coeffs = self.split(flat) if split is None else split
        weights, mean, inv = (np.empty(logits.shape) for _ in range(3))
        exp = self.model.tables["exp"]
        rows = (logits, means, inv_scales, coeffs, values.numpy().astype(np.int64))
        shared = (self.model.unit_values_numpy, channel, exp.values.numpy() if exp.compact is None else exp.compact,
                  float(exp.first_q), self.model.edges_numpy, self.cdf.kernel_table, self.cdf.kernel_centre,
                  float(self.cdf.table.first_q), INV_SCALE_BITS, CDF_BITS, MIX_BITS)
        kernels.in_threads(kernels.channel_terms, rows, shared, (weights, mean, inv), torch.get_num_threads())
        zero_through, full_from = self.cdf.saturation
        return (weights, mean, inv, self.model.edges_numpy, self.cdf.kernel_table, self.cdf.kernel_centre,
                float(self.cdf.table.first_q), zero_through, full_from, INV_SCALE_BITS, CDF_BITS)

    def masses(self, flat: torch.Tensor, values: torch.Tensor, channel: int, windowed: bool = True) -> torch.Tensor:
        """The torch form's masses (N, 256) float64 integers (the reference of the compiled kernel's)."""
        weights, mean, inv = self._channel_terms(flat, values, channel)
        return self._window_masses(weights, mean, inv) if windowed else self._full_masses(weights, mean, inv)

    def frequencies(self, flat: torch.Tensor, values: torch.Tensor, channel: int,
                    windowed: bool = True) -> torch.Tensor:
        """channel_table on rows: flat (N, P) parameters, values (N, C) pixels -> (N, 256) float64 integers.

        `windowed` (the fast form) and the full form give the same integers: both are sums of the same exact
        integer terms; the full form is kept as the reference that tests hold the fast one to."""
        weights, mean, inv = self._channel_terms(flat, values, channel)
        mass = self._window_masses(weights, mean, inv) if windowed else self._full_masses(weights, mean, inv)
        return _frequencies(mass, weights.sum(dim=1, keepdim=True) * 2.0**CDF_BITS)

    def _full_masses(self, weights: torch.Tensor, mean: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        """(N, 256) float64: sum over components of weight * (CDF(upper edge) - CDF(lower edge)), every
        component at every edge: N * K * 255 lookups."""
        cdfs = self._cdf(self.model.edges, mean.unsqueeze(-1), inv.unsqueeze(-1))  # N, K, 255
        cdf = torch.matmul(weights.unsqueeze(1), cdfs).squeeze(1)  # N, 255: integers < 2**52, exact
        total = weights.sum(dim=1, keepdim=True) * 2.0**CDF_BITS  # N, 1
        cdf = torch.cat([torch.zeros_like(total), cdf, total], dim=-1)  # N, 257
        return cdf[:, 1:] - cdf[:, :-1]  # N, 256: >= 0 (the table is monotone)

    def _window_masses(self, weights: torch.Tensor, mean: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        """What _full_masses gives, from the values where each component's mass can be non-zero.

        A component's CDF table value is 0 up to some edge and full from a later one (the index grows with
        the edge), so its mass is zero outside a window of values; most components of a photo's pixels are
        narrow (measured on kodim23: 86 % of the full form's lookups hit a saturated end). The windows are
        found with float divisions, correct to within one value, and widened by one on each side; every value
        inside is computed exactly as in the full form, and a window wider than needed only adds exact zeros.
        Windows are grouped by width (powers of two) so that each group is one dense computation."""
        zero_through, full_from = self.cdf.saturation  # table indices
        n, k = weights.shape
        offset = self._offset(mean, inv)  # N, K
        scaled_inv = inv * 2.0**-INV_SCALE_BITS  # N, K
        edges = self.model.edges  # 255
        low = torch.searchsorted(edges, (zero_through + 1 - offset) / scaled_inv)  # first edge above 0
        high = torch.searchsorted(edges, (full_from - offset) / scaled_inv)  # first edge at full
        first = (low - 1).clamp_(min=0).reshape(-1)  # N * K: first value with mass (safely early)
        span = (high + 1).clamp_(max=255).reshape(-1) - first + 1  # values from first to the last with mass
        mass = torch.zeros(n * 256, dtype=torch.int64, device=weights.device)
        flat_offset, flat_inv = offset.reshape(-1), scaled_inv.reshape(-1)
        flat_weight = weights.reshape(-1).long()
        row_base = torch.arange(n, device=weights.device).repeat_interleave(k) * 256  # N * K
        smaller = 0
        for size in (8, 16, 32, 64, 128, 256):
            rows = torch.nonzero((span > smaller) & (span <= size)).squeeze(1)  # M
            smaller = size
            if len(rows) == 0:
                continue
            start = first[rows].clamp_(max=256 - size)  # M: the window's first value, inside 0..256-size
            # Upper edges of values start-1 .. start+size-1 (padded_edges[v + 1] is value v's).
            steps = torch.arange(size + 1, device=weights.device)
            x = self.model.padded_edges.index_select(0, (start.unsqueeze(1) + steps).reshape(-1))
            position = torch.addcmul(flat_offset[rows].unsqueeze(1), x.reshape(-1, size + 1),
                                     flat_inv[rows].unsqueeze(1))  # M, size+1
            cdf = self.cdf.int32.lookup(position)  # M, size+1 int32
            terms = (cdf[:, 1:] - cdf[:, :-1]).mul(flat_weight[rows].unsqueeze(1))  # M, size int64: < 2**46
            target = (row_base[rows] + start).unsqueeze(1) + steps[:size]  # M, size
            mass.index_add_(0, target.reshape(-1), terms.reshape(-1))  # integer sums < 2**52
        return mass.reshape(n, 256).double()



class IntegerGaussian(IntegerMixture):
    """The discretized Gaussian (likelihood.DiscretizedGaussian): a mixture of one component whose CDF is Phi's
    table, means from the network. Its inverse sigma: with a shared sigma a constant of the weights file (its
    log sigma in fixed point, through the same inv_scale table as the mixture's); with the optimal sigma
    (`optimal`), each tile's stored log sigma, which the pass appends to the means as C more parameters per
    pixel in fixed point (IntegerPass.set_side), through the same table."""

    def __init__(self, channels: int, model: IntegerVAE, log_sigma: torch.Tensor | None):
        super().__init__(channels, 1, model, coupling=False, cdf=_normal_cdf_table())
        self.optimal = log_sigma is None
        self.inv_sigma = None
        if not self.optimal:
            low, high = LOG_SCALE_RANGE
            # float32 -> float64 and * 2**14 are exact, rint is correctly rounded: a pure function of the weights
            log_sigma_q = torch.from_numpy(np.rint(log_sigma.detach().cpu().double().numpy() * ONE))
            self.inv_sigma = model.tables["inv_scale"](log_sigma_q.clamp(low * ONE, high * ONE))  # C

    def to(self, device: torch.device) -> "IntegerGaussian":
        super().to(device)
        if self.inv_sigma is not None:
            self.inv_sigma = self.inv_sigma.to(device)
        return self

    def _split(self, flat: torch.Tensor):
        """flat (N, C) means (optimal sigma: (N, 2C) means and log sigmas) -> (N, 1) logits (zeros), (N, 1, C)
        means and inverse sigmas, no coefficients."""
        c = self.channels
        means = flat[:, :c].reshape(-1, 1, c).clamp(-MEAN_LIMIT * ONE, MEAN_LIMIT * ONE)
        if self.optimal:
            if flat.shape[1] != 2 * c:
                raise RuntimeError("an optimal-sigma Gaussian's tables need each tile's sigma (set_side) first")
            low, high = LOG_SCALE_RANGE
            inv_scales = self.model.tables["inv_scale"](flat[:, c:].reshape(-1, 1, c).clamp(low * ONE, high * ONE))
        else:
            inv_scales = self.inv_sigma.reshape(1, 1, -1).expand(len(flat), 1, c)
        return flat.new_zeros(len(flat), 1), means, inv_scales, None

    def _weights(self, split, pixels: torch.Tensor, unit: torch.Tensor, channel: int) -> torch.Tensor:
        """One component: its weight is 2**MIX_BITS whatever came before (what the mixture's rule gives)."""
        return split[0].new_full((len(split[0]), 1), 2.0**MIX_BITS)


class IntegerCategorical(FrequencyTables):
    """The categorical decoder (likelihood.Categorical) as integer frequency tables: per subpixel, each value's
    weight exp(logit - largest logit) * 2**CATEGORICAL_BITS from a table (at least 1), frequencies in
    proportion, every one >= 1, summing to 2**PROBABILITY_BITS. Channels are independent given the latents."""

    def __init__(self, channels: int, model: IntegerVAE):
        self.channels, self.model = channels, model
        self.exp = _categorical_exp_table()

    def to(self, device: torch.device) -> "IntegerCategorical":
        self.exp = self.exp.to(device)
        return self

    def _weights(self, flat: torch.Tensor, channel: int) -> torch.Tensor:
        """(N, 256) integer weights, the largest 2**CATEGORICAL_BITS, every one >= 1."""
        logits = flat[:, channel * 256 : (channel + 1) * 256]  # N, 256
        return self.exp(logits - logits.amax(dim=1, keepdim=True)).clamp_(min=1.0)

    def frequencies(self, flat: torch.Tensor, values: torch.Tensor, channel: int,
                    windowed: bool = True) -> torch.Tensor:
        """(N, 256) float64 integers, each >= 1, summing to 2**PROBABILITY_BITS (values are not read)."""
        weights = self._weights(flat, channel)
        return _frequencies(weights, weights.sum(dim=1, keepdim=True))  # sums < 2**32: exact

    def nll_bits(self, params: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """-log2 of every pixel's probability from the integer weights (before the rounding to frequencies),
        (B, H, W) float64."""
        batch, _, height, width = params.shape
        flat = params.permute(0, 2, 3, 1).reshape(batch * height * width, -1)  # N, P
        values = pixels.permute(0, 2, 3, 1).reshape(batch * height * width, -1).long()  # N, C
        bits = torch.zeros(len(values), dtype=torch.float64, device=params.device)
        for channel in range(self.channels):
            weights = self._weights(flat, channel)
            bits += torch.log2(weights.sum(dim=1)) - torch.log2(weights.gather(1, values[:, channel : channel + 1])[:, 0])
        return bits.reshape(batch, height, width)


def _integer_likelihood(model: HierarchicalVAE, integer: IntegerVAE):
    """The integer twin of model.likelihood: what gives the coder its frequency tables."""
    config = model.config
    if config.likelihood == "gaussian":
        return IntegerGaussian(config.image_channels, integer, model.likelihood.log_sigma)
    if config.likelihood == "gaussian-optimal":
        return IntegerGaussian(config.image_channels, integer, None)
    if config.likelihood == "categorical":
        return IntegerCategorical(config.image_channels, integer)
    return IntegerMixture(config.image_channels, config.num_mixtures, integer, config.channel_coupling)


def probabilities(frequencies: torch.Tensor) -> np.ndarray:
    """Integer frequencies (float64 or int64) -> float32 probabilities for the coder, exact (f / 2**24 with
    f < 2**24 has a 24-bit significand)."""
    return (frequencies.double() * 2.0**-PROBABILITY_BITS).float().cpu().numpy()


def latent_to_fixed(values: np.ndarray) -> np.ndarray:
    """Latent values (float64, on the coder's grid) -> fixed point, by one exact rounding."""
    return np.rint(np.asarray(values, dtype=np.float64) * ONE)


def fixed_to_float(q: torch.Tensor) -> np.ndarray:
    """Integers in 2**-FRACTION_BITS units -> float64 values (exact)."""
    return q.double().cpu().numpy() / ONE


assert math.log2(ONE) == FRACTION_BITS
