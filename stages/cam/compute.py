"""Compute the maps, batch by batch, and write each image's files as soon as its maps exist.

One ``CamRunner`` per layer group holds the library's object and hooks for the whole stream;
per batch it returns the maps of every class set (``vizpipe.pipeline.gradcam.adapter``), the configured
metrics run on them while the CAM object exists, and ``write_maps`` saves the overlay, heatmap
and raw ``.npy`` of each map. Only small per-map rows stay in memory (``CamImage``).

Localisation metrics (data sets that know where the object is, e.g. ``input=shapes``):
``pointing_game`` and ``energy_in_box`` (``vizpipe.pipeline.gradcam.localisation``; the box grows by
``cam.pointing_tolerance`` × the image side).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.files import finite
from vizpipe.pipeline.gradcam.adapter import CamRunner, quiet_library_bars
from vizpipe.pipeline.gradcam.localisation import localisation
from vizpipe.pipeline.gradcam.methods import METRICS, compute_metric
from vizpipe.pipeline.names import slug
from vizpipe.stages.cam import share
from vizpipe.stages.cam.plan import CamPlan
from vizpipe.stages.cam.record import CamImage, CamMap, Prediction

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Batch

log = logging.getLogger(__name__)

#: ScoreCAM builds an (N, C, 3, H, W) tensor of masked inputs; images are split to stay below this.
SCORECAM_MAX_BYTES = 1 << 30


def file_stem(label: str, target: int, target_name: str | None) -> str:
    """``<layer>__<class>[_<class name>]``, every part through ``slug``."""
    stem = f"{slug(label)}__{int(target)}"
    return f"{stem}_{slug(target_name, max_len=60)}" if target_name else stem


def metric_targets(name: str, classes: list[int], ctx: RunContext) -> list[Any]:
    """Targets for metric ``name`` by the library's convention (``MetricSpec.target``)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    softmax = METRICS[name].target == "softmax" and ctx.num_classes > 1 and not ctx.outputs_are_probabilities
    cls = ClassifierOutputSoftmaxTarget if softmax else ClassifierOutputTarget
    return [cls(int(c)) for c in classes]


def metric_target_text(name: str, ctx: RunContext) -> str:
    """What metric ``name``'s targets score, for ``cam.json``."""
    kind = METRICS[name].target
    if kind == "none":
        return "the map alone"
    if kind == "softmax" and ctx.num_classes > 1 and not ctx.outputs_are_probabilities:
        return "softmax probability of the target class (ClassifierOutputSoftmaxTarget)"
    return "raw output of the target class (ClassifierOutputTarget)"


