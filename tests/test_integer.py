"""The integer-exact model (vaezip/model/integer.py): its arithmetic, its tables, and how close it stays to the
float model it is derived from. Portability across kernels and threads: tests/test_portability.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import assert_decoder_posteriors_equal_a_second_pass

from vaezip.config import get_preset
from vaezip.model import HierarchicalVAE
from vaezip.model.integer import (
    EXACT,
    LIMIT_Q,
    PROBABILITY_BITS,
    IntConv,
    Table,
    IntegerVAE,
    deterministic_exp,
    deterministic_log2,
    fixed_to_float,
    probabilities,
)
from vaezip.model import integer as integer_module
from vaezip.model import kernels


def test_deterministic_exp_and_log2_are_accurate():
    x = np.linspace(-40, 40, 20001)
    assert np.max(np.abs(deterministic_exp(x) / np.exp(x) - 1)) < 4e-15
    y = np.exp(np.linspace(-40, 40, 20001))
    assert np.max(np.abs(deterministic_log2(y) - np.log2(y))) < 4e-14


def test_tables_have_the_shape_of_their_functions():
    tables = IntegerVAE(HierarchicalVAE(get_preset("tiny").model)).tables
    for name in ("sigmoid", "exp", "softplus", "tanh"):
        assert torch.all(torch.diff(tables[name].values) >= 0), name  # monotone: CDFs never decrease
    assert torch.all(torch.diff(tables["inv_scale"].values) <= 0)
    q = torch.tensor([-2.0**20, -16384.0, 0.0, 16384.0, 2.0**20], dtype=torch.float64)
    assert tables["silu"](q).tolist() == [0.0, float(np.rint(-0.2689414213699951 * 16384)), 0.0,
                                          float(np.rint(0.7310585786300049 * 16384)), 2.0**20]  # identity above
    assert tables["sigmoid"](torch.tensor([0.0], dtype=torch.float64)).item() == 2.0**29


def test_integer_convolution_matches_the_float_one_and_refuses_inexact_layers():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    x = torch.randn(2, 16, 9, 7)
    integer = IntConv(conv.weight, conv.bias, 1, 1)
    y = fixed_to_float(integer(torch.round(x.double() * 16384)))
    assert np.max(np.abs(y - conv(x).detach().double().numpy())) < 2e-3
    with pytest.raises(ValueError, match="2\\*\\*53"):
        IntConv(torch.full((1, 2**16, 3, 3), 1.0), None)  # a fan-in of 589,824 weights at full scale


def _exact_convolution(conv: IntConv, x: np.ndarray) -> np.ndarray:
    """IntConv's output computed with Python-exact int64 sums: the reference for every form it picks."""
    k, s, p = conv.kernel, conv.stride, conv.padding
    weight = conv.weight.numpy().astype(np.int64).reshape(conv.out_channels, -1, k, k)
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p)))
    batch, _, height, width = padded.shape
    out_h, out_w = (height - k) // s + 1, (width - k) // s + 1
    total = np.zeros((batch, conv.out_channels, out_h, out_w), dtype=np.int64)
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i : i + s * out_h : s, j : j + s * out_w : s]  # B, C, h, w
            total += np.einsum("oc,bchw->bohw", weight[:, :, i, j], window)
    total += conv.bias.numpy().astype(np.int64).reshape(1, -1, 1, 1)
    shift = np.rint(-np.log2(conv.scale.numpy().reshape(1, -1, 1, 1))).astype(np.int64)  # scale = 2**-shift
    rounded = np.where(shift > 0, (total + (np.int64(1) << np.maximum(shift - 1, 0))) >> np.maximum(shift, 0),
                       total << np.maximum(-shift, 0))
    return np.clip(rounded, -LIMIT_Q, LIMIT_Q).astype(np.float64)


