"""vizpipe.pipeline.inputs pinned exactly: image files (find, load, preprocess), the streamed Inputs and
its batches, limit/shard selection, the config rules' messages, the built-in sources, the shapes
data set, image folders and the CIFAR-10 helpers. Everything is in-process and tiny."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.inputs import (
    Inputs,
    Reindexed,
    _replaced,
    build_inputs,
    build_split,
    check_input,
    parse_shard,
    select,
    split_kinds,
    split_name,
)
from vizpipe.pipeline.inputs import images as im
from vizpipe.pipeline.inputs import shapes as sh
from vizpipe.pipeline.inputs import sources as src

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def _torchvision_imported() -> None:
    """torchvision and matplotlib (seconds to import once per process) are paid here, in setup."""
    import matplotlib  # noqa: F401
    import torchvision.transforms.functional  # noqa: F401


def icfg(**changes: Any) -> SimpleNamespace:
    """A plain input config with the schema's defaults (``input.*``), changed by ``changes``."""
    base = dict(
        kind="random",
        path=None,
        shape=[1, 3, 8, 8],
        resize=None,
        crop=None,
        mean=None,
        std=None,
        interpolation=None,
        normalized=True,
        limit=32,
        batch_size=32,
        workers=0,
        shard=None,
        split="test",
        root=None,
        download=False,
        size=64,
        train_count=3000,
        val_count=500,
        test_count=500,
        val_fraction=0.1,
        test_fraction=0.1,
    )
    base.update(changes)
    return SimpleNamespace(**base)


def save(path: Path, arr: np.ndarray, mode: str | None = None, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    img.save(path, **kw)
    return path


# --------------------------------------------------------------------------- find_images


def test_find_images_folder_is_recursive_sorted_and_filters_extensions(tmp_path: Path) -> None:
    """A folder: every image file below it (any case of extension), sorted by path; others skipped."""
    px = np.zeros((2, 2, 3), np.uint8)
    save(tmp_path / "b.png", px)
    save(tmp_path / "a" / "z.PNG", px)
    save(tmp_path / "a" / "deep" / "c.jpg", px)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a" / "sub.png").mkdir()  # a folder named like an image is not a file
    found = im.find_images(str(tmp_path))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/deep/c.jpg", "a/z.PNG", "b.png"]


def test_find_images_glob_file_and_their_errors(tmp_path: Path) -> None:
    """A glob (recursive **) lists files only, sorted; a file is itself; no match and empty folder
    and a missing path are ConfigErrors with their exact text (with near names)."""
    px = np.zeros((2, 2, 3), np.uint8)
    save(tmp_path / "x" / "b1.png", px)
    save(tmp_path / "x" / "a1.png", px)
    save(tmp_path / "x" / "y" / "c1.png", px)
    (tmp_path / "x" / "d1.png.dir").mkdir()
    got = im.find_images(str(tmp_path / "x" / "**" / "*1.png"))
    assert [p.name for p in got] == ["a1.png", "b1.png", "c1.png"]
    assert [p.name for p in im.find_images(str(tmp_path / "x" / "?1.png"))] == ["a1.png", "b1.png"]
    assert im.find_images(str(tmp_path / "x" / "a1.png")) == [tmp_path / "x" / "a1.png"]
    spec = str(tmp_path / "x" / "*.gif")
    with pytest.raises(ConfigError) as e:
        im.find_images(spec)
    assert (
        str(e.value) == f"input.path glob '{spec}' matched no file; check the pattern (quote it in the shell)"
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ConfigError) as e:
        im.find_images(str(tmp_path / "empty"))
    fix = (
        "; give a folder of image files (.jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm "
        "or any other Pillow opens)"
    )
    assert str(e.value) == (
        f"input.path folder '{tmp_path / 'empty'}' holds no image: "
        "1 file(s) skipped, not an image Pillow can open: a.txt" + fix
    )
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError) as e:
        im.find_images(str(tmp_path / "bare"))
    assert str(e.value) == f"input.path folder '{tmp_path / 'bare'}' holds no image (it holds no file)" + fix
    missing = str(tmp_path / "x" / "a2.png")
    with pytest.raises(ConfigError) as e:
        im.find_images(missing)
    near = ", ".join(repr(str(tmp_path / "x" / n)) for n in ("a1.png", "b1.png"))
    assert str(e.value) == (
        f"input.path '{missing}' does not exist; did you mean {near}? "
        "Give an image file, a folder of images or a glob"
    )
    nowhere = str(tmp_path / "nowhere" / "a.png")
    with pytest.raises(ConfigError) as e:
        im.find_images(nowhere)
    assert str(e.value) == (
        f"input.path '{nowhere}' does not exist. Give an image file, a folder of images or a glob"
    )


def test_find_images_suggests_at_most_three_closest_images(tmp_path: Path) -> None:
    """The hint names the 3 closest image files of the parent folder, closest first."""
    px = np.zeros((2, 2, 3), np.uint8)
    for n in ("dog1.png", "dog2.png", "dog3.png", "dog4.png", "zzz.png"):
        save(tmp_path / n, px)
    (tmp_path / "dog.txt").write_text("x")
    with pytest.raises(ConfigError) as e:
        im.find_images(str(tmp_path / "dog.png"))
    text = str(e.value)
    assert text.count("did you mean") == 1 and "dog.txt" not in text and "zzz" not in text
    assert text.count("'" + str(tmp_path)) == 4  # the path given, then 3 suggestions
    assert sum(f"dog{i}.png" in text for i in range(1, 5)) == 3  # equally close: any 3 of them


# --------------------------------------------------------------------------- load_rgb


def test_load_rgb_converts_gray_rgba_palette_and_keeps_rgb(tmp_path: Path) -> None:
    """L repeats to 3 channels; RGBA/LA/palette-with-transparency are composited on white; RGB stays."""
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], np.uint8)
    got = im.load_rgb(save(tmp_path / "rgb.png", rgb))
    assert got.dtype == np.uint8 and got.shape == (1, 2, 3) and np.array_equal(got, rgb)
    gray = np.array([[0, 77, 255]], np.uint8)
    got = im.load_rgb(save(tmp_path / "l.png", gray))
    assert np.array_equal(got, np.repeat(gray[..., None], 3, axis=2))
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8)
    got = im.load_rgb(save(tmp_path / "rgba.png", rgba))
    assert got[0, 0].tolist() == [255, 255, 255]  # fully transparent: white
    assert got[0, 1].tolist() == [0, 0, 255]
    assert got[0, 2].tolist() == [127, 127, 127]  # half black over white
    la = np.array([[[0, 0], [50, 255]]], np.uint8)
    got = im.load_rgb(save(tmp_path / "la.png", la, "LA"))
    assert got[0].tolist() == [[255, 255, 255], [50, 50, 50]]
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * (256 * 3 - 6))
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pt.png", transparency=0)
    assert im.load_rgb(tmp_path / "pt.png")[0].tolist() == [[255, 255, 255], [40, 50, 60]]
    pal.save(tmp_path / "p.png")  # no transparency: the palette colours
    assert im.load_rgb(tmp_path / "p.png")[0].tolist() == [[10, 20, 30], [40, 50, 60]]


