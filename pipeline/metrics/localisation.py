"""Localisation: how well a map points at the object, for inputs that know where it is.

* ``pointing_game``: 1 when the map's maximum lies inside the object's box grown by
  ``tolerance`` × the image's longer side on every edge, else 0 (Zhang et al., 2018). The
  maximum is the first one in row-major order (``np.argmax``: the top-most, then left-most of
  equal maxima) and it counts as inside when its pixel's centre is in the grown box (edges
  included). Quantus's ``PointingGame`` counts a hit when *any* maximum is inside; the two agree
  whenever the maximum is unique (``tests/test_metrics.py``);
* ``energy_in_box``: the fraction of the map's mass (the sum of its values) inside the box, the
  pixels ``[floor(y0), ceil(y1)) × [floor(x0), ceil(x1))`` (the "energy-based pointing game" of
  Score-CAM, Wang et al., 2020); None when the map's sum is not positive;
* ``energy_in_mask``: the same fraction inside the object's own pixels (Quantus's
  ``RelevanceMassAccuracy``; Arras et al., 2022);
* ``mask_iou``: the intersection over union of the object's pixels and the map's pixels at or
  above ``MASK_THRESHOLD`` (0.5; maps are in [0, 1]);
* ``best_mask_iou``: the best such IoU over ``thresholds`` evenly spaced thresholds ``0, 1/n, ...,
  (n-1)/n`` of the map's maximum (the threshold convention of Choe et al., 2020's mask
  evaluation: a pixel is predicted when its score is >= the threshold);
* ``centre_blob``: a baseline map that knows nothing of the image (a centred Gaussian).

Shared by the CAM stage (per map, averaged in ``cam.json``; a segmentation model's maps against
the true masks: ``mask_scores``) and the train stage (before and after training).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "LOCALISATION",
    "MASK_THRESHOLD",
    "best_iou",
    "box_mask",
    "centre_blob",
    "localisation",
    "mask_metrics",
    "mask_scores",
]

#: the scores recorded whenever the input knows the object's box, in the order they are listed
LOCALISATION = ("pointing_game", "energy_in_box")
#: a map's pixels at or above this count as "the map" for ``mask_iou``
MASK_THRESHOLD = 0.5


def box_mask(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) bool: the pixels ``energy_in_box`` counts as inside ``box`` (x0, y0, x1, y1)."""
    h, w = shape
    x0, y0, x1, y1 = box
    inside = np.zeros((h, w), dtype=bool)
    inside[max(0, math.floor(y0)) : min(h, math.ceil(y1)), max(0, math.floor(x0)) : min(w, math.ceil(x1))] = (
        True
    )
    return inside


def localisation(
    cam: np.ndarray, box: tuple[float, float, float, float], tolerance: float
) -> dict[str, float | None]:
    """Pointing game and energy in box of one (H, W) map for an object box (x0, y0, x1, y1)."""
    h, w = cam.shape
    if not np.isfinite(cam).all():
        return {"pointing_game": None, "energy_in_box": None}
    x0, y0, x1, y1 = box
    pad = tolerance * max(h, w)
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    cx, cy = x + 0.5, y + 0.5  # the pixel's centre
    hit = (x0 - pad) <= cx <= (x1 + pad) and (y0 - pad) <= cy <= (y1 + pad)
    return {"pointing_game": float(hit), "energy_in_box": _energy(cam, box_mask((h, w), box))}


def _energy(cam: np.ndarray, inside: np.ndarray) -> float | None:
    total = float(cam.sum(dtype=np.float64))
    return float(cam[inside].sum(dtype=np.float64)) / total if total > 0 else None


def mask_metrics(
    cam: np.ndarray, mask: np.ndarray, names: list[str], thresholds: int = 100
) -> dict[str, float | None]:
    """``energy_in_mask``, ``mask_iou`` and/or ``best_mask_iou`` (those in ``names``) of one (H, W)
    map for an object's pixels ``mask``; None for a map with NaN/inf or an empty mask."""
    out: dict[str, float | None] = {}
    ok = bool(np.isfinite(cam).all()) and bool(mask.any())
    scores = mask_scores(cam, mask) if ok else {"mask_iou": None, "energy_in_mask": None}
    for name in ("energy_in_mask", "mask_iou"):
        if name in names:
            out[name] = scores[name]
    if "best_mask_iou" in names:
        out["best_mask_iou"] = best_iou(cam, mask, thresholds) if ok else None
    return out


def mask_scores(cam: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """``mask_iou`` (the map at or above ``MASK_THRESHOLD`` vs ``truth``) and ``energy_in_mask``."""
    if not np.isfinite(cam).all() or not truth.any():
        return {"mask_iou": None, "energy_in_mask": None}
    hot = cam >= MASK_THRESHOLD
    union = int((hot | truth).sum())
    total = float(cam.sum(dtype=np.float64))
    return {
        "mask_iou": int((hot & truth).sum()) / union if union else 0.0,
        "energy_in_mask": float(cam[truth].sum(dtype=np.float64)) / total if total > 0 else None,
    }


def centre_blob(height: int, width: int) -> np.ndarray:
    """A baseline map that knows nothing of the image: a Gaussian at the centre, sigma a quarter of
    each side, scaled to [0, 1] (the ``MASK_THRESHOLD`` level is an ellipse over ~1/5 of the image)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    blob = np.exp(-(((x - width / 2) / (width / 4)) ** 2 + ((y - height / 2) / (height / 4)) ** 2) / 2)
    return (blob / blob.max()).astype(np.float32)


def best_iou(cam: np.ndarray, mask: np.ndarray, thresholds: int = 100) -> float | None:
    """The best IoU of ``mask`` and ``cam >= t * max(cam)`` over ``t = 0, 1/n, ..., (n-1)/n``."""
    top = float(cam.max())
    if not top > 0:
        return None
    scores = (cam / top).ravel()  # in [.., 1]
    truth = mask.ravel().astype(bool)
    levels = np.arange(int(thresholds)) / int(thresholds)  # (n,)
    # per threshold: predicted pixels, and those inside the mask (counts from sorted scores)
    pred = len(scores) - np.searchsorted(np.sort(scores), levels, side="left")
    hits = truth.sum() - np.searchsorted(np.sort(scores[truth]), levels, side="left")
    union = pred + truth.sum() - hits
    return float(np.max(hits / np.maximum(union, 1)))