@pytest.mark.parametrize("gemm_backend", [True, False])
def test_every_integer_convolution_form_gives_the_exact_integers(monkeypatch, gemm_backend):
    """IntConv picks its form by shape (one GEMM over a batch of small maps, shifted tap sums for few outputs,
    per-sample im2col, unfold + matmul where torch's backend is not known to be im2col): each must give the
    int64 reference's integers, with activations at the full fixed-point range."""
    if not gemm_backend:
        monkeypatch.setattr(integer_module, "_im2col_gemm_conv", lambda *arguments: False)
    rng = np.random.default_rng(8)
    shapes = [  # (in, out, kernel, stride, padding, batch, height, width)
        (16, 8, 3, 1, 1, 3, 9, 7),  # few outputs: shifted tap sums
        (16, 40, 3, 1, 1, 3, 9, 7),  # im2col
        (24, 40, 3, 1, 1, 5, 4, 4),  # a batch of small maps: one GEMM
        (24, 40, 3, 1, 1, 1, 4, 4),  # a single small map
        (12, 20, 2, 2, 0, 3, 8, 6),  # downsampling
        (10, 30, 1, 1, 0, 2, 5, 5),  # 1x1
        (10, 8, 5, 1, 2, 2, 6, 6),  # few outputs, a 5x5 kernel
    ]
    for channels, out, kernel, stride, padding, batch, height, width in shapes:
        weight = torch.from_numpy(rng.standard_normal((out, channels, kernel, kernel)).astype(np.float32))
        bias = torch.from_numpy(rng.standard_normal(out).astype(np.float32))
        conv = IntConv(weight, bias, stride, padding)
        x = rng.integers(-LIMIT_Q, LIMIT_Q + 1, (batch, channels, height, width)).astype(np.float64)
        got = conv(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(got, _exact_convolution(conv, x), err_msg=str((channels, out, kernel)))


def _walk(model, integer, pixels):
    """Float and integer pixel parameters with the same latents (the integer posterior means on the grid)."""
    batch, _, height, width = pixels.shape
    walk_f, walk_i = model.walk(pixels, batch, height, width), integer.walk(pixels, batch, height, width)
    for _ in range(walk_i.num_groups):
        walk_f.step()
        _, _, post_mean, _ = walk_i.step()
        z = torch.round(post_mean / 64) * 64  # on the coder's grid (2**-8), fixed point 2**-14
        walk_i.advance(z)
        walk_f.advance((z / 16384).float())
    return walk_f.pixel_params(), walk_i.pixel_params()


@pytest.mark.parametrize("channels", [1, 3])
def test_integer_tables_are_proper_and_cost_what_the_float_tables_cost(channels):
    """Every table row: integers >= 1 summing to 2**24. The cost of real pixels under the integer tables stays
    within 1 % of the float tables' (the same network, quantized)."""
    torch.manual_seed(1)
    model = HierarchicalVAE(dataclasses.replace(get_preset("cpu").model, image_channels=channels)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    integer = IntegerVAE(model)
    y, x = np.mgrid[0:16, 0:16]
    smooth = (128 + 60 * np.sin(x / 3.0) + 40 * np.cos(y / 5.0))[None, None].repeat(channels, 1).repeat(2, 0)
    pixels = torch.from_numpy(np.clip(smooth + np.random.default_rng(0).normal(0, 4, smooth.shape), 0, 255)
                              .astype(np.uint8))
    with torch.inference_mode():
        params_f, params_i = _walk(model, integer, pixels)
        bits_f = bits_i = 0.0
        for c in range(channels):
            table = integer.likelihood.channel_table(params_i, pixels, c)  # B, H, W, 256
            assert table.dtype == torch.int64 and table.min() >= 1
            assert torch.all(table.sum(-1) == 2**PROBABILITY_BITS)
            value = pixels[:, c, :, :, None].long()
            bits_i += float((PROBABILITY_BITS - torch.log2(table.gather(-1, value).double())).sum())
            float_table = model.likelihood.channel_table(params_f, pixels, c)
            bits_f += float(-torch.log2(float_table.gather(-1, value).double()).sum())
        estimate = float(integer.likelihood.nll_bits(params_i, pixels).sum())  # the encoder's cheap bound
    assert abs(bits_i - bits_f) / bits_f < 0.01, (bits_i, bits_f)
    assert abs(estimate - bits_i) / bits_i < 1e-3, (estimate, bits_i)


@pytest.mark.parametrize("likelihood", ["logistic-mixture", "categorical"])
def test_integer_pass_tables_skip_the_table_check_with_the_same_result(likelihood):
    """An integer pass promises exact frequency tables (exact_tables), so pixels.py takes them through
    ans.frequency_tables instead of check_tables' passes: both give the same rows and sums, on whole tables
    and on the valid rows of partial tiles, with some last entries below the coder's floor."""
    from codec.ans import check_tables, frequency_tables
    from vaezip.coding import TorchLatentModel

    torch.manual_seed(3)
    config = dataclasses.replace(get_preset("tiny").model, likelihood=likelihood)
    model = HierarchicalVAE(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    pixels = np.random.default_rng(3).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    pixels[:, :, :8] = 255  # last values: their tables' last entries are far above the floor
    batch = TorchLatentModel(model).begin(pixels.shape, pixels)
    assert batch.exact_tables
    for group in range(batch.num_groups):
        params = batch.latent_params(group)
        batch.set_latent(group, np.rint(params.post_mean * 256) / 256)
    mask = np.ones((2, 16, 16), dtype=bool)
    mask[1, 12:] = False
    below_floor = 0
    for channel in range(3):
        seen = pixels.copy()
        seen[:, channel:] = 0
        table = batch.pixel_table(channel, seen)
        for rows in (table.reshape(-1, 256), table[mask]):
            expected = check_tables(rows.copy())
            below_floor += int((rows[:, -1] < expected.rows[:, -1]).sum())
            got = frequency_tables(np.ascontiguousarray(rows.copy()))
            np.testing.assert_array_equal(got.rows, expected.rows)
            np.testing.assert_array_equal(got.sums, expected.sums)
    # Peaked rows, as a trained model's are: last entries of 1 to 40 (floor: 16 of 2**24).
    rng = np.random.default_rng(4)
    frequencies = rng.integers(1, 40, (500, 256))
    frequencies[np.arange(500), rng.integers(0, 255, 500)] += 2**24 - frequencies.sum(1)
    rows = (frequencies * 2.0**-PROBABILITY_BITS).astype(np.float32)
    expected = check_tables(rows.copy())
    below_floor += int((rows[:, -1] < expected.rows[:, -1]).sum())
    got = frequency_tables(rows.copy())
    np.testing.assert_array_equal(got.rows, expected.rows)
    np.testing.assert_array_equal(got.sums, expected.sums)
    assert below_floor > 0


def test_tables_do_not_depend_on_the_batch_they_are_computed_in():
    """The coder builds tables in row chunks and batches of any size: each pixel's table is its own."""
    torch.manual_seed(2)
    model = HierarchicalVAE(get_preset("tiny").model).eval()
    integer = IntegerVAE(model)
    pixels = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8))
    with torch.inference_mode():
        walk = integer.walk(pixels, 3, 8, 8)
        for _ in range(walk.num_groups):
            walk.step()
            walk.advance(torch.zeros_like(walk._feature[:, :4]))
        params = walk.pixel_params()
        whole = integer.likelihood.channel_table(params, pixels, 2)
        rows = integer.likelihood.channel_table(params[1:2, :, 3:5], pixels[1:2, :, 3:5], 2)
    assert torch.equal(whole[1:2, 3:5], rows)


def test_every_partial_sum_bound_holds_for_the_shipped_shapes():
    """The exactness bound is checked per layer when a model is built; the presets' shapes pass it."""
    for preset in ("tiny", "cpu", "gpu"):
        IntegerVAE(HierarchicalVAE(get_preset(preset).model))
    assert EXACT == 2.0**53


@pytest.mark.parametrize("channels", [1, 3])
def test_windowed_tables_equal_the_full_tables(channels):
    """The fast table builder (each component only where its CDF moves) gives the very integers of the full
    one (every component at every edge), for parameters across and beyond their clamps: narrow and flat
    components, means at and past both ends of the pixel range, extreme logits and coefficients."""
    torch.manual_seed(3)
    integer = IntegerVAE(HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=channels)))
    k = integer.config.num_mixtures
    params = torch.randn(2, k + 2 * k * channels + (3 * k if channels == 3 else 0), 12, 12, dtype=torch.float64)
    scale = torch.tensor([4.0, 1.5, 9.0, 30.0, 0.01], dtype=torch.float64)  # in units of 2**14 (fixed point)
    params *= scale[torch.randint(0, len(scale), params.shape)] * 16384
    params = torch.round(params)
    pixels = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, channels, 12, 12), dtype=np.uint8))
    pixels[0, :, :2] = 0
    pixels[1, :, :2] = 255
    flat = params.permute(0, 2, 3, 1).reshape(-1, params.shape[1])
    values = pixels.permute(0, 2, 3, 1).reshape(-1, channels)
    for c in range(channels):
        fast = integer.likelihood.channel_table(params, pixels, c)
        full = integer.likelihood.channel_table(params, pixels, c, windowed=False)
        assert torch.equal(fast, full), c
        if kernels.AVAILABLE:  # the compiled kernel: the same masses, and the same tables for the coder
            if c > 0:  # components the channels before rule out (weight 0), which the kernel skips, among them
                assert (integer.likelihood._channel_terms(flat, values, c)[0] == 0).any()
            reference = integer.likelihood.masses(flat, values, c, windowed=False)
            assert torch.equal(integer.likelihood.compiled_masses(flat, values, c).double(), reference), c
            compiled = np.empty((len(flat), 256), dtype=np.float32)
            integer.likelihood.probabilities(flat, values, c, compiled)
            np.testing.assert_array_equal(compiled, probabilities(full.reshape(-1, 256)))


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
@pytest.mark.parametrize("channels, coupling", [(1, True), (3, True), (3, False)])
def test_compiled_channel_terms_equal_the_torch_form(channels, coupling):
    """The mixture weights given the channels before (their value probabilities, renormalised), the coupled
    means and the inverse scales, by the compiled kernel and by torch: the same integers, for parameters
    across and beyond their clamps and pixels at both ends of the range."""
    torch.manual_seed(5)
    config = dataclasses.replace(get_preset("tiny").model, image_channels=channels, channel_coupling=coupling)
    likelihood = IntegerVAE(HierarchicalVAE(config)).likelihood
    k = config.num_mixtures
    width = k + 2 * k * channels + (3 * k if likelihood.coupled else 0)
    scale = torch.tensor([4.0, 1.5, 9.0, 30.0, 0.01, 200.0], dtype=torch.float64) * 16384
    flat = torch.round(torch.randn(3000, width, dtype=torch.float64) * scale[torch.randint(0, 6, (3000, width))])
    values = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (3000, channels), dtype=np.uint8))
    values[:300], values[300:600] = 0, 255
    for c in range(channels):
        expected = likelihood._channel_terms(flat, values, c)
        compiled = likelihood._kernel_arguments(flat, values, c)[:3]
        for name, want, got in zip(("weights", "means", "inverse scales"), expected, compiled):
            np.testing.assert_array_equal(got, want.numpy(), err_msg=f"channel {c}: {name}")


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
def test_the_torch_form_stands_in_for_the_kernel_with_the_same_tables(monkeypatch):
    """Where numba is missing, or its compiled kernel fails on first use, the coder builds the same tables
    with the torch form (a file made with one decodes with the other)."""
    torch.manual_seed(4)
    integer = IntegerVAE(HierarchicalVAE(get_preset("tiny").model))
    k = integer.config.num_mixtures
    flat = torch.round(torch.randn(300, k + 6 * k + 3 * k, dtype=torch.float64) * 3 * 16384)
    values = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (300, 3), dtype=np.uint8))
    compiled, fallback, after_failure = (np.empty((300, 256), dtype=np.float32) for _ in range(3))
    integer.likelihood.probabilities(flat, values, 2, compiled)
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    integer.likelihood.probabilities(flat, values, 2, fallback)
    np.testing.assert_array_equal(fallback, compiled)

    def broken(*arguments):
        raise RuntimeError("no machine code for this platform")

    for kernel in ("frequencies_to_probabilities", "channel_terms"):  # either compiled step failing
        monkeypatch.setattr(kernels, "AVAILABLE", True)
        with monkeypatch.context() as patched:
            patched.setattr(kernels, kernel, broken)
            with pytest.warns(RuntimeWarning, match="torch form"):
                integer.likelihood.probabilities(flat, values, 2, after_failure)
        np.testing.assert_array_equal(after_failure, compiled)
        assert not kernels.AVAILABLE


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
def test_compiled_table_lookups_equal_the_torch_form():
    """Every activation table, through the compiled lookup and the torch form: inputs inside, at both ends of
    and far beyond each table (identity above for silu and softplus, the first / last value otherwise),
    non-contiguous inputs included, and the same integers with the kernel switched off."""
    tables = dict(IntegerVAE(HierarchicalVAE(get_preset("tiny").model)).tables)
    assert all(table.compact is not None for table in tables.values())  # all fit int32: the compact form
    # and one that does not (values to 2**40), gathered from its float64 values
    tables["wide"] = Table(-300, torch.arange(600, dtype=torch.float64) * 2.0**31, identity_above=True,
                           output_per_input=2.0**31)
    assert tables["wide"].compact is None
    rng = np.random.default_rng(7)
    for name, table in tables.items():
        ends = [table.first_q + d for d in (-2**30, -1, 0, 1)] + [table.first_q + len(table.values) - 1 + d
                                                                  for d in (-1, 0, 1, 2**30)]
        inside = rng.integers(table.first_q - 1000, table.first_q + len(table.values) + 1000, 5000)
        flat = torch.from_numpy(np.concatenate([ends, inside]).astype(np.float64))
        q = torch.stack([flat, -flat], dim=1)[:, 0]  # every input, as a strided view
        assert not q.is_contiguous()
        compiled, reference = table(q), table.torch_form(q)
        assert torch.equal(compiled, reference), name
        assert compiled.shape == q.shape


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
@pytest.mark.parametrize("half", [True, False], ids=["half-table", "whole-table"])
def test_compiled_masses_equal_the_full_masses_where_edges_hit_the_saturation_bounds(half):
    """The compiled kernel finds each component's window by its own search: components placed so that some
    value's edge lands on or next to the sigmoid table's last zero and first full index (exactly at slope 1,
    within slope - 1 below at the others), where an off-by-one in the window would lose or double a CDF
    step. With the symmetric table's upper half (what the coder uses) and with the whole table."""
    from vaezip.model.integer import CDF_BITS, INV_SCALE_BITS

    integer = IntegerVAE(HierarchicalVAE(get_preset("tiny").model))
    zero_through, full_from = integer.likelihood.cdf.saturation
    first_q = integer.tables["sigmoid"].first_q
    edges = integer.edges_numpy
    rng = np.random.default_rng(5)
    rows, k = 400, 4
    weights = rng.integers(1, 2**16 + 1, (rows, k)).astype(np.float64)
    slopes = rng.choice([1, 2, 3, 1000], (rows, k))  # table indices per fixed-point unit of pixel value
    inv = slopes * 2.0**INV_SCALE_BITS
    targets = rng.choice([zero_through + d for d in (-1, 0, 1, 2)] + [full_from + d for d in (-2, -1, 0, 1)],
                         (rows, k))
    hit = rng.integers(0, 255, (rows, k))  # the value whose upper edge lands on the target index
    # index(edge) = slope * (edge - mean) - first_q (the +1/2 of the rounding floors away): solve for mean
    mean = edges[hit] - np.floor((targets + first_q) / slopes)
    cdf = integer.likelihood.cdf
    assert cdf.kernel_centre == len(cdf.numpy) // 2  # the sigmoid table is symmetric: the coder reads its half
    table, centre = (cdf.kernel_table, cdf.kernel_centre) if half else (cdf.numpy, -1)
    arguments = (weights, mean, inv, edges, table, centre, float(first_q), zero_through, full_from,
                 INV_SCALE_BITS, CDF_BITS)
    compiled = np.empty((rows, 256), dtype=np.int64)
    kernels.masses(*arguments, compiled)
    reference = integer.likelihood._full_masses(*(torch.from_numpy(a) for a in (weights, mean, inv)))
    assert torch.equal(torch.from_numpy(compiled).double(), reference)


