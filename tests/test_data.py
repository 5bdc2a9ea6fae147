"""Tests for vaezip.data. Core tests build their own images; shared-data tests skip without it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vaezip import data
from vaezip.data import CropSampler, DataError, ImageSet, iter_batches, load, split_holdout

SHARED = data.data_root()
HAVE_SHARED = (SHARED / "mnist" / "mnist.npz").is_file()
needs_shared = pytest.mark.skipif(
    not HAVE_SHARED, reason=f"shared data not found at {SHARED} (set VAEZIP_DATA)")


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rgb = _rgb(20, 24, 1)
    grey = np.random.default_rng(2).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "a.png")
    Image.fromarray(rgb).save(d / "b.JPG", quality=90)
    Image.fromarray(grey).save(d / "sub" / "c.png")
    rgba = np.dstack([rgb, np.full((20, 24), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "sub" / "d.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(d / "e.png")
    (d / "broken.png").write_bytes(b"not an image")
    (d / "notes.txt").write_text("ignored")
    return d, rgb, grey


# ------------------------------------------------------------------ folders and files


def test_folder_loading(image_folder):
    d, rgb, grey = image_folder
    with pytest.warns(UserWarning, match="skipped 1"):
        s = load(d)
    assert s.names == ("a.png", "b.JPG", "e.png", "sub/c.png", "sub/d.png")
    assert s.skipped == 1
    assert s.channels == 3 and s.same_shape and s.images.shape == (5, 20, 24, 3)
    assert s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.images[0], rgb)                      # PNG exact
    np.testing.assert_array_equal(s.images[3], np.repeat(grey[:, :, None], 3, 2))  # grey -> RGB
    np.testing.assert_array_equal(s.images[4], rgb)                      # alpha dropped
    assert s.subpixels == 5 * 20 * 24 * 3
    assert len(s) == 5


def test_folder_channels_and_limit(image_folder):
    d, rgb, grey = image_folder
    with pytest.warns(UserWarning):
        s = load(d, channels=1, limit=4)
    assert s.channels == 1 and len(s) == 4
    np.testing.assert_array_equal(s.images[0, :, :, 0], np.asarray(Image.fromarray(rgb).convert("L")))
    np.testing.assert_array_equal(s.images[3, :, :, 0], grey)


def test_grey_folder_stays_grey_and_lists(tmp_path):
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((7, 3), 9, np.uint8), "L").convert("LA").save(tmp_path / "b.png")
    s = load(tmp_path)
    assert s.channels == 1 and not s.same_shape
    assert s.shapes == [(5, 6, 1), (7, 3, 1)]
    assert s.subpixels == 30 + 21
    assert int(s.images[1].max()) == 9


def test_single_file(image_folder):
    d, rgb, grey = image_folder
    s = load(d / "sub" / "c.png")
    assert s.images.shape == (1, 20, 24, 1)
    np.testing.assert_array_equal(s.images[0, :, :, 0], grey)
    s3 = load(d / "sub" / "c.png", channels=3)
    assert s3.channels == 3


def test_16bit_rejected(tmp_path):
    import imagecodecs
    p = tmp_path / "deep.png"
    p.write_bytes(imagecodecs.png_encode(np.arange(48, dtype=np.uint16).reshape(4, 4, 3) * 1000))
    with pytest.raises(DataError, match="deep.png"):
        load(p)
    (tmp_path / "sub").mkdir()
    q = tmp_path / "sub" / "g16.png"
    Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).save(q)
    # In a folder (one's own images to train on) it is passed over, never narrowed, and named in a warning;
    # a folder of nothing else is an error.
    with pytest.raises(DataError, match="no readable images"), pytest.warns(UserWarning, match=r"g16.png \(not 8"):
        load(tmp_path / "sub")
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "sub" / "g8.png")
    with pytest.warns(UserWarning, match=r"skipped 1 image file\(s\) it cannot use: g16.png \(not 8-bit\)"):
        kept = load(tmp_path / "sub")
    assert kept.names == ("g8.png",) and kept.skipped == 1


def test_unknown_name_error():
    with pytest.raises(DataError) as e:
        load("no-such-dataset")
    msg = str(e.value)
    assert "\n" not in msg and "mnist-train" in msg and "kodak" in msg


def test_missing_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VAEZIP_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="missing"):
        load("mnist-test")
    with pytest.raises(DataError, match="missing"):
        load("kodak")


def test_rgb_to_l_matches_pillow():
    a = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    a[0, 0, :4] = [[255, 255, 255], [0, 0, 0], [128, 128, 128], [1, 2, 3]]
    ref = np.asarray(Image.fromarray(a[0]).convert("L"))
    np.testing.assert_array_equal(data._rgb_to_l(a)[0, :, :, 0], ref)


# ------------------------------------------------------------------ npz


def test_npz_loading(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    split = np.array([0, 1] * 5, np.uint8)
    p = tmp_path / "set.npz"
    np.savez(p, x=x, split=split, other=x[:3, :, :, 0])
    with pytest.warns(UserWarning, match=r"set\.npz: 5 of its 10 images taken, those whose 'split' is 0"):
        s = load(p)  # said: bench and eval of such a file measured its training rows without a word
    assert s.images.shape == (5, 8, 8, 3)  # only split == 0 rows
    np.testing.assert_array_equal(s.images, x[split == 0])
    s2 = load(f"{p}:other")
    assert s2.images.shape == (3, 8, 8, 1)
    q = tmp_path / "mn.npz"
    np.savez(q, x_train=x[:, :, :, 0], x=x)
    assert load(q).images.shape == (10, 8, 8, 1)  # x_train preferred
    assert load(q, limit=2, channels=3).images.shape == (2, 8, 8, 3)
    r = tmp_path / "chw.npz"
    np.savez(r, x=x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(load(r).images, x)
    with pytest.raises(DataError, match="no key"):
        load(f"{p}:nope")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x.astype(np.uint16))
    with pytest.raises(DataError, match="uint16"):
        load(bad)

    # A review: a 2-D array is one image (--limit took rows of it); no pixels; alpha dropped said, as a folder's
    one = tmp_path / "one.npz"
    np.savez(one, x=x[0, :, :, 0])
    assert load(one, limit=3).images.shape == (1, 8, 8, 1)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((2, 0, 5, 3), np.uint8))
    with pytest.raises(DataError, match="images of 5x0 pixels: none to code"):
        load(empty)
    rgba = tmp_path / "rgba.npz"
    np.savez(rgba, x=np.concatenate([x, x[..., :1]], axis=-1))
    dropped = load(rgba)
    np.testing.assert_array_equal(dropped.images, x)
    assert dropped.changed == ("alpha dropped: every image (10 of 10)",)


# ------------------------------------------------------------------ split, sampler, batches


def test_split_holdout():
    x = np.zeros((100, 2, 2, 1), np.uint8)
    x[:, 0, 0, 0] = np.arange(100)
    s = ImageSet("t", x)
    tr, va = split_holdout(s, fraction=0.1, seed=1)
    assert len(tr) == 90 and len(va) == 10 and tr.name == "t:train"
    tr2, va2 = split_holdout(s, fraction=0.1, seed=1)
    np.testing.assert_array_equal(va.images, va2.images)
    ids = np.concatenate([tr.images[:, 0, 0, 0], va.images[:, 0, 0, 0]])
    assert len(set(ids.tolist())) == 100
    _, va3 = split_holdout(s, fraction=0.5, max_count=7)
    assert len(va3) == 7
    a_tr, a_va = split_holdout(x, fraction=0.1, seed=1)
    np.testing.assert_array_equal(a_va, va.images)
    l_tr, l_va = split_holdout(list(x), fraction=0.1, seed=1)
    assert len(l_va) == 10 and isinstance(l_va, list)


def test_sampler_determinism_and_resume():
    x = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    a = CropSampler(x, 16, seed=5)
    b = CropSampler(x, 16, seed=5)
    np.testing.assert_array_equal(a.sample(8), b.sample(8))
    st = json.loads(json.dumps(a.state()))
    nxt = a.sample(8)
    c = CropSampler(x, 16, seed=99)
    c.set_state(st)
    np.testing.assert_array_equal(c.sample(8), nxt)
    out = a.sample(4)
    assert out.shape == (4, 3, 16, 16) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_sampler_crops_are_real_crops():
    x = np.random.default_rng(1).integers(0, 256, (3, 10, 12, 1), dtype=np.uint8)
    s = CropSampler(x, (4, 5), seed=0)
    for crop in s.sample(20):
        found = any(np.array_equal(crop[0], x[i, y:y + 4, j:j + 5, 0])
                    for i in range(3) for y in range(7) for j in range(8))
        assert found


def test_sampler_clipping_and_lists():
    mn = np.zeros((5, 28, 28, 1), np.uint8)
    s = CropSampler(mn, 32, seed=0)
    assert s.crop == (28, 28) and s.sample(3).shape == (3, 1, 28, 28)
    imgs = [_rgb(10, 10), _rgb(40, 30), _rgb(31, 50)]
    ls = CropSampler(imgs, 16, seed=0)
    assert ls.skipped == 1 and ls.num_images == 2
    assert ls.sample(5).shape == (5, 3, 16, 16)
    with pytest.raises(DataError):
        CropSampler([_rgb(10, 10), _rgb(8, 40)], 16, seed=0)
    st = ls.state()
    a = ls.sample(4)
    ls.set_state(st)
    np.testing.assert_array_equal(ls.sample(4), a)


def test_iter_batches():
    x = np.random.default_rng(0).integers(0, 256, (10, 4, 5, 3), dtype=np.uint8)
    bs = list(iter_batches(x, 4))
    assert [b.shape for b in bs] == [(4, 3, 4, 5), (4, 3, 4, 5), (2, 3, 4, 5)]
    np.testing.assert_array_equal(np.concatenate(bs).transpose(0, 2, 3, 1), x)
    ls = ImageSet("l", [_rgb(4, 5), _rgb(6, 7)])
    assert [b.shape for b in iter_batches(ls, 8)] == [(1, 3, 4, 5), (1, 3, 6, 7)]
    assert next(iter_batches(ls, 8, chw=False)).shape == (1, 4, 5, 3)


def test_imageset_validation():
    with pytest.raises(DataError):
        ImageSet("bad", np.zeros((2, 4, 4, 2), np.uint8))
    with pytest.raises(DataError):
        ImageSet("bad", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 1), np.uint8)])


# ------------------------------------------------------------------ shared data (skipped if absent)


@needs_shared
def test_dataset_names_registry():
    assert set(data.DATASETS) >= {
        "mnist-train", "mnist-test", "imagenette32-train", "imagenette32-val", "imagenette56-val",
        "cifar4k-train", "cifar4k-holdout", "kodak", "photos", "photos-wikimedia", "mcmaster",
        "gray8bit"}
    assert all(isinstance(v, str) and v for v in data.DATASETS.values())


@needs_shared
def test_shared_small_sets():
    m = load("mnist-test")
    assert m.images.shape == (10000, 28, 28, 1) and m.images.dtype == np.uint8
    assert len(load("mnist-train", limit=100)) == 100
    with np.load(SHARED / "imagenette_lowres" / "imagenette_32x32_box7.npz") as z:
        n_val = int((z["split"] == 1).sum())
        n_train = int((z["split"] == 0).sum())
    assert len(load("imagenette32-val")) == n_val
    assert load("imagenette32-train").images.shape == (n_train, 32, 32, 3)
    tr, ho = load("cifar4k-train"), load("cifar4k-holdout")
    assert len(tr) == 3000 and ho.images.shape == (1000, 32, 32, 3)
    with np.load(SHARED / "cifar10_subset4k" / "cifar10_train_first4000.npz") as z:
        np.testing.assert_array_equal(ho.images, z["x"][3000:])
        np.testing.assert_array_equal(tr.images[0, 0, :3, 0], [59, 43, 50])  # known CIFAR image 0
    assert load("imagenette56-val", limit=5).images.shape == (5, 56, 56, 3)


@needs_shared
def test_shared_photo_sets():
    k = load("kodak", limit=3)
    assert len(k) == 3 and k.channels == 3 and k.names[0].endswith("kodim01.png")
    assert load("mcmaster", limit=2).images.shape == (2, 500, 500, 3)
    g = load("gray8bit", limit=1)
    assert g.channels == 1


@needs_shared
def test_shared_skimage_training_photos():
    colour, grey = load("skimage-rgb"), load("skimage-gray")
    assert len(colour) == 6 and colour.channels == 3 and colour.names[0].endswith("astronaut.png")
    assert len(grey) == 11 and grey.channels == 1
    # None of them is a benchmark photograph.
    assert all(name.startswith("skimage_samples/") for name in colour.names + grey.names)


def test_box_downsample_rounds_block_means_and_drops_the_remainder():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    small = data.box_downsample(image, 2)
    assert small.shape == (2, 3, 3) and small.dtype == np.uint8
    block = image[2:4, 4:6, 1].astype(int)
    assert small[1, 2, 1] == (block.sum() + 2) // 4
    np.testing.assert_array_equal(data.box_downsample(np.full((4, 4, 1), 255, np.uint8), 2), 255)  # no overflow


@needs_shared
def test_downsampled_photos_are_half_the_size_of_their_originals():
    full, half = load("skimage-rgb"), load("skimage-rgb-half")
    assert half.names == full.names
    for (h, w, c), (hh, hw, hc) in zip(full.shapes, half.shapes):
        assert (hh, hw, hc) == (h // 2, w // 2, c)


def test_an_npz_that_is_not_one_of_images_is_refused_naming_the_file(tmp_path):
    """numpy's own messages named no file and invited loading it unsafely (allow_pickle); vaezip never does."""
    (tmp_path / "text.npz").write_text("not a zip")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"text.npz: not an .npz file \(a zip of numpy arrays\)$"):
        load(str(tmp_path / "text.npz"))
    with pytest.raises(DataError, match=r"objects.npz: not a readable .npz of images: it holds Python objects, "
                       r"which vaezip never loads$") as caught:
        load(str(tmp_path / "objects.npz"))
    assert "allow_pickle" not in str(caught.value)
    np.savez(tmp_path / "empty.npz")  # an empty zip: was "not an .npz file" (QA)
    with pytest.raises(DataError, match=r"empty.npz: an .npz that holds no arrays$"):
        load(str(tmp_path / "empty.npz"))


