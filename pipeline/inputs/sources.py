"""The built-in input kinds: the bundled photo, image files, a tensor file, a random batch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import Reindexed, builder, select
from vizpipe.pipeline.inputs.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    bundled_photo,
    preprocessing,
)
from vizpipe.pipeline.inputs.scan import readable, scan_images
from vizpipe.pipeline.names import input_names

log = logging.getLogger(__name__)


class TensorItems:
    """Items of an in-memory (N, C, H, W) tensor and its (N, 3, H, W) drawing."""

    def __init__(self, x: torch.Tensor, rgb: torch.Tensor, labels: list[int] | None = None) -> None:
        self.x, self.rgb, self.labels = x, rgb, labels

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        label = -1 if self.labels is None else self.labels[i]
        return {"x": self.x[i], "rgb": self.rgb[i], "index": i, "label": label}


def first_conv_channels(model: Any) -> int | None:
    """Input channels of the model's first conv layer, if any."""
    from torch import nn

    if model is None:
        return None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def drawable(x: torch.Tensor, mean: list[float], std: list[float], normalized: bool) -> torch.Tensor:
    """(N, C, H, W) model input -> (N, 3, H, W) in [0, 1] for drawing (un-normalised if needed)."""
    x = x.detach().float().cpu()
    c = x.shape[1]
    if normalized:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if m.shape[1] not in (1, c):
            m, s = m[:, :1], s[:, :1]
        x = x * s + m
    rgb = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    if c == 1:
        rgb = rgb.repeat(1, 3, 1, 1)
    elif c != 3:
        rgb = rgb[:, :3] if c > 3 else rgb[:, :1].repeat(1, 3, 1, 1)
    return rgb.contiguous()


def _files_fields(files: list[Path], input_cfg: Any, weights: Any) -> dict[str, Any]:
    prep = preprocessing(input_cfg, weights)
    names = input_names([f.stem for f in files], ids=[str(f) for f in files])
    positions = select(len(files), input_cfg)
    chosen = [files[i] for i in positions]
    return {
        "dataset": Reindexed(ImageFiles(files, prep), positions),
        "names": [names[i] for i in positions],
        "sources": [str(f) for f in chosen],
        "mean": list(prep["mean"]),
        "std": list(prep["std"]),
        "files": chosen,
    }


