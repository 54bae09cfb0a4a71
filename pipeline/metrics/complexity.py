"""Complexity of a map: how few pixels carry it (Quantus's definitions, per map).

* ``sparseness``: the Gini index of the map's absolute values (Chalasani et al., 2020), after
  Quantus's preprocessing (divided by the maximum, then 1e-7 added): 1 when one pixel holds the
  map, 0 when every pixel is equal. Higher is sparser.
* ``entropy``: the Shannon entropy of the absolute values as a distribution over the pixels
  (Bhatt et al., 2020; Quantus's ``Complexity``). Lower is simpler.

``tests/test_metrics.py`` compares both with Quantus on the same maps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["entropy", "sparseness"]


def _scaled(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (B, H*W) float64 absolute values divided by each map's maximum (zeros stay)."""
    a = np.abs(np.asarray(maps, dtype=np.float64).reshape(len(maps), -1))
    top = a.max(axis=1, keepdims=True)
    return a / np.where(top > 0, top, 1.0)


def sparseness(maps: np.ndarray) -> np.ndarray:
    """The Gini index of each (H, W) map of ``maps`` (B, H, W)."""
    a = np.sort(_scaled(maps) + 1e-7, axis=1)
    n = a.shape[1]
    ranks = np.arange(1, n + 1)
    return ((2 * ranks - n - 1) * a).sum(axis=1) / (n * a.sum(axis=1))


def entropy(maps: np.ndarray) -> np.ndarray:
    """The entropy of each map of ``maps`` (B, H, W), its absolute values normalised to sum to 1."""
    a = _scaled(maps)
    total = a.sum(axis=1, keepdims=True)
    p = a / np.where(total > 0, total, 1.0)
    return -(p * np.log(p + 1e-12)).sum(axis=1)