def test_a_folder_passes_over_hidden_files_and_folders(tmp_path):
    """As `vaezip compress -r` does: a viewer's .thumbnails folder is not trained on."""
    for path in ("a.png", "sub/b.png", ".hidden.png", ".thumbnails/c.png", "sub/.cache/d.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / path)
    assert list(load(str(tmp_path)).names) == ["a.png", "sub/b.png"]


def test_a_report_folder_leaves_out_its_own_charts_only(tmp_path):
    """bench's charts are not data: those beside a report's tables (an earlier run's, whatever its --out) and those
    in the report folder (load's exclude); the images in a report folder inside the data folder are data (a review
    found `-o ph/2020` leaving out the photographs of ph/2020, and a report inside a data folder measured as one
    of its images by the next run)."""
    for path in ("a.png", "bpsp_bars.png", "sub/scatter_png.png", "report/b.png", "report/bpsp_bars.png",
                 "old/bpsp_bars.png", "old/scatter_vaezip.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / path)
    (tmp_path / "old" / "results.md").write_text("# vaezip bench\n")
    every = ["a.png", "bpsp_bars.png", "report/b.png", "report/bpsp_bars.png", "sub/scatter_png.png"]
    assert list(load(str(tmp_path)).names) == every
    with pytest.warns(UserWarning, match=r"report/bpsp_bars\.png \(a vaezip bench report's chart\)"):
        assert list(load(str(tmp_path), exclude=tmp_path / "report").names) == every[:3] + every[4:]
    assert list(load(str(tmp_path), exclude=tmp_path).names) == every[0:1] + every[2:]
    assert list(load(str(tmp_path / "sub"), exclude=tmp_path).names) == ["scatter_png.png"]
    assert list(load(str(tmp_path), exclude=tmp_path.parent).names) == every
    (tmp_path / "report" / "summary.csv").write_text("")
    assert list(load(str(tmp_path)).names) == every[:3] + every[4:]


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height grey pixels (its data is not there: never decoded)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_a_folder_passes_over_huge_deep_and_linked_images_and_names_them(tmp_path):
    """What training and bench never take from a folder, each named: an image of more pixels than compress
    takes (either side of Pillow's own limit: a traceback, or a decode of gigabytes), a PPM or PGM of more than
    8 bits (Pillow scales it to 8: other values), a netpbm stream of several images (Pillow reads the first), and a
    symbolic link (to an image already there: it could be held out while its original is trained on)."""
    import os

    d = tmp_path / "set"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(_rgb(12, 12, len(name))).save(d / name)
    (d / "huge.png").write_bytes(_declared_png(11_000, 10_000))  # 110 M pixels: past compress's 100 M
    (d / "huger.png").write_bytes(_declared_png(20_000, 20_000))  # past twice Pillow's limit too
    samples = (np.arange(12) * 5000).astype(">u2").tobytes()
    (d / "deep.ppm").write_bytes(b"P6 2 2 65535\n" + samples)
    (d / "ten.ppm").write_bytes(b"P6 2 2 1023\n" + (np.arange(12) * 80).astype(">u2").tobytes())
    (d / "plain.ppm").write_bytes(b"P3 2 2 65535\n" + b" ".join(b"%d" % (v * 5000) for v in range(12)))
    (d / "stream.ppm").write_bytes(b"P6 2 1 255\n" + bytes(6) + b"P6 2 1 255\n" + bytes(range(6)))  # Pillow: the first
    os.symlink("a.png", d / "link.png")
    # a link to nothing, a FIFO and a folder of an image's name: the first two were passed over unnamed (QA)
    os.symlink("nowhere.png", d / "dangling.png")
    os.mkfifo(d / "fifo.png")
    (d / "folder.png").mkdir()
    with pytest.warns(UserWarning) as caught:
        s = load(d)
    assert s.names == ("a.png", "b.png", "c.png") and s.skipped == 9
    assert s.passed_over == ("dangling.png (a symbolic link)", "deep.ppm (not 8-bit)", "fifo.png (not a regular file)",
                             "huge.png (too many pixels)", "huger.png (too many pixels)", "link.png (a symbolic link)",
                             "plain.ppm (not 8-bit)", "stream.ppm (several images)", "ten.ppm (not 8-bit)")
    assert [str(w.message) for w in caught] == [
        "set: skipped 9 image file(s) it cannot use: dangling.png (a symbolic link), deep.ppm (not 8-bit), fifo.png "
        "(not a regular file), ..."]
    with pytest.raises(DataError, match="more than 100,000,000 pixels"):
        load(d / "huger.png")
    with pytest.raises(DataError, match="a netpbm stream of several images"):
        load(d / "stream.ppm")
    # one image with whitespace, a comment or other bytes after it is still one image
    for tail in (b"\n\n", b"# a comment\n", b"PK\3\4"):
        (d / "one.ppm").write_bytes(b"P6 2 1 255\n" + bytes(range(6)) + tail)
        assert np.array_equal(load(d / "one.ppm").images[0], np.arange(6, dtype=np.uint8).reshape(1, 2, 3)), tail


def test_a_folder_here_named_like_a_data_set_is_the_user_s_own(tmp_path, monkeypatch):
    """`vaezip train photos` in a folder holding photos/ trained on vaezip's data set `photos` (43 other images,
    from scratch) without a word (a review): the path wins, and a warning says so."""
    from vaezip import data as datasets
    from vaezip.train import is_user_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "_SAID_PATH_WINS", set())
    (tmp_path / "photos").mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(tmp_path / "photos" / f"{k}.png")
    with pytest.warns(UserWarning, match="photos: the folder here, not vaezip's data set of that name"):
        loaded = load("photos")
    assert loaded.names == ("0.png", "1.png", "2.png")
    assert is_user_data("photos") and datasets.parse_mixture("photos") == [("photos", 1.0)]
    assert not is_user_data("kodak") and datasets.names_data_set("kodak")  # no such folder here: the data set
    # a name the user did not type (bench's default sets): the data set, the folder here notwithstanding
    try:
        named = load("photos", limit=1, data_set=True)
    except DataError as error:  # ../shared/data absent: the data set's files were looked for, not the folder's
        assert "data set 'photos'" in str(error), error
    else:
        assert named.names != ("0.png",)


def test_folders_it_cannot_read_are_said_not_passed_over(tmp_path, monkeypatch):
    """An audit: `vaezip eval` or `bench` of a folder it could not read said it held no images, and one of its
    subfolders it could not read was left out without a word (pathlib's and os's walks pass such folders over).
    Permissions stand in for by the walk's own error: the tests may run as root, who reads anything."""
    for name in ("a.png", "b.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), len(name), np.uint8)).save(tmp_path / name)
    real_walk = data.os.walk

    def walk_without(denied):
        def walk(top, onerror=None, **kwargs):
            if onerror is not None:
                onerror(PermissionError(13, "Permission denied", str(top / denied)))
            yield from real_walk(top, onerror=onerror, **kwargs)
        return walk

    monkeypatch.setattr(data.os, "walk", walk_without("sub"))
    with pytest.warns(UserWarning, match=r": left out 1 folder\(s\) it cannot read \(permission denied\): sub$"):
        load(str(tmp_path))
    monkeypatch.setattr(data.os, "walk", walk_without("."))
    with pytest.raises(DataError, match="cannot read the folder \\(permission denied\\)"):
        load(str(tmp_path))
