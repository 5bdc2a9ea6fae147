"""The numpy estimate (vaezip/estimate.py): the float network's negative ELBO of tiles without torch, which the
default compress prices its early exit's sample with. It must be torch's estimate (the same network, the same
bound), cover exactly the models it says it covers, check what it reads, and leave torch unimported where the
early exit is taken."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.tiling import Tile, split_tiles
from vaezip import estimate, zoo
from vaezip.api import compress_images, decompress_images
from vaezip.config import ModelConfig, StageConfig
from vaezip.errors import CheckpointError
from vaezip.images import split_image
from vaezip.model import HierarchicalVAE
from vaezip.model import layers, likelihood
from vaezip.models import identify_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "hopper.png"


class PosteriorMeans:
    """An rng whose posterior samples are the means: numpy's and torch's estimates then differ only by float
    rounding (torch.randn_like is patched to zeros on its side)."""

    @staticmethod
    def standard_normal(shape, dtype=np.float64):
        return np.zeros(shape, dtype)


def _numpy_tensors(model: HierarchicalVAE) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}


def _torch_bounds(model: HierarchicalVAE, tiles, monkeypatch=None) -> np.ndarray:
    """torch's bound of each tile: at the posterior means where `monkeypatch` is given, else at a sample."""
    if monkeypatch is not None:
        monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    pixels = torch.from_numpy(np.stack([t.pixels for t in tiles]))
    mask = np.zeros((len(tiles), 1, *pixels.shape[2:]), np.float32)
    for row, t in enumerate(tiles):
        mask[row, 0, : t.valid[0], : t.valid[1]] = 1
    with torch.no_grad():
        return model.eval()(pixels, mask=torch.from_numpy(mask)).bound_bits.double().numpy()


def _randomised(config: ModelConfig, seed: int) -> HierarchicalVAE:
    """A network with every weight random (the zero-initialised ones too), at scales that keep it finite."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.05)
    return model


def test_the_constants_are_the_models():
    assert estimate.HALF_BIN == likelihood.HALF_BIN and estimate.MIN_LOG_SCALE == likelihood.MIN_LOG_SCALE
    assert estimate.LN2 == layers.SOFTPLUS_BETA
    x = torch.linspace(-40, 40, 801)
    assert np.allclose(estimate._softplus_ln2(x.numpy()), torch.nn.functional.softplus(x, beta=layers.SOFTPLUS_BETA),
                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(zoo.manifest()["models"]))
def test_every_shipped_model_is_covered_and_its_layout_is_the_networks(name):
    config = identify_model(name).config
    assert estimate.unsupported(config) is None
    shapes = {key: tuple(value.shape) for key, value in HierarchicalVAE(config).state_dict().items()}
    assert estimate._layout(config) == shapes


def test_the_shipped_default_estimates_what_torch_does(monkeypatch):
    """photo2 at its posterior means on the sample photo's tiles, an edge tile of fewer valid pixels among them."""
    identity = identify_model("photo2")
    estimator = estimate.NumpyEstimator.from_file(identity.source, identity.sha256, identity.config)
    planes = split_image(Image.open(SAMPLE).convert("RGB").crop((0, 0, 100, 72)))
    tiles = split_tiles(planes.model_plane, 32, identity.config.stride)
    assert any(t.valid != (32, 32) for t in tiles)
    ours = np.array(estimator.tile_bounds(tiles, rng=PosteriorMeans()))
    model = HierarchicalVAE(identity.config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in estimator_tensors(identity).items()})
    torch.manual_seed(0)
    sampled_by_torch = _torch_bounds(model, tiles)
    theirs = _torch_bounds(model, tiles, monkeypatch)
    assert np.allclose(ours, theirs, rtol=2e-5), np.abs(ours / theirs - 1).max()
    # at a posterior sample (seeded: repeatable) each tile's estimate moves by the sample's noise, as torch's does
    sampled = estimator.tile_bounds(tiles, seed=0)
    assert sampled == estimator.tile_bounds(tiles, seed=0) != estimator.tile_bounds(tiles, seed=1)
    assert abs(sum(sampled) / sampled_by_torch.sum() - 1) < 0.01 and sum(sampled) > sum(ours)


