"""A non-classifier's maps into ``cam.json``: rows, the pictures of predictions, scores against truth.

See ``tasks.py`` (which makes the targets) for what each score means. A map whose target finds
nothing (an empty mask, no detection) is flat: it is drawn, marked invalid with that reason and
left out of the means, as a classifier's flat map is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.files import finite
from vizpipe.pipeline.metrics.localisation import centre_blob, mask_scores
from vizpipe.stages.cam.record import CamImage, CamMap, ClassSummary, Detection, Prediction
from vizpipe.stages.cam.tasks import MAX_DETECTIONS, TASK_METRICS, ImageTarget

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Batch
    from vizpipe.stages.cam.rows import Collector, SliceMaps
    from vizpipe.stages.cam.targets import TaskPlan

__all__ = ["record_task_slice", "summarize"]

PREDICTION = "prediction.png"


def record_task_slice(run: Collector, got: SliceMaps, label: str) -> None:
    """Rows for the slice's new images (with their prediction picture), then every map's row."""
    from vizpipe.stages.cam.rows import flat_problem, nonfinite_problem

    ctx, part, plan = run.ctx, got.part, run.plan.targets
    _add_images(run, got)
    for infos, (maps, _) in zip(got.targets or [], got.results, strict=True):
        rows = []
        for i, index in enumerate(part.index):
            info, cam = infos[i], maps[i]
            nonfinite = nonfinite_problem(ctx, index, cam)
            problem = nonfinite or info.empty or flat_problem(cam)
            metrics = _truth_scores(plan, part, i, info, cam, float(run.settings.pointing_tolerance))
            row = CamMap(
                layer=label,
                target=int(info.target),
                target_name=info.name,
                score=None if nonfinite else finite(info.score),
                logit=finite(info.logit),
                overlay=None,
                heatmap=None,
                npy=None,
                metrics=dict.fromkeys(metrics) if problem else metrics,
                valid=problem is None,
                invalid_reason=problem,
                key=info.key,
                detail=info.detail,
            )
            rows.append(row)
        # the files go to the background writer (``render.MapWriter``), the target drawn on each overlay
        written = run.write(part, maps, rows, marks=[_marker(info) for info in infos])
        for index, row in zip(part.index, written, strict=True):
            run.images[index].maps.append(row)


def _marker(info: ImageTarget) -> Any:
    """What is drawn on the map's overlay: the target's mask outlined, or its boxes."""
    from vizpipe.pipeline.tasks.draw import draw_boxes, outline

    if info.region is not None:
        return lambda image: outline(image, info.region)
    if info.boxes:
        boxes = info.boxes
        return lambda image: draw_boxes(
            image, [b[2] for b in boxes], [b[0] for b in boxes], [b[1] for b in boxes]
        )
    return None


def _add_images(run: Collector, got: SliceMaps) -> None:
    """A row for each image not seen before: its source, top classes, detections and prediction picture."""
    ctx, part, plan = run.ctx, got.part, run.plan.targets
    top5 = ctx.top_k(5, got.logits) if plan.task != "embedding" else [[] for _ in part.index]
    top5 = [
        [r for r in row if r["prob"] is None or r["prob"] > 0] or row[:1] for row in top5
    ]  # those present
    for i, index in enumerate(part.index):
        if index in run.images:
            continue
        bad = index in ctx.inputs.invalid
        image = CamImage(
            name=part.names[i],
            source=part.sources[i],
            top5=[Prediction(r["class"], r["name"], None if bad else r["prob"]) for r in top5[i]],
            maps=[],
            label=part.labels[i],
            box=list(part.boxes[i]) if part.boxes[i] is not None else None,
            valid=not bad,
        )
        if plan.task == "detection":
            image.detections = _detections(ctx, plan, got.outputs[i])
        if plan.task in ("segmentation", "detection"):
            image.prediction = _prediction(ctx, plan, part, i, got.outputs, image)
        run.images[index] = image


def _detections(ctx: RunContext, plan: TaskPlan, output: Any) -> list[Detection]:
    """An image's detections scoring at least the threshold (at least its best one), best first."""
    from vizpipe.pipeline.tasks import detections

    (d,) = detections([output])
    order = sorted(range(len(d)), key=lambda j: (-float(d.scores[j]), j))
    keep = [j for j in order if float(d.scores[j]) >= plan.score_threshold] or order[:1]
    return [
        Detection(
            index=rank,
            label=int(d.labels[j]),
            name=ctx.class_name(int(d.labels[j])),
            score=float(d.scores[j]),
            box=[round(float(v), 2) for v in d.boxes[j].tolist()],
        )
        for rank, j in enumerate(order)
        if j in keep[:MAX_DETECTIONS]
    ]


