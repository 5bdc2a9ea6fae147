"""Shared fixtures. Core tests need no trained weights and no ../shared/data: an untrained `tiny` model still
codes losslessly (only the rate is poor)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

# Idle OpenMP threads spin by default: on a busy machine (CI shares its two cores) every torch process, the
# tests' subprocesses included, then burns the other jobs' CPU. Passive waiting changes no result (the coded
# bits are integer-exact) and kept a loaded run of the adversarial suite at 38 s instead of 3.5 minutes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vaezip.checkpoint import config_to_dict, export_weights
from vaezip.config import get_preset
from vaezip.model import HierarchicalVAE

def perturbed_model(config, seed: int, scale: float = 0.02) -> HierarchicalVAE:
    """A model of `config` whose zero-initialised layers are not zero (trained heads are not)."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return model


def smooth_pixels(channels: int, batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(B, C, size, size) uint8: smooth waves plus a little noise, what a model codes cheaply."""
    y, x = np.mgrid[0:size, 0:size]
    smooth = (128 + 60 * np.sin(x / 3.0) + 40 * np.cos(y / 5.0))[None, None].repeat(channels, 1).repeat(batch, 0)
    noisy = smooth + np.random.default_rng(seed).normal(0, 4, smooth.shape)
    return torch.from_numpy(np.clip(noisy, 0, 255).astype(np.uint8))


SHARED_DATA = Path(os.environ.get("VAEZIP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def assert_decoder_posteriors_equal_a_second_pass(integer, pixels: torch.Tensor) -> list:
    """An IntegerVAE's decoder posteriors, from the states of its prior-only walk, equal those of a walk begun with
    the (B, C, 16, 16) pixels, group by group, exactly: each group's latents set from its prior (a Gaussian group's
    mean, a binary group's likelier value; a binary group has a frequency of z = 1 and no std). The posteriors."""
    from vaezip.model.integer import ONE

    with torch.inference_mode():
        prior_walk, full_walk = integer.walk(None, 2, 16, 16), integer.walk(pixels, 2, 16, 16)
        expected = []
        for _ in range(prior_walk.num_groups):
            prior_first, prior_std, _, _ = prior_walk.step()
            _, _, post_first, post_std = full_walk.step()
            assert (prior_std is None) == (post_std is None)
            expected.append((post_first, post_std))
            z = (prior_first >= 2**23).double() * ONE if prior_std is None else torch.round(prior_first / 64) * 64
            prior_walk.advance(z)
            full_walk.advance(z)
        got = prior_walk.posteriors(pixels)
    assert len(got) == len(expected)
    for (first, std), (first_e, std_e) in zip(got, expected):
        assert torch.equal(first, first_e) and (std is None) == (std_e is None)
        assert std is None or torch.equal(std, std_e)
    return got


def randomised_tiny() -> HierarchicalVAE:
    """A tiny model with every weight random (seed 0), so that posteriors and priors differ in every group and the
    groups' KLs differ."""
    torch.manual_seed(0)
    model = HierarchicalVAE(get_preset("tiny").model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model

@pytest.fixture()
def tiny_npz(tmp_path) -> str:
    """A training set of 48 random 8x8 colour images in mid greys (an .npz's `x`), for the few steps a test trains."""
    x = np.random.default_rng(0).integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x)
    return str(tmp_path / "tiny.npz")


def make_tiny_weights(path: Path, channels: int, name: str, seed: int = 0, pixel_context: int = 0,
                      **model_options) -> Path:
    """An untrained tiny model's weights file; `model_options`: other ModelConfig fields (residual_posterior,
    likelihood, ...)."""
    torch.manual_seed(seed)
    config = dataclasses.replace(get_preset("tiny").model, image_channels=channels, pixel_context=pixel_context,
                                 **model_options)
    model = HierarchicalVAE(config)
    if pixel_context:
        with torch.no_grad():  # a trained head is not zero: make every neighbour matter
            model.context.layer_out.weight.normal_(0.0, 0.2)
    checkpoint = {"ema": model.state_dict(), "model_config": config_to_dict(model.config), "step": 0}
    export_weights(checkpoint, path, name)
    return path


def make_format_1_weights(path: Path, channels: int, name: str, seed: int = 0) -> Path:
    """The same untrained tiny model as weights format 1 wrote it (no pixel_context): old files name these."""
    import json

    from safetensors.torch import save

    torch.manual_seed(seed)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=channels))
    config = config_to_dict(model.config)
    del config["pixel_context"]
    description = {"kind": "vaezip-weights", "format_version": 1, "name": name, "model_config": config, "step": 0}
    metadata = {"vaezip": json.dumps(description, sort_keys=True, separators=(",", ":"))}
    path.write_bytes(save({key: value.contiguous() for key, value in model.state_dict().items()}, metadata=metadata))
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[int, Path]:
    """Untrained tiny models as weights files: {channels: path}."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        1: make_tiny_weights(folder / "tiny-grey.safetensors", 1, "tiny-grey"),
        3: make_tiny_weights(folder / "tiny-rgb.safetensors", 3, "tiny-rgb"),
    }


@pytest.fixture(scope="session")
def context_weights(tmp_path_factory) -> dict[int | str, Path]:
    """Untrained tiny models with a (non-zero) pixel-context head: {channels: path} (rows order), and
    "scales": a colour one in the multi-scale order."""
    folder = tmp_path_factory.mktemp("context-weights")
    return {
        channels: make_tiny_weights(folder / f"tiny-context-{channels}.safetensors", channels, f"tiny-context-{channels}",
                                    pixel_context=8)
        for channels in (1, 3)
    } | {
        # the multi-scale order (DVAE++'s conditional decoder): key "scales", a colour model
        "scales": make_tiny_weights(folder / "tiny-scales.safetensors", 3, "tiny-scales", pixel_context=8,
                                    context_order="scales"),
    }


def mutate(data: bytearray, rng, where: int, cut: int | None, inserted: int) -> str:
    """One random edit of `data` at `where`, as the fuzz tests make them, and its kind: a bit flipped, a byte
    replaced, bytes cut (to the end where `cut` is None, else 1 to `cut` of them) or 1 to `inserted` random bytes
    inserted."""
    kind = rng.choice(["flip", "byte", "cut", "insert"])
    if kind == "flip":
        data[where] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        data[where] = rng.randrange(256)
    elif kind == "cut":
        del data[where : None if cut is None else where + rng.randrange(1, cut + 1)]
    else:
        data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, inserted + 1)))
    return kind


def run_cli(*args: str, input: bytes | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`vaezip ARGS` in a fresh process (so decoding never shares state with encoding); `env` adds variables."""
    return subprocess.run(
        [sys.executable, "-m", "vaezip", *map(str, args)], input=input, capture_output=True, cwd=cwd, timeout=900,
        env=None if env is None else {**os.environ, **env},
    )