def test_load_rgb_pa_mode_is_composited(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PA (palette + alpha) image: a transparent pixel becomes white."""
    pa = Image.new("PA", (2, 1))
    pa.putpalette([10, 20, 30] + [0] * 765)
    pa.putpixel((0, 0), (0, 0))
    pa.putpixel((1, 0), (0, 255))
    monkeypatch.setattr(Image, "open", lambda path: pa)
    assert im.load_rgb(Path("pa.png"))[0].tolist() == [[255, 255, 255], [10, 20, 30]]


def test_load_rgb_scales_16_bit_integer_and_float_images(tmp_path: Path) -> None:
    """I;16 scales by 65535; I and F by 255 unless a value exceeds 255 (then 65535); rounded."""
    i16 = Image.new("I;16", (3, 1))
    for x, v in enumerate((65535, 1000, 257)):
        i16.putpixel((x, 0), v)
    i16.save(tmp_path / "i16.png")
    got = im.load_rgb(tmp_path / "i16.png")
    assert got.shape == (1, 3, 3) and got[0, :, 0].tolist() == [255, 4, 1]
    assert np.array_equal(got[..., 0], got[..., 2])
    dim = Image.new("I;16", (2, 1))
    dim.putpixel((0, 0), 200)
    dim.putpixel((1, 0), 129)
    dim.save(tmp_path / "dim.png")
    assert im.load_rgb(tmp_path / "dim.png")[0, :, 0].tolist() == [1, 1]  # 16-bit: / 65535 even when dim
    i32 = Image.new("I", (2, 1))
    i32.putpixel((0, 0), 100)
    i32.putpixel((1, 0), 255)
    i32.save(tmp_path / "i32.tif")
    assert im.load_rgb(tmp_path / "i32.tif")[0, :, 1].tolist() == [100, 255]
    i32.putpixel((1, 0), 65535)
    i32.save(tmp_path / "i32b.tif")
    assert im.load_rgb(tmp_path / "i32b.tif")[0, :, 1].tolist() == [0, 255]  # 100/65535 -> 0
    f = Image.new("F", (2, 1))
    f.putpixel((0, 0), 127.6)
    f.putpixel((1, 0), 300.0)
    f.save(tmp_path / "f.tif")
    assert im.load_rgb(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 1]  # max > 255: / 65535
    f.putpixel((1, 0), 2.4)
    f.save(tmp_path / "f2.tif")
    assert im.load_rgb(tmp_path / "f2.tif")[0, :, 0].tolist() == [128, 2]


def test_load_rgb_errors_name_the_file(tmp_path: Path) -> None:
    """Not an image, and a truncated one: ConfigErrors with the exact text and the path."""
    bad = tmp_path / "fake.png"
    bad.write_text("hello")
    with pytest.raises(ConfigError) as e:
        im.load_rgb(bad)
    assert str(e.value) == (
        f"input file '{bad}' is not an image PIL can read (corrupt, or not an image despite its name)"
    )
    good = save(tmp_path / "g.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ConfigError) as e:
        im.load_rgb(cut)
    assert str(e.value).startswith(f"input file '{cut}' could not be decoded (")
    assert str(e.value).endswith("); it may be truncated or corrupt")


# --------------------------------------------------------------------------- preprocessing


class FakeTransforms:
    resize_size = [300, 7]
    crop_size = [200, 9]
    mean = (0.1, 0.2, 0.3)
    std = (0.4, 0.5, 0.6)

    class interpolation:  # noqa: N801 - stands in for an InterpolationMode member
        value = "bicubic"


class FakeWeights:
    def transforms(self) -> FakeTransforms:
        return FakeTransforms()


def test_preprocessing_defaults_weights_config_and_base() -> None:
    """ImageNet's 256/224 preset by default; the weights' values over it; config values over both;
    a given base replaces the preset and is not changed."""
    assert im.preprocessing(icfg(), None) == {
        "resize": 256,
        "crop": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
    }
    assert im.preprocessing(icfg(), FakeWeights()) == {
        "resize": 300,
        "crop": 200,
        "mean": [0.1, 0.2, 0.3],
        "std": [0.4, 0.5, 0.6],
        "interpolation": "bicubic",
    }
    from torchvision.transforms import InterpolationMode

    cfg = icfg(resize=40, crop=30, mean=[1, 2, 3], std=(4,), interpolation=InterpolationMode.NEAREST)
    got = im.preprocessing(cfg, FakeWeights())
    assert got == {
        "resize": 40,
        "crop": 30,
        "mean": [1.0, 2.0, 3.0],
        "std": [4.0],
        "interpolation": "nearest",
    }
    assert all(isinstance(v, float) for v in got["mean"] + got["std"])
    assert im.preprocessing(icfg(interpolation="box"), None)["interpolation"] == "box"
    base = {"resize": None, "crop": None, "mean": [0.5], "std": [0.5], "interpolation": "bilinear"}
    got = im.preprocessing(icfg(crop=16), None, base)
    assert got == {**base, "crop": 16} and base["crop"] is None
    assert im.preprocessing(None, None)["resize"] == 256


def test_preprocess_resizes_shorter_side_crops_centre_and_normalises() -> None:
    """(H, W, 3) uint8 -> (normalised CHW, rgb CHW): nearest resize of the shorter side, centre crop,
    /255, then (rgb - mean) / std per channel."""
    h, w = 4, 8
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.arange(w, dtype=np.uint8)[None, :] * 10
    arr[..., 1] = np.arange(h, dtype=np.uint8)[:, None] * 20
    arr[..., 2] = 255
    prep = {
        "resize": 2,
        "crop": None,
        "mean": [0.0, 0.5, 1.0],
        "std": [1.0, 0.5, 2.0],
        "interpolation": "nearest",
    }
    x, rgb = im.preprocess(arr, prep)
    assert rgb.shape == (3, 2, 4) and rgb.dtype == torch.float32
    assert torch.allclose(rgb[0, 0] * 255, torch.tensor([0.0, 20, 40, 60]))
    assert torch.allclose(rgb[1, :, 0] * 255, torch.tensor([0.0, 40]))
    assert torch.allclose(x[0], rgb[0]) and torch.allclose(x[1], (rgb[1] - 0.5) / 0.5)
    assert torch.allclose(x[2], torch.zeros(2, 4))  # (1 - 1) / 2
    x2, rgb2 = im.preprocess(arr, {**prep, "resize": None, "crop": 2})
    assert rgb2.shape == (3, 2, 2)
    assert torch.allclose(rgb2[0, 0] * 255, torch.tensor([30.0, 40]))
    assert torch.allclose(rgb2[1, :, 0] * 255, torch.tensor([20.0, 40]))
    _, same = im.preprocess(arr, {**prep, "resize": None})
    assert torch.equal(same, torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0)
    _, bil = im.preprocess(arr, {**prep, "interpolation": "bilinear"})
    assert not torch.allclose(bil, rgb)  # the interpolation is used


def test_image_files_items(tmp_path: Path) -> None:
    """ImageFiles: length, x/rgb from the file, index, label -1 without labels else the label."""
    arr = np.full((4, 4, 3), 51, np.uint8)
    files = [save(tmp_path / "a.png", arr), save(tmp_path / "b.png", arr)]
    prep = {"resize": None, "crop": None, "mean": [0.1] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    ds = im.ImageFiles(files, prep)
    assert len(ds) == 2
    item = ds[1]
    assert item["index"] == 1 and item["label"] == -1
    assert torch.allclose(item["rgb"], torch.full((3, 4, 4), 0.2))
    assert torch.allclose(item["x"], torch.full((3, 4, 4), 0.2))
    assert im.ImageFiles(files, prep, [3, 5])[1]["label"] == 5


def test_bundled_photo_found_without_matplotlib_and_missing_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The photo is found in matplotlib's package folder (get_data_path is not needed); without
    one anywhere, a VizpipeError names the path and input=image."""
    import importlib.util

    import matplotlib

    real = im.bundled_photo()
    assert real.is_file() and real.parts[-3:] == ("mpl-data", "sample_data", "grace_hopper.jpg")
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path))
    assert im.bundled_photo() == real
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VizpipeError) as e:
        im.bundled_photo()
    missing = Path(tmp_path, "sample_data", "grace_hopper.jpg")
    assert str(e.value) == (
        f"The bundled photo {missing} is missing from this matplotlib install; use input=image input.path=..."
    )
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(real.parent.parent))
    assert im.bundled_photo() == real  # relocated data: matplotlib says where