def _prediction(ctx: RunContext, plan: TaskPlan, part: Batch, i: int, outputs: Any, image: CamImage) -> str:
    """``cam/<image>/prediction.png``: the predicted mask in colours, or the detections drawn."""
    from vizpipe.pipeline.render import save_png
    from vizpipe.pipeline.tasks.draw import draw_boxes, enlarge, mask_picture

    rgb = np.asarray(part.rgb[i], dtype=np.float32)
    if plan.task == "segmentation":
        predicted = outputs[i].argmax(dim=0).cpu().numpy()
        names = [ctx.class_name(c) or "" for c in range(int(outputs.shape[1]))]
        picture = mask_picture(rgb, predicted, names)
    else:
        big, factor = enlarge((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
        dets = image.detections or []
        texts = [f"{d.label} {d.name or ''} {d.score:.2f}".replace("  ", " ") for d in dets]
        picture = draw_boxes(big, [d.box for d in dets], [d.label for d in dets], texts, factor=factor)
    rel = f"cam/{part.names[i]}/{PREDICTION}"
    save_png(ctx.claim(rel), picture)
    return rel


def _truth_scores(
    plan: TaskPlan, part: Batch, i: int, info: ImageTarget, cam: np.ndarray, tolerance: float
) -> dict[str, float | None]:
    """The map's scores against what the data set knows (module docstring); {} when it knows nothing."""
    if plan.task == "segmentation" and part.masks is not None:
        truth = np.asarray(part.masks[i]) == info.target
        scores = mask_scores(cam, truth)
        baseline = mask_scores(centre_blob(*cam.shape), truth)["mask_iou"]
        return {**scores, "centre_mask_iou": baseline}
    if plan.task == "detection" and part.objects is not None:
        return _box_scores(part.objects[i], info, cam, tolerance)
    return {}


def _box_scores(
    objects: list[Any], info: ImageTarget, cam: np.ndarray, tolerance: float
) -> dict[str, float | None]:
    """Pointing game and energy in box of a detection map against the true boxes (module docstring)."""
    import torch
    from torchvision.ops import box_iou
    from vizpipe.pipeline.metrics.localisation import localisation

    none = {"pointing_game": None, "energy_in_box": None}
    if not objects or not info.boxes:
        return none
    truth = torch.tensor([list(b) for _, b in objects], dtype=torch.float32)
    if len(info.boxes) == 1:  # one detection: the true box it matches
        ious = box_iou(torch.tensor([list(info.boxes[0][2])], dtype=torch.float32), truth)[0]
        j = int(ious.argmax())
        if float(ious[j]) < 0.5 or objects[j][0] != info.boxes[0][0]:
            return none
        return localisation(cam, objects[j][1], tolerance)
    hits = [localisation(cam, box, tolerance)["pointing_game"] for _, box in objects]
    inside = np.zeros(cam.shape, dtype=bool)
    h, w = cam.shape
    for _, (x0, y0, x1, y1) in objects:
        inside[max(0, int(y0)) : min(h, int(np.ceil(y1))), max(0, int(x0)) : min(w, int(np.ceil(x1)))] = True
    total = float(cam.sum(dtype=np.float64))
    return {
        "pointing_game": None if None in hits else float(max(hits)),
        "energy_in_box": float(cam[inside].sum(dtype=np.float64)) / total if total > 0 else None,
    }


def summarize(
    ctx: RunContext, images: list[CamImage]
) -> tuple[list[ClassSummary], dict[str, float | None], str]:
    """Per target (class, label or concept) over the valid maps, and the overall means."""
    from vizpipe.pipeline.metrics.localisation import LOCALISATION

    groups: dict[int, list[CamMap]] = {}
    names: dict[int, str | None] = {}
    for img in images:
        for m in img.maps:
            groups.setdefault(m.target, []).append(m)
            names.setdefault(m.target, m.target_name)
    found = {k for img in images for m in img.maps for k in m.metrics}
    order = [k for k in (*TASK_METRICS, *LOCALISATION) if k in found] + sorted(
        found - set(TASK_METRICS) - set(LOCALISATION)
    )

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and np.isfinite(v)]
        return float(np.mean(kept)) if kept else None

    out = []
    for target in sorted(groups):
        valid = [m for m in groups[target] if m.valid]
        out.append(
            ClassSummary(
                class_index=target,
                name=names[target],
                count=len(groups[target]),
                top1_accuracy=None,
                mean_score=mean([m.score for m in valid]),
                metrics={k: mean([m.metrics.get(k) for m in valid]) for k in order},
            )
        )
    valid = [m for img in images for m in img.maps if m.valid]
    means = {"score": mean([m.score for m in valid])}
    means.update({k: mean([m.metrics.get(k) for m in valid]) for k in order})
    return out, means, "target"