# A fresh process under other kernels: generic ATen kernels, one thread (AVX-512 and threads where the encoder ran).
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}


def pngs_from_a_fresh_process(path: Path, folder: Path) -> None:
    """Decode the .vz at `path` in a fresh process under OTHER_KERNELS, which must not import torch, and write each
    image as vaezip decompress writes it into `folder` as 0.png, 1.png, ..."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from vaezip.api import decompress_images, png_bytes;"
        "images = decompress_images(open(sys.argv[2], 'rb').read());"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported';"
        "[open(f'{sys.argv[3]}/{k}.png', 'wb').write(png_bytes(image)) for k, (_, image) in enumerate(images)]"
    )
    out = subprocess.run([sys.executable, "-c", script, str(Path(__file__).resolve().parents[1]), str(path),
                          str(folder)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **OTHER_KERNELS})
    assert out.returncode == 0, out.stderr


def smooth_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: waves plus noise, a photograph's kind of content that every option's model codes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    return np.clip(120 + 60 * np.sin(x / 5.0)[..., None] + 40 * np.cos(y / 4.0)[..., None]
                   + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def round_trip_in_fresh_processes(tmp_path: Path, weights: Path, pixels: np.ndarray, samples: int = 1,
                                  envs: tuple[dict[str, str], ...] = ({}, OTHER_KERNELS)):
    """Compress `pixels` (H, W, 3) with the model of `weights`, every tile through the model (16x16 tiles, no
    predictor tiles, no classical path: the model decides every bit), then decode the file with the CLI in a
    fresh process under each of `envs` and assert the pixels come back exactly. Returns the CompressResult
    for the caller's own checks (kinds, bound)."""
    from PIL import Image

    from vaezip.api import compress_images, load_model

    result = compress_images([("image.png", Image.fromarray(pixels, "RGB"))], load_model(weights), tile=16,
                             device="cpu", predictor=False, classical=False, samples=samples)
    (tmp_path / "image.vz").write_bytes(result.data)
    for env in envs:
        done = run_cli("decompress", tmp_path / "image.vz", "-o", tmp_path / "out.png", "-f", "-m", weights, env=env)
        assert done.returncode == 0, done.stderr.decode()
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels), env
    return result


def check_pinned_model_file(folder: str, weights: Path, tmp_path: Path):
    """tests/data/FOLDER/model.vz (scripts/make_golden.py): golden.png through the model of `weights` only. Asserts that
    it is format 5, that today's encoder writes it byte for byte (asked for format 5), and that it decodes to
    golden.png in a fresh process under other kernels; returns its header for the caller's own checks."""
    from PIL import Image

    from codec.container import read_versioned
    from vaezip.api import compress_images, load_model

    data_folder = Path(__file__).parent / "data"
    pinned = (data_folder / folder / "model.vz").read_bytes()
    version, header, _ = read_versioned(pinned)
    assert version == 5
    golden = Image.open(data_folder / "golden.png")
    again = compress_images([("golden.png", golden)], load_model(weights), tile=16, device="cpu", predictor=False,
                            classical=False, format_version=5)
    assert again.data == pinned
    (tmp_path / "model.vz").write_bytes(pinned)
    done = run_cli("decompress", tmp_path / "model.vz", "-o", tmp_path / "out.png", "-m", weights, env=OTHER_KERNELS)
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(golden))
    return header
