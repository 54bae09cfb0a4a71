"""Localisation scores of a map for data sets that know where the object is (``input=shapes``).

* ``pointing_game``: 1 when the map's maximum lies inside the object's box grown by
  ``tolerance`` × the image side on every edge, else 0 (Zhang et al., 2016);
* ``energy_in_box``: the fraction of the map's mass (sum of its values) inside the box
  (the "energy-based pointing game" of Score-CAM, Wang et al., 2020).

Shared by the CAM stage (per map, averaged in ``cam.json``) and the train stage (before and
after training).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LOCALISATION", "localisation"]

LOCALISATION = ("pointing_game", "energy_in_box")


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
    inside = np.zeros_like(cam, dtype=bool)
    inside[max(0, math.floor(y0)) : min(h, math.ceil(y1)), max(0, math.floor(x0)) : min(w, math.ceil(x1))] = (
        True
    )
    total = float(cam.sum(dtype=np.float64))
    energy = float(cam[inside].sum(dtype=np.float64)) / total if total > 0 else None
    return {"pointing_game": float(hit), "energy_in_box": energy}
