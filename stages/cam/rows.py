"""From a slice's maps to ``cam.json``'s rows: validity, metrics, localisation, the files written.

``collect`` (``compute.py``) streams the data set and hands each slice's maps (``SliceMaps``) to
``record_slice``, which adds one ``CamImage`` per new image and one ``CamMap`` per map, written as
soon as it exists (``Collector.write``: ``render.MapWriter``, which hands the files to the
background writer).

A map is invalid (``valid: false`` with ``invalid_reason``) when the model, its input or the map
holds NaN/inf, or when the map is flat (every pixel the same value, e.g. all zero: nothing at the
layer raises the class's score, as with a zero-initialised head). It is still drawn, but scores no
metric and joins no mean (``render.summarize``); the stage warns once with the count per reason.
The model's score of the class is kept unless the model or input is not finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.files import finite
from vizpipe.pipeline.metrics.localisation import localisation
from vizpipe.pipeline.metrics.scoring import describe_target, gradcam_targets, score_maps
from vizpipe.stages.cam.record import CamImage, CamMap, Prediction

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.gradcam.adapter import CamRunner, Maps
    from vizpipe.pipeline.gradcam.layers import CamLayer
    from vizpipe.pipeline.inputs import Batch
    from vizpipe.stages.cam.plan import CamPlan

__all__ = [
    "Collector",
    "SliceMaps",
    "flat_problem",
    "metric_target_text",
    "metric_targets",
    "needs_softmax",
    "nonfinite_problem",
    "record_slice",
]


def needs_softmax(ctx: RunContext) -> bool:
    """Whether the metrics' probabilities are a softmax of the outputs (the model gives logits)."""
    return ctx.num_classes > 1 and not ctx.outputs_are_probabilities


def metric_targets(name: str, classes: list[int], ctx: RunContext) -> list[Any]:
    """grad-cam's targets for its metric ``name`` on this model (``scoring.gradcam_targets``)."""
    return gradcam_targets(name, classes, needs_softmax(ctx))


def metric_target_text(name: str, ctx: RunContext) -> str:
    """What metric ``name`` scores, for ``cam.json`` (``vizpipe.pipeline.metrics.scoring``)."""
    return describe_target(name, needs_softmax(ctx))


@dataclass
class SliceMaps:
    """One slice of a batch with the model's outputs, its class sets and, per class set, the maps."""

    part: Batch
    logits: torch.Tensor  # (B, K) on the CPU
    sets: list[list[int]]  # per class set, one class per image
    results: list[Maps]  # per class set: (B, H, W) maps and each layer's maps (when capturing)
    targets: list[Any] | None = None  # other tasks: per set, each image's target (``tasks.ImageTarget``)
    outputs: Any = None  # other tasks: the slice's model outputs, detached


@dataclass
class Collector:
    """What ``collect`` keeps while the data set streams past: each image's row, the passes run."""

    ctx: RunContext
    settings: Any  # the stage's CamConfig
    plan: CamPlan
    write: Any  # write(part, maps, rows) -> the rows with their files' paths (``render.MapWriter``)
    metric_bar: Any  # tqdm bar of the metric computations
    capture: bool  # per-layer maps come from the averaged call (one runner for every map kind)
    sibs: list[CamLayer]  # a sweep over cam.layer: its other layers, computed in this job's pass
    key: str | None  # the sharing key of those layers' maps (``share.share_key``)
    images: dict[int, CamImage] = field(default_factory=dict)  # data set index -> row
    passes: int = 0  # perturbation forward passes counted
    curves: dict[str, list[np.ndarray]] = field(default_factory=dict)  # deletion/insertion of valid maps
    seconds: dict[str, float] = field(default_factory=dict)  # metric -> seconds spent on it

    @property
    def images_in_order(self) -> list[CamImage]:
        """The images' rows in data set order."""
        return [self.images[i] for i in sorted(self.images)]

    @property
    def groups(self) -> list[tuple[str, list[CamLayer]]]:
        """The layer groups that get a runner (only the averaged one when capturing)."""
        return self.plan.groups[:1] if self.capture else self.plan.groups

    @property
    def layer_names(self) -> list[str]:
        """The per-layer map kinds after the averaged one (``cam.per_layer``)."""
        return [layer.name for _, group in self.plan.groups[1:] for layer in group]

    @property
    def class_sets(self) -> int:
        """Class sets per image: each image's top-1, or one per ``cam.target_class`` entry."""
        return 1 if self.plan.classes is None else len(self.plan.classes)


def nonfinite_problem(ctx: RunContext, index: int, cam: np.ndarray) -> str | None:
    """Why map ``cam`` of image ``index`` holds no trustworthy number (model, input, map), or None."""
    if ctx.nonfinite_params:
        return f"the model has non-finite parameters ({', '.join(ctx.nonfinite_params[:3])})"
    if index in ctx.inputs.invalid:
        return "non-finite values in the input"
    if not np.isfinite(cam).all():
        return "non-finite values in the map"
    return None


