"""A segmentation, detection or embedding model's maps, batch by batch: targets, rows, pictures.

``slice_maps`` runs the slice through the ``CamRunner`` (``task_maps``: one forward, then each
target set from the outputs), ``batch_targets`` makes the library's targets the way its tutorials
do (``vizpipe.pipeline.gradcam.targets``) and describes each (``ImageTarget``), and
``record_task_slice`` writes each map (the target's mask outlined, or its boxes drawn, on the
overlay), one picture of what the model predicts per image (``cam/<image>/prediction.png``: the
mask in colours, or the boxes with labels and scores) and their rows in ``cam.json``.

Scores against the truth, where the data set knows it (``input=shapes input.objects=3``):

* segmentation: ``mask_iou`` (the map above ``MASK_THRESHOLD`` against the class's true mask;
  ``vizpipe.pipeline.metrics.localisation.mask_scores``),
  ``energy_in_mask`` (the share of the map's mass inside it) and ``centre_mask_iou`` (a baseline:
  the same IoU for a centred Gaussian blob, ``centre_blob``, which knows nothing of the image);
* detection: the pointing game and energy in box (``vizpipe.pipeline.metrics.localisation``) of a
  one-detection map against the true box it matches (IoU >= 0.5, same class): the pointing game
  per true box, over ``-m cam.box=0,1,2``; a map over every detection scores against all true
  boxes (its maximum inside any; the energy inside their union).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.gradcam.targets import (
    SimilarityToConceptTarget,
    anchored,
    box_target,
    segmentation_target,
)
from vizpipe.stages.cam.targets import TaskPlan, class_key

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.gradcam.adapter import CamRunner
    from vizpipe.pipeline.inputs import Batch
    from vizpipe.stages.cam.rows import Collector, SliceMaps

__all__ = ["ImageTarget", "batch_targets", "slice_maps"]

TASK_METRICS = ("mask_iou", "energy_in_mask", "centre_mask_iou")
MAX_DETECTIONS = 50  # detections listed per image in cam.json


@dataclass
class ImageTarget:
    """What one image's map explains (one target of one set), for its row and its drawing."""

    key: str  # file-name part
    target: int  # the class (segmentation), label (detection) or concept number (embedding); -1: none
    name: str | None
    score: float | None  # mean probability over the mask | the detection's score | cosine similarity
    logit: float | None  # mean raw score over the mask (segmentation), else None
    detail: str
    empty: str | None = None  # why there is nothing to explain: the map is flat, marked invalid
    region: np.ndarray | None = None  # segmentation: the (H, W) mask summed over
    boxes: list[tuple[int, str, tuple[float, ...]]] | None = None  # detection: (label, text, box)
    fallback: bool = False  # detection: no detection reached the threshold, the best one is used


def slice_maps(run: Collector, runner: CamRunner, part: Batch) -> SliceMaps:
    """The slice's outputs, target sets and maps (the task's ``SliceMaps``)."""
    from vizpipe.pipeline.tasks import scores
    from vizpipe.stages.cam.rows import SliceMaps

    plan: TaskPlan = run.plan.targets
    made: list[list[ImageTarget]] = []

    def make_sets(outputs: Any) -> list[list[Any]]:
        sets, infos = batch_targets(run.ctx, plan, part, outputs)
        made.extend(infos)
        return sets

    outputs, results = runner.task_maps(part.tensor, make_sets)
    logits = scores(outputs, plan.task, run.ctx.model)
    sets = [[t.target for t in infos] for infos in made]
    return SliceMaps(part, logits, sets, results, targets=made, outputs=outputs)


def batch_targets(
    ctx: RunContext, plan: TaskPlan, part: Batch, outputs: Any
) -> tuple[list[list[Any]], list[list[ImageTarget]]]:
    """Per target set, one library target per image (anchored) and its description."""
    if plan.task == "segmentation":
        infos = _segmentation(ctx, plan, part, outputs)
        sets = [[segmentation_target(t.target, t.region) for t in row] for row in infos]
    elif plan.task == "detection":
        infos = _detection(ctx, plan, outputs, part)
        sets = [
            [box_target([b[0] for b in t.boxes or []], [b[2] for b in t.boxes or []]) for t in row]
            for row in infos
        ]
    else:
        infos = _embedding(plan, outputs)
        sets = [[SimilarityToConceptTarget(spec.concept) for _ in range(len(part))] for spec in plan.specs]
    return [anchored(s) for s in sets], infos