# --------------------------------------------------------------------------- Inputs and batches


class Items:
    """n items of (3, 2, 2) holding their index; labels/boxes optional; a NaN box for item 1."""

    def __init__(self, n: int, labels: bool = True, boxes: bool = False) -> None:
        self.n, self.labels, self.boxes = n, labels, boxes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "x": torch.full((3, 2, 2), float(i)),
            "rgb": torch.arange(12, dtype=torch.float32).view(3, 2, 2) / 12 + i,
            "index": i,
        }
        if self.labels:
            item["label"] = i - 1  # item 0: -1 (unknown)
        if self.boxes:
            item["box"] = torch.tensor([float("nan") if i == 1 else i, 0.0, 2.0, 2.0])
        return item


def make_inputs(n: int, batch_size: int, **kw: Any) -> Inputs:
    return Inputs(
        dataset=Items(n, **kw),
        names=[f"n{i}" for i in range(n)],
        sources=[f"s{i}" for i in range(n)],
        mean=[0.0] * 3,
        std=[1.0] * 3,
        device=CPU,
        batch_size=batch_size,
    )


def test_batches_have_exact_boundaries_indices_names_labels_and_boxes() -> None:
    """5 items in batches of 2: sizes 2, 2, 1 in order; names/sources by index; label -1 -> None
    (0 stays 0); a non-finite box -> None; rgb is (B, H, W, 3) float32; x on the device."""
    inputs = make_inputs(5, 2, boxes=True)
    assert len(inputs) == 5
    batches = list(inputs.batches("desc"))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [b.index for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[1].names == ["n2", "n3"] and batches[2].sources == ["s4"]
    assert batches[0].labels == [None, 0] and batches[1].labels == [1, 2]
    assert batches[0].boxes == [(0.0, 0.0, 2.0, 2.0), None] and batches[2].boxes == [(4.0, 0.0, 2.0, 2.0)]
    b = batches[1]
    assert b.tensor.shape == (2, 3, 2, 2) and b.tensor.device == CPU
    assert torch.equal(b.tensor[1], torch.full((3, 2, 2), 3.0))
    assert b.rgb.dtype == np.float32 and b.rgb.shape == (2, 2, 2, 3)
    assert np.allclose(b.rgb[0], (np.arange(12).reshape(3, 2, 2) / 12 + 2).transpose(1, 2, 0))
    assert list(inputs.batches()) and [len(x) for x in inputs.batches(None)] == [2, 2, 1]


def test_first_is_read_once_and_one_batch_inputs_yield_it() -> None:
    """first(): the first min(n, batch_size) items, the same object every time; an input that fits
    one batch yields exactly that object; no label key -> labels None; no box key -> boxes None."""
    inputs = make_inputs(3, 3, labels=False)
    first = inputs.first()
    assert first is inputs.first() and len(first) == 3
    assert inputs.tensor is first.tensor
    assert [b for b in inputs.batches()] == [first] and next(iter(inputs.batches())) is first
    assert first.labels == [None, None, None] and first.boxes == [None, None, None]
    big = make_inputs(5, 4)
    assert big.first().index == [0, 1, 2, 3]
    assert make_inputs(2, 4).first().index == [0, 1]
    assert [len(b) for b in make_inputs(4, 4).batches()] == [4]
    plain = Inputs(dataset=Items(1), names=["a"], sources=["s"], mean=[0.0], std=[1.0], device=CPU)
    assert (plain.batch_size, plain.workers, plain.files, plain.kind, plain.classes) == (32, 0, [], "", None)
    assert (plain.invalid, plain.split, plain._first, plain._recipe) == ({}, None, None, None)


def test_parse_shard_values_and_messages() -> None:
    """None/''/'  ' -> None; 'I/N' -> (I, N); not I/N and I outside 0..N-1 give exact messages."""
    assert parse_shard(None) is None and parse_shard("") is None and parse_shard("  ") is None
    assert parse_shard("0/4") == (0, 4) and parse_shard("3/4") == (3, 4) and parse_shard(" 1/2") == (1, 2)
    for bad in ("x", "1/2/3", "a/b", "1"):
        with pytest.raises(ConfigError) as e:
            parse_shard(bad)
        assert str(e.value) == f"input.shard '{bad}' is not I/N (e.g. input.shard=0/4: the first of 4 slices)"
    with pytest.raises(ConfigError) as e:
        parse_shard("4/4")
    assert str(e.value) == "input.shard '4/4': I must be in 0..N-1 (e.g. 0/4 .. 3/4)"
    with pytest.raises(ConfigError) as e:
        parse_shard("-1/3")
    assert str(e.value) == "input.shard '-1/3': I must be in 0..N-1 (e.g. 0/3 .. 2/3)"
    with pytest.raises(ConfigError) as e:
        parse_shard("0/0")
    assert str(e.value) == "input.shard '0/0': I must be in 0..N-1 (e.g. 0/1 .. 0/1)"


def test_select_limit_then_shard_every_item_once(caplog: pytest.LogCaptureFixture) -> None:
    """The first input.limit positions (one warning naming the flag, only when it cuts), then the
    I-th of N slices: over all shards every position exactly once, in order; an empty shard fails."""
    with caplog.at_level(logging.WARNING, logger="vizpipe.pipeline.inputs"):
        assert select(10, icfg(limit=10)) == list(range(10))
        assert select(10, icfg(limit=None)) == list(range(10))
        assert not caplog.records
        assert select(10, icfg(limit=4), "things") == [0, 1, 2, 3]
    assert [r.getMessage() for r in caplog.records] == [
        "Using the first 4 of 10 things (input.limit=4; set input.limit=null for all of them)"
    ]
    assert select(10, icfg(limit=None, shard="1/3")) == [3, 4, 5]
    slices = [select(10, icfg(limit=None, shard=f"{i}/3")) for i in range(3)]
    assert slices == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    for n in (1, 2, 3, 5, 7):
        got = [p for i in range(n) for p in select(7, icfg(limit=None, shard=f"{i}/{n}"))]
        assert got == list(range(7))
    assert select(10, icfg(limit=6, shard="1/2")) == [3, 4, 5]
    assert select(2, icfg(shard="2/3")) == [1]
    with pytest.raises(ConfigError) as e:
        select(2, icfg(shard="0/3"))
    assert str(e.value) == "input.shard=0/3 is empty: the data set has only 2 item(s)"
    assert select(3, icfg(limit=None)) == [0, 1, 2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vizpipe.pipeline.inputs"):
        select(3, icfg(limit=2))  # what is counted defaults to images
    assert [r.getMessage() for r in caplog.records] == [
        "Using the first 2 of 3 images (input.limit=2; set input.limit=null for all of them)"
    ]


def test_check_input_rules_and_messages(tmp_path: Path) -> None:
    """Each rule of input.* with its exact message; valid configs pass."""
    check_input(icfg())
    check_input(icfg(limit=1, resize=1, crop=1, mean=[0.5], std=[0.5], batch_size=1))
    cases = {
        "input=image needs input.path (an image file, a folder or a glob)": icfg(kind="image"),
        "input=tensor needs input.path (a .pt or .npy file holding an N×C×H×W tensor)": icfg(kind="tensor"),
        "input.batch_size must be >= 1, got 0": icfg(batch_size=0),
        "input.workers must be >= 0 or null (auto), got -1": icfg(workers=-1),
        "input.limit must be >= 1 or null (all), got 0": icfg(limit=0),
        "input.resize must be positive, got 0": icfg(resize=0),
        "input.crop must be positive, got -2": icfg(crop=-2),
        "input.mean must have 1 or 3 values, got [0.1, 0.2]": icfg(kind="shapes", mean=[0.1, 0.2]),
        "input.std must have 1 or 3 values, got [1, 1, 1, 1]": icfg(kind="photo", std=[1, 1, 1, 1]),
        "input.std must be positive, got [1.0, 0.0]": icfg(std=[1.0, 0.0]),
        "input.shape must be 4 positive ints N,C,H,W; got [1, 3, 8]": icfg(shape=[1, 3, 8]),
        "input.shape must be 4 positive ints N,C,H,W; got [1, 0, 8, 8]": icfg(shape=[1, 0, 8, 8]),
        "input.shard '5/2': I must be in 0..N-1 (e.g. 0/2 .. 1/2)": icfg(shard="5/2"),
        "input.size must be >= 32 pixels for input=shapes (room for a shape), got 31": icfg(
            kind="shapes", size=31
        ),
        "input.test_count must be >= 1 (images in that split), got 0": icfg(kind="shapes", test_count=0),
        "input.train_count must be >= 1 (images in that split), got 0": icfg(kind="shapes", train_count=0),
        "input=imagefolder needs input.root (a folder with one sub-folder of images per class); "
        "set input.root=...": icfg(kind="imagefolder"),
        "input=cifar10 needs input.root (the folder that holds (or will hold) cifar-10-batches-py); "
        "set input.root=...": icfg(kind="cifar10"),
        f"input.root '{tmp_path / 'no'}' is not a folder; input=imagefolder needs a folder with one "
        "sub-folder of images per class (or train/ val/ test/ folders of them)": icfg(
            kind="imagefolder", root=str(tmp_path / "no")
        ),
        "input.val_fraction must be in (0, 1) (a fraction of the training images), got 0.0": icfg(
            kind="imagefolder", root=str(tmp_path), val_fraction=0.0
        ),
        "input.test_fraction must be in (0, 1) (a fraction of the training images), got 1.0": icfg(
            kind="imagefolder", root=str(tmp_path), test_fraction=1.0
        ),
        "input.val_fraction + input.test_fraction must be < 1 (the rest is the train split), "
        "got 0.5 + 0.5": icfg(kind="imagefolder", root=str(tmp_path), val_fraction=0.5, test_fraction=0.5),
        "input.val_fraction must be in (0, 1) (a fraction of the training images), got 1.0": icfg(
            kind="cifar10", root=str(tmp_path), download=True, val_fraction=1.0
        ),
    }
    for message, cfg in cases.items():
        with pytest.raises(ConfigError) as e:
            check_input(cfg)
        assert str(e.value) == message
    check_input(icfg(kind="random", mean=[0.1, 0.2]))  # not an RGB kind: any length
    check_input(icfg(kind="tensor", path="x.pt", std=[1.0, 1.0]))
    for kind in ("photo", "image", "shapes", "imagefolder", "cifar10"):
        with pytest.raises(ConfigError, match=r"^input.mean must have 1 or 3 values, got \[0.1, 0.2\]$"):
            check_input(icfg(kind=kind, path="x.png", root=str(tmp_path), mean=[0.1, 0.2]))
    check_input(icfg(kind="shapes", size=32, train_count=1, val_count=1, test_count=1))
    check_input(icfg(kind="imagefolder", root=str(tmp_path), val_fraction=0.45, test_fraction=0.5))
    check_input(icfg(kind="cifar10", root=str(tmp_path), download=True, val_fraction=0.9))
    with pytest.raises(ConfigError, match=r"Unknown input.split 'dev'.*train"):
        check_input(icfg(split="dev"))
    with pytest.raises(ConfigError, match=r"^CIFAR-10 is not in "):
        check_input(icfg(kind="cifar10", root=str(tmp_path)))


def test_reindexed_split_name_kinds_and_replaced() -> None:
    """Reindexed renumbers without touching the source item; split_name defaults to test and
    unwraps enums; the split kinds; _replaced copies OmegaConf, dataclass and plain configs."""
    from omegaconf import OmegaConf
    from vizpipe.pipeline.schema import Split

    ds = Reindexed(Items(6), [4, 2])
    assert len(ds) == 2 and ds[1]["index"] == 1 and torch.equal(ds[1]["x"], torch.full((3, 2, 2), 2.0))
    assert ds[0]["label"] == 3 and ds.positions == [4, 2]
    assert split_name(icfg(split=None)) == "test" and split_name(SimpleNamespace()) == "test"
    assert split_name(icfg(split=Split.val)) == "val" and split_name(icfg(split="train")) == "train"
    assert split_kinds() == ["cifar10", "imagefolder", "shapes"]
    node = OmegaConf.create({"split": "test", "limit": 3})
    new = _replaced(node, split="train", limit=None)
    assert new.split == "train" and new.limit is None and node.split == "test" and node.limit == 3

    @dataclasses.dataclass
    class C:
        split: str = "test"
        limit: int | None = 3

    c = C()
    assert _replaced(c, limit=None) == C("test", None) and c.limit == 3

    @dataclasses.dataclass(frozen=True)
    class F:
        split: str = "test"

    assert _replaced(F(), split="val") == F("val")  # frozen: replaced, not set
    plain = icfg(limit=3)
    out = _replaced(plain, limit=None, shard=None)
    assert out.limit is None and plain.limit == 3 and out.kind == "random"


def test_build_inputs_and_build_split() -> None:
    """build_inputs fills kind, split (only for split kinds), batch size, workers and the recipe;
    an unknown kind names the choices; build_split gives every item of another split, and refuses
    kinds without splits and unknown splits with exact messages."""
    inputs = build_inputs(icfg(shape=[3, 3, 4, 4], batch_size=2), None, CPU, 7)
    assert inputs.kind == "random" and inputs.split is None and inputs.batch_size == 2
    assert inputs.workers == 0 and len(inputs) == 3 and inputs._recipe[2] == 7
    with pytest.raises(ConfigError) as e:
        build_split(inputs, "train")
    assert str(e.value) == (
        "input=random has no train split; data sets with train/val/test splits: "
        "input=cifar10, input=imagefolder, input=shapes"
    )
    inputs.kind = ""
    with pytest.raises(ConfigError, match=r"^input=\? has no val split"):
        build_split(inputs, "val")
    with pytest.raises(ConfigError, match=r"Unknown split 'dev'"):
        build_split(inputs, "dev")
    from vizpipe.pipeline.schema import InputKind, Split

    enum = build_inputs(icfg(kind=InputKind.shapes, split=Split.val, size=32, val_count=2), None, CPU, 0)
    assert enum.kind == "shapes" and enum.split == "val" and enum.names[1] == "val_00001_square"
    with pytest.raises(ConfigError, match=r"Unknown input.kind 'nope'"):
        build_inputs(icfg(kind="nope"), None, CPU, 0)
    cfg = icfg(
        kind="shapes", size=32, limit=2, shard="1/2", val_count=5, test_count=4, batch_size=3, workers=0
    )
    shapes = build_inputs(cfg, None, CPU, 1)
    assert shapes.split == "test" and len(shapes) == 1 and shapes.names == ["test_00001_square"]
    val = build_split(shapes, "val")
    assert val.split == "val" and len(val) == 5 and val.batch_size == 3 and val.kind == "shapes"
    assert val.names[0] == "val_00000_circle" and cfg.limit == 2 and cfg.split == "test"


# --------------------------------------------------------------------------- sources


def test_tensor_items_and_first_conv_channels() -> None:
    """TensorItems: len, x/rgb rows, index, label -1; first_conv_channels: the first Conv2d's
    in_channels, None without a model or a conv."""
    from torch import nn

    x, rgb = torch.arange(8.0).view(2, 1, 2, 2), torch.zeros(2, 3, 2, 2)
    items = src.TensorItems(x, rgb)
    assert len(items) == 2 and items[1]["index"] == 1 and items[1]["label"] == -1
    assert torch.equal(items[1]["x"], x[1]) and items[1]["rgb"].shape == (3, 2, 2)
    assert src.first_conv_channels(None) is None
    assert src.first_conv_channels(nn.Sequential(nn.Linear(2, 2))) is None
    net = nn.Sequential(nn.Linear(2, 2), nn.Conv2d(5, 4, 1), nn.Conv2d(4, 2, 1))
    assert src.first_conv_channels(net) == 5


def test_drawable_unnormalises_clamps_and_makes_three_channels() -> None:
    """x * std + mean when normalised (per channel; a 3-value mean on 1 channel uses its first),
    NaN -> 0, clamped to [0, 1]; 1 and 2 channels -> the first repeated, 4 -> the first 3."""
    x = torch.tensor([0.0, 1.0, -3.0, float("nan")]).view(1, 1, 2, 2)
    got = src.drawable(x, [0.5, 0.1, 0.1], [0.25, 1.0, 1.0], True)
    assert got.shape == (1, 3, 2, 2)
    assert got[0, 0].flatten().tolist() == [0.5, 0.75, 0.0, 0.0] and torch.equal(got[0, 0], got[0, 2])
    raw = src.drawable(torch.tensor([0.2, 1.5, -1.0, 0.7]).view(1, 1, 2, 2), [9.0], [9.0], False)
    assert torch.allclose(raw[0, 1].flatten(), torch.tensor([0.2, 1.0, 0.0, 0.7]))
    three = torch.rand(1, 3, 2, 2)
    out = src.drawable(three, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5], True)
    assert torch.allclose(out[0, 1], (three[0, 1] * 0.5 + 0.2).clamp(0, 1))
    two = torch.stack([torch.full((2, 2), 0.25), torch.full((2, 2), 0.75)]).unsqueeze(0)
    assert torch.equal(src.drawable(two, [0.0], [1.0], False), torch.full((1, 3, 2, 2), 0.25))
    four = torch.arange(4.0).view(1, 4, 1, 1) / 4
    assert src.drawable(four, [0.0], [1.0], False).flatten().tolist() == [0.0, 0.25, 0.5]
    assert src.drawable(four, [0.0], [1.0], False).is_contiguous()


def test_image_and_photo_builders(tmp_path: Path) -> None:
    """input=image: names are unique stems, sources the paths, input.limit/shard choose files, the
    config's mean/std are used; input=photo is grace_hopper."""
    arr = np.full((4, 6, 3), 102, np.uint8)
    for rel in ("a.png", "b.jpg", "c.png", "sub/a.png"):
        save(tmp_path / rel, arr)
    cfg = icfg(kind="image", path=str(tmp_path), limit=3, resize=4, crop=2, mean=[0.2] * 3, std=[0.2] * 3)
    fields = src.images(cfg, weights=None, seed=0, model=None)
    assert [Path(s).name for s in fields["sources"]] == ["a.png", "b.jpg", "c.png"]
    assert fields["files"] == [Path(s) for s in fields["sources"]]
    assert fields["names"][1:] == ["b", "c"] and fields["names"][0].startswith("a_")
    assert fields["mean"] == [0.2] * 3 and fields["std"] == [0.2] * 3
    item = fields["dataset"][2]
    assert item["x"].shape == (3, 2, 2) and torch.allclose(item["x"], torch.full((3, 2, 2), 1.0))
    shard = src.images(
        icfg(kind="image", path=str(tmp_path), limit=None, shard="1/2"), weights=None, seed=0, model=None
    )
    assert [Path(s).relative_to(tmp_path).as_posix() for s in shard["sources"]] == ["c.png", "sub/a.png"]
    assert len(shard["dataset"]) == 2 and shard["dataset"][1]["index"] == 1
    assert shard["dataset"][0]["x"].shape == (3, 224, 224)  # default preset 256/224
    photo = src.photo(icfg(kind="photo"), weights=None, seed=0, model=None)
    assert photo["names"] == ["grace_hopper"] and photo["files"] == [im.bundled_photo()]
    assert photo["sources"] == [str(im.bundled_photo())] and photo["mean"] == im.IMAGENET_MEAN


def test_tensor_file_builder_and_its_messages(tmp_path: Path) -> None:
    """.pt and .npy N×C×H×W files: names stem_i (stem alone for one item), sources path[i], files,
    NaN items marked invalid, normalized=false drawn as is; every refusal's exact text."""
    from torch import nn

    x = torch.zeros(3, 3, 2, 2)
    x[1, 0, 0, 0] = float("nan")
    x[2] = 0.5
    torch.save(x, tmp_path / "t.pt")
    f = src.tensor_file(
        icfg(kind="tensor", path=str(tmp_path / "t.pt"), normalized=False), weights=None, seed=0, model=None
    )
    assert f["names"] == ["t_0", "t_1", "t_2"] and f["files"] == [tmp_path / "t.pt"]
    assert f["sources"] == [f"{tmp_path / 't.pt'}[{i}]" for i in range(3)]
    assert f["invalid"] == {1: "non-finite (NaN/inf) values"}
    assert f["mean"] == im.IMAGENET_MEAN and f["std"] == im.IMAGENET_STD
    assert torch.equal(f["dataset"][2]["rgb"], torch.full((3, 2, 2), 0.5))
    np.save(tmp_path / "one.npy", np.ones((1, 1, 2, 2), np.float64))
    cfg = icfg(kind="tensor", path=str(tmp_path / "one.npy"), mean=[0.5], std=[0.25], limit=None)
    g = src.tensor_file(cfg, weights=None, seed=0, model=nn.Conv2d(1, 1, 1))
    assert g["names"] == ["one"] and g["dataset"][0]["x"].dtype == torch.float32
    assert torch.equal(g["dataset"][0]["rgb"], torch.full((3, 2, 2), 0.75)) and g["mean"] == [0.5]
    sel = src.tensor_file(
        icfg(kind="tensor", path=str(tmp_path / "t.pt"), limit=2), weights=None, seed=0, model=None
    )
    assert sel["names"] == ["t_0", "t_1"] and len(sel["dataset"]) == 2
    torch.save({"a": torch.zeros(1)}, tmp_path / "d.pt")
    torch.save(torch.zeros(2, 3), tmp_path / "r2.pt")
    (tmp_path / "bad.npy").write_text("junk")
    cases = {
        "missing.pt": f"input.path '{tmp_path / 'missing.pt'}' does not exist; give a .pt or .npy file",
        "d.pt": f"input.path '{tmp_path / 'd.pt'}' holds a dict, not a tensor",
        "r2.pt": f"input tensor '{tmp_path / 'r2.pt'}' has shape (2, 3) (rank 2); expected rank 4: N×C×H×W",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError) as e:
            src.tensor_file(icfg(kind="tensor", path=str(tmp_path / name)), weights=None, seed=0, model=None)
        assert str(e.value) == message
    with pytest.raises(ConfigError) as e:
        src.tensor_file(icfg(kind="tensor", path=str(tmp_path / "bad.npy")), weights=None, seed=0, model=None)
    assert str(e.value).startswith(
        f"input.path '{tmp_path / 'bad.npy'}' could not be read as a tensor file "
        "(.pt via weights_only torch.load, or .npy): "
    )
    with pytest.raises(ConfigError) as e:
        src.tensor_file(
            icfg(kind="tensor", path=str(tmp_path / "t.pt")), weights=None, seed=0, model=nn.Conv2d(1, 1, 1)
        )
    assert str(e.value) == (
        f"input tensor '{tmp_path / 't.pt'}' has 3 channels (shape (3, 3, 2, 2)) but the model's first conv "
        "expects 1; give an N×1×H×W tensor"
    )


def test_random_builder_is_seeded_and_checks_mean_std_length() -> None:
    """input=random: randn(shape) from the seed; names random_i, sources randn(seed=S)[i];
    ImageNet mean/std unless set; a mean/std of the wrong length names both counts."""
    f = src.random_batch(icfg(shape=[2, 3, 4, 4]), weights=None, seed=3, model=None)
    expected = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(f["dataset"].x, expected)
    assert f["names"] == ["random_0", "random_1"]
    assert f["sources"] == ["randn(seed=3)[0]", "randn(seed=3)[1]"]
    assert f["mean"] == im.IMAGENET_MEAN and f["std"] == im.IMAGENET_STD and f["invalid"] == {}
    expected_rgb = src.drawable(expected, im.IMAGENET_MEAN, im.IMAGENET_STD, True)
    assert torch.equal(f["dataset"].rgb, expected_rgb)
    g = src.random_batch(
        icfg(shape=[1, 2, 4, 4], mean=[0.0, 0.0], std=[1.0]), weights=None, seed=3, model=None
    )
    assert g["mean"] == [0.0, 0.0] and g["std"] == [1.0]
    for key, values in (("mean", [0.1, 0.2, 0.3]), ("std", [1.0, 1.0, 1.0, 1.0])):
        with pytest.raises(ConfigError) as e:
            src.random_batch(icfg(shape=[1, 2, 4, 4], **{key: values}), weights=None, seed=0, model=None)
        assert str(e.value) == (
            f"input.{key} has {len(values)} values {values} but the input has 2 channels; give 1 or 2 values"
        )


# --------------------------------------------------------------------------- shapes


def test_shapes_interpolation_matrix_and_pixel_centres() -> None:
    """The texture's linear upsampling weights and the pixel centres, exactly; both read-only."""
    m = sh._upsample_matrix(2, 4)
    assert np.allclose(m, [[0.875, 0.125], [0.625, 0.375], [0.375, 0.625], [0.125, 0.875]])
    assert m.dtype == np.float32 and not m.flags.writeable
    assert np.allclose(sh._upsample_matrix(3, 2), [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    assert np.allclose(sh._upsample_matrix(8, 5).sum(axis=1), 1.0)
    x, y = sh._pixel_centres(3)
    assert x[0].tolist() == [0.5, 1.5, 2.5] and y[:, 0].tolist() == [0.5, 1.5, 2.5]
    assert x.dtype == np.float32 and not x.flags.writeable and not y.flags.writeable
    px, py = np.array([1.0, 3.0, 1.0, 2.5]), np.array([1.0, 1.0, 3.0, 0.5])
    inside = sh._polygon(px, py, np.array([0.0, 2.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0, 2.0]))
    assert inside.tolist() == [True, False, False, False]


def test_shape_masks_have_their_geometry() -> None:
    """Each shape at the centre of 32 px, r=10, angle 0: pixel counts pinned, plus geometry: the
    ring's hole, the cross's arms, the star's notches, a rotated square."""
    counts = {}
    for label, name in enumerate(sh.SHAPES):
        m = sh.shape_mask(label, 32, 16.0, 16.0, 10.0, 0.0)
        assert m.shape == (32, 32) and m.dtype == bool
        counts[name] = int(m.sum())
    assert counts == {"circle": 316, "square": 196, "triangle": 128, "cross": 204, "star": 128, "ring": 228}
    ring = sh.shape_mask(5, 32, 16.0, 16.0, 10.0, 0.0)
    assert not ring[16, 16] and ring[16, 24] and not ring[16, 20]  # hole radius 0.55 r
    cross = sh.shape_mask(3, 32, 16.0, 16.0, 10.0, 0.0)
    assert cross[16, 25] and cross[25, 16] and not cross[20, 20]
    square = sh.shape_mask(1, 32, 16.0, 16.0, 10.0, 0.0)
    ys, xs = np.nonzero(square)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (9, 22, 9, 22)  # half side r/sqrt(2)
    diamond = sh.shape_mask(1, 32, 16.0, 16.0, 10.0, np.pi / 4)
    assert diamond[16, 24] and not diamond[16, 25] and not diamond[22, 22]
    tri = sh.shape_mask(2, 32, 16.0, 16.0, 10.0, 0.0)
    assert tri[16, 24] and not tri[16, 8]  # a vertex at angle 0 points right
    star = sh.shape_mask(4, 32, 16.0, 16.0, 10.0, 0.0)
    assert star[16, 24] and not star[20, 22] and star[19, 19]  # tip at 0°, notch at 36°


def test_render_is_pinned_and_seeded() -> None:
    """One item's label, box, object size and colour statistics are pinned; the seed's sign does
    not matter; the box holds the mask tightly."""
    s = sh.render(3, "val", 4, 32)
    assert s.label == 4 and s.box == (8.0, 14.0, 19.0, 25.0) and int(s.mask.sum()) == 54
    assert float(s.rgb.mean()) == pytest.approx(0.6148699522018433, abs=1e-6)
    assert float(s.rgb[:, s.mask].mean()) == pytest.approx(0.18929658830165863, abs=1e-6)
    assert float(s.rgb[:, ~s.mask].mean()) == pytest.approx(0.6385616660118103, abs=1e-6)
    t = sh.render(-3, "val", 4, 32)
    assert np.array_equal(s.rgb, t.rgb) and s.box == t.box
    assert sh.render(3, "val", 7).rgb.shape == (3, 64, 64)  # default size
    assert not np.array_equal(sh.render(3, "test", 4, 32).rgb, s.rgb)
    assert sh.SPLIT_IDS == {"train": 0, "val": 1, "test": 2}
    sums = [float(sh.render(0, "train", i, 32).rgb.sum()) for i in range(12)]
    pinned = [1860.372, 1539.754, 1682.794, 1933.887, 2228.026, 2314.693]
    pinned += [1657.273, 987.088, 998.629, 2164.974, 1345.145, 1868.239]
    assert sums == pytest.approx(pinned, abs=2e-3)  # 12 images (light and dark objects) pinned


def test_shapes_dataset_items_and_normalisation() -> None:
    """Items: x = (rgb - mean) / std per channel, rgb, index, label = index % 6, box float32;
    out-of-range items raise IndexError with the exact text; normalisation: config > weights > 0.5."""
    ds = sh.ShapesDataset(3, "val", 5, 32, [0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    assert len(ds) == 5 and ds.label(4) == 4 and ds.label(13) == 1
    item = ds[4]
    s = sh.render(3, "val", 4, 32)
    assert torch.equal(item["rgb"], torch.from_numpy(s.rgb)) and item["index"] == 4 and item["label"] == 4
    assert torch.allclose(item["x"][1], (item["rgb"][1] - 0.2) / 0.25)
    assert torch.allclose(item["x"][2], (item["rgb"][2] - 0.3) / 2.0)
    assert item["box"].dtype == torch.float32 and item["box"].tolist() == list(s.box)
    for bad in (5, -1):
        with pytest.raises(IndexError) as e:
            ds[bad]
        assert str(e.value) == f"shapes val has 5 items; no item {bad}"
    assert sh.normalisation(icfg(), None) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert sh.normalisation(icfg(), FakeWeights()) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert sh.normalisation(icfg(mean=[1, 2, 3]), FakeWeights()) == ([1.0, 2.0, 3.0], [0.4, 0.5, 0.6])
    assert sh.normalisation(icfg(std=[2]), None) == ([0.5, 0.5, 0.5], [2.0])


def test_shapes_builder_names_sources_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    """input=shapes: input.<split>_count items, names split_00000_shape, sources with seed and split;
    input.limit cuts with a warning naming the split."""
    cfg = icfg(kind="shapes", split="val", size=32, val_count=8, limit=3, mean=[0.0] * 3, std=[1.0] * 3)
    with caplog.at_level(logging.WARNING, logger="vizpipe.pipeline.inputs"):
        f = sh.shapes(cfg, weights=None, seed=5, model=None)
    assert f["names"] == ["val_00000_circle", "val_00001_square", "val_00002_triangle"]
    assert f["sources"] == [f"shapes(seed=5, split=val)[{i}]" for i in range(3)]
    assert f["classes"] == list(sh.SHAPES) and f["mean"] == [0.0] * 3 and f["std"] == [1.0] * 3
    assert "of 8 shapes val images" in caplog.text
    assert len(f["dataset"]) == 3 and torch.equal(f["dataset"][2]["x"], f["dataset"][2]["rgb"])
    assert np.array_equal(f["dataset"][1]["rgb"].numpy(), sh.render(5, "val", 1, 32).rgb)
    g = sh.shapes(
        icfg(kind="shapes", split="train", train_count=2, limit=None), weights=None, seed=0, model=None
    )
    assert g["names"] == ["train_00000_circle", "train_00001_square"] and g["mean"] == [0.5] * 3


# --------------------------------------------------------------------------- image folders


def write_classes(root: Path, classes: dict[str, int]) -> None:
    for name, count in classes.items():
        for i in range(count):
            save(root / name / f"{i:02d}.png", np.full((6, 8, 3), 10 * i, np.uint8))


def test_draw_is_fixed_stratified_and_keeps_order() -> None:
    """The held-out draw: a fixed generator (pinned result), round(n * fraction) of each class per
    split in the order given, train the rest; each split keeps the samples' order."""
    from vizpipe.pipeline.inputs.folders import draw

    samples = [(f"f{i}", i % 2) for i in range(12)]
    assert draw(samples, {"test": 0.25, "val": 0.2}) == {
        "train": [("f0", 0), ("f1", 1), ("f2", 0), ("f5", 1), ("f7", 1), ("f8", 0)],
        "test": [("f4", 0), ("f6", 0), ("f9", 1), ("f11", 1)],
        "val": [("f3", 1), ("f10", 0)],
    }
    np.random.seed(123)
    again = draw(samples, {"test": 0.25, "val": 0.2})
    assert again["val"] == [("f3", 1), ("f10", 0)]
    assert list(again) == ["train", "test", "val"]
    one = draw([("a", 0)], {"val": 0.4})
    assert one == {"train": [("a", 0)], "val": []}
    sizes = draw([(str(i), 0) for i in range(10)] + [(str(i), 1) for i in range(10, 15)], {"val": 0.3})
    assert len(sizes["val"]) == 3 + 2 and sum(c for _, c in sizes["val"]) == 2


def test_split_samples_and_scan_messages(tmp_path: Path) -> None:
    """scan: sorted class folders and their files; not a data set -> exact message; train/ with
    val/ uses the folder and draws only test; class mismatch between folders -> exact message."""
    from vizpipe.pipeline.inputs.folders import scan, split_samples

    write_classes(tmp_path / "flat", {"b": 2, "a": 1})
    classes, samples, skipped = scan(tmp_path / "flat")
    assert skipped == []
    assert classes == ["a", "b"]
    assert [(Path(p).relative_to(tmp_path / "flat").as_posix(), c) for p, c in samples] == [
        ("a/00.png", 0),
        ("b/00.png", 1),
        ("b/01.png", 1),
    ]
    (tmp_path / "none" / "c").mkdir(parents=True)
    with pytest.raises(ConfigError) as e:
        scan(tmp_path / "none")
    assert str(e.value).startswith(f"input.root '{tmp_path / 'none'}' is not an image folder data set (")
    assert str(e.value).endswith(
        "); give a folder with one sub-folder of images per class, e.g. root/cat/1.jpg, root/dog/2.png"
    )
    root = tmp_path / "tv"
    write_classes(root / "train", {"a": 10, "b": 10})
    write_classes(root / "val", {"a": 1, "b": 2})
    classes, splits, _ = split_samples(root, 0.3, 0.2)
    assert classes == ["a", "b"] and len(splits["val"]) == 3 and all("/val/" in p for p, _ in splits["val"])
    assert len(splits["test"]) == 4 and len(splits["train"]) == 16
    write_classes(root / "test", {"a": 1, "c": 1})
    with pytest.raises(ConfigError) as e:
        split_samples(root, 0.3, 0.2)
    assert str(e.value) == (
        f"input.root '{root}': test/ has classes ['a', 'c'] but train/ has ['a', 'b']; "
        "every split folder needs the same class folders"
    )
    classes, flat, _ = split_samples(tmp_path / "flat", 0.4, 0.4)
    assert sorted(flat) == ["test", "train", "val"] and sum(len(v) for v in flat.values()) == 3


def test_imagefolder_builder_fields_and_empty_split_messages(tmp_path: Path) -> None:
    """input=imagefolder: names class_stem, sources/files the chosen files, labels, classes, the
    preprocessing's mean/std; an empty split names the sizes and the fix for that split."""
    from vizpipe.pipeline.inputs.folders import imagefolder

    write_classes(tmp_path, {"cat": 5, "dog": 5})
    cfg = icfg(
        kind="imagefolder",
        root=str(tmp_path),
        split="train",
        val_fraction=0.2,
        test_fraction=0.2,
        limit=None,
        resize=6,
        crop=4,
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    f = imagefolder(cfg, weights=None, seed=0, model=None)
    assert f["classes"] == ["cat", "dog"] and len(f["names"]) == 6
    assert all(n.split("_")[0] in ("cat", "dog") for n in f["names"])
    assert [f"{Path(s).parent.name}_{Path(s).stem}" for s in f["sources"]] == f["names"]
    assert f["files"] == [Path(s) for s in f["sources"]] and f["mean"] == [0.0] * 3
    item = f["dataset"][5]
    assert item["label"] == 1 and item["index"] == 5 and item["x"].shape == (3, 4, 4)
    assert f["dataset"][0]["label"] == 0
    shard = imagefolder(icfg(**{**vars(cfg), "shard": "1/2"}), weights=None, seed=0, model=None)
    assert shard["sources"] == f["sources"][3:]
    small = tmp_path / "small"
    write_classes(small, {"a": 2, "b": 2})
    with pytest.raises(ConfigError) as e:
        imagefolder(icfg(kind="imagefolder", root=str(small), split="val"), weights=None, seed=0, model=None)
    assert str(e.value) == (
        f"input=imagefolder: the val split of '{small}' is empty (train 4, val 0, test 0 images); "
        "add images, or add a val/ folder, or raise input.val_fraction"
    )
    full = icfg(kind="imagefolder", root=str(small), split="train", val_fraction=0.5, test_fraction=0.4)
    with pytest.raises(ConfigError) as e:
        imagefolder(full, weights=None, seed=0, model=None)
    assert str(e.value) == (
        f"input=imagefolder: the train split of '{small}' is empty (train 0, val 2, test 2 images); "
        "add images, or lower input.val_fraction and input.test_fraction"
    )


# --------------------------------------------------------------------------- CIFAR-10 helpers


def test_cifar_split_positions_presence_and_socket_timeout(tmp_path: Path) -> None:
    """train = the first 1 - val_fraction (at least one val image), val the rest, test all; a missing
    folder without download is one exact message; the socket timeout is restored."""
    import socket

    from vizpipe.pipeline.inputs import cifar

    assert cifar.split_positions("test", 0, 7, 0.5) == range(7)
    assert cifar.split_positions("train", 10, 0, 0.2) == range(8)
    assert cifar.split_positions("val", 10, 0, 0.2) == range(8, 10)
    assert cifar.split_positions("val", 10, 0, 0.01) == range(9, 10)
    assert cifar.split_positions("train", 10, 0, 0.25) == range(8)  # round(2.5) = 2
    with pytest.raises(ConfigError) as e:
        cifar.check_present(tmp_path, False)
    folder = tmp_path / "cifar-10-batches-py"
    assert str(e.value) == (
        f"CIFAR-10 is not in {folder} (input.root={tmp_path}); set input.download=true to download it "
        "there (170 MB, needs internet), or set input.root to the folder that holds cifar-10-batches-py"
    )
    cifar.check_present(tmp_path, True)
    folder.mkdir()
    cifar.check_present(tmp_path, False)
    old = socket.getdefaulttimeout()
    with cifar._socket_timeout(12.5):
        assert socket.getdefaulttimeout() == 12.5
    assert socket.getdefaulttimeout() == old
    items = cifar.CifarItems(np.full((2, 4, 4, 3), 255, np.uint8), [3, 7], cifar.BASE_PREP)
    assert len(items) == 2 and items[1]["label"] == 7 and items[1]["index"] == 1
    assert torch.equal(items[1]["x"], torch.ones(3, 4, 4)) and items[1]["rgb"].shape == (3, 4, 4)


def test_cifar10_builder_fields_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """input=cifar10 on a tiny folder in torchvision's format: names split_00000_class, sources
    naming the folder and the image, files the batch files, 0.5 normalisation, limit and the val
    tail; a damaged folder and a failed download are one ConfigError each, exact text."""
    import pickle

    from torchvision.datasets import CIFAR10
    from vizpipe.pipeline.inputs import cifar

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    sums = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        doc = {"labels": [(k + j) % 10 for j in range(2)], "data": np.full((2, 3072), 10 * k, np.uint8)}
        (folder / name).write_bytes(pickle.dumps(doc))
        sums[name] = hashlib_md5(folder / name)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    monkeypatch.setattr(CIFAR10, "train_list", [[n, sums[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, sums[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": hashlib_md5(folder / "batches.meta")})
    base = dict(kind="cifar10", root=str(tmp_path), limit=None, val_fraction=0.2)
    test = cifar.cifar10(icfg(**base), weights=None, seed=0, model=None)
    assert test["names"] == ["test_00000_dog", "test_00001_frog"] and test["classes"] == names
    assert test["sources"] == [f"{folder} test image 0", f"{folder} test image 1"]
    assert test["files"] == [folder / "test_batch"] and test["mean"] == [0.5] * 3 and test["std"] == [0.5] * 3
    item = test["dataset"][1]
    assert item["x"].shape == (3, 32, 32) and torch.allclose(item["rgb"], torch.full((3, 32, 32), 50 / 255))
    assert item["label"] == 6 and item["index"] == 1
    val = cifar.cifar10(icfg(**base, split="val"), weights=None, seed=0, model=None)
    assert val["names"] == ["val_00008_deer", "val_00009_dog"]
    assert val["sources"][0] == f"{folder} training image 8"
    assert val["files"] == [folder / f"data_batch_{i}" for i in range(1, 6)]
    train = cifar.cifar10(
        icfg(**{**base, "limit": 3}, split="train", resize=8), weights=None, seed=0, model=None
    )
    assert train["names"] == ["train_00000_airplane", "train_00001_automobile", "train_00002_automobile"]
    assert train["dataset"][2]["x"].shape == (3, 8, 8)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": "0" * 32})
    with pytest.raises(ConfigError) as e:
        cifar.cifar10(icfg(**base), weights=None, seed=0, model=None)
    assert str(e.value).startswith(f"CIFAR-10 in {folder} is incomplete or damaged (")
    assert str(e.value).endswith(  # between them: torchvision's first line
        "); set input.download=true to download it again (needs internet), or replace the folder with "
        "a complete copy"
    )

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no network")

    monkeypatch.setattr(CIFAR10, "__init__", offline)
    with pytest.raises(ConfigError) as e:
        cifar.open_cifar10(tmp_path, train=True, download=True)
    assert str(e.value) == (
        f"Could not download CIFAR-10 into {tmp_path} (no network); without internet, copy "
        f"cifar-10-batches-py into {tmp_path} and set input.download=false"
    )


def hashlib_md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_rules_default_missing_optional_keys_and_paths_expand_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-made config without the split keys gets their defaults (size 64, counts 1, fractions
    0.1, no download); '~' in input.path and input.root means the home folder."""
    common = dict(
        batch_size=1, workers=0, limit=None, resize=None, crop=None, mean=None, std=None, shard=None
    )
    check_input(SimpleNamespace(kind="shapes", **common))
    check_input(SimpleNamespace(kind="imagefolder", root=str(tmp_path), **common))
    with pytest.raises(ConfigError, match=r"^CIFAR-10 is not in "):
        check_input(SimpleNamespace(kind="cifar10", root=str(tmp_path), **common))
    (tmp_path / "cifar-10-batches-py").mkdir()
    check_input(SimpleNamespace(kind="cifar10", root=str(tmp_path), **common))
    monkeypatch.setenv("HOME", str(tmp_path))
    save(tmp_path / "pic.png", np.zeros((2, 2, 3), np.uint8))
    assert im.find_images("~/pic.png") == [tmp_path / "pic.png"]
    assert im.find_images("~") == [tmp_path / "pic.png"]
    check_input(icfg(kind="imagefolder", root="~"))


def test_limit_warnings_name_what_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The input.limit warning names the items of each kind: images, <split> images, tensor items."""
    from vizpipe.pipeline.inputs.folders import imagefolder

    for i in range(3):
        save(tmp_path / "c" / f"{i}.png", np.zeros((2, 2, 3), np.uint8))
        save(tmp_path / "d" / f"{i}.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="vizpipe.pipeline.inputs"):
        src.images(icfg(kind="image", path=str(tmp_path / "c"), limit=2), weights=None, seed=0, model=None)
        src.random_batch(icfg(shape=[3, 3, 2, 2], limit=1), weights=None, seed=0, model=None)
        cfg = icfg(
            kind="imagefolder",
            root=str(tmp_path),
            split="train",
            limit=1,
            val_fraction=0.1,
            test_fraction=0.1,
        )
        imagefolder(cfg, weights=None, seed=0, model=None)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "Using the first 2 of 3 images",
        "Using the first 1 of 3 tensor items",
        "Using the first 1 of 6 train images",
    ]