def flat_problem(cam: np.ndarray) -> str | None:
    """Why a finite map shows nothing (every pixel the same value, e.g. all 0), or None."""
    low, high = float(np.min(cam)), float(np.max(cam))
    if low != high:
        return None
    return f"flat map (every pixel {low:.4g}): no spatial evidence for the class at this layer"


def record_slice(run: Collector, runner: CamRunner, got: SliceMaps, label: str) -> None:
    """A classifier's slice: metrics and localisation for its maps, then write them and keep their
    rows (a segmentation, detection or embedding model's slice: ``task_rows.record_task_slice``)."""
    probs = run.ctx.probabilities(got.logits)
    _add_images(run, got, probs)
    for classes, (maps, per_layer) in zip(got.sets, got.results, strict=True):
        scores = _metric_scores(run, runner, got.part, classes, maps)
        _add_maps(run, got, probs, classes, label, maps, scores)
        for name, layer_maps in zip(run.layer_names, per_layer or [], strict=False):
            _add_maps(run, got, probs, classes, name, layer_maps, {})


def _add_images(run: Collector, got: SliceMaps, probs: torch.Tensor) -> None:
    """A row for each image of the slice not seen before: its source, top-5, label (and the
    model's probability of it) and box."""
    part, invalid = got.part, run.ctx.inputs.invalid
    top5 = run.ctx.top_k(5, got.logits)
    for i, index in enumerate(part.index):
        if index in run.images:
            continue
        bad = index in invalid
        run.images[index] = CamImage(
            name=part.names[i],
            source=part.sources[i],
            top5=[Prediction(r["class"], r["name"], None if bad else r["prob"]) for r in top5[i]],
            maps=[],
            label=part.labels[i],
            box=list(part.boxes[i]) if part.boxes[i] is not None else None,
            valid=not bad,
            label_score=_label_score(probs[i], part.labels[i]) if not bad else None,
        )


def _label_score(probs: torch.Tensor, label: int | None) -> float | None:
    """The probability of the image's own class (``probs``: its (K,) probabilities), if labelled."""
    if label is None or not 0 <= int(label) < probs.shape[0]:
        return None
    return finite(probs[int(label)])


def _metric_scores(
    run: Collector, runner: CamRunner, part: Batch, classes: list[int], maps: np.ndarray
) -> dict[str, np.ndarray]:
    """``cam.metrics`` of one class set's (B, H, W) maps: metric name -> one number per image.

    Deletion/insertion curves of the valid maps are kept for the stage's mean curves.
    """
    if not run.plan.metrics:
        return {}
    ctx = run.ctx
    got = score_maps(
        run.plan.metrics,
        run.plan.metric_args,
        ctx.model,
        part.tensor,
        maps,
        classes,
        softmax=needs_softmax(ctx),
        probabilities=ctx.probabilities,
        cam=runner.obj,
        masks=[part.object_mask(i, c) for i, c in enumerate(classes)],
    )
    run.metric_bar.update(len(part) * len(run.plan.metrics))
    for name, seconds in got.seconds.items():
        run.seconds[name] = run.seconds.get(name, 0.0) + seconds
    for mode, curves in got.curves.items():
        for i, index in enumerate(part.index):
            problem = nonfinite_problem(ctx, index, maps[i]) or flat_problem(maps[i])
            if problem is None:
                run.curves.setdefault(mode, []).append(curves[i])
    return got.values


def _add_maps(
    run: Collector,
    got: SliceMaps,
    probs: torch.Tensor,
    classes: list[int],
    layer: str,
    maps: np.ndarray,
    scores: dict[str, np.ndarray],
) -> None:
    """Add one map kind's (B, H, W) maps' rows, one per image (invalid ones marked), and hand their
    files to the writer (``write(part, maps, rows)`` returns the rows with the paths)."""
    ctx, part = run.ctx, got.part
    rows = []
    for i, index in enumerate(part.index):
        c, cam = int(classes[i]), maps[i]
        nonfinite = nonfinite_problem(ctx, index, cam)
        problem = nonfinite or flat_problem(cam)
        metrics = {k: finite(v[i]) for k, v in scores.items()}
        if part.boxes[i] is not None:
            metrics.update(localisation(cam, part.boxes[i], float(run.settings.pointing_tolerance)))
        row = CamMap(
            layer=layer,
            target=c,
            target_name=ctx.class_name(c),
            score=None if nonfinite else finite(probs[i, c]),
            logit=finite(got.logits[i, c]),
            overlay=None,
            heatmap=None,
            npy=None,
            metrics=dict.fromkeys(metrics) if problem else metrics,  # an invalid map scores nothing
            valid=problem is None,
            invalid_reason=problem,
        )
        rows.append(row)
    for index, row in zip(part.index, run.write(part, maps, rows), strict=True):
        run.images[index].maps.append(row)