def _top_class(predicted: np.ndarray, k: int) -> int:
    """The most-predicted class other than 0 (background), or 0 when nothing else is predicted."""
    counts = np.bincount(predicted.ravel(), minlength=k)
    if counts[1:].sum() > 0:
        counts[0] = 0
    return int(np.argmax(counts))


def _segmentation(ctx: RunContext, plan: TaskPlan, part: Batch, outputs: Any) -> list[list[ImageTarget]]:
    import torch

    seg = outputs.detach().float()  # (B, K, H, W): the wrapper's output
    probs = torch.softmax(seg, dim=1).cpu().numpy()
    raw = seg.cpu().numpy()
    predicted = seg.argmax(dim=1).cpu().numpy()  # (B, H, W)
    where = {"predicted": "predicted", "truth": "true", "file": f"file {plan.mask_file}"}[plan.mask]
    out = []
    for spec in plan.specs:
        row = []
        for i in range(len(part)):
            c = spec.category if spec.category is not None else _top_class(predicted[i], seg.shape[1])
            if spec.slot is not None:  # the slot-th true object's class (none: an empty region)
                objects = (part.objects or [[]] * len(part))[i]
                c = int(objects[spec.slot][0]) if spec.slot < len(objects) else -1
            if c < 0:
                region = np.zeros(predicted[i].shape, dtype=bool)
                c = 0
            elif plan.mask == "predicted":
                region = predicted[i] == c
            elif plan.mask == "truth":
                region = np.asarray(part.masks[i]) == c  # type: ignore[index]
            else:
                region = np.asarray(plan.mask_array)
            n = int(region.sum())
            name = ctx.class_name(c)
            label = f"{c} {name}" if name else f"class {c}"
            row.append(
                ImageTarget(
                    key=spec.key or class_key(c, name),
                    target=c,
                    name=name,
                    score=float(probs[i, c][region].mean()) if n else None,
                    logit=float(raw[i, c][region].mean()) if n else None,
                    detail=f"{label} summed over its {where} mask ({n} px, {100 * n / region.size:.1f}%)",
                    empty=None if n else f"{label} has no pixel in its {where} mask: nothing to explain",
                    region=region,
                )
            )
        out.append(row)
    return out


def _box_text(ctx: RunContext, label: int, score: float | None) -> str:
    name = ctx.class_name(label)
    head = f"{label} {name}" if name else f"class {label}"
    return head if score is None else f"{head} {score:.2f}"


def _detection(ctx: RunContext, plan: TaskPlan, outputs: Any, part: Batch) -> list[list[ImageTarget]]:
    from vizpipe.pipeline.tasks import detections

    found = detections(outputs)
    objects = part.objects or [[] for _ in found]
    out = []
    for spec in plan.specs:
        row = []
        for d, truth in zip(found, objects, strict=True):
            order = sorted(range(len(d)), key=lambda j: (-float(d.scores[j]), j))
            row.append(_one_detection_target(ctx, plan, spec, d, order, truth))
        out.append(row)
    return out


def _one_detection_target(
    ctx: RunContext, plan: TaskPlan, spec: Any, d: Any, order: list[int], truth: list[Any]
) -> ImageTarget:
    """One image's detection target for ``spec`` (see ``targets.py``)."""
    if spec.slot is not None or spec.box is not None:
        return _given_box_target(ctx, spec, d, truth)
    labels, scores, boxes = d.labels.tolist(), d.scores.tolist(), d.boxes.tolist()
    fallback = False
    if spec.index is not None:
        if spec.index >= len(order):
            return ImageTarget(
                spec.key,
                -1,
                None,
                None,
                None,
                f"detection {spec.index}",
                f"the model returned {len(order)} detection(s): there is no detection {spec.index}",
            )
        j = order[spec.index]
        label, score = labels[j], scores[j]
        chosen = [(label, _box_text(ctx, label, score), tuple(boxes[j]))]
        detail = (
            f"detection {spec.index}: {_box_text(ctx, label, score)} at {[round(v, 1) for v in boxes[j]]}"
        )
    else:
        pool = [j for j in order if spec.category is None or labels[j] == spec.category]
        keep = [j for j in pool if scores[j] >= plan.score_threshold]
        if not keep and pool:
            keep, fallback = pool[:1], True
        if not keep:
            what = "" if spec.category is None else f" of {_box_text(ctx, spec.category, None)}"
            return ImageTarget(
                spec.key,
                -1 if spec.category is None else spec.category,
                None,
                None,
                None,
                f"no detection{what}",
                f"the model returned no detection{what}: nothing to explain",
            )
        label, score = labels[keep[0]], scores[keep[0]]
        chosen = [(labels[j], _box_text(ctx, labels[j], scores[j]), tuple(boxes[j])) for j in keep]
        shown = ", ".join(c[1] for c in chosen[:5]) + (", ..." if len(chosen) > 5 else "")
        detail = (
            f"best detection {shown} (none scores >= cam.score_threshold {plan.score_threshold:g})"
            if fallback
            else f"{len(chosen)} detection(s) scoring >= {plan.score_threshold:g}: {shown}"
        )
    return ImageTarget(
        spec.key, int(label), ctx.class_name(int(label)), score, None, detail, boxes=chosen, fallback=fallback
    )