@builder("photo")
def photo(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """matplotlib's bundled grace_hopper.jpg."""
    return _files_fields([bundled_photo()], input_cfg, weights)


@builder("image")
def images(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """Image files: ``input.path`` is a file, a folder (searched recursively) or a glob;
    ``input.on_bad_image=skip`` also leaves out the image files that cannot be read."""
    scan = scan_images(str(input_cfg.path))
    choice = getattr(input_cfg, "on_bad_image", "stop")
    if str(getattr(choice, "value", choice)) == "skip":
        scan = readable(scan)
    return {**_files_fields(scan.files, input_cfg, weights), "skipped": scan.skipped}


def _check_channels(x: torch.Tensor, input_cfg: Any, model: Any, where: str) -> None:
    expected = first_conv_channels(model)
    if expected is not None and x.shape[1] != expected:
        raise ConfigError(
            f"input tensor{where} has {x.shape[1]} channels (shape {tuple(x.shape)}) "
            "but the model's first conv "
            f"expects {expected}; give an N×{expected}×H×W tensor"
        )
    for key in ("mean", "std"):
        values = getattr(input_cfg, key, None)
        if values is not None and len(values) not in (1, x.shape[1]):
            raise ConfigError(
                f"input.{key} has {len(values)} values {list(values)} "
                f"but the input has {x.shape[1]} channels; "
                f"give 1 or {x.shape[1]} values"
            )


def _tensor_fields(
    x: torch.Tensor,
    names: list[str],
    sources: list[str],
    input_cfg: Any,
    normalized: bool,
    labels: list[int] | None = None,
    stats: list[list[float]] | None = None,
) -> dict[str, Any]:
    """``stats``: the (mean, std) ``x`` was normalised with, else ``input.mean``/``std`` or ImageNet's."""
    mean = [float(v) for v in input_cfg.mean] if input_cfg.mean is not None else IMAGENET_MEAN
    std = [float(v) for v in input_cfg.std] if input_cfg.std is not None else IMAGENET_STD
    if stats:
        mean, std = stats
    positions = select(int(x.shape[0]), input_cfg, "tensor items")
    x = x[positions]
    invalid = {
        i: "non-finite (NaN/inf) values" for i in range(x.shape[0]) if not bool(torch.isfinite(x[i]).all())
    }
    chosen = None if labels is None else [labels[i] for i in positions]
    return {
        "dataset": TensorItems(x, drawable(x, mean, std, normalized), chosen),
        "names": [names[i] for i in positions],
        "sources": [sources[i] for i in positions],
        "mean": mean,
        "std": std,
        "invalid": invalid,
    }


def pixels(x: torch.Tensor, what: str, mean: list[float], std: list[float]) -> torch.Tensor:
    """An integer tensor (…, C, H, W) holds pixels 0..255 (torchvision.io's images are uint8):
    scaled to [0, 1] and normalised with ``mean``/``std`` (one value each, or one per channel),
    as image files are. Other integer values are refused: the model would see them raw."""
    lo, hi = (int(x.min()), int(x.max())) if x.numel() else (0, 0)
    if x.dtype == torch.bool or lo < 0 or hi > 255:
        raise ConfigError(
            f"{what} holds {str(x.dtype).replace('torch.', '')} values {lo}..{hi}: integer tensors are read "
            "as pixels 0..255 only; save pixels as uint8, or a float tensor normalised as the model expects"
        )
    m, s = (torch.tensor(v, dtype=torch.float32) for v in (mean, std))
    m, s = (v if v.numel() in (1, x.shape[-3]) else v[:1] for v in (m, s))  # one value: gray
    return (x.float() / 255.0 - m.view(-1, 1, 1)) / s.view(-1, 1, 1)


def pixel_stats(input_cfg: Any, weights: Any, channels: int) -> list[list[float]]:
    """(mean, std) integer pixels are normalised with: ``input.*``, else the weights', else
    ImageNet's; one value each for a one-channel input given three."""
    prep = preprocessing(input_cfg, weights)
    stats = [[float(v) for v in prep[k]] for k in ("mean", "std")]
    return [v[:1] if len(v) not in (1, channels) else v for v in stats]


@builder("tensor")
def tensor_file(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """A ``.pt`` (``torch.save``, loaded with ``weights_only=True``) or ``.npy`` N×C×H×W tensor."""
    p = Path(str(input_cfg.path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"input.path '{input_cfg.path}' does not exist; give a .pt or .npy file")
    try:
        if p.suffix.lower() == ".npy":
            x = torch.from_numpy(np.load(p, allow_pickle=False))
        else:
            x = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"input.path '{p}' could not be read as a tensor file "
            f"(.pt via weights_only torch.load, or .npy): {exc}"
        ) from exc
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"input.path '{p}' holds a {type(x).__name__}, not a tensor")
    if x.ndim != 4:
        raise ConfigError(
            f"input tensor '{p}' has shape {tuple(x.shape)} (rank {x.ndim}); expected rank 4: N×C×H×W"
        )
    normalized, stats = bool(input_cfg.normalized), None
    if not (x.is_floating_point() or x.is_complex()):
        stats = pixel_stats(input_cfg, weights, int(x.shape[1]))
        x, normalized = pixels(x, f"input tensor '{p}'", *stats), True
        log.info("input tensor '%s' holds integer pixels: scaled to [0, 1], normalised with %s", p, stats)
    x = x.float()
    _check_channels(x, input_cfg, model, f" '{input_cfg.path}'")
    n = int(x.shape[0])
    stem = p.stem
    names = input_names([f"{stem}_{i}" for i in range(n)] if n > 1 else [stem])
    fields = _tensor_fields(x, names, [f"{p}[{i}]" for i in range(n)], input_cfg, normalized, stats=stats)
    fields["files"] = [p]
    return fields


@builder("random")
def random_batch(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """A seeded standard-normal batch of ``input.shape`` (a normalised input)."""
    shape = [int(v) for v in input_cfg.shape]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(int(seed)))
    _check_channels(x, input_cfg, model, "")
    names = [f"random_{i}" for i in range(shape[0])]
    return _tensor_fields(x, names, [f"randn(seed={seed})[{i}]" for i in range(shape[0])], input_cfg, True)