def test_the_estimate_is_the_same_on_any_count_of_blas_threads():
    """The early exit prices on one BLAS thread while the quick stream is made beside it, then on all of them
    (archive._price_sample): the count, set batch by batch, must not move a figure, or a file's choices would hang
    on the timing. 24 tiles (three batches) of photo2 and of photo-gray2."""
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    switches = iter([1, None, 2] * 10)
    for name, mode in (("photo2", "RGB"), ("photo-gray2", "L")):
        identity = identify_model(name)
        estimator = estimate.NumpyEstimator.from_file(identity.source, identity.sha256, identity.config)
        planes = split_image(Image.open(SAMPLE).convert(mode).crop((0, 0, 256, 96)))
        tiles = split_tiles(planes.model_plane, 32, identity.config.stride)
        assert len(tiles) == 24
        one = estimator.tile_bounds(tiles, threads=1)
        assert estimator.tile_bounds(tiles, threads=2) == one
        assert estimator.tile_bounds(tiles, threads=lambda: next(switches)) == one
    # each setting put back
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == counts


def estimator_tensors(identity) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(identity.source)


OPTIONS = ModelConfig(
    image_channels=3, stem_factor=1, num_mixtures=3, residual_posterior=True, channel_coupling=False,
    stages=(StageConfig(width=16, encoder_blocks=2, latent_groups=0, latent_channels=4),
            StageConfig(width=24, encoder_blocks=0, latent_groups=2, latent_channels=3),
            StageConfig(width=32, encoder_blocks=1, latent_groups=1, latent_channels=5)),
)


@pytest.mark.parametrize("config", [
    OPTIONS,
    dataclasses.replace(OPTIONS, image_channels=1, stem_factor=2, residual_posterior=False, channel_coupling=True),
    dataclasses.replace(OPTIONS, channel_coupling=True, stem_factor=2),
], ids=["residual-uncoupled-stem1", "grey-stem2", "coupled"])
def test_other_networks_of_the_covered_kinds_estimate_what_torch_does(config, monkeypatch):
    """Random weights everywhere, a stage without latent groups and one without encoder blocks, residual
    posteriors, uncoupled channels, grey, and tiles whose sides are no multiple of the stride (padded)."""
    model = _randomised(config, seed=5)
    estimator = estimate.NumpyEstimator(config, _numpy_tensors(model))
    rng = np.random.default_rng(2)
    channels = config.image_channels
    side = 4 * config.stride + 3
    pixels = rng.integers(0, 256, (channels, side, side), dtype=np.uint8)
    pixels[:, :5] = 0  # the edge bins, both ways
    pixels[:, -5:] = 255
    tiles = split_tiles(pixels, 2 * config.stride, config.stride)
    assert {t.valid for t in tiles} != {(2 * config.stride,) * 2}
    # tiles whose own sides are no multiple of the stride: each side padded (edge-replicated), as torch pads
    odd = [Tile(np.ascontiguousarray(pixels[:, :side - 2, 1:]), (side - 2, side - 1)) for _ in range(2)]
    ours = np.array(estimator.tile_bounds(tiles + odd, rng=PosteriorMeans()))
    theirs = np.concatenate([_torch_bounds(model, tiles, monkeypatch), _torch_bounds(model, odd, monkeypatch)])
    assert np.all(np.isfinite(ours)) and np.allclose(ours, theirs, rtol=2e-5), np.abs(ours / theirs - 1).max()


@pytest.mark.parametrize("change, named", [
    ({"likelihood": "gaussian"}, "gaussian likelihood"), ({"pixel_context": 2}, "pixel context"),
    ({"binary_groups": 1}, "binary latent groups"), ({"global_latents": 4}, "global latents"),
])
def test_what_it_does_not_compute_it_names_and_refuses(change, named):
    config = dataclasses.replace(OPTIONS, channel_coupling=True, residual_posterior=False, **change)
    assert named in estimate.unsupported(config)
    with pytest.raises(ValueError, match=named):
        estimate.NumpyEstimator(config, {})


