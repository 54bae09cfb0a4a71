"""A sweep over ``cam.layer`` computes a pixel attribution once, not once per layer.

``python run.py -m sweep=explanations`` sweeps methods × layers. A method that attributes to the
input pixels (``saliency``, ``integrated_gradients``, ..., ``sobel``: not ``guided_gradcam``)
does not use ``cam.layer``, so every layer's job would compute the same maps and metrics. The job
with the sweep's first ``cam.layer`` value computes them; the others record that they computed
nothing and which job did (``computed_by``/``result``), and the sweep index ranks the one row.
Outside a sweep over ``cam.layer`` (``RunContext.sweep``, from vizpipe's sweeper) every job computes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.stage import StageResult

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.cam.plan import CamPlan

SWEPT_KEY = "cam.layer"


def computed_by(ctx: RunContext, settings: Any, plan: CamPlan) -> str | None:
    """The ``cam.layer`` value of the sweep's job that computes this job's maps, or None (this one)."""
    if not plan.attribution or plan.method.uses_layer:
        return None
    values = [str(v) for v in ctx.sweep.get(SWEPT_KEY, [])]
    if len(values) < 2 or not isinstance(settings.layer, str) or settings.layer == values[0]:
        return None
    return values[0]


def result(ctx: RunContext, plan: CamPlan, first: str) -> StageResult:
    """The record of a job that computed nothing: which job holds its maps, and why."""
    summary = (
        f"{plan.method.name} attributes to the input pixels and does not use cam.layer: its maps and "
        f"metrics are the same for every layer of this sweep; the job with cam.layer={first} computed "
        "them (nothing computed here)"
    )
    classes = "top1" if plan.classes is None else str(plan.classes)
    return StageResult(
        "cam",
        summary=summary,
        params={
            "method": plan.method.name,
            "layer": "input",
            "class": classes,
            "computed_by": f"cam.layer={first}",
        },
    )
