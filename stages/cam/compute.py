"""Compute the maps, batch by batch, and write each image's files as soon as its maps exist.

One ``CamRunner`` per layer group holds the library's object and hooks for the whole stream;
per batch it returns the maps of every class set (``vizpipe.pipeline.gradcam.adapter``), the
configured metrics run on them while the CAM object exists, and the stage's writer
(``render.MapWriter``) hands the overlay, heatmap and raw ``.npy`` of each map to the background
writer (``vizpipe.pipeline.writer``), which writes them while the next batch is computed. Only
small per-map rows stay in memory (``CamImage``).

A pixel attribution method (captum's, or the ``sobel`` baseline) runs through
``vizpipe.pipeline.attribution.runner.AttributionRunner``, which answers ``maps`` as the CAM
runner does. Localisation metrics (data sets that know where the object is, e.g.
``input=shapes``): ``pointing_game`` and ``energy_in_box`` (``vizpipe.pipeline.metrics.localisation``;
the box grows by ``cam.pointing_tolerance`` × the image side).

Each slice's maps become ``cam.json``'s rows in ``rows.py`` (validity, metrics, the files written).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.gradcam.adapter import CamRunner, Maps
from vizpipe.pipeline.metrics.registry import METRICS
from vizpipe.pipeline.names import slug
from vizpipe.stages.cam import progress, share
from vizpipe.stages.cam.plan import CamPlan
from vizpipe.stages.cam.rows import Collector, SliceMaps, record_slice
from vizpipe.stages.cam.task_rows import record_task_slice

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.gradcam.layers import CamLayer
    from vizpipe.pipeline.inputs import Batch

log = logging.getLogger(__name__)

#: ScoreCAM builds an (N, C, 3, H, W) tensor of masked inputs; images are split to stay below this.
SCORECAM_MAX_BYTES = 1 << 30


def file_stem(label: str, target: int, target_name: str | None) -> str:
    """``<layer>__<class>[_<class name>]``, every part through ``slug``."""
    stem = f"{slug(label)}__{int(target)}"
    return f"{stem}_{slug(target_name, max_len=60)}" if target_name else stem


def _chunk(plan: CamPlan, layers: list[Any], x: torch.Tensor) -> int:
    """Images per library call: all, except ScoreCAM when its N×C×3×H×W tensor would be huge."""
    n = int(x.shape[0])
    if not plan.method.is_a("ScoreCAM"):
        return n
    per_image = max(layer.layout.channels for layer in layers) * x[0].numel() * x.element_size()
    return max(1, min(n, SCORECAM_MAX_BYTES // max(per_image, 1)))


@contextlib.contextmanager
def perturbation_passes(
    ctx: RunContext, runner: CamRunner, label: str, calls: int
) -> Iterator[Callable[[], int]]:
    """ScoreCAM/AblationCAM: state the forward passes up front, then count them.

    Yields a function returning the passes counted so far (0 for other methods). The library's
    own progress bar per image is not shown (``vizpipe.pipeline.gradcam.adapter.hidden_bars``).
    """
    spec, layers, settings = runner.spec, runner.layers, runner.settings
    if not spec.perturbation:
        yield lambda: 0
        return
    from vizpipe.pipeline.hooks import counted

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
    with counted(ctx.model) as count:
        try:
            yield count
        finally:
            log.debug("%s on %s: %d forward passes done", spec.name, label, count())


def announce_metrics(ctx: RunContext, plan: CamPlan, maps_per_image: int) -> None:
    """State what the metrics will cost before running them (ROAD's imputation is the slow part)."""
    if not plan.metrics:
        return
    n = len(ctx.inputs) * maps_per_image
    passes = sum(max(0, METRICS[m].forwards) for m in plan.metrics)
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


def collect(ctx: RunContext, settings: Any, plan: CamPlan, write: Any) -> Collector:
    """Every map of every image; returns the ``Collector``: the images with their map rows
    (``images_in_order``), the forward passes, the metrics' curves and seconds.

    ``write(part, maps, rows, marks=None)`` is called for each map kind of each slice as soon as
    its (B, H, W) maps are computed (``vizpipe.stages.cam.render.MapWriter``): it hands the files
    to the writer and returns the rows with their paths; ``write.after(callback)`` runs the
    callback once every file handed over is complete (each batch's progress record).
    """
    from vizpipe.pipeline.hooks import preserved

    run = _collector(ctx, settings, plan, write)
    t0 = time.perf_counter()
    with preserved(ctx.model), run.metric_bar:
        for label, layers in run.groups:
            _collect_group(run, label, layers)
    log.debug(
        "CAM <%s>: %d image(s) in %.2fs%s",
        plan.method.name,
        len(ctx.inputs),
        time.perf_counter() - t0,
        f", {run.passes} forward passes" if run.passes else "",
    )
    return run


def _collector(ctx: RunContext, settings: Any, plan: CamPlan, write: Any) -> Collector:
    """State the work (metrics' cost, the debug line) and set up ``collect``'s state."""
    from tqdm import tqdm

    # per-layer maps come from the averaged call when the library allows (same numbers)
    capture = (
        len(plan.groups) > 1
        and not plan.method.meta
        and not settings.aug_smooth
        and not plan.metrics
        and plan.targets is None  # other tasks: one runner per map kind (``tasks.slice_maps``)
    )
    sets = 1 if plan.classes is None else len(plan.classes)
    announce_metrics(ctx, plan, sets * len(plan.groups))
    log.debug(
        "CAM <%s> on %s, layer(s) %s, %s, %d image(s)",
        plan.method.name,
        ctx.model_name,
        plan.label,
        "top-1 class of each image" if plan.classes is None else f"class(es) {plan.classes}",
        len(ctx.inputs),
    )
    runners = 1 if capture else len(plan.groups)
    metric_bar = tqdm(
        total=len(plan.metrics) * len(ctx.inputs) * sets * runners,
        desc="cam.metrics",
        unit="map",
        leave=False,
        disable=None if plan.metrics else True,
    )
    sibs = share.siblings(ctx, settings, plan)  # a sweep over cam.layer: its other layers, same pass
    key = share.share_key(ctx, settings, plan) if sibs else None
    return Collector(ctx, settings, plan, write, metric_bar, capture, sibs, key)


def _collect_group(run: Collector, label: str, layers: list[CamLayer]) -> None:
    """Stream the data set through one layer group's runner, recording each slice's maps; each
    batch is recorded in ``ctx.progress`` by the background writer once every one of its files is
    complete (``MapWriter.after``: a kill leaves no recorded batch with a missing file; a resumed
    run replays the batches recorded before: ``progress.replay``)."""
    ctx = run.ctx
    desc = f"cam {label}" if len(run.groups) > 1 else "cam"
    with open_runner(ctx, run.settings, run.plan, layers, run.capture, run.sibs) as (runner, used):
        with perturbation_passes(ctx, runner, label, run.class_sets) as counter:
            for key, batch, done in ctx.progress.batches(ctx.inputs, desc, key=label):
                if batch is None:
                    progress.replay(run, done)
                    continue
                before, passes = progress.marks(run), counter()
                for part in _slices(batch, _chunk(run.plan, layers, batch.tensor)):
                    got = _slice_maps(run, runner, part, layers, used)
                    if got.targets is None:
                        record_slice(run, runner, got, label)
                    else:  # a segmentation, detection or embedding model's maps
                        record_task_slice(run, got, label)
                files, data = progress.batch_record(run, batch, before, counter() - passes)
                # recorded by the writer once the batch's last file is complete (never before)
                run.write.after(functools.partial(ctx.progress.record, key, files, data))
            run.passes += counter()


def _slice_maps(
    run: Collector, runner: CamRunner, part: Batch, layers: list[CamLayer], used: list[CamLayer]
) -> SliceMaps:
    """The slice's maps: kept by an earlier job of the sweep, or computed (keeping the siblings')."""
    ctx, key = run.ctx, run.key
    if run.plan.targets is not None:  # a segmentation, detection or embedding model
        from vizpipe.stages.cam.tasks import slice_maps

        return slice_maps(run, runner, part)
    kept = share.take(ctx, key, layers[0].name, part.index) if key else None
    if kept is not None:  # an earlier job of this sweep computed them
        log.debug("CAM: %s maps of %d image(s) from an earlier job", layers[0].name, len(part))
        return SliceMaps(part, *kept)
    logits, sets, results = _compute(ctx, runner, part, run.plan.classes)
    if used and key is not None:  # keep the sibling layers' maps; this job's own are written
        results = share.keep(ctx, key, [*layers, *used], part.index, logits, sets, results)
    return SliceMaps(part, logits, sets, results)


def _compute(
    ctx: RunContext, runner: Any, part: Batch, classes_given: list[int] | None
) -> tuple[torch.Tensor, list[list[int]], list[Maps]]:
    """One slice's outputs, class sets and maps (per class set: averaged and per-layer maps)."""
    import torch
    from vizpipe.pipeline.attribution.runner import AttributionRunner
    from vizpipe.pipeline.layers import model_output, top_classes

    logits = None
    if not runner.one_forward:
        with torch.no_grad():
            logits = model_output(ctx.model(part.tensor)).detach().float().cpu()
    sets = None if classes_given is None else [[c] * len(part) for c in classes_given]
    if isinstance(runner, AttributionRunner):
        logits, results = runner.maps(part.tensor, sets, logits, rgb=part.rgb, first_index=part.index[0])
    else:
        logits, results = runner.maps(part.tensor, sets, logits)
    if sets is None:
        sets = [top_classes(logits, 1)[:, 0].tolist()]
    return logits, sets, results


@contextlib.contextmanager
def open_runner(
    ctx: RunContext, settings: Any, plan: CamPlan, layers: list[Any], capture: bool, sibs: list[Any]
) -> Iterator[tuple[CamRunner, list[Any]]]:
    """The group's ``CamRunner``, hooking the sweep's other layers ``sibs`` too when it can keep
    each layer's map (``share``); yields the runner and the sibling layers it computes. A pixel
    attribution gets its own runner (``AttributionRunner``)."""
    from vizpipe.pipeline.tasks.wrappers import model_for_cam

    if plan.attribution:
        from vizpipe.pipeline.attribution.runner import AttributionRunner

        mean, std = ctx.inputs.mean, ctx.inputs.std
        kw = {"kwargs": plan.kwargs, "seed": ctx.seed, "mean": mean, "std": std}
        with AttributionRunner(ctx.model, settings, plan.method, layers, **kw) as attribution:
            yield attribution, []  # type: ignore[misc]
        return
    order = list(ctx.probe().shapes)  # the order modules finish a forward pass (``CamRunner``)
    wrapped = model_for_cam(ctx.model, plan.task)  # what the library calls (a task's wrapper)
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
        ctx.model,
        settings,
        plan.method,
        layers,
        kwargs=plan.kwargs,
        capture=capture,
        order=order,
        cam_model=wrapped,
    ) as runner:
        yield runner, []


def _slices(batch: Batch, step: int) -> Iterator[Batch]:
    """The batch in slices of ``step`` images (the batch itself when it fits)."""
    from dataclasses import replace

    if step >= len(batch):
        yield batch
        return
    for start in range(0, len(batch), step):
        stop = start + step
        yield replace(
            batch,
            tensor=batch.tensor[start:stop],
            rgb=batch.rgb[start:stop],
            index=batch.index[start:stop],
            names=batch.names[start:stop],
            sources=batch.sources[start:stop],
            labels=batch.labels[start:stop],
            boxes=batch.boxes[start:stop],
            masks=None if batch.masks is None else batch.masks[start:stop],
            objects=None if batch.objects is None else batch.objects[start:stop],
            object_masks=None if batch.object_masks is None else batch.object_masks[start:stop],
        )