def test_the_kernel_reads_half_of_a_symmetric_cdf_table_and_the_whole_of_any_other():
    """CdfTable hands the kernel the upper half only where value[c + k] + value[c - k] = 2**CDF_BITS for every
    k: the sigmoid's and Phi's tables (each entry then comes back the same), not a table with one entry off."""
    from vaezip.model.integer import CDF_BITS, CdfTable, _normal_cdf_table

    for table in (IntegerVAE(HierarchicalVAE(get_preset("tiny").model)).tables["sigmoid"], _normal_cdf_table()):
        cdf = CdfTable(table)
        whole = cdf.numpy.astype(np.int64)
        centre = cdf.kernel_centre
        assert centre == len(whole) // 2
        upper = cdf.kernel_table.astype(np.int64)
        rebuilt = np.concatenate([2**CDF_BITS - upper[1:][::-1], upper])
        np.testing.assert_array_equal(rebuilt, whole)
    values = table.values.clone()
    values[len(values) // 2 - 7] += 1  # still monotone, no longer symmetric
    lopsided = CdfTable(Table(table.first_q, values))
    assert lopsided.kernel_centre == -1 and lopsided.kernel_table is lopsided.numpy


def _kernel_rows(rows: int = 7000, seed: int = 7):
    """Arguments of the compiled table kernel (but `out`) for `rows` pixels of a perturbed tiny model."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(get_preset("tiny").model).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    integer = IntegerVAE(model)
    flat = torch.from_numpy(np.random.default_rng(seed).normal(0, 2, (rows, 10 * model.config.num_mixtures))
                            * integer_module.ONE).floor()
    values = torch.from_numpy(np.random.default_rng(seed + 1).integers(0, 256, (rows, 3)))
    return integer.likelihood._kernel_arguments(flat, values, 2)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
def test_the_table_kernel_gives_the_same_tables_on_any_number_of_threads():
    arguments = _kernel_rows()
    shared = (*arguments[3:], PROBABILITY_BITS)
    tables = {}
    for threads in (1, 2, 3):
        out = np.empty((len(arguments[0]), 256), dtype=np.float32)
        kernels.in_threads(kernels.frequencies_to_probabilities, arguments[:3], shared, out, threads)
        tables[threads] = out
    assert kernels.MIN_ROWS_PER_THREAD * 3 <= len(arguments[0])  # 2 and 3 threads really cut the rows
    np.testing.assert_array_equal(tables[1], tables[2])
    np.testing.assert_array_equal(tables[1], tables[3])


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
def test_a_file_coded_with_threaded_tables_decodes_on_one_thread(tmp_path, monkeypatch):
    """End to end: batches of 16 tiles of 16x16 (4,096 table rows) are built in two threads here, and the
    file decodes exactly in a fresh process on one thread (one range per table)."""
    from conftest import make_tiny_weights, round_trip_in_fresh_processes, smooth_rgb

    cuts = []
    real = kernels.in_threads
    monkeypatch.setattr(kernels, "in_threads", lambda kernel, rows, shared, out, threads: (
        cuts.append(min(threads, len(out) // kernels.MIN_ROWS_PER_THREAD)), real(kernel, rows, shared, out, threads)))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weights = make_tiny_weights(tmp_path / "tiny-threads.safetensors", 3, "tiny-threads", seed=8)
        round_trip_in_fresh_processes(tmp_path, weights, smooth_rgb(96, 96, seed=8),
                                      envs=({"OMP_NUM_THREADS": "1"},))
    finally:
        torch.set_num_threads(threads)
    assert max(cuts) >= 2  # some tables really were cut


def _threaded_tables_in_a_fork(arguments, queue) -> None:
    """The child's part: only numpy and the kernel (torch's OpenMP does not survive a fork)."""
    out = np.empty((len(arguments[0]), 256), dtype=np.float32)
    kernels.in_threads(kernels.frequencies_to_probabilities, arguments[:3], (*arguments[3:], PROBABILITY_BITS),
                       out, 2)
    queue.put(out.sum(dtype=np.float64))


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
def test_a_forked_process_gets_its_own_kernel_threads():
    """A process forked after the kernel's thread pool started has a copy of the pool without its threads (and
    maybe a held lock): it must make its own rather than wait on them forever."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("this platform cannot fork")
    arguments = _kernel_rows()
    out = np.empty((len(arguments[0]), 256), dtype=np.float32)
    kernels.in_threads(kernels.frequencies_to_probabilities, arguments[:3], (*arguments[3:], PROBABILITY_BITS),
                       out, 2)  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_threaded_tables_in_a_fork, args=(arguments, queue))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked process hung on the kernel's thread pool")
    assert child.exitcode == 0 and queue.get(timeout=10) == out.sum(dtype=np.float64)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the coder uses the torch form")
