"""``input=shapes``: a synthetic, seeded, offline data set with known object positions.

One object per image (circle, square, triangle, cross, star, ring) at a random position, size,
rotation and colour on textured noise; the class is the shape. Every item is drawn on demand from
``(seed, split, index)`` alone, so the same seed gives the same images, any item can be made in a
DataLoader worker and nothing big is kept in memory. The splits (train, val, test) come from
different random streams; the classes cycle with the index (``index % len(SHAPES)``), so every
split is balanced and a batch of the first items shows every shape.

Each item carries the object's ``box`` (x0, y0, x1, y1 in input pixels, the pixel edges of its
mask), so the CAM stage scores localisation (pointing game, energy in box); ``render`` also gives
the mask.

``input.objects=N`` (2..6) draws scenes instead (``render_scene``): N objects of N different
shapes per image, placed apart where they fit, for segmentation and detection. An item then has
no single label; it carries the true ``mask`` (H, W) of class indices (0 = background, shape k
is k + 1: the data set's classes are ``background`` and the shapes, torchvision's numbering) and
each object's box and class (``obj_boxes`` (N, 4), ``obj_labels`` (N,)).

With one object per image, an item also carries the object's pixels (``object_mask``, (H, W)
bool), so the CAM stage scores energy in mask and mask IoU when asked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from vizpipe.pipeline.inputs import Reindexed, builder, select, split_name

__all__ = [
    "SCENE_CLASSES",
    "SHAPES",
    "SPLIT_IDS",
    "ShapeSample",
    "ShapeScene",
    "ShapesDataset",
    "render",
    "render_scene",
]

#: the classes, in label order
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")
#: each split's random stream (part of every item's seed)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_MEAN = [0.5, 0.5, 0.5]  # pixels in [0, 1] -> [-1, 1], as the seed's CIFAR-10 transform
DEFAULT_STD = [0.5, 0.5, 0.5]
TEXTURE_CELLS = 8  # the background's low-frequency noise: this many cells across the image


@dataclass(frozen=True)
class ShapeSample:
    """One drawn item: the picture, where the object is, and what it is."""

    rgb: np.ndarray  # (3, H, W) float32 in [0, 1]
    mask: np.ndarray  # (H, W) bool: the object's pixels
    box: tuple[float, float, float, float]  # x0, y0, x1, y1: pixel edges around the mask
    label: int  # index into SHAPES


@functools.lru_cache(maxsize=8)
def _upsample_matrix(cells: int, size: int) -> np.ndarray:
    """(size, cells) linear interpolation weights: a cells-wide signal -> size pixel centres."""
    pos = (np.arange(size) + 0.5) * (cells - 1) / size  # in cell coordinates, 0 .. cells - 1
    lo = np.clip(np.floor(pos).astype(int), 0, cells - 2)
    frac = pos - lo
    m = np.zeros((size, cells), dtype=np.float32)
    m[np.arange(size), lo] = 1.0 - frac
    m[np.arange(size), lo + 1] = frac
    m.flags.writeable = False
    return m


@functools.lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) coordinates of the pixel centres, each (size, size) float32."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _polygon(px: np.ndarray, py: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (px, py) lie inside the polygon with vertices (xs, ys)."""
    inside = np.zeros(px.shape, dtype=bool)
    for i in range(len(xs)):
        x0, y0, x1, y1 = xs[i - 1], ys[i - 1], xs[i], ys[i]
        if y0 == y1:
            continue
        crosses = (py < y0) != (py < y1)
        at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < at)
    return inside


