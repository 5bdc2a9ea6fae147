"""Adversarial content (issue 19): black, white, constant, two-value, noise, letterboxed, gradients, and 1x1 .. 3x3
images, in every mode, each compressed here and decoded in a fresh process (one process decodes every file and
reports, so that the suite stays fast), compared pixel for pixel; plus a property test over random small images
with large constant regions, decoded in process.

Untrained tiny models code losslessly (conftest.py), so any difference is a coder bug, never a model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaezip.api import compress_images, decompress_images, load_model

MODES = ("L", "LA", "RGB", "RGBA", "P")
TILE = 8  # small tiles: several per image, so that black ones come first in stream order, last, and between
H, W = 20, 19  # the main size: 3 x 3 tiles, partial ones on the right and at the bottom


# ---------------------------------------------------------------------------------------------- content


def _noise(rng, h, w):
    return rng.integers(0, 256, (h, w, 4), dtype=np.uint8)


def _filled(h, w, value):
    return np.broadcast_to(np.array(value, dtype=np.uint8), (h, w, 4)).copy()


def pattern(name: str, h: int, w: int) -> np.ndarray:
    """(H, W, 4) uint8: colour in the first three channels, alpha in the last (opaque unless the pattern says)."""
    rng = np.random.default_rng([ord(c) for c in name] + [h, w])  # the same content in every run
    if name == "black":
        return _filled(h, w, (0, 0, 0, 255))
    if name == "transparent":  # all zero, alpha included
        return _filled(h, w, (0, 0, 0, 0))
    if name == "white":
        return _filled(h, w, (255, 255, 255, 255))
    if name == "constant":
        return _filled(h, w, (201, 17, 99, 128))
    if name == "two-value":
        mask = rng.random((h, w)) < 0.5
        return np.where(mask[..., None], np.array([0, 0, 0, 255], np.uint8), np.array([255, 255, 255, 0], np.uint8))
    if name == "checker":
        mask = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(bool)
        return np.where(mask[..., None], np.array([3, 250, 3, 255], np.uint8), np.array([250, 3, 250, 7], np.uint8))
    if name == "noise":
        return _noise(rng, h, w)
    if name == "letterbox-rows":  # black bars above and below noise: the first tiles in stream order are black
        image = _noise(rng, h, w)
        image[: min(TILE, h)] = (0, 0, 0, 255)
        image[max(h - TILE, 0) :] = (0, 0, 0, 255)
        return image
    if name == "letterbox-cols":  # black bars left and right of noise
        image = _noise(rng, h, w)
        image[:, : min(TILE, w)] = (0, 0, 0, 255)
        image[:, max(w - TILE, 0) :] = (0, 0, 0, 255)
        return image
    if name == "black-corner":  # only the first tile black
        image = _noise(rng, h, w)
        image[:TILE, :TILE] = (0, 0, 0, 255)
        return image
    y, x = np.mgrid[0:h, 0:w]
    if name == "gradient-h":
        ramp = x * 255 // max(w - 1, 1)
    elif name == "gradient-v":
        ramp = y * 255 // max(h - 1, 1)
    elif name == "gradient-diagonal":
        ramp = (x + y) * 255 // max(w + h - 2, 1)
    else:
        raise ValueError(name)
    return np.stack([ramp, 255 - ramp, (ramp * 7) % 256, 255 - ramp], axis=-1).astype(np.uint8)


def grey_ramp_palette() -> list[int]:
    return [v for i in range(256) for v in (i, i, i)]


def as_mode(array: np.ndarray, mode: str) -> Image.Image:
    if mode == "L":
        return Image.fromarray(np.ascontiguousarray(array[..., 0]), "L")
    if mode == "LA":
        return Image.fromarray(np.ascontiguousarray(array[..., [0, 3]]), "LA")
    if mode == "RGB":
        return Image.fromarray(np.ascontiguousarray(array[..., :3]), "RGB")
    if mode == "RGBA":
        return Image.fromarray(np.ascontiguousarray(array), "RGBA")
    if mode == "P":  # indices = the first channel, through a grey ramp: every used colour distinct (model path)
        image = Image.fromarray(np.ascontiguousarray(array[..., 0]), "P")
        image.putpalette(grey_ramp_palette())
        return image
    if mode == "P-default":  # Pillow's own new P image: black everywhere, default palette
        return Image.new("P", (array.shape[1], array.shape[0]))
    if mode == "P-duplicates":  # two palette entries share a colour: coded through the index plane
        image = Image.fromarray(np.ascontiguousarray(array[..., 0] % 4), "P")
        image.putpalette([0, 0, 0, 0, 0, 0, 255, 255, 255, 9, 9, 9])
        image.info["transparency"] = 1
        return image
    raise ValueError(mode)


PATTERNS = ("black", "transparent", "white", "constant", "two-value", "checker", "noise", "letterbox-rows",
            "letterbox-cols", "black-corner", "gradient-h", "gradient-v", "gradient-diagonal")
TINY_PATTERNS = ("black", "transparent", "white", "constant", "two-value", "checker", "noise", "gradient-diagonal")


def cases() -> dict[str, list[Image.Image]]:
    """name -> the images of one .vz file."""
    out: dict[str, list[Image.Image]] = {}
    for mode in MODES:
        for name in PATTERNS:
            out[f"{mode}-{name}-{H}x{W}"] = [as_mode(pattern(name, H, W), mode)]
        for name in TINY_PATTERNS:  # one file holds the 1x1, 2x2 and 3x3 images of a pattern (1x1 first)
            out[f"{mode}-{name}-1x1-2x2-3x3"] = [as_mode(pattern(name, side, side), mode) for side in (1, 2, 3)]
        # One stream, several images: black first, black between, black last.
        out[f"{mode}-archive"] = [as_mode(pattern(name, h, w), mode) for name, h, w in [
            ("black", 9, 17), ("noise", 16, 16), ("transparent", 1, 1), ("letterbox-rows", 24, 10), ("black", 3, 3),
        ]]
    for mode in ("P-default", "P-duplicates"):
        out[f"{mode}-1x1"] = [as_mode(pattern("noise", 1, 1), mode)]
        out[f"{mode}-2x2-3x3-{H}x{W}"] = [as_mode(pattern("noise", side, side), mode) for side in (2, 3)] + [
            as_mode(pattern("noise", H, W), mode)
        ]
    # The issue's own examples, at the default tile size.
    out["RGB-black-8x8-default-tile"] = [Image.new("RGB", (8, 8))]
    bars = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bars[:32] = 0
    out["RGB-bars-64x64-default-tile"] = [Image.fromarray(bars)]
    return out


CASES = cases()


def channels_of(mode: str) -> int:
    return 1 if mode in ("L", "LA") else 3


def same(original: Image.Image, decoded: dict) -> str | None:
    """None where `decoded` (as the decoding process reported it) is exactly `original`, else what differs."""
    if decoded["mode"] != original.mode or tuple(decoded["size"]) != original.size:
        return f"{decoded['mode']} {decoded['size']} != {original.mode} {original.size}"
    if not np.array_equal(np.load(decoded["pixels"]), np.asarray(original)):
        return "pixels differ"
    if original.mode == "P":
        if decoded["palette"] != original.getpalette():
            return "palette differs"
        if decoded["transparency"] != repr(original.info.get("transparency")):
            return f"transparency {decoded['transparency']} != {original.info.get('transparency')!r}"
    return None


DECODER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vaezip.api import decompress_images, load_model

    jobs = json.loads(open(sys.argv[1]).read())
    models = {int(c): load_model(path) for c, path in jobs["models"].items()}
    report = {}
    for name, job in jobs["files"].items():
        try:
            decoded = decompress_images(open(job["vz"], "rb").read(), models[job["channels"]], device="cpu")
        except Exception as error:  # reported per file: one bad file must not hide the others
            report[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        images = []
        for index, (_, image) in enumerate(decoded):
            path = f"{job['vz']}.{index}.npy"
            np.save(path, np.asarray(image))
            images.append({"mode": image.mode, "size": list(image.size), "pixels": path,
                           "palette": image.getpalette() if image.mode == "P" else None,
                           "transparency": repr(image.info.get("transparency"))})
        report[name] = {"images": images}
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def decoded_elsewhere(tmp_path_factory, tiny_weights) -> dict[str, dict]:
    """Compress every case here, decode them all in one fresh process: name -> what it reported."""
    folder = tmp_path_factory.mktemp("adversarial")
    models = {c: load_model(tiny_weights[c]) for c in (1, 3)}
    report, files = {}, {}
    for index, (name, images) in enumerate(CASES.items()):
        channels = channels_of(images[0].mode)
        tile = None if "default-tile" in name else TILE
        try:
            result = compress_images([(f"{index}-{k}.png", image) for k, image in enumerate(images)],
                                     models[channels], tile=tile, device="cpu")
        except Exception as error:
            report[name] = {"error": f"compress: {type(error).__name__}: {error}"}
            continue
        vz = folder / f"{index}.vz"
        vz.write_bytes(result.data)
        files[name] = {"vz": str(vz), "channels": channels}
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps({"models": {c: str(tiny_weights[c]) for c in (1, 3)}, "files": files}))
    # Idle OpenMP threads sleep instead of spinning: the same bits, but a busy machine is not slowed down ~5x.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    done = subprocess.run([sys.executable, "-c", DECODER, str(jobs)], capture_output=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report.update(json.loads(done.stdout))
    return report


@pytest.mark.parametrize("name", list(CASES))
def test_adversarial_content_round_trips_in_a_fresh_process(decoded_elsewhere, name):
    result = decoded_elsewhere[name]
    assert "error" not in result, result.get("error")
    originals = CASES[name]
    assert len(result["images"]) == len(originals)
    for original, decoded in zip(originals, result["images"]):
        difference = same(original, decoded)
        assert difference is None, difference


# ---------------------------------------------------------------------------------------------- property test


@st.composite
def blocky_images(draw) -> Image.Image:
    """Random small images made mostly of large constant rectangles (black and white likely), some noise."""
    mode = draw(st.sampled_from(MODES))
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    value = st.one_of(st.sampled_from([0, 255]), st.integers(0, 255))
    pixel = st.tuples(value, value, value, value)
    image = _filled(h, w, draw(pixel))
    for _ in range(draw(st.integers(0, 5))):
        top, left = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        bottom, right = draw(st.integers(top + 1, h)), draw(st.integers(left + 1, w))
        if draw(st.booleans()):
            image[top:bottom, left:right] = draw(pixel)
        else:
            image[top:bottom, left:right] = _noise(rng, bottom - top, right - left)
    return as_mode(image, mode)


@pytest.fixture(scope="module")
def models_in_process(tiny_weights):
    return {c: load_model(tiny_weights[c]) for c in (1, 3)}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=blocky_images(), tile=st.sampled_from([8, 16, 32]))
def test_random_images_with_large_constant_regions_round_trip(models_in_process, image, tile):
    model = models_in_process[channels_of(image.mode)]
    data = compress_images([("x.png", image)], model, tile=tile, device="cpu").data
    (_, decoded), = decompress_images(data, model, device="cpu")
    assert decoded.mode == image.mode and decoded.size == image.size
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
    if image.mode == "P":
        assert decoded.getpalette() == image.getpalette()