def test_compiled_window_search_does_not_depend_on_its_guess():
    """Each window bound is the first value whose edge reaches a table index, found by walking from a guess:
    every guess, good or bad, must give the brute-force answer."""
    integer = IntegerVAE(HierarchicalVAE(get_preset("tiny").model))
    edges, last = integer.edges_numpy, len(integer.likelihood.cdf.numpy) - 1
    rng = np.random.default_rng(6)
    for _ in range(300):
        offset, slope = float(rng.integers(-(2**20), 2**20)), float(rng.choice([0.01, 1.0, 7.0, 300.0]))
        indices = np.clip(np.floor(offset + edges * slope), 0, last)
        target = int(rng.choice(indices)) + int(rng.integers(-1, 2))
        at_least = int(rng.integers(0, 3))
        qualifying = np.nonzero(indices[at_least:] >= target)[0]
        expected = at_least + int(qualifying[0]) if len(qualifying) else 255
        if at_least > 0 and indices[at_least - 1] >= target:
            continue  # outside the contract: a value below at_least qualifies
        for guess in (0, 1, expected - 1, expected, expected + 1, 254, 255, 400):
            assert kernels.first_edge_above(edges, offset, slope, last, target, guess, at_least) == expected


def test_decoder_posteriors_equal_a_second_pass():
    """The decoder's posteriors from the states of its prior-only walk equal a walk begun with the pixels."""
    torch.manual_seed(4)
    model = HierarchicalVAE(get_preset("tiny").model).eval()
    integer = IntegerVAE(model)
    pixels = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    assert_decoder_posteriors_equal_a_second_pass(integer, pixels)


