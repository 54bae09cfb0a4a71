"""Image files: read any format as RGB (turned as its EXIF orientation says), preprocess like
torchvision's presets. Which files are images: ``vizpipe.pipeline.inputs.scan``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.inputs.scan import find_images

__all__ = ["ImageFiles", "bundled_photo", "find_images", "load_rgb", "preprocess", "preprocessing"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
EXIF_ORIENTATION = 0x0112  # PIL.ExifTags.Base.Orientation: 1 = upright, 2..8 = mirrored and/or turned


def bundled_photo() -> Path:
    """matplotlib's bundled ``mpl-data/sample_data/grace_hopper.jpg``, found without importing matplotlib.

    (Importing it costs ~0.3 s, and ``stages=[summary]`` draws nothing.)
    """
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(roots[0] if roots else ".", "mpl-data", "sample_data", "grace_hopper.jpg")
    if not path.is_file():  # a relocated data folder (MATPLOTLIBDATA): ask matplotlib itself
        import matplotlib

        path = Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not path.is_file():
        raise VizpipeError(
            f"The bundled photo {path} is missing from this matplotlib install; "
            "use input=image input.path=..."
        )
    return path


def load_rgb(path: Path) -> np.ndarray:
    """Read any image as (H, W, 3) uint8 RGB: grayscale, RGBA, palette and 16-bit converted.

    A photo's EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so the image is
    upright as viewers show it. (torchvision's ``ImageFolder`` loader, ``pil_loader``, does not:
    a model trained through it saw such photos as stored.)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            im = opened
            if opened.getexif().get(EXIF_ORIENTATION, 1) != 1:  # stored rotated or mirrored
                im = ImageOps.exif_transpose(opened)
            return rgb_array(im)
    except Image.DecompressionBombError as exc:
        raise ConfigError(f"input file '{path}' {bomb_text(exc)}") from exc
    except UnidentifiedImageError as exc:
        raise ConfigError(
            f"input file '{path}' is not an image PIL can read (corrupt, or not an image despite its name)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(
            f"input file '{path}' could not be decoded ({exc}); it may be truncated or corrupt"
        ) from exc


def bomb_text(exc: Exception) -> str:
    """Why PIL refuses a decompression bomb, and what to do (one line)."""
    return (
        f"is too large to decode safely ({' '.join(str(exc).split())}); PIL refuses images this large "
        "(Image.MAX_IMAGE_PIXELS); leave it out, or set input.on_bad_image=skip to skip unreadable images"
    )


def rgb_array(im: Any) -> np.ndarray:
    """A loaded PIL image as (H, W, 3) uint8 RGB: grayscale, RGBA (on white), palette and 16-bit converted."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F") or im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def preprocessing(input_cfg: Any, weights: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve resize/crop/mean/std/interpolation: config value, else the weights', else ``base``
    (default: ImageNet's preset, 256/224; a data set of small images passes its own, e.g.
    ``resize=None`` to keep CIFAR-10's 32 pixels)."""
    base = dict(
        base
        or {
            "resize": 256,
            "crop": 224,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "interpolation": "bilinear",
        }
    )
    if weights is not None:
        t = weights.transforms()
        base.update(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=[float(v) for v in t.mean],
            std=[float(v) for v in t.std],
            interpolation=t.interpolation.value,
        )
    for key in ("resize", "crop", "mean", "std", "interpolation"):
        value = getattr(input_cfg, key, None)
        if value is not None:
            base[key] = (
                [float(v) for v in value] if key in ("mean", "std") else getattr(value, "value", value)
            )
    return base


def preprocess(rgb_u8: np.ndarray, prep: dict[str, Any]) -> tuple[Any, Any]:
    """Resize (shorter side), centre-crop, scale to [0, 1]: returns (normalised CHW, rgb CHW).

    Same order as torchvision's ``ImageClassification`` preset: resize and crop the uint8 image,
    convert to float, normalise. A ``resize`` or ``crop`` of None is skipped.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    t = torch.from_numpy(rgb_u8).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
    if prep["resize"] is not None:
        mode = InterpolationMode(str(prep["interpolation"]))
        t = F.resize(t, [int(prep["resize"])], interpolation=mode, antialias=True)
    if prep["crop"] is not None:
        t = F.center_crop(t, [int(prep["crop"])])
    rgb = t.float() / 255.0
    mean = torch.tensor(prep["mean"]).view(-1, 1, 1)
    std = torch.tensor(prep["std"]).view(-1, 1, 1)
    return (rgb - mean) / std, rgb


class ImageFiles:
    """A torch-style data set of image files, preprocessed on access (DataLoader workers welcome)."""

    def __init__(self, files: list[Path], prep: dict[str, Any], labels: list[int] | None = None) -> None:
        self.files = files
        self.prep = prep
        self.labels = labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x, rgb = preprocess(load_rgb(self.files[i]), self.prep)
        return {"x": x, "rgb": rgb, "index": i, "label": -1 if self.labels is None else self.labels[i]}
