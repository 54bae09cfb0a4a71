"""A map's files as bytes: its ``.npy``, its overlay and heatmap PNGs, drawn as the library draws them.

The pictures are those of pytorch-grad-cam's ``show_cam_on_image(rgb, mask, use_rgb=True,
image_weight=w)`` (the overlay) and of the JET colormap it uses (the heatmap), on ``mask`` = the
map with NaN -> 0, +inf -> 1, -inf -> 0, clipped to [0, 1] (the ``.npy`` keeps the raw map).

Two ways to the same bytes:

* **one map on the CPU** (``overlay_png``, ``heatmap_png``, ``npy_bytes``): NumPy and OpenCV, run
  on the background writer's threads (``vizpipe.pipeline.writer``), one file each;
* **a batch on the model's device** (``colour_batch``, for ``device=cuda``): the same arithmetic in
  torch on the whole (B, H, W) batch of maps, so only the finished uint8 pictures come back to
  the CPU to be encoded. Every step is an exactly rounded float32 operation (the multiplications
  and divisions ``show_cam_on_image`` does, in its order; divisors are tensors on the device, as
  CUDA multiplies by the reciprocal of a CPU scalar) and the JET colours are OpenCV's own table,
  so the pictures are byte for byte the CPU's: ``tests/test_cam_draw.py`` runs ``colour_batch``
  on CPU tensors against ``show_cam_on_image``, ``tests/test_gpu.py`` on CUDA.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "colour_batch",
    "heatmap_png",
    "heatmap_rgb",
    "jet_lut",
    "marked_png",
    "mask_of",
    "npy_bytes",
    "overlay_png",
]


def mask_of(cam: np.ndarray) -> np.ndarray:
    """The map as drawn: NaN -> 0, +inf -> 1, -inf -> 0, clipped to [0, 1]."""
    return np.clip(np.nan_to_num(cam, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def heatmap_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) uint8 RGB through OpenCV's JET colormap."""
    import cv2

    return cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def npy_bytes(cam: np.ndarray) -> bytes:
    """``np.save``'s bytes of the map as float32 (H, W)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(cam).astype(np.float32))
    return buffer.getvalue()


def overlay_png(
    rgb: np.ndarray,
    cam: np.ndarray,
    image_weight: float,
    level: int,
    mark: Callable[..., Any] | None = None,
    display: Callable[..., Any] | None = None,
) -> bytes:
    """The overlay PNG of map ``cam`` (H, W) on ``rgb`` (H, W, 3) in [0, 1]; ``mark(overlay)``
    draws on it (a segmentation target's mask outlined, a detection target's boxes); ``display``
    scales the mask first (a pixel attribution: ``attribution.runner.display_scale``)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb32 = np.asarray(rgb, dtype=np.float32)
    mask = mask_of(cam) if display is None else display(mask_of(cam))
    overlay = show_cam_on_image(rgb32, mask, use_rgb=True, image_weight=image_weight)
    return marked_png(overlay, mark, level)


def marked_png(picture: np.ndarray, mark: Callable[..., Any] | None, level: int) -> bytes:
    """The PNG of a uint8 (H, W, 3) picture, ``mark(picture)`` drawn on it first when given
    (``mark`` returns a new array: the picture handed over is never changed)."""
    from vizpipe.pipeline.render import encode_png

    return encode_png(mark(picture) if mark is not None else picture, None, level)


def heatmap_png(cam: np.ndarray, level: int, display: Callable[..., Any] | None = None) -> bytes:
    """The heatmap PNG of map ``cam`` (H, W) (``display``: as in ``overlay_png``)."""
    from vizpipe.pipeline.render import encode_png

    mask = mask_of(cam) if display is None else display(mask_of(cam))
    return encode_png(heatmap_rgb(mask), None, level)


@functools.cache
def jet_lut() -> np.ndarray:
    """OpenCV's JET colormap, (256, 3) uint8 RGB: ``heatmap_rgb(m)`` is ``jet_lut()[uint8(255 * m)]``."""
    import cv2

    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(1, 256), cv2.COLORMAP_JET)[0]
    return np.ascontiguousarray(bgr[:, ::-1])


def colour_batch(
    maps: torch.Tensor, rgb: torch.Tensor, image_weight: float, overlay: bool = True, heatmap: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(overlays, heatmaps) of a batch, each (B, H, W, 3) uint8 on the maps' device (or None).

    ``maps`` (B, H, W) raw maps; ``rgb`` (B, H, W, 3) float32 images in [0, 1], same device.
    Byte for byte ``show_cam_on_image`` and ``heatmap_rgb`` of each map (module docstring).
    """
    import torch

    device = maps.device
    f32 = torch.float32

    def full(value: float) -> torch.Tensor:  # a divisor or factor on the device, rounded to float32
        return torch.tensor(value, dtype=f32, device=device)

    mask = torch.nan_to_num(maps.to(f32), nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    index = (mask * full(255.0)).to(torch.uint8)  # np.uint8(255 * mask): truncation
    colours = torch.from_numpy(jet_lut()).to(device)[index.long()]  # (B, H, W, 3) uint8 RGB
    overlays = None
    if overlay:
        heat = colours.to(f32) / full(255.0)  # np.float32(heatmap) / 255
        cam = full(1.0 - image_weight) * heat + full(image_weight) * rgb.to(f32)
        cam = cam / cam.amax(dim=(1, 2, 3), keepdim=True)  # cam / np.max(cam), per image
        overlays = torch.nan_to_num(full(255.0) * cam, nan=0.0).to(torch.uint8)  # np.uint8(255 * cam)
    return overlays, colours if heatmap else None