@pytest.mark.parametrize("order", ["rows", "scales"])
def test_integer_context_phases_equal_the_full_pass_and_cost_what_the_float_head_costs(order):
    """The integer pixel-context head: refining one phase at a time (the coder) gives the very integers of
    refining every pixel at once (the bound), reading nothing of later phases; its tables cost within 1 % of
    the float head's."""
    torch.manual_seed(5)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, pixel_context=16,
                                                context_order=order)).eval()
    with torch.no_grad():
        model.context.layer_out.weight.normal_(0, 0.3)
    integer = IntegerVAE(model)
    height, width = 8, 16  # multiples of the tiny model's stride
    y, x = np.mgrid[0:height, 0:width]
    smooth = (128 + 60 * np.sin(x / 3.0) + 40 * np.cos(y / 5.0))[None, None].repeat(3, 1).repeat(2, 0)
    pixels = torch.from_numpy(np.clip(smooth + np.random.default_rng(5).normal(0, 4, smooth.shape), 0, 255)
                              .astype(np.uint8))
    valid = torch.ones(2, 1, height, width, dtype=torch.float64)
    valid[1, :, 6:] = 0
    order_of = model.context.order
    phases = torch.from_numpy(order_of.phase_map(height, width))
    with torch.inference_mode():
        params_f, params_i = _walk(model, integer, pixels)
        full = integer.context.forward(params_i, pixels, valid)
        for phase in range(int(phases.max()) + 1):
            rows, columns = (torch.from_numpy(a) for a in order_of.positions(phase, height, width))
            seen = pixels.clone()
            seen[:, :, phases >= phase] = 0  # later phases unknown to the decoder
            refined = integer.context.phase(params_i[:, :, rows, columns].unsqueeze(2), seen, valid, phase)
            assert torch.equal(refined[:, :, 0], full[:, :, rows, columns]), phase
        refined_f = model.context(params_f, pixels, valid.float())
        bits_f = bits_i = 0.0
        for c in range(3):
            value = pixels[:, c, :, :, None].long()
            table = integer.likelihood.channel_table(full, pixels, c)
            bits_i += float((PROBABILITY_BITS - torch.log2(table.gather(-1, value).double())).sum())
            float_table = model.likelihood.channel_table(refined_f, pixels, c)
            bits_f += float(-torch.log2(float_table.gather(-1, value).double()).sum())
    assert not torch.equal(full, params_i)  # the head did something
    assert abs(bits_i - bits_f) / bits_f < 0.01, (bits_i, bits_f)