def shape_mask(label: int, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(size, size) mask of shape ``SHAPES[label]`` centred at (cx, cy), circumradius ``r`` px."""
    x, y = _pixel_centres(size)
    dx, dy = x - cx, y - cy
    name = SHAPES[label]
    if name in ("circle", "ring"):
        d = np.hypot(dx, dy)
        return (d <= r) & (d >= 0.55 * r) if name == "ring" else d <= r
    if name == "cross":
        c, s = np.cos(angle), np.sin(angle)
        u, v = dx * c + dy * s, -dx * s + dy * c
        arm = 0.3 * r
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    corners = {"square": 4, "triangle": 3, "star": 10}[name]
    radii = np.where(np.arange(corners) % 2 == 0, r, 0.45 * r) if name == "star" else np.full(corners, r)
    turns = angle + np.pi / 4 * (name == "square") + 2 * np.pi * np.arange(corners) / corners
    return _polygon(x, y, cx + radii * np.cos(turns), cy + radii * np.sin(turns))


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """The textured ground: (3, H, W) float32 and its grey level (``base``)."""
    base = rng.uniform(0.25, 0.75)
    up = _upsample_matrix(TEXTURE_CELLS, size)
    cells = rng.uniform(-0.2, 0.2, (3, TEXTURE_CELLS, TEXTURE_CELLS)).astype(np.float32)
    chw = up @ cells @ up.T  # (3, H, W)
    chw += rng.standard_normal((3, size, size), dtype=np.float32) * 0.05
    chw += (base + rng.uniform(-0.08, 0.08, (3, 1, 1))).astype(np.float32)
    return chw, float(base)


def render(seed: int, split: str, index: int, size: int = 64) -> ShapeSample:
    """Draw item ``index`` of ``split``: a function of its arguments only (same seed, same image)."""
    rng = np.random.default_rng([abs(int(seed)), SPLIT_IDS[split], int(index)])
    label = int(index) % len(SHAPES)
    chw, base = _background(rng, size)  # a grey level, a tint, low-frequency blobs and fine grain
    # the object: size, place, rotation; a colour at least 0.3 brighter or darker than the ground
    r = rng.uniform(0.12, 0.25) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    angle = rng.uniform(0, 2 * np.pi)
    bright = base + 0.35 if (base < 0.5) == (rng.uniform() < 0.8) else base - 0.35
    colour = np.clip(bright + rng.uniform(-0.2, 0.2, 3), 0.0, 1.0).astype(np.float32)
    mask = shape_mask(label, size, cx, cy, r, angle)
    grain = rng.standard_normal((3, int(mask.sum())), dtype=np.float32) * 0.03
    chw[:, mask] = colour[:, None] + grain
    np.clip(chw, 0.0, 1.0, out=chw)
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return ShapeSample(chw, mask, box, label)


#: the classes of a scene (``input.objects`` > 1): background first, as torchvision numbers them
SCENE_CLASSES = ("background", *SHAPES)
MAX_OBJECTS = len(SHAPES)


@dataclass(frozen=True)
class ShapeScene:
    """A drawn scene: several objects, their true mask and boxes."""

    rgb: np.ndarray  # (3, H, W) float32 in [0, 1]
    mask: np.ndarray  # (H, W) int64: 0 background, k + 1 for SHAPES[k] (later objects on top)
    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1: pixel edges around each object's visible pixels
    labels: np.ndarray  # (N,) int64: k + 1 for SHAPES[k]


def render_scene(seed: int, split: str, index: int, size: int = 64, objects: int = 3) -> ShapeScene:
    """Draw scene ``index`` of ``split``: ``objects`` different shapes, each at most ~0.2 of the side,
    kept apart (up to 30 tries each); a function of its arguments only."""
    rng = np.random.default_rng([abs(int(seed)), SPLIT_IDS[split], int(index), int(objects)])
    chw, base = _background(rng, size)
    kinds = rng.choice(len(SHAPES), size=int(objects), replace=False)
    mask = np.zeros((size, size), dtype=np.int64)
    placed: list[tuple[float, float, float]] = []
    for k in kinds:
        r = rng.uniform(0.10, 0.18) * size
        for _ in range(30):
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if all(np.hypot(cx - x, cy - y) > r + q + 1 for x, y, q in placed):
                break
        placed.append((cx, cy, r))
        shape = shape_mask(int(k), size, cx, cy, r, rng.uniform(0, 2 * np.pi))
        bright = base + 0.35 if (base < 0.5) == (rng.uniform() < 0.8) else base - 0.35
        colour = np.clip(bright + rng.uniform(-0.2, 0.2, 3), 0.0, 1.0).astype(np.float32)
        grain = rng.standard_normal((3, int(shape.sum())), dtype=np.float32) * 0.03
        chw[:, shape] = colour[:, None] + grain
        mask[shape] = int(k) + 1
    np.clip(chw, 0.0, 1.0, out=chw)
    boxes, labels = [], []
    for k in kinds:
        ys, xs = np.nonzero(mask == int(k) + 1)
        if len(xs):  # a shape fully hidden by later ones has no box
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            labels.append(int(k) + 1)
    return ShapeScene(
        chw, mask, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)
    )


class ShapesDataset:
    """The items of one split, drawn on access (torch-style; DataLoader workers welcome)."""

    def __init__(
        self,
        seed: int,
        split: str,
        count: int,
        size: int,
        mean: list[float],
        std: list[float],
        objects: int = 1,
    ) -> None:
        self.seed, self.split, self.count, self.size = int(seed), split, int(count), int(size)
        self.objects = int(objects)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return self.count

    def label(self, i: int) -> int:
        """The class of item ``i`` (known without drawing it); -1 for a scene (several objects)."""
        return int(i) % len(SHAPES) if self.objects == 1 else -1

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        if not 0 <= int(i) < self.count:
            raise IndexError(f"shapes {self.split} has {self.count} items; no item {i}")
        if self.objects > 1:
            scene = render_scene(self.seed, self.split, int(i), self.size, self.objects)
            return {
                "x": torch.from_numpy((scene.rgb - self.mean) / self.std),
                "rgb": torch.from_numpy(scene.rgb),
                "index": int(i),
                "label": -1,
                "mask": torch.from_numpy(scene.mask),
                "obj_boxes": _padded(scene.boxes, self.objects, 4, np.nan),
                "obj_labels": _padded(scene.labels, self.objects, None, -1),
            }
        s = render(self.seed, self.split, int(i), self.size)
        return {
            "x": torch.from_numpy((s.rgb - self.mean) / self.std),
            "rgb": torch.from_numpy(s.rgb),
            "index": int(i),
            "label": s.label,
            "box": torch.tensor(s.box, dtype=torch.float32),
            "object_mask": torch.from_numpy(s.mask),
        }


def _padded(values: np.ndarray, rows: int, width: int | None, fill: float) -> Any:
    """``values`` padded to ``rows`` rows with ``fill`` (a hidden object leaves a row empty), as a tensor."""
    import torch

    shape = (rows, width) if width else (rows,)
    out = np.full(shape, fill, dtype=values.dtype)
    out[: len(values)] = values
    return torch.from_numpy(out)


def normalisation(input_cfg: Any, weights: Any) -> tuple[list[float], list[float]]:
    """``input.mean``/``input.std`` when set, else the weights', else 0.5 (pixels to [-1, 1])."""
    mean, std = DEFAULT_MEAN, DEFAULT_STD
    if weights is not None:
        t = weights.transforms()
        mean, std = [float(v) for v in t.mean], [float(v) for v in t.std]
    if input_cfg.mean is not None:
        mean = [float(v) for v in input_cfg.mean]
    if input_cfg.std is not None:
        std = [float(v) for v in input_cfg.std]
    return mean, std


@builder("shapes", splits=True)
def shapes(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """The ``input.split`` split of the shapes data set (``input.<split>_count`` items)."""
    split = split_name(input_cfg)
    count = int(getattr(input_cfg, f"{split}_count"))
    mean, std = normalisation(input_cfg, weights)
    objects = int(getattr(input_cfg, "objects", 1) or 1)
    data = ShapesDataset(seed, split, count, int(input_cfg.size), mean, std, objects)
    positions = select(count, input_cfg, f"shapes {split} images")
    scene = f", objects={objects}" if objects > 1 else ""
    return {
        "dataset": Reindexed(data, positions),
        "names": [
            f"{split}_{i:05d}_{SHAPES[data.label(i)]}" if objects == 1 else f"{split}_{i:05d}_scene"
            for i in positions
        ],
        "sources": [f"shapes(seed={seed}, split={split}{scene})[{i}]" for i in positions],
        "mean": mean,
        "std": std,
        "classes": list(SHAPES) if objects == 1 else list(SCENE_CLASSES),
    }
