"""sigma-VAE's optimal sigma (paper 002, `--likelihood gaussian-optimal`): each image (each coded tile) gets the
analytic sigma of its means per channel, on a grid of 1/16 nat in log sigma; the encoder stores it in the file
(side symbols, codec/protocol.py) and the decoder reads it before the tile's pixels. The generic likelihood
tests (float and integer tables, a fresh-process round trip under other kernels, config rules) run it too:
tests/test_model_options.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_weights, run_cli
from PIL import Image

from codec.ans import Stack
from codec.pixels import pop_pixels, push_pixels
from codec.tiling import TileSpec
from vaezip.config import get_preset
from vaezip.model import HierarchicalVAE
from vaezip.model.likelihood import (
    OPTIMAL_LOG_SIGMA_LOW,
    OPTIMAL_SIGMA_CODES,
    optimal_log_sigma,
    optimal_sigma_codes,
    pixels_to_unit,
)

CONFIG = dataclasses.replace(get_preset("tiny").model, likelihood="gaussian-optimal")


def _textured(seed: int, size=(40, 48), noise=(2.0, 30.0)) -> np.ndarray:
    """A colour image whose left half is smooth and right half noisy: its tiles want different sigmas."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    base = 120 + 50 * np.sin(x / 6.0)[..., None] + 30 * np.cos(y / 5.0)[..., None]
    spread = np.where(x < width // 2, noise[0], noise[1])[..., None]
    return np.clip(base + rng.normal(0, 1, (height, width, 3)) * spread, 0, 255).astype(np.uint8)


def test_codes_are_the_nearest_log_sigma_of_the_mean_squared_error_at_real_pixels():
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    means = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 8, 8))).float()
    mask = torch.ones(2, 1, 8, 8)
    mask[1, :, 4:, :] = 0  # image 1: only its top half is real
    codes = optimal_sigma_codes(means, pixels, mask)
    assert codes.shape == (2, 3) and codes.dtype == torch.int64
    error = (pixels_to_unit(pixels).double() - means.double()) ** 2
    for b, rows in ((0, slice(None)), (1, slice(0, 4))):
        for c in range(3):
            log_sigma = 0.5 * math.log(float(error[b, c, rows].mean()))
            expected = round((log_sigma - OPTIMAL_LOG_SIGMA_LOW) * 16)
            assert int(codes[b, c]) == expected and abs(float(optimal_log_sigma(codes[b, c])) - log_sigma) <= 1 / 32
    # the padding does not count: changing it changes nothing
    other = pixels.clone()
    other[1, :, 4:] = 255 - other[1, :, 4:]
    assert torch.equal(optimal_sigma_codes(means, other, mask), codes)
    # perfect means: the smallest sigma; hopeless ones: the largest
    assert int(optimal_sigma_codes(pixels_to_unit(pixels), pixels, None).max()) == 0
    assert int(optimal_sigma_codes(torch.full_like(means, 40.0), pixels, None).min()) == OPTIMAL_SIGMA_CODES - 1


def test_the_bound_pays_the_stored_sigmas_and_training_learns_no_sigma_parameter():
    torch.manual_seed(0)
    model = HierarchicalVAE(CONFIG)
    assert not any("log_sigma" in name for name, _ in model.named_parameters())
    pixels = torch.from_numpy(np.stack([_textured(1), _textured(2)]).transpose(0, 3, 1, 2).copy())
    torch.manual_seed(3)
    with torch.no_grad():
        out = model(pixels)
    # by hand: the same latent noise, the pixels under each image's stored sigmas, plus 7 bits per channel
    torch.manual_seed(3)
    walk = model.walk(pixels, 2, 40, 48)
    with torch.no_grad():
        for _ in range(walk.num_groups):
            step = walk.step()
            walk.advance(step.post_mean + step.post_std * torch.randn_like(step.post_std))
        params = model.likelihood.with_sigma(walk.pixel_params(), pixels, None)
        nll = -model.likelihood.log_prob(params, pixels).double().flatten(1).sum(1) / math.log(2)
    side = 3 * math.log2(OPTIMAL_SIGMA_CODES)
    assert model.likelihood.side_bits == side == 21
    assert float(out.nll_bits) == pytest.approx(float(nll.sum()) + 2 * side, rel=1e-5)
    # the means get gradients, as with a shared sigma
    torch.manual_seed(3)
    model(pixels).loss.backward()
    assert model.decoder.head.weight.grad is not None and torch.isfinite(model.decoder.head.weight.grad).all()


