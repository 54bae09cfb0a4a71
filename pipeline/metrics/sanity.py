"""Sanity checks for saliency maps (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292).

A map that explains the model must change when the model does. Two checks:

* **Model parameter randomisation, cascading from the top.** A copy of the model has its layers
  re-initialised one by one from the output down (``cascade``): the modules that have
  ``reset_parameters`` (convolutions, linear layers, batch norms: their running statistics too),
  in reverse order of ``named_modules``, each reset with torch's generator seeded with
  ``seed + 1`` (Quantus's ``MPRT``, ``get_random_layer_generator(order="top_down")``, so the
  numbers equal Quantus's). After each step the method's maps of the same images and classes are
  compared with the trained model's.
* **Data randomisation.** The same network trained on random labels (the train stage with
  ``train.random_labels=true``): its maps against the trained model's.

**Similarity** of two maps: Spearman's rank correlation of their pixels (``spearman``: Quantus's
``correlation_spearman``) and SSIM (``ssim``: Quantus's ``ssim``, scikit-image's
``structural_similarity`` with the data range of both maps). A constant map ranks nothing:
its Spearman correlation (and SSIM against a map that is not the same constant) is taken as 0.

**Verdict** (``verdict``): a method *passes* the parameter check when its maps' Spearman
correlation with the trained model's, averaged over the images and over the cascade's steps
(``over_steps``; Quantus's ``MPRT(return_average_correlation=True)``), is below ``threshold``
(default 0.5, ``cam.sanity_threshold``): its maps lost most of their ranking as the weights went.
It fails when they keep it (Adebayo et al.: guided backprop's maps stay similar while the top
layers are randomised, Grad-CAM's do not). The average judges the whole curve: a method that only
changes once the very first layer is randomised (an edge detector of the input) still fails. The
data check is judged the same way on the random-label model (one step).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Similarity", "cascade", "over_steps", "randomisable", "similarity", "spearman", "ssim", "verdict"]

#: the default pass threshold on the mean Spearman correlation with the fully randomised model
THRESHOLD = 0.5


def randomisable(model: nn.Module) -> list[str]:
    """The modules the cascade resets, top first: those with ``reset_parameters``, reversed."""
    return [name for name, m in model.named_modules() if hasattr(m, "reset_parameters")][::-1]


def cascade(model: nn.Module, seed: int) -> Iterator[tuple[str, nn.Module]]:
    """A copy of ``model`` with one more module re-initialised at each step, from the top down.

    Yields (module name, the copy) after each reset; the copy is the same object throughout (use
    it before asking for the next step). ``model`` itself is never touched and torch's random
    numbers are as they were afterwards.
    """
    import torch

    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    device = next((p.device for p in twin.parameters()), None)
    devices = [device] if device is not None and device.type == "cuda" else []
    for name in randomisable(twin):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed) + 1)
            modules[name].reset_parameters()
        yield name, twin


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps' pixels (0 when either map is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) maps with the data range of both (Quantus's ``ssim``)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.concatenate([a.ravel(), b.ravel()])
    span = float(np.abs(both.max() - both.min()))
    if span == 0:
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(structural_similarity(a, b, data_range=span))


@dataclass
class Similarity:
    """The similarity of the trained model's maps to one randomised model's, per image."""

    step: str  # the module randomised last ("random labels" for the data check)
    spearman: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)

    @property
    def mean_spearman(self) -> float | None:
        """The mean Spearman correlation over the images (None: none)."""
        return float(np.mean(self.spearman)) if self.spearman else None

    @property
    def mean_ssim(self) -> float | None:
        """The mean SSIM over the images (None: none)."""
        return float(np.mean(self.ssim)) if self.ssim else None


def similarity(step: str, trained: np.ndarray, randomised: np.ndarray) -> Similarity:
    """Spearman and SSIM of each pair of (H, W) maps of the (B, H, W) ``trained`` and ``randomised``."""
    out = Similarity(step)
    for a, b in zip(trained, randomised, strict=True):
        out.spearman.append(spearman(a, b))
        out.ssim.append(ssim(a, b))
    return out


def over_steps(steps: list[Similarity]) -> Similarity | None:
    """The cascade in one: each image's Spearman and SSIM averaged over the steps (None: no step)."""
    if not steps:
        return None
    return Similarity(
        "mean over the steps",
        [float(v) for v in np.mean([s.spearman for s in steps], axis=0)],
        [float(v) for v in np.mean([s.ssim for s in steps], axis=0)],
    )


def verdict(sim: Similarity | None, threshold: float = THRESHOLD) -> str | None:
    """``pass`` when the mean Spearman correlation of ``sim`` is below ``threshold``, else ``fail``."""
    if sim is None or sim.mean_spearman is None:
        return None
    return "pass" if sim.mean_spearman < float(threshold) else "fail"


def explain_each(
    explain: Any, model: nn.Module, steps: Iterator[tuple[str, nn.Module]], trained: np.ndarray
) -> Iterator[tuple[str, np.ndarray, Similarity]]:
    """For each (name, model) step: the maps ``explain(model)`` gives and their similarity to ``trained``."""
    for name, randomised in steps:
        maps = explain(randomised)
        yield name, maps, similarity(name, trained, maps)
