"""Hand each map's files to the background writer as it is computed, then ``cam.json`` and the record.

Per image × layer × class: ``cam/<image>/<layer>__<class>[_<name>]`` + ``.npy`` (float32 H×W,
the library's output), ``_overlay.png`` (``show_cam_on_image`` on the un-normalised image) and
``_heatmap.png`` (the map through OpenCV's JET colormap, as ``show_cam_on_image`` colours it),
each when ``cam.save`` names it; PNGs at ``cam.png_compress_level``. The bytes are made and
written on the writer's threads (``vizpipe.pipeline.writer``, ``draw.py``); with ``device=cuda``
the pictures of a whole batch are coloured on the device first (``draw.colour_batch``).
A pixel attribution's map (layer ``input``) is drawn as captum draws it
(``vizpipe.pipeline.attribution.runner.display_scale``), on the CPU; its ``.npy`` holds the map itself.

With ``cam.metrics``: the record explains each metric in one sentence with its paper
(``explain.py``) and gives the time each took; deletion/insertion's mean curves go to
``cam/curves.json`` and ``cam/curves.png``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.metrics.localisation import LOCALISATION
from vizpipe.pipeline.metrics.registry import METRICS
from vizpipe.pipeline.stage import Merge, Picture, Scalar, StageResult, Table
from vizpipe.stages.cam.compute import file_stem
from vizpipe.stages.cam.record import CamDoc, CamImage, CamMap, ClassSummary
from vizpipe.stages.cam.rows import metric_target_text

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Batch
    from vizpipe.pipeline.writer import Writer
    from vizpipe.stages.cam.plan import CamPlan

log = logging.getLogger(__name__)

#: images whose overlays are tagged for TensorBoard and previewed in the sweep index. The record
#: lists every image's maps and top-5 table: the report shows as many as ``report.max_images``
#: allows (0: all), TensorBoard logs and the sweep index compares only this sample (a run of
#: thousands of images would otherwise fill the event file and every index cell).
SAMPLE_IMAGES = 32


class MapWriter:
    """Hands the files of a slice's maps to the background writer; returns the rows with their paths."""

    def __init__(self, ctx: RunContext, settings: Any, writer: Writer, display: Any = None) -> None:
        self.ctx = ctx
        self.writer = writer
        self.image_weight = float(settings.image_weight)
        self.level = int(settings.png_compress_level)
        self.save = {str(getattr(s, "value", s)) for s in settings.save}
        self.display = display  # map -> the [0, 1] picture drawn (None: the map clipped to [0, 1])
        # on a GPU the pictures of a batch are coloured there (only the uint8 pictures come back);
        # an attribution's display scale is NumPy's: drawn on the writer's threads
        self.on_device = (
            ctx.device.type != "cpu" and display is None and bool(self.save & {"overlay", "heatmap"})
        )

    def __call__(
        self, part: Batch, maps: np.ndarray, rows: list[CamMap], marks: list[Any] | None = None
    ) -> list[CamMap]:
        """The files of one map kind of one class set: ``maps`` (B, H, W), one row per image of
        ``part``; ``marks[i](overlay)`` draws on image i's overlay (a segmentation target's mask,
        a detection target's boxes; None: nothing)."""
        from vizpipe.pipeline.names import slug
        from vizpipe.stages.cam.draw import heatmap_png, marked_png, npy_bytes, overlay_png

        overlays, heatmaps = self._coloured(part, maps) if self.on_device else (None, None)
        out = []
        for i, row in enumerate(rows):
            cam = maps[i]  # (H, W); the writer gets views: nothing here changes them afterwards
            mark = marks[i] if marks is not None else None
            files: dict[str, tuple[str, Any, tuple[Any, ...]]] = {  # kind -> (suffix, encode, args)
                "npy": (".npy", npy_bytes, (cam,)),
                "overlay": (
                    ("_overlay.png", marked_png, (overlays[i], mark, self.level))
                    if overlays is not None
                    else (
                        "_overlay.png",
                        overlay_png,
                        (part.rgb[i], cam, self.image_weight, self.level, mark, self.display),
                    )
                ),
                "heatmap": (
                    ("_heatmap.png", marked_png, (heatmaps[i], None, self.level))
                    if heatmaps is not None
                    else ("_heatmap.png", heatmap_png, (cam, self.level, self.display))
                ),
            }
            stem = (
                f"{slug(row.layer)}__{row.key}"
                if row.key
                else file_stem(row.layer, row.target, row.target_name)
            )
            rel = f"cam/{part.names[i]}/{stem}"
            paths = {}
            for kind, (suffix, encode, args) in files.items():
                if kind in self.save:
                    paths[kind] = rel + suffix
                    self.writer.submit(self.ctx.claim(paths[kind]), encode, *args)
            out.append(replace(row, **paths))
        return out

    def after(self, callback: Any) -> None:
        """Run ``callback()`` once every file handed over so far is complete (``Writer.after``)."""
        self.writer.after(callback)

    def _coloured(self, part: Batch, maps: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(overlays, heatmaps) of the slice, (B, H, W, 3) uint8 on the CPU, coloured on the device."""
        import torch
        from vizpipe.stages.cam.draw import colour_batch

        device = self.ctx.device
        on_device = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(device)
        rgb = torch.from_numpy(np.ascontiguousarray(part.rgb, dtype=np.float32)).to(device)
        wanted = ("overlay" in self.save, "heatmap" in self.save)
        pictures = colour_batch(on_device, rgb, self.image_weight, *wanted)
        over, heat = (None if p is None else p.cpu().numpy() for p in pictures)
        return over, heat


def _mean(values: list[float | None]) -> float | None:
    finite_values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite_values)) if finite_values else None


def summarize(
    ctx: RunContext, images: list[CamImage]
) -> tuple[list[ClassSummary], dict[str, float | None], str]:
    """Per class (the label when every image has one, else the top-1 class) and overall means."""
    labelled = bool(images) and all(img.label is not None for img in images)
    groups: dict[int, list[CamImage]] = {}
    for img in images:
        key = img.label if labelled else (img.top5[0].class_index if img.top5 else -1)
        groups.setdefault(int(key), []).append(img)
    found = {k for img in images for m in img.maps for k in m.metrics}
    # the ground-truth scores first (pointing game leads: the sweep index ranks by the first), then the rest
    names = [k for k in LOCALISATION if k in found] + sorted(found - set(LOCALISATION))
    out = []
    for cls in sorted(groups):
        members = groups[cls]
        maps = [m for img in members for m in img.maps if m.valid]
        accuracy = None
        if labelled:
            accuracy = float(
                np.mean([bool(img.top5) and img.top5[0].class_index == img.label for img in members])
            )
        out.append(
            ClassSummary(
                class_index=cls,
                name=ctx.class_name(cls),
                count=len(members),
                top1_accuracy=accuracy,
                mean_score=_mean([m.score for m in maps]),
                metrics={k: _mean([m.metrics.get(k) for m in maps]) for k in names},
                mean_label_score=_mean([img.label_score for img in members]) if labelled else None,
            )
        )
    valid = [m for img in images for m in img.maps if m.valid]
    means = {"score": _mean([m.score for m in valid])}
    means.update({k: _mean([m.metrics.get(k) for m in valid]) for k in names})
    if labelled:
        means["top1_accuracy"] = float(np.mean([img.top5[0].class_index == img.label for img in images]))
    return out, means, "label" if labelled else "top-1 class"


def document(ctx: RunContext, settings: Any, plan: CamPlan, images: list[CamImage], passes: int) -> CamDoc:
    """The ``cam.json`` record."""
    if plan.targets is None:
        classes, means, grouped_by = summarize(ctx, images)
    else:  # per target (class, label or concept) rather than per image's class
        from vizpipe.stages.cam.task_rows import summarize as summarize_targets

        classes, means, grouped_by = summarize_targets(ctx, images)
    fullgrad = plan.groups[0][0] == "bias_layers"
    names = list(dict.fromkeys([*plan.metrics, *(k for k in (*LOCALISATION, *TRUTH) if k in means)]))
    metric_targets = {}
    for name in names:  # a task's scores against its true masks say so (``TRUTH``)
        truth = plan.targets is not None and name in TRUTH
        metric_targets[name] = TRUTH[name] if truth or name not in METRICS else metric_target_text(name, ctx)
    layers = [layer.name for layer in plan.layers] or [plan.label]
    return CamDoc(
        method=plan.method.name,
        method_key=plan.method.name if plan.attribution else plan.method.key,
        layers=["bias_layers"] if fullgrad else layers,
        targets=settings.target_class,
        reshape={layer.name: layer.layout.describe() for layer in plan.layers},
        metric_targets=metric_targets,
        images=images,
        classes=classes,
        means=means,
        grouped_by=grouped_by,
        forward_passes=passes,
        task=None if plan.targets is None else plan.task,
    )


#: what the scores of a segmentation map against the true masks compare (``tasks.py``)
TRUTH = {
    "mask_iou": "the class's true mask (IoU of the map at >= 0.5)",
    "energy_in_mask": "the class's true mask (share of the map's mass inside)",
    "centre_mask_iou": "the class's true mask, for a centred Gaussian blob (a baseline)",
}


def _better(name: str) -> str | None:
    if name in METRICS:
        return METRICS[name].better
    return "higher" if name in (*LOCALISATION, *TRUTH, "top1_accuracy") else None


def warn_invalid(ctx: RunContext, images: list[CamImage]) -> None:
    """One console warning naming how many maps are invalid and why (they stay drawn, marked)."""
    from collections import Counter

    reasons = Counter(m.invalid_reason or "invalid" for img in images for m in img.maps if not m.valid)
    if not reasons:
        return
    total = sum(len(img.maps) for img in images)
    why = "; ".join(f"{count} × {reason}" for reason, count in reasons.items())
    ctx.warn(
        f"CAM: {sum(reasons.values())} of {total} map(s) are invalid ({why}); "
        "they are marked valid=false and left out of the metrics and means"
    )


def result(ctx: RunContext, doc: CamDoc) -> StageResult:
    """The stage's record: every image's tables and pictures (TensorBoard's tags and the sweep
    index's previews on the first SAMPLE_IMAGES), class aggregates, key numbers."""
    from vizpipe.pipeline.files import write_atomic

    write_atomic(ctx.claim("cam/cam.json"), doc.to_json())
    tables: list[Table] = []
    pictures: list[Picture] = []
    for i, img in enumerate(doc.images):
        if img.top5:
            tables.append(_top5_table(ctx, img, doc.task))
        if img.prediction:
            pictures.append(_prediction_picture(doc, img, sample=i < SAMPLE_IMAGES))
        for m in img.maps:
            pictures += _map_pictures(doc, img, m, sample=i < SAMPLE_IMAGES)
    if len(doc.images) > 1 or (doc.images and doc.images[0].label is not None):
        tables.insert(0, _class_table(doc))
    scalars = [Scalar("cam/score", doc.means.get("score"), key=True)]
    scalars += [
        Scalar(f"cam/{k}", v, key=True, better=_better(k)) for k, v in doc.means.items() if k != "score"
    ]
    return StageResult(
        stage="cam",
        summary=_summary(doc),
        params=_params(doc),
        pictures=pictures,
        tables=tables,
        scalars=scalars,
        files=["cam/cam.json"],
        data=doc,
    )


#: what a non-classifier's top-5 ranks its classes by (``vizpipe.pipeline.tasks.scores``)
TOP5 = {
    "segmentation": ("Top-5 classes by predicted area", "Pixels"),
    "detection": ("Top-5 classes by best detection", "Best score"),
}


def _params(doc: CamDoc) -> dict[str, str]:
    """The hparams columns: method, layer and the class (a non-classifier: its targets' keys)."""
    params = {"method": doc.method_key, "layer": "+".join(doc.layers)}
    if doc.task is None:
        params["class"] = "top1" if doc.targets is None else str(doc.targets)
    else:
        params["target"] = ",".join(dict.fromkeys(m.key or "" for img in doc.images for m in img.maps))
    return params


def _top5_table(ctx: RunContext, img: CamImage, task: str | None = None) -> Table:
    """An image's top-5 predictions, captioned with its source (and label, when known)."""
    title, column = TOP5.get(task or "", ("Top-5 predictions", "Probability"))
    rows = [
        [rank + 1, p.class_index, p.name, None if p.prob is None else f"{p.prob * 100:.2f}%"]
        for rank, p in enumerate(img.top5)
    ]
    caption = f"Source: {img.source}" + ("" if img.valid else " (input holds NaN/inf: invalid)")
    if img.label is not None:
        name = ctx.class_name(img.label)
        caption += f"; label {img.label}" + (f" {name}" if name else "")
    return Table(title, ["Rank", "Class", "Name", column], rows, group=img.name, caption=caption)


def _prediction_picture(doc: CamDoc, img: CamImage, sample: bool) -> Picture:
    """What a segmentation or detection model predicts for the image (its mask, or its boxes);
    tagged for TensorBoard for a ``sample`` image."""
    if doc.task == "detection":
        dets = img.detections or []
        shown = ", ".join(f"{d.label} {d.name or ''} {d.score:.2f}".replace("  ", " ") for d in dets[:8])
        caption = f"prediction: {len(dets)} detection(s) {shown}" + (", ..." if len(dets) > 8 else "")
    else:
        caption = "prediction: each pixel's class (background uncoloured)"
    tag = f"cam/prediction/{img.name}" if sample else None
    return Picture(img.prediction or "", caption, group=img.name, tag=tag)


def _map_pictures(doc: CamDoc, img: CamImage, m: CamMap, sample: bool) -> list[Picture]:
    """One map's overlay (captioned with its numbers, badged when invalid) and heatmap, those that
    were written (``cam.save``): the first of them is a ``sample`` image's preview in the sweep
    index and carries its TensorBoard tag."""
    target = f"{m.target} {m.target_name}" if m.target_name else f"class {m.target}"
    if m.detail:
        target = m.detail
    extra = "".join(f", {k} {_fmt(v)}" for k, v in m.metrics.items())
    cls = m.key or (f"{m.target}_{m.target_name}" if m.target_name else str(m.target))
    caption = f"{m.layer}  target {target}, score {_fmt(m.score)}, logit {_fmt(m.logit)}{extra}"
    if not m.valid and m.invalid_reason:
        caption += f"; invalid: {m.invalid_reason}"
    main = Picture(
        "",
        caption,
        group=img.name,
        tag=f"cam/{doc.method_key}/{m.layer}/{cls}/{img.name}" if sample else None,
        preview=sample,
        badge=None if m.valid else "invalid",
    )
    if m.overlay:
        heatmap = [Picture(m.heatmap, f"{m.layer}  heatmap", group=img.name)] if m.heatmap else []
        return [replace(main, path=m.overlay), *heatmap]
    if m.heatmap:
        return [replace(main, path=m.heatmap, caption=f"{caption} (heatmap)")]
    return []


#: what the per-class table's two probability columns are
CLASS_TABLE_CAPTION = (
    "Mean target probability: the model's probability of the class each map explains (each image's "
    "top-1 class, or cam.target_class), over the valid maps. Mean label probability: its probability "
    "of the image's own label, where the data set gives one."
)


def _class_table(doc: CamDoc) -> Table:
    """Per-class aggregates over the valid maps; numbers, merged across a data set's shards."""
    metric_names = [k for k in doc.means if k not in ("score", "top1_accuracy")]
    probabilities = ["Mean target probability", "Mean label probability"]
    head = ["Class", "Name", "Images", "Top-1 accuracy", *probabilities, *metric_names]
    rows = [
        [
            c.class_index,
            c.name,
            c.count,
            c.top1_accuracy,
            c.mean_score,
            c.mean_label_score,
            *[c.metrics.get(k) for k in metric_names],
        ]
        for c in doc.classes
    ]
    # numbers, not text: the report formats them, and the sweep index merges a data set's shards
    merge = Merge(keys=[0, 1], weight=2, means=list(range(3, len(head))))
    return Table(f"Per class ({doc.grouped_by})", head, rows, caption=CLASS_TABLE_CAPTION, merge=merge)


def _summary(doc: CamDoc) -> str:
    """The console line: method, layers, target, counts, the sample shown, reshapes."""
    target_text = "top-1 prediction of each image" if doc.targets is None else f"class(es) {doc.targets}"
    if doc.task is not None:
        keys = dict.fromkeys(m.key or "" for i in doc.images for m in i.maps)
        target_text = f"{doc.task} targets ({', '.join(keys)})"
    shown = min(len(doc.images), SAMPLE_IMAGES)
    sample = (
        f"; TensorBoard and the sweep index get the first {shown} images' maps "
        "(the report all, up to report.max_images; every map is in cam/)"
        if len(doc.images) > shown
        else ""
    )
    reshapes = "; ".join(f"{k}: {v}" for k, v in doc.reshape.items() if not v.startswith("N×"))
    return (
        f"{doc.method} on {', '.join(doc.layers)}, target: {target_text}; {len(doc.images)} image(s), "
        f"{sum(len(i.maps) for i in doc.images)} map(s)"
        + sample
        + (f"; reshape {reshapes}" if reshapes else "")
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