def test_each_tile_stores_its_own_sigma_and_the_decoder_pops_it_first():
    """Through the real integer pass: a well and a badly predicted tile of one batch get different codes, pushed after
    their pixels; a decoder pass (no pixels) pops them and rebuilds the same tiles."""
    from vaezip.coding import TorchLatentModel

    torch.manual_seed(1)
    model = HierarchicalVAE(CONFIG)
    coder = TorchLatentModel(model)
    # With every latent at its prior mean the means do not depend on the pixels: one tile is those means
    # (rounded to pixel values), the other noise.
    with torch.no_grad():
        walk = model.walk(None, 1, 16, 16)
        for _ in range(walk.num_groups):
            walk.advance(walk.step().prior_mean)
        means = walk.pixel_params()[0].double().numpy()  # 3, 16, 16
    close = np.clip(np.rint((means + 1) * 127.5), 0, 255).astype(np.uint8)
    noise = np.random.default_rng(4).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    tiles = np.stack([close, noise])  # 2, 3, 16, 16
    mask = np.ones((2, 16, 16), dtype=bool)

    def set_prior_means(batch):
        for group in range(batch.num_groups):
            batch.set_latent(group, batch.latent_params(group).prior_mean)

    encoder = coder.begin(tiles.shape, tiles)
    set_prior_means(encoder)
    assert encoder.side_size == OPTIMAL_SIGMA_CODES and encoder.side_count == 3
    codes = encoder.choose_side(tiles, mask)
    assert codes.shape == (2, 3) and (codes[1] > codes[0] + 16).all()  # the noisy tile: a far wider sigma
    stack = Stack()
    bits = push_pixels(stack, encoder, tiles, mask)
    assert (bits > 0).all()
    decoder = coder.begin(tiles.shape, None)
    set_prior_means(decoder)
    specs = [TileSpec((3, 16, 16), (16, 16))] * 2
    assert np.array_equal(pop_pixels(stack, decoder, specs), tiles) and stack.is_empty()
    # the stored sigma is what the tables used: another sigma gives other bits
    other = coder.begin(tiles.shape, tiles)
    set_prior_means(other)
    other.choose_side = lambda pixels, mask: np.full((2, 3), OPTIMAL_SIGMA_CODES - 1)
    assert push_pixels(Stack(), other, tiles, mask).sum() > bits.sum() + 1000


def test_files_with_the_predictor_decode_elsewhere_and_importance_coding_is_refused(tmp_path):
    from vaezip.api import compress_images, load_model, read_header

    weights = make_tiny_weights(tmp_path / "tiny-optimal.safetensors", 3, "tiny-optimal", seed=2,
                                likelihood="gaussian-optimal")
    image = _textured(5)
    Image.fromarray(image).save(tmp_path / "image.png")
    loaded = load_model(weights)
    # the encoder prices every tile with the model (the float estimate) and the first ones with the integer
    # model (tile_bounds), each with the tile's stored sigmas: the two agree
    from codec.tiling import split_tiles
    from vaezip.coding import TorchLatentModel

    coder = TorchLatentModel(loaded.model)
    tiles = split_tiles(image.transpose(2, 0, 1).copy(), 16, loaded.model.config.stride)
    exact, estimate = coder.tile_bounds(tiles), coder.tile_bounds(tiles, estimate=True)
    assert np.allclose(exact, estimate, rtol=0.02), (exact, estimate)
    result = compress_images([("image.png", Image.fromarray(image))], loaded, tile=16, device="cpu", classical=False)
    assert read_header(result.data).coder.schedule
    (tmp_path / "image.vz").write_bytes(result.data)
    done = run_cli("decompress", tmp_path / "image.vz", "-o", tmp_path / "out.png", "-m", weights,
                   env={"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), image)
    done = run_cli("compress", tmp_path / "image.png", "-o", tmp_path / "iw.vz", "-m", weights, "--samples", "4")
    error = done.stderr.decode().strip()
    assert done.returncode != 0 and "sigma" in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "iw.vz").exists()


def test_training_and_a_grey_model_made_from_a_colour_one(tmp_path):
    from vaezip.checkpoint import load_checkpoint, model_from_checkpoint
    from vaezip.model.convert import grey_from_colour
    from vaezip.train import train

    x = np.random.default_rng(0).integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x)
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
    summary = train(tmp_path / "run", str(tmp_path / "tiny.npz"), get_preset("tiny"), steps=3,
                    train_overrides=overrides, model_options={"likelihood": "gaussian-optimal"}, coded_validation=None)
    assert summary["step"] == 3 and math.isfinite(summary["val_bpsp"] or 0.0)
    model = model_from_checkpoint(load_checkpoint(tmp_path / "run"))
    assert model.config.likelihood == "gaussian-optimal" and model.likelihood.optimal
    grey = grey_from_colour(model)
    assert grey.config.image_channels == 1 and grey.likelihood.side_bits == 7