def _given_box_target(ctx: RunContext, spec: Any, d: Any, truth: list[Any]) -> ImageTarget:
    """The target of a box the user gives (``cam.box``) or a true object's box (``cam.box=truth``)."""
    import torch
    from torchvision.ops import box_iou

    labels, scores = d.labels.tolist(), d.scores.tolist()
    empty = None
    if spec.slot is not None:  # cam.box=truth: the true object's box, with its class
        if spec.slot >= len(truth):
            return ImageTarget(
                "none", -1, None, None, None, f"true object {spec.slot}", "the image has no such true object"
            )
        label, box = int(truth[spec.slot][0]), tuple(truth[spec.slot][1])
        spec_key = f"truth_{class_key(label, ctx.class_name(label))}"
        detail = f"true box of {_box_text(ctx, label, None)} at {[round(v, 1) for v in box]}"
    elif spec.box is not None:
        label, box, spec_key = spec.category, tuple(spec.box), spec.key
        if label is None and len(d):
            ious = box_iou(torch.tensor([spec.box]), d.boxes)[0]
            best = int(ious.argmax())
            label = labels[best] if float(ious[best]) > 0 else None
        if label is None:
            return ImageTarget(
                spec.key,
                -1,
                None,
                None,
                None,
                f"your box {list(spec.box)}",
                "no detection overlaps your box: give its class with cam.target_class",
            )
        detail = f"your box {[round(v, 1) for v in spec.box]} as {_box_text(ctx, int(label), None)}"
    j = _credited(d, int(label), box)
    score = scores[j] if j is not None else None
    text = _box_text(ctx, int(label), score)
    if j is None:
        empty = (
            f"no output box of {_box_text(ctx, int(label), None)} overlaps the box by IoU > 0.5 "
            "(FasterRCNNBoxScoreTarget's rule): the target is 0"
        )
    return ImageTarget(
        spec_key,
        int(label),
        ctx.class_name(int(label)),
        score,
        None,
        detail,
        empty,
        boxes=[(int(label), text, box)],
    )


def _credited(d: Any, label: int, box: tuple[float, ...]) -> int | None:
    """The output box ``FasterRCNNBoxScoreTarget`` credits for (``label``, ``box``): the one
    overlapping the (integer) box most, when that IoU is over 0.5 and its label is ``label``."""
    import torch
    from torchvision.ops import box_iou
    from vizpipe.pipeline.gradcam.targets import int_boxes

    if not len(d):
        return None
    ious = box_iou(torch.as_tensor(int_boxes([box]), dtype=torch.float32), d.boxes)[0]
    j = int(ious.argmax())
    return j if float(ious[j]) > 0.5 and int(d.labels[j]) == label else None


def _embedding(plan: TaskPlan, outputs: Any) -> list[list[ImageTarget]]:
    import torch

    feats = outputs.detach().float()  # (B, D)
    out = []
    for k, spec in enumerate(plan.specs):
        sims = torch.nn.functional.cosine_similarity(feats, spec.concept.to(feats.device)[None], dim=1)
        detail = f"cosine similarity to concept {spec.concept_name} ({spec.concept_images} image(s) averaged)"
        out.append(
            [ImageTarget(spec.key, k, spec.concept_name, float(s), None, detail) for s in sims.tolist()]
        )
    return out
