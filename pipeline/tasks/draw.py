"""Drawing what a segmentation or detection model predicts: masks, boxes, labels and scores.

Plain numpy and PIL (no figure, no global state), on (H, W, 3) uint8 RGB pictures: ``mask_picture``
colours each predicted class (``tab20``, class 0 left as the image: background) and writes the
class names present; ``draw_boxes`` outlines boxes with their label and score above each, as the
detection tutorial's ``draw_boxes`` does on its CAM pictures; ``outline`` traces a mask's border on
a CAM overlay. Pictures are drawn at least ``MIN_SIDE`` pixels wide (nearest neighbour) so the
text stays readable on small inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_SIDE", "draw_boxes", "enlarge", "mask_picture", "outline", "palette"]

MIN_SIDE = 256  # pictures with text are drawn at least this wide


def palette(count: int) -> np.ndarray:
    """(count, 3) uint8 colours, matplotlib's ``tab20`` repeated (class k gets colour k)."""
    from matplotlib import colormaps

    colours = (np.asarray(colormaps["tab20"].colors)[:, :3] * 255).astype(np.uint8)
    return colours[np.arange(max(count, 1)) % len(colours)]


def enlarge(image: np.ndarray, min_side: int = MIN_SIDE) -> tuple[np.ndarray, int]:
    """(H, W, C) upscaled by a whole factor (nearest) until its width is at least ``min_side``."""
    factor = max(1, -(-min_side // max(image.shape[1], 1)))
    if factor == 1:
        return image, 1
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1), factor


def _label(draw: object, xy: tuple[float, float], text: str, colour: tuple[int, ...]) -> None:
    """``text`` on a filled box of ``colour`` with its top-left corner at ``xy`` (kept on the picture)."""
    x, y = xy
    left, top, right, bottom = draw.textbbox((x, y), text)  # type: ignore[attr-defined]
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)  # type: ignore[attr-defined]
    dark = sum(colour[:3]) > 380
    draw.text((x, y), text, fill=(0, 0, 0) if dark else (255, 255, 255))  # type: ignore[attr-defined]


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    texts: Sequence[str],
    *,
    factor: int = 1,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 with each box (input pixels, times ``factor``) outlined in its label's colour
    and ``texts[i]`` above it (inside when it would leave the picture)."""
    from PIL import Image, ImageDraw

    if not len(boxes):
        return image
    colours = palette(max(labels, default=0) + 1) if colours is None else colours
    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    width = max(1, factor // 2 + 1)
    for box, label, text in zip(boxes, labels, texts, strict=True):
        x0, y0, x1, y1 = (float(v) * factor for v in box)
        colour = tuple(int(v) for v in colours[int(label) % len(colours)])
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=width)
        if text:
            _, top, _, bottom = draw.textbbox((0, 0), text)
            y = y0 - (bottom - top) - 3 if y0 - (bottom - top) - 3 >= 0 else y0 + 2
            _label(draw, (x0 + 2, y), text, colour)
    return np.asarray(im)


def mask_picture(
    rgb: np.ndarray, classes: np.ndarray, names: Sequence[str], *, alpha: float = 0.55
) -> np.ndarray:
    """(H, W, 3) float [0, 1] image and its (H, W) predicted classes -> a uint8 picture: each class
    but 0 blended in its colour, the names of the classes present (with their share of the pixels)
    listed top-left."""
    from PIL import Image, ImageDraw

    k = max(len(names), int(classes.max()) + 1 if classes.size else 1)
    colours = palette(k)
    base = (np.clip(rgb, 0, 1) * 255).astype(np.float32)
    coloured = colours[classes].astype(np.float32)
    shown = np.where((classes > 0)[..., None], (1 - alpha) * base + alpha * coloured, base)
    big, factor = enlarge(shown.round().astype(np.uint8))
    im = Image.fromarray(big)
    draw = ImageDraw.Draw(im)
    present, counts = np.unique(classes, return_counts=True)
    y = 2
    for c, n in sorted(zip(present.tolist(), counts.tolist(), strict=True), key=lambda t: -t[1]):
        name = names[c] if c < len(names) and names[c] else f"class {c}"
        text = f"{c} {name} {100 * n / classes.size:.0f}%"
        _label(draw, (3, y), text, tuple(int(v) for v in colours[c]))
        _, top, _, bottom = draw.textbbox((0, 0), text)
        y += bottom - top + 4
    return np.asarray(im)


def outline(
    image: np.ndarray, region: np.ndarray, colour: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """(H, W, 3) uint8 with the border pixels of the (H, W) boolean ``region`` set to ``colour``."""
    region = np.asarray(region, dtype=bool)
    if not region.any():
        return image
    inner = region.copy()
    inner[1:, :] &= region[:-1, :]
    inner[:-1, :] &= region[1:, :]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    out = image.copy()
    out[region & ~inner] = colour
    return out