def _chunk(plan: CamPlan, layers: list[Any], x: torch.Tensor) -> int:
    """Images per library call: all, except ScoreCAM when its N×C×3×H×W tensor would be huge."""
    n = int(x.shape[0])
    if not plan.method.is_a("ScoreCAM"):
        return n
    per_image = max(layer.layout.channels for layer in layers) * x[0].numel() * x.element_size()
    return max(1, min(n, SCORECAM_MAX_BYTES // max(per_image, 1)))


@contextlib.contextmanager
def perturbation_bar(ctx: RunContext, runner: CamRunner, label: str, calls: int) -> Iterator[Any]:
    """ScoreCAM/AblationCAM: state the forward passes up front, show one bar, count them.

    Yields a function returning the passes counted so far (0 for other methods).
    """
    spec, layers, settings = runner.spec, runner.layers, runner.settings
    if not spec.perturbation:
        yield lambda: 0
        return
    from tqdm import tqdm

    n = len(ctx.inputs)
    bs = int(settings.batch_size)
    tta = len(list(runner.obj.tta_transforms)) if settings.aug_smooth else 1
    ablation = 1 if spec.is_a("AblationCAM") else 0  # its own forward per layer, to cache activations
    batches = math.ceil(n / ctx.inputs.batch_size)
    per_call = batches + sum(
        ablation * batches + n * math.ceil(layer.layout.channels / bs) for layer in layers
    )
    expected = per_call * tta * calls
    channels = ", ".join(f"{layer.name}: {layer.layout.channels}" for layer in layers)
    log.info(
        "%s on %s: about %d forward passes to run (%d class set(s) x %d image(s) x ceil(channels / "
        "cam.batch_size %d)%s; channels %s)",
        spec.name,
        label,
        expected,
        calls,
        n,
        bs,
        f" x {tta} augmentations" if tta > 1 else "",
        channels,
    )
    bar = tqdm(total=expected, desc=f"{spec.name} {label}", unit="pass", leave=False, disable=None)
    count = [0]

    def on_forward(module: Any, args: object, output: object) -> None:
        count[0] += 1
        bar.update(1)

    handle = ctx.model.register_forward_hook(on_forward)
    try:
        with quiet_library_bars():
            yield lambda: count[0]
    finally:
        handle.remove()
        bar.close()
        log.debug("%s on %s: %d forward passes done", spec.name, label, count[0])


def announce_metrics(ctx: RunContext, plan: CamPlan, maps_per_image: int) -> None:
    """State what the metrics will cost before running them (ROAD's imputation is the slow part)."""
    if not plan.metrics:
        return
    n = len(ctx.inputs) * maps_per_image
    passes = sum(METRICS[m].forwards for m in plan.metrics)
    road = [m for m in plan.metrics if m.startswith("road") or m == "arcc"]
    log.info(
        "cam.metrics %s on %d map(s): about %d extra forward pass(es) per map batch%s",
        ", ".join(plan.metrics),
        n,
        passes,
        f"; {', '.join(road)} impute every image per percentile (slow on a CPU: ~0.3-1 s per image)"
        if road
        else "",
    )


def collect(ctx: RunContext, settings: Any, plan: CamPlan, write: Any) -> tuple[list[CamImage], int, float]:
    """Every map of every image: (images with their map rows, forward passes, seconds).

    ``write(batch, i, row, cam)`` is called for each map as soon as it is computed
    (``vizpipe.stages.cam.render.MapWriter``): it saves the files and returns ``row`` with their paths.
    """
    from tqdm import tqdm
    from vizpipe.pipeline.hooks import preserved

    n = len(ctx.inputs)
    images: dict[int, CamImage] = {}
    spec = plan.method
    classes_given = plan.classes
    # per-layer maps come from the averaged call when the library allows (same numbers)
    capture = len(plan.groups) > 1 and not spec.meta and not settings.aug_smooth and not plan.metrics
    runner_groups = plan.groups[:1] if capture else plan.groups
    n_sets = 1 if classes_given is None else len(classes_given)
    announce_metrics(ctx, plan, n_sets * len(plan.groups))
    log.debug(
        "CAM <%s> on %s, layer(s) %s, %s, %d image(s)",
        spec.name,
        ctx.model_name,
        plan.label,
        "top-1 class of each image" if classes_given is None else f"class(es) {classes_given}",
        n,
    )
    t0 = time.perf_counter()
    passes = 0
    metric_bar = tqdm(
        total=len(plan.metrics) * n * n_sets * len(runner_groups),
        desc="cam.metrics",
        unit="map",
        leave=False,
        disable=None if plan.metrics else True,
    )
    sibs = share.siblings(ctx, settings, plan)  # a sweep over cam.layer: its other layers, same pass
    key = share.share_key(ctx, settings, plan) if sibs else None
    with preserved(ctx.model), metric_bar:
        for label, layers in runner_groups:
            with open_runner(ctx, settings, plan, layers, capture, sibs) as (runner, used):
                with perturbation_bar(ctx, runner, label, n_sets) as counter:
                    for batch in ctx.inputs.batches(f"cam {label}" if len(runner_groups) > 1 else "cam"):
                        step = _chunk(plan, layers, batch.tensor)
                        for s in range(0, len(batch), step):
                            part = _slice(batch, s, s + step)
                            kept = share.take(ctx, key, layers[0].name, part.index) if key else None
                            if kept is not None:  # an earlier job of this sweep computed them
                                log.debug("CAM: %s maps of %d image(s) from an earlier job", label, len(part))
                                logits, sets, results = kept
                            else:
                                logits, sets, results = _compute(ctx, runner, part, classes_given)
                                if used:  # keep the sibling layers' maps; this job's own are written
                                    both = [*layers, *used]
                                    results = share.keep(ctx, key, both, part.index, logits, sets, results)
                            _record(
                                ctx,
                                settings,
                                plan,
                                runner,
                                part,
                                logits,
                                sets,
                                results,
                                label,
                                images,
                                write,
                                metric_bar,
                            )
                    passes += counter()
    seconds = time.perf_counter() - t0
    log.debug(
        "CAM <%s>: %d image(s) in %.2fs%s",
        spec.name,
        n,
        seconds,
        f", {passes} forward passes" if passes else "",
    )
    return [images[i] for i in sorted(images)], passes, seconds


def _compute(
    ctx: RunContext, runner: CamRunner, part: Batch, classes_given: list[int] | None
) -> tuple[torch.Tensor, list[list[int]], list[tuple[np.ndarray, list[np.ndarray] | None]]]:
    """One slice's outputs, class sets and maps (per class set: averaged and per-layer maps)."""
    import torch
    from vizpipe.pipeline.layers import model_output

    logits = None
    if not runner.one_forward:
        with torch.no_grad():
            logits = model_output(ctx.model(part.tensor)).detach().float().cpu()
    sets = None if classes_given is None else [[c] * len(part) for c in classes_given]
    logits, results = runner.maps(part.tensor, sets, logits)
    if sets is None:
        sets = [logits.argmax(dim=1).tolist()]
    return logits, sets, results


@contextlib.contextmanager
def open_runner(
    ctx: RunContext, settings: Any, plan: CamPlan, layers: list[Any], capture: bool, sibs: list[Any]
) -> Iterator[tuple[CamRunner, list[Any]]]:
    """The group's ``CamRunner``, hooking the sweep's other layers ``sibs`` too when it can keep
    each layer's map (``share``); yields the runner and the sibling layers it computes."""
    order = list(ctx.probe().shapes)  # the order modules finish a forward pass (``CamRunner``)
    if sibs:
        both = [*layers, *sibs]
        runner = CamRunner(
            ctx.model, settings, plan.method, both, kwargs=plan.kwargs, capture=True, order=order
        )
        runner.__enter__()
        try:
            if runner.one_forward and runner.captures:
                yield runner, sibs
                return
        finally:
            runner.__exit__(None, None, None)
    with CamRunner(
        ctx.model, settings, plan.method, layers, kwargs=plan.kwargs, capture=capture, order=order
    ) as runner:
        yield runner, []


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    from dataclasses import replace

    if start == 0 and stop >= len(batch):
        return batch
    return replace(
        batch,
        tensor=batch.tensor[start:stop],
        rgb=batch.rgb[start:stop],
        index=batch.index[start:stop],
        names=batch.names[start:stop],
        sources=batch.sources[start:stop],
        labels=batch.labels[start:stop],
        boxes=batch.boxes[start:stop],
    )


def _record(
    ctx: RunContext,
    settings: Any,
    plan: CamPlan,
    runner: CamRunner,
    batch: Batch,
    logits: torch.Tensor,
    sets: list[list[int]],
    results: list[tuple[np.ndarray, list[np.ndarray] | None]],
    label: str,
    images: dict[int, CamImage],
    write: Any,
    metric_bar: Any,
) -> None:
    """Metrics and localisation for the batch's maps, then write them and keep their rows."""
    probs = ctx.probabilities(logits)
    top5 = ctx.top_k(5, logits)
    layers = [layer for _, group in plan.groups[1:] for layer in group] if len(plan.groups) > 1 else []
    for i, index in enumerate(batch.index):
        if index not in images:
            bad = index in ctx.inputs.invalid
            images[index] = CamImage(
                name=batch.names[i],
                source=batch.sources[i],
                top5=[Prediction(r["class"], r["name"], None if bad else r["prob"]) for r in top5[i]],
                maps=[],
                label=batch.labels[i],
                box=list(batch.boxes[i]) if batch.boxes[i] is not None else None,
                valid=not bad,
            )
    for classes, (maps, per_layer) in zip(sets, results, strict=True):
        scores: dict[str, np.ndarray] = {}
        if plan.metrics:
            safe = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
            for name in plan.metrics:
                targets = metric_targets(name, classes, ctx)
                scores[name] = compute_metric(name, batch.tensor, safe, targets, ctx.model, runner.obj)
                metric_bar.update(len(batch))
        kinds = [(label, maps)] + list(zip([x.name for x in layers], per_layer or [], strict=False))
        for kind_label, kind_maps in kinds:
            for i, index in enumerate(batch.index):
                c = int(classes[i])
                arr = kind_maps[i]
                metrics = {k: finite(v[i]) for k, v in scores.items()} if kind_label == label else {}
                if batch.boxes[i] is not None:
                    metrics.update(localisation(arr, batch.boxes[i], float(settings.pointing_tolerance)))
                valid = bool(
                    not ctx.nonfinite_params and index not in ctx.inputs.invalid and np.isfinite(arr).all()
                )
                row = CamMap(
                    layer=kind_label,
                    target=c,
                    target_name=ctx.class_name(c),
                    score=finite(probs[i, c]) if valid else None,
                    logit=finite(logits[i, c]),
                    overlay="",
                    heatmap="",
                    npy="",
                    metrics=metrics,
                    valid=valid,
                )
                images[index].maps.append(write(batch, i, row, arr))