def test_weights_that_do_not_fit_or_a_file_not_the_manifests_are_refused(tmp_path):
    tensors = _numpy_tensors(_randomised(OPTIONS, seed=1))
    with pytest.raises(ValueError, match="do not fit"):
        estimate.NumpyEstimator(dataclasses.replace(OPTIONS, num_mixtures=4), tensors)
    del tensors["decoder.initial"]
    with pytest.raises(ValueError, match="decoder.initial"):
        estimate.NumpyEstimator(OPTIONS, tensors)
    identity = identify_model("photo2")
    copy = tmp_path / "photo2.safetensors"
    data = bytearray(Path(identity.source).read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the manifest"):
        estimate.NumpyEstimator.from_file(copy, identity.sha256, identity.config)


def test_a_file_numpy_does_not_hold_as_it_is_is_left_to_torch(tmp_path, monkeypatch):
    """bfloat16 tensors (which torch's loader reads) or tensors that do not fit the config: no estimator, and the
    early exit is priced by torch instead, the same file."""
    import hashlib

    from safetensors.torch import save_file

    from vaezip import archive
    from vaezip.coding import TorchLatentModel

    identity = identify_model("photo2")
    tensors = estimator_tensors(identity)
    for name, changed in (("bf16", {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tensors.items()}),
                          ("short", {k: torch.from_numpy(v) for k, v in tensors.items() if k != "decoder.initial"})):
        path = tmp_path / f"{name}.safetensors"
        save_file(changed, str(path))
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        assert estimate.NumpyEstimator.from_file(path, sha256, identity.config) is None, name

    image = Image.open(SAMPLE).convert("RGB").crop((0, 0, 128, 96))
    by_numpy = compress_images([("crop.png", image)])
    priced = []
    tile_bounds = TorchLatentModel.tile_bounds
    monkeypatch.setattr(TorchLatentModel, "tile_bounds",
                        lambda self, tiles, *a, **k: priced.append(len(tiles)) or tile_bounds(self, tiles, *a, **k))
    monkeypatch.setattr(estimate.NumpyEstimator, "from_file", lambda *args: None)
    by_torch = compress_images([("crop.png", image)])
    assert priced and priced[0] == len(archive.gate_tiles(96, 128, 32))
    assert by_torch.data == by_numpy.data


def test_the_default_compress_of_a_photograph_imports_no_torch_where_the_early_exit_is_taken(tmp_path):
    """The sample photo goes to the predictor's stream by the numpy-priced sample: no torch in the process, and
    the report carries the sample's projected bound."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from PIL import Image; from vaezip.api import compress_images;"
        "result = compress_images([('hopper.png', Image.open(sys.argv[2]))]);"
        "report, = result.images;"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported';"
        "assert report.bound_sample == (8, 64) and report.bound_bits > 0, report;"
        "open(sys.argv[3], 'wb').write(result.data); print('ok')"
    )
    out = tmp_path / "hopper.vz"
    run = subprocess.run([sys.executable, "-c", script, str(ROOT), str(SAMPLE), str(out)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    (_, image), = decompress_images(out.read_bytes())
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(SAMPLE).convert("RGB")))


def test_where_the_early_exit_is_not_taken_torch_prices_the_rest_and_the_model_codes(monkeypatch):
    """The numpy-priced sample, then the full path (GATE_RATIO infinite): torch loads the model there, prices only
    the tiles not in the sample, and the file decodes to the image."""
    from vaezip import archive
    from vaezip.coding import TorchLatentModel

    image = Image.open(SAMPLE).convert("RGB").crop((0, 0, 96, 64))
    priced = []
    tile_bounds = TorchLatentModel.tile_bounds
    monkeypatch.setattr(TorchLatentModel, "tile_bounds",
                        lambda self, tiles, *a, **k: priced.append(len(tiles)) or tile_bounds(self, tiles, *a, **k))
    monkeypatch.setattr(archive, "GATE_RATIO", math.inf)
    monkeypatch.setattr(archive, "GATE_WHOLE", 1)  # a sample of the 6 tiles, not all of them
    result = compress_images([("crop.png", image)], "photo2", device="cpu")
    sample = archive.gate_sample(64, 96, 32, archive.GATE_EVERY)
    assert 0 < len(sample) < 6 and priced[0] == 6 - len(sample)
    report, = result.images
    assert report.bound_sample == () and math.isfinite(report.bound_bits)
    (_, restored), = decompress_images(result.data)
    assert np.array_equal(np.asarray(restored), np.asarray(image))
