"""Maps shared across the jobs of a sweep over ``cam.layer``: one backward pass serves every layer.

``python run.py -m cam.layer=layer1,layer2,layer3,layer4 cam.target_class=1,207,281`` runs 12 jobs
in one process (Hydra's basic launcher) on one cached build of the model and inputs
(``vizpipe.pipeline.cache``). A gradient method's backward pass from a class reaches every layer of the
sweep at once, so the first job for a class hooks all of them: its own map is computed as before,
and the maps of the sweep's other layers are kept with the build (``RunContext.shared``), each
handed to the one later job that asks for that layer; that job then runs no forward pass at all.
12 jobs cost 3 passes instead of 12 (the sweep benchmark: ``benchmarks/sweep.py``).

The kept maps are the numbers a job computing alone gives, byte for byte: the library computes
each layer's map from that layer's activations and gradients alone, and the gradient reaching a
layer does not depend on which other layers are hooked (``tests/test_cam_share.py`` compares the
``.npy`` of a shared sweep with separate runs). Sharing happens only when that holds and is
cheap:

* the job's sweep varies ``cam.layer`` (``RunContext.sweep``, from vizpipe's sweeper), this job
  has one layer and the other values each name one layer (no glob, list or ``auto``) of the
  same, plain (N, C, h, w) layout;
* a one-forward gradient method whose maps the library averages over layers the standard way
  (``CamRunner.captures``), with no metrics, ``aug_smooth`` or wrapped base method;
* every other setting of the job equal (the key is the whole resolved ``cam`` config without
  ``layer``, the method, device and image indices; the build itself is the cache's, proven
  unchanged before every job);
* the kept maps fit in ``MAX_BYTES`` (a sweep over a large data set computes each job alone).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import VizpipeError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.gradcam.layers import CamLayer
    from vizpipe.stages.cam.plan import CamPlan

log = logging.getLogger(__name__)

STAGE = "cam"  # every key this module puts in ``RunContext.shared`` starts with it (``share_key``)
SWEPT_KEY = "cam.layer"
MAX_BYTES = 256 * 1024 * 1024  # maps kept for later jobs, at most (float32 at the input's size)

#: one kept result: the batch's outputs, its class sets and, per set, the (B, H, W) maps
Kept = tuple["torch.Tensor", list[list[int]], list[tuple["np.ndarray", None]]]


def siblings(ctx: RunContext, settings: Any, plan: CamPlan) -> list[CamLayer]:
    """The sweep's other layers to compute in this job's pass (empty: compute this job alone)."""
    from vizpipe.pipeline.gradcam.layers import resolve_cam_layers

    values = [str(v) for v in ctx.sweep.get(SWEPT_KEY, [])]
    spec = plan.method
    if (
        len(values) < 2
        or plan.targets is not None  # other tasks: each job alone
        or plan.attribution  # captum's methods: no grad-cam layer maps to keep
        or len(plan.groups) != 1
        or len(plan.layers) != 1
        or plan.metrics
        or settings.aug_smooth
        or spec.meta
        or spec.perturbation
        or spec.is_a("FullGrad")
        or plan.layers[0].layout.needs_reshape
    ):
        return []
    own = plan.layers[0].name
    probe = ctx.probe()
    calls = probe.calls
    if calls.get(own, 0) != 1:  # a module called twice records two activations: no pairing by name
        return []
    found: dict[str, CamLayer] = {}
    for value in values:
        try:
            layers = resolve_cam_layers(ctx.model, probe, value, [], ctx.model_name)
        except (VizpipeError, ValueError, KeyError):  # another job's bad value: that job reports it
            continue
        one = len(layers) == 1 and calls.get(layers[0].name, 0) == 1
        if one and layers[0].name != own and not layers[0].layout.needs_reshape:
            found.setdefault(layers[0].name, layers[0])
    if not found:
        return []
    sets = 1 if plan.classes is None else len(plan.classes)
    x = ctx.inputs.first().tensor  # (B, C, H, W)
    kept = len(ctx.inputs) * sets * len(found) * int(x.shape[-2]) * int(x.shape[-1]) * 4 + held(ctx)
    if kept > MAX_BYTES:
        log.debug("CAM: the sweep's other layers' maps would keep %d MB; each job computes alone", kept >> 20)
        return []
    return list(found.values())


def held(ctx: RunContext) -> int:
    """Bytes of maps kept now for later jobs (not yet taken)."""
    return sum(
        maps.nbytes
        for key, value in ctx.shared.items()
        if isinstance(key, tuple) and len(key) == 3 and str(key[0]).startswith(f'["{STAGE}"')
        for maps, _ in value[2]
    )


def share_key(ctx: RunContext, settings: Any, plan: CamPlan) -> str:
    """What a kept map depends on besides the build, its layer and its images (``settings``: the
    stage's ``CamConfig``, as ``settings_of`` gives it)."""
    import dataclasses

    plain = {k: v for k, v in dataclasses.asdict(settings).items() if k != "layer"}
    return json.dumps([STAGE, plan.method.name, str(ctx.device), plain], sort_keys=True, default=str)


def take(ctx: RunContext, key: str, layer: str, index: list[int]) -> Kept | None:
    """The maps an earlier job kept for ``layer`` on these images (removed: one job asks for them)."""
    return ctx.shared.pop((key, layer, tuple(index)), None)


def keep(
    ctx: RunContext,
    key: str,
    layers: list[CamLayer],
    index: list[int],
    logits: torch.Tensor,
    sets: list[list[int]],
    results: list[tuple[np.ndarray, list[np.ndarray] | None]],
) -> list[tuple[np.ndarray, None]]:
    """Keep the sibling layers' maps of one batch for later jobs; return this job's own maps.

    ``results`` come from a capturing ``CamRunner`` over ``layers`` (this job's layer first):
    per class set, the averaged maps and each layer's maps in ``layers`` order.
    """
    per_set = [per_layer for _, per_layer in results]
    if any(p is None or len(p) != len(layers) for p in per_set):
        raise RuntimeError("CAM sharing: the runner did not return every layer's maps")
    own = [(p[0], None) for p in per_set]  # type: ignore[index]
    for k, layer in enumerate(layers[1:], start=1):
        kept = [(p[k], None) for p in per_set]  # type: ignore[index]
        ctx.shared[(key, layer.name, tuple(index))] = (logits, sets, kept)
    return own
