"""Inputs the folder reader used to drop, double or mistake (issue 21): every image taken or the
skipped files said once, link loops counted once, photos upright, names never a record's name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import scan as sc
from vizpipe.pipeline.inputs.images import load_rgb
from vizpipe.pipeline.names import RUN_SUFFIXES, input_names
from vizpipe.pipeline.runner import run_pipeline


def px(seed: int = 0, h: int = 12, w: int = 10) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def mixed_folder(root: Path) -> Path:
    """Images under several extensions and cases, one without an extension, and non-images."""
    root.mkdir(parents=True)
    px(1).save(root / "a.JPG", format="JPEG")
    px(2).save(root / "b.jpeg", format="JPEG")
    px(3).save(root / "c.webp", format="WEBP")
    px(4).save(root / "d.tif", format="TIFF")
    px(5).save(root / "e", format="PNG")  # no extension: Pillow recognises the content
    px(6).save(root / "f.jfif", format="JPEG")
    (root / "notes.txt").write_text("not an image")
    (root / "weights.bin").write_bytes(os.urandom(64))
    return root


def test_every_image_pillow_opens_is_taken_and_the_rest_named(tmp_path: Path) -> None:
    root = mixed_folder(tmp_path / "in")
    found = sc.scan_images(str(root))
    assert [p.name for p in found.files] == ["a.JPG", "b.jpeg", "c.webp", "d.tif", "e", "f.jfif"]
    assert [(Path(s.path).name, s.why) for s in found.skipped] == [
        ("notes.txt", sc.NOT_IMAGE),
        ("weights.bin", sc.NOT_IMAGE),
    ]
    assert sc.describe(found.skipped) == (
        "2 file(s) skipped, not an image Pillow can open: notes.txt, weights.bin"
    )


def test_a_glob_ignores_case_in_file_names_and_skips_what_is_not_an_image(tmp_path: Path) -> None:
    root = mixed_folder(tmp_path / "in")
    (root / "sub").mkdir()
    px(7).save(root / "sub" / "g.jpg", format="JPEG")
    assert [p.name for p in sc.find_images(str(root / "*.jpg"))] == ["a.JPG"]
    assert [p.name for p in sc.find_images(str(root / "**" / "*.JP*G"))] == ["a.JPG", "b.jpeg", "g.jpg"]
    assert [p.name for p in sc.find_images(str(root / "*.t?f"))] == ["d.tif"]
    with pytest.raises(ConfigError) as e:
        sc.find_images(str(root / "*.txt"))
    assert str(e.value) == (
        f"input.path glob '{root / '*.txt'}' matched no image: "
        "1 file(s) skipped, not an image Pillow can open: notes.txt"
    )
    (root / ".hidden.png").write_bytes((root / "e").read_bytes())
    (root / "h.png").write_bytes((root / "e").read_bytes())
    assert [p.name for p in sc.find_images(str(root / "*.png"))] == ["h.png"]  # no hidden file, as glob
    assert [p.name for p in sc.find_images(str(root / ".*.png"))] == [".hidden.png"]


def test_link_loops_count_each_file_once_and_end(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    px(1).save(root / "a.png")
    px(2).save(root / "sub" / "b.png")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # two loops: Python's glob
    (root / "sub" / "again").symlink_to(root / "sub", target_is_directory=True)  # would take ages
    (root / "c.png").symlink_to(root / "a.png")
    for spec in (str(root), str(root / "**" / "*.png"), str(root / "**")):
        found = sc.scan_images(spec)
        assert [p.relative_to(root).as_posix() for p in found.files] == ["a.png", "sub/b.png"], spec
        assert [(Path(s.path).name, s.why) for s in found.skipped] == [
            ("c.png", f"the same file as {root / 'a.png'}")
        ]
    assert "1 second path(s) to a file already taken, skipped: " in sc.describe(found.skipped)


def test_photos_are_turned_upright_as_their_exif_orientation_says(tmp_path: Path) -> None:
    stored = np.zeros((6, 10, 3), np.uint8)
    stored[0, 0] = 255  # a white top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "plain.png")
    upright = load_rgb(tmp_path / "turned.png")
    assert upright.shape == (10, 6, 3) and upright[0, -1].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))
    np.testing.assert_array_equal(load_rgb(tmp_path / "plain.png"), stored)


def test_imagefolder_finds_files_as_input_image_does(tmp_path: Path) -> None:
    from vizpipe.pipeline.inputs.folders import imagefolder

    root = tmp_path / "data"
    mixed_folder(root / "cat")
    (root / "dog").mkdir()
    for i in range(6):
        px(10 + i).save(root / "dog" / f"{i}.PNG")
    (root / "dog" / "loop").symlink_to(root, target_is_directory=True)
    cfg = SimpleNamespace(
        **{
            **dict(kind="imagefolder", root=str(root), split="train", val_fraction=0.2, test_fraction=0.2),
            **dict(limit=None, shard=None, resize=None, crop=None, mean=None, std=None, interpolation=None),
        }
    )
    fields = imagefolder(cfg, weights=None, seed=0, model=None)
    assert fields["classes"] == ["cat", "dog"]
    every = {Path(s.path).name for s in fields["skipped"]}
    assert every == {"notes.txt", "weights.bin"}  # the link back to root/ is a loop: not followed
    assert len(fields["names"]) == 8 and len(set(fields["names"])) == 8  # 12 images less 2+2 held out


def test_an_input_named_like_a_record_never_lands_on_it(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Before: cam.json.png -> folder cam/cam.json/, then cam/cam.json could not be written."""
    names = input_names(["cam.json", "report.HTML", "photo", "a.b", "x.npy"], ids=list("12345"))
    assert names[2:4] == ["photo", "a.b"] and len(set(names)) == 5
    assert [n[: -len("_123456")] for n in (names[0], names[1], names[4])] == [
        "cam.json",
        "report.HTML",
        "x.npy",
    ]
    assert not any(n.casefold().endswith(RUN_SUFFIXES) for n in names)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(("cam.json", "stats.json", "report.html", "manifest.json", "plain")):
        px(i, 40, 40).save(folder / f"{name}.png")
    (folder / "readme.md").write_text("hello")
    cfg = compose(
        [
            "model=seed_net",
            "input=image",
            f"input.path={folder}",
            "input.resize=32",
            "input.crop=32",
            "stages=[features,cam]",
            "features.layers=[conv2]",
            "report.enabled=false",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.ok, result.error
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    cam = json.loads((tmp_path / "run" / "cam" / "cam.json").read_text())
    assert len(cam["images"]) == 5
    assert not any(img["name"].endswith(RUN_SUFFIXES) for img in cam["images"])
    assert sorted(img["source"] for img in cam["images"]) == sorted(str(p) for p in folder.glob("*.png"))
    skipped_line = [w for w in manifest["warnings"] if "readme.md" in w]
    assert len(skipped_line) == 1 and "1 file(s) skipped, not an image Pillow can open" in skipped_line[0]
    assert manifest["provenance"]["skipped"] == [{"path": str(folder / "readme.md"), "why": sc.NOT_IMAGE}]


def test_a_model_with_fewer_outputs_than_the_data_set_has_classes_is_refused(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Before: it ran, dropped the class names and counted labels 3..5 as misses."""
    over = ["model=shapes_net", "input=shapes", "input.limit=4", "report.enabled=false"]
    for stages in ("[features]", "[cam]"):
        cfg = compose([*over, "model.num_classes=3", f"stages={stages}", "features.layers=[conv3]"])
        result = run_pipeline(cfg, tmp_path / stages.strip("[]"))
        assert not result.ok
        assert result.error == (
            "shapes_net has 3 outputs but input=shapes has 6 classes (circle, square, triangle, cross, "
            "star, ring): labels 3..5 could never be predicted; set model.num_classes=6 (or use "
            "input=image to look at the images without labels)"
        )
    cfg = compose([*over, "stages=[features]", "features.layers=[conv3]"])
    assert run_pipeline(cfg, tmp_path / "six").ok


def test_integer_tensors_are_pixels_scaled_and_normalised_or_refused(tmp_path: Path) -> None:
    """Before: a uint8 tensor went in raw (values up to 255): every image at probability 1.0."""
    import torch
    from vizpipe.pipeline.inputs.images import IMAGENET_MEAN, IMAGENET_STD
    from vizpipe.pipeline.inputs.sources import tensor_file

    pixels = torch.randint(
        0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    cfg = SimpleNamespace(
        kind="tensor", normalized=True, mean=None, std=None, limit=None, shard=None, resize=None, crop=None
    )
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for dtype, suffix in ((torch.uint8, ".pt"), (torch.int64, ".npy")):
        path = tmp_path / f"px_{dtype}{suffix}".replace("torch.", "")
        torch.save(pixels.to(dtype), path) if suffix == ".pt" else np.save(path, pixels.to(dtype).numpy())
        fields = tensor_file(SimpleNamespace(**vars(cfg), path=str(path)), weights=None, seed=0, model=None)
        x = torch.stack([fields["dataset"][i]["x"] for i in range(2)])
        torch.testing.assert_close(x, (pixels.float() / 255 - mean) / std)
        rgb = torch.stack([fields["dataset"][i]["rgb"] for i in range(2)])
        torch.testing.assert_close(rgb, pixels.float() / 255, atol=1e-6, rtol=0)  # drawn as the pixels
    from vizpipe.pipeline.inputs.objects import DatasetItems, _tensor  # vizpipe.inspect's objects

    fields = _tensor(pixels, SimpleNamespace(**vars(cfg)), None)  # an in-memory tensor, as a file
    torch.testing.assert_close(fields["dataset"][1]["x"], ((pixels.float() / 255 - mean) / std)[1])
    prep = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    item = DatasetItems([(pixels[0], 2)], prep, normalized=True)[0]  # a data set of uint8 images
    torch.testing.assert_close(item["x"], ((pixels.float() / 255 - mean) / std)[0])
    assert item["label"] == 2
    wide = tmp_path / "wide.pt"
    torch.save(torch.full((1, 3, 4, 4), 1000, dtype=torch.int16), wide)
    with pytest.raises(ConfigError) as e:
        tensor_file(SimpleNamespace(**vars(cfg), path=str(wide)), weights=None, seed=0, model=None)
    assert str(e.value) == (
        f"input tensor '{wide}' holds int16 values 1000..1000: integer tensors are read as pixels 0..255 "
        "only; save pixels as uint8, or a float tensor normalised as the model expects"
    )
