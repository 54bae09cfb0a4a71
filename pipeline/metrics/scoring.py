"""Run the configured metrics on one batch of maps: ``score_maps``.

The CAM stage calls it once per batch and class set, while the method's objects exist (grad-cam's
coherency and ARCC recompute the map with the CAM object). What each metric scores is the
registry's ``Metric.target``: ``softmax`` metrics read the class's probability (the model's output
when it already is one), ``raw`` ones its raw output, the others the map (and the object's mask).
The metrics that need only the object's box (pointing game, energy in box) are recorded by the
stage for every map of an input that knows the box (``localisation.localisation``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.metrics.registry import METRICS

if TYPE_CHECKING:
    import torch

__all__ = ["BatchScores", "describe_target", "score_maps"]


@dataclass
class BatchScores:
    """What ``score_maps`` measured on a batch of maps."""

    values: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (B,) float64 (NaN: none)
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # deletion/insertion -> (B, S + 1)
    seconds: dict[str, float] = field(default_factory=dict)  # metric -> time spent on this batch


def gradcam_targets(name: str, classes: list[int], softmax: bool) -> list[Any]:
    """grad-cam's targets for its metric ``name``: the class's softmax probability or raw output."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    cls = (
        ClassifierOutputSoftmaxTarget
        if METRICS[name].target == "softmax" and softmax
        else ClassifierOutputTarget
    )
    return [cls(int(c)) for c in classes]


def describe_target(name: str, softmax: bool) -> str:
    """What metric ``name``'s number is computed from, in words (``cam.json``'s ``metric_targets``)."""
    spec = METRICS[name]
    if spec.target in ("none", "map"):
        return "the map alone"
    if spec.target in ("box", "mask"):
        return f"the object's {spec.target}"
    if spec.target == "softmax" and softmax:
        if spec.library == "grad-cam":
            return "softmax probability of the target class (ClassifierOutputSoftmaxTarget)"
        return "softmax probability of the target class"
    if spec.library == "grad-cam":
        return "raw output of the target class (ClassifierOutputTarget)"
    return "the model's output for the target class (already a probability)"


def score_maps(
    names: list[str],
    args: dict[str, dict[str, Any]],
    model: Any,
    x: torch.Tensor,
    maps: np.ndarray,
    classes: list[int],
    *,
    softmax: bool,
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    cam: Any = None,
    masks: list[np.ndarray | None] | None = None,
) -> BatchScores:
    """Every metric of ``names`` on the (B, H, W) ``maps`` of ``x`` (B, C, H, W), one class per image.

    ``softmax``: whether the targets need a softmax (the model gives logits); ``probabilities``:
    outputs -> probabilities; ``cam``: the grad-cam object (coherency, arcc); ``masks``: each
    image's object mask (H, W) or None. NaN/inf in the maps are scored as 0.
    """
    from vizpipe.pipeline.metrics import complexity, localisation, perturbation

    safe = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    out = BatchScores()
    for name in names:
        spec, t0 = METRICS[name], time.perf_counter()
        if spec.automatic:
            continue
        if name in ("deletion_auc", "insertion_auc"):
            mode = name.split("_")[0]
            a = args.get(name, {})
            curves = perturbation.causal_curves(
                model, x, safe, classes, mode, probabilities=probabilities, **a
            )
            out.curves[mode] = curves
            out.values[name] = perturbation.auc(curves)
        elif spec.library == "grad-cam":
            targets = gradcam_targets(name, classes, softmax)
            out.values[name] = perturbation.library_metric(
                name, args.get(name, {}), x, safe, targets, model, cam
            )
        elif name == "sparseness":
            out.values[name] = complexity.sparseness(safe)
        elif name == "entropy":
            out.values[name] = complexity.entropy(safe)
        elif spec.target == "mask":
            thresholds = int(args.get(name, {}).get("thresholds", 100))
            values = []
            for i, cam_i in enumerate(maps):
                mask = None if masks is None or i >= len(masks) else masks[i]
                got = (
                    None if mask is None else localisation.mask_metrics(cam_i, mask, [name], thresholds)[name]
                )
                values.append(np.nan if got is None else got)
            out.values[name] = np.asarray(values, dtype=np.float64)
        out.seconds[name] = out.seconds.get(name, 0.0) + time.perf_counter() - t0
    return out
