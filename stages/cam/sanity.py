"""``cam.sanity``: Adebayo et al.'s checks of the configured method, for the stage's record.

The method's maps of the data set's first ``cam.sanity_images`` images (for each image's class:
``cam.target_class``'s first entry, else its top-1 on the trained model) are computed on the
trained model, on a copy re-initialised layer by layer from the top (``parameters``;
``vizpipe.pipeline.metrics.sanity.cascade``) and on the model the train stage trained on random
labels (``data``; ``RunContext.variants["random_labels"]``), and compared (Spearman, SSIM);
``vizpipe.pipeline.metrics.sanity`` says how and when a method passes.

Written: ``cam/sanity/sanity.json`` (every similarity, per step and image, and the verdicts),
``cam/sanity/row.png`` (the paper's figure for this method: the first image's map on the trained
model and after each step; the sweep index stacks every job's row into one figure),
``cam/sanity/maps.png`` (every image) and ``cam/sanity/similarity.png`` (the mean similarity
after each step, as the paper's curves); the figures show at most ``COLUMNS`` columns (a deep
model's cascade has a step per module: evenly spaced ones, the first and last among them). Key
numbers: ``cam/sanity/parameters`` (the mean Spearman correlation over the cascade's steps) and
``cam/sanity/data`` (with the random-label model); lower is better, the pass line is
``cam.sanity_threshold``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.render import save_figure
from vizpipe.pipeline.stage import Picture, Scalar, StageResult, Table

if TYPE_CHECKING:
    import torch
    from torch import nn
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.cam.plan import CamPlan

__all__ = ["add", "explainer"]

#: the figure the sweep index stacks, one row per job (``Picture.stack``)
FIGURE = "Randomisation check (Adebayo et al. 2018): rows methods, columns layers randomised from the top"
DATA_STEP = "random labels"
#: most columns drawn in the figures (a deep model's cascade has one step per module: evenly spaced)
COLUMNS = 12


def _images(ctx: RunContext, n: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """The data set's first ``n`` images: model input (n, C, H, W), pixels (n, H, W, 3), names."""
    import torch

    xs, rgbs, names = [], [], []
    for batch in ctx.inputs.batches():
        take = n - sum(len(x) for x in xs)
        xs.append(batch.tensor[:take])
        rgbs.append(batch.rgb[:take])
        names += batch.names[:take]
        if sum(len(x) for x in xs) >= n:
            break
    return torch.cat(xs), np.concatenate(rgbs), names


def explainer(
    ctx: RunContext, settings: Any, plan: CamPlan, x: torch.Tensor, rgb: np.ndarray, classes: list[int]
) -> Any:
    """``explain(model) -> (n, H, W) maps`` of the configured method for ``x`` and ``classes``."""

    def explain(model: nn.Module) -> np.ndarray:
        import torch
        from vizpipe.pipeline.layers import model_output

        with torch.no_grad():
            logits = model_output(model(x)).detach().float().cpu()
        if plan.attribution:
            from vizpipe.pipeline.attribution.runner import AttributionRunner

            inputs = ctx.inputs
            runner: Any = AttributionRunner(
                model,
                settings,
                plan.method,
                plan.layers,
                kwargs=plan.kwargs,
                seed=ctx.seed,
                mean=inputs.mean,
                std=inputs.std,
            )
            with runner:
                _, out = runner.maps(x, [classes], logits, rgb=rgb, first_index=0)
        else:
            from vizpipe.pipeline.gradcam.adapter import CamRunner

            order = list(ctx.probe().shapes)
            with CamRunner(
                model, settings, plan.method, plan.layers, kwargs=plan.kwargs, order=order
            ) as runner:
                _, out = runner.maps(x, [classes], logits)
        return np.nan_to_num(np.asarray(out[0][0], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    return explain


def add(ctx: RunContext, settings: Any, plan: CamPlan, record: StageResult) -> None:
    """Run the checks of ``plan.sanity`` and add their files, pictures, table and numbers to ``record``."""
    from vizpipe.pipeline.hooks import preserved
    from vizpipe.pipeline.layers import top_classes
    from vizpipe.pipeline.metrics import sanity

    x, rgb, names = _images(ctx, int(settings.sanity_images))
    with preserved(ctx.model):
        import torch
        from vizpipe.pipeline.layers import model_output

        with torch.no_grad():
            logits = model_output(ctx.model(x)).detach().float().cpu()
        classes = [plan.classes[0]] * len(x) if plan.classes else top_classes(logits, 1)[:, 0].tolist()
        explain = explainer(ctx, settings, plan, x, rgb, classes)
        columns: list[tuple[str, np.ndarray]] = [("trained", explain(ctx.model))]
        steps: list[Any] = []
        if "parameters" in plan.sanity:
            for name, maps, sim in sanity.explain_each(
                explain, ctx.model, sanity.cascade(ctx.model, ctx.seed), columns[0][1]
            ):
                columns.append((name, maps))
                steps.append(sim)
        data = None
        if "data" in plan.sanity:
            other = ctx.variants.get("random_labels")
            if other is None:
                ctx.warn(
                    "cam.sanity=data needs the model trained on random labels: add the train stage with "
                    "train.random_labels=true before cam; the data randomisation check did not run"
                )
            else:
                with preserved(other):
                    maps = explain(other)
                columns.append((DATA_STEP, maps))
                data = sanity.similarity(DATA_STEP, columns[0][1], maps)
    _record(ctx, settings, plan, record, columns, steps, data, names)


def _record(
    ctx: RunContext,
    settings: Any,
    plan: CamPlan,
    record: StageResult,
    columns: list[tuple[str, np.ndarray]],
    steps: list[Any],
    data: Any,
    names: list[str],
) -> None:
    """Files, pictures, table and key numbers of the checks."""
    from vizpipe.pipeline.files import write_json
    from vizpipe.pipeline.metrics import sanity

    threshold = float(settings.sanity_threshold)
    cascade = sanity.over_steps(steps)
    verdicts = {"parameters": sanity.verdict(cascade, threshold) if steps else None}
    if "data" in plan.sanity:
        verdicts["data"] = sanity.verdict(data, threshold)
    label = f"{plan.method.name} @ {plan.label}"
    doc = {
        "method": plan.method.name,
        "layer": plan.label,
        "images": names,
        "threshold": threshold,
        "verdicts": verdicts,
        "steps": [
            {"randomised": s.step, "spearman": s.spearman, "ssim": s.ssim}
            for s in [*steps, *([data] if data else [])]
        ],
    }
    write_json(ctx.claim("cam/sanity/sanity.json"), doc)
    columns = _shown(plan, _fewer(columns))
    draw_row(ctx.claim("cam/sanity/row.png"), label, [(n, m[0]) for n, m in columns])
    draw_grid(ctx.claim("cam/sanity/maps.png"), label, columns, names)
    draw_similarity(
        ctx.claim("cam/sanity/similarity.png"), label, [*steps, *([data] if data else [])], threshold
    )
    record.files.append("cam/sanity/sanity.json")
    first = f"{label}: {names[0]} on the trained model, then each layer randomised"
    record.pictures += [
        Picture("cam/sanity/row.png", first, group="Sanity checks", stack=FIGURE, tag="cam/sanity/row"),
        Picture("cam/sanity/maps.png", f"{label}: every checked image (rows)", group="Sanity checks"),
        Picture(
            "cam/sanity/similarity.png",
            f"{label}: mean similarity to the trained model's maps",
            group="Sanity checks",
            tag="cam/sanity/similarity",
        ),
    ]
    rows = [[s.step, s.mean_spearman, s.mean_ssim] for s in [*steps, *([data] if data else [])]]
    record.tables.append(
        Table(
            "Sanity checks (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292)",
            ["Randomised (cumulative, from the top)", "Mean Spearman", "Mean SSIM"],
            rows,
            group="Sanity checks",
            caption=f"{len(names)} image(s); pass: the mean Spearman correlation over the steps is below "
            f"{threshold}; " + ", ".join(f"{k}: {v or 'not run'}" for k, v in verdicts.items()),
            code=[0],
        )
    )
    for key, sim in (("parameters", cascade), ("data", data)):
        if sim is not None:
            record.scalars.append(
                Scalar(f"cam/sanity/{key}", sim.mean_spearman, key=True, better="lower", threshold=threshold)
            )
            record.scalars.append(Scalar(f"cam/sanity/{key}_ssim", sim.mean_ssim, better="lower"))
    record.summary += "; sanity: " + ", ".join(f"{k} {v or 'not run'}" for k, v in verdicts.items())


def _tile(cam: np.ndarray) -> np.ndarray:
    """A map as drawn: the JET heat map of it in [0, 1] (H, W, 3) uint8."""
    from vizpipe.stages.cam.draw import heatmap_rgb

    return heatmap_rgb(np.clip(np.nan_to_num(cam), 0.0, 1.0))


def _fewer(columns: list[tuple[str, np.ndarray]], limit: int = COLUMNS) -> list[tuple[str, np.ndarray]]:
    """At most ``limit`` columns for the figures: the trained model, the random-label model and
    evenly spaced steps of the cascade, its first and last included (``sanity.json`` has them all)."""
    head, tail = columns[:1], [c for c in columns[1:] if c[0] == DATA_STEP]
    steps = [c for c in columns[1:] if c[0] != DATA_STEP]
    room = max(2, limit - len(head) - len(tail))
    if len(steps) > room:
        keep = sorted({round(i * (len(steps) - 1) / (room - 1)) for i in range(room)})
        steps = [steps[i] for i in keep]
    return [*head, *steps, *tail]


def _shown(plan: CamPlan, columns: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """The maps as the stage draws them (a pixel attribution: as captum draws it)."""
    if not plan.attribution:
        return columns
    from vizpipe.pipeline.attribution.runner import display_scale

    return [(name, np.stack([display_scale(m) for m in maps])) for name, maps in columns]


def draw_row(path: Any, label: str, cells: list[tuple[str, np.ndarray]]) -> None:
    """The paper's figure for one method: one map per column (trained, then each step), titled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 + 1.1 * len(cells), 1.55), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    for ax, (name, cam) in zip(axes, cells, strict=True):
        ax.imshow(_tile(cam), interpolation="nearest")
        ax.set_title(name, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=1.8 / (1.9 + 1.1 * len(cells)), right=0.99, top=0.8, bottom=0.04, wspace=0.08)
    save_figure(fig, path)


def draw_grid(path: Any, label: str, columns: list[tuple[str, np.ndarray]], names: list[str]) -> None:
    """Every checked image (rows) on the trained model and after each step (columns)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n, k = len(names), len(columns)
    fig = Figure(figsize=(1.6 + 1.0 * k, 0.4 + 1.0 * n), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, k, squeeze=False)
    for j, (step, maps) in enumerate(columns):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(_tile(maps[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(step, fontsize=7)
            if j == 0:
                ax.set_ylabel(names[i], fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(label, fontsize=8)
    fig.subplots_adjust(
        left=1.5 / (1.6 + 1.0 * k),
        right=0.99,
        top=1 - 0.35 / (0.4 + n),
        bottom=0.02,
        wspace=0.06,
        hspace=0.06,
    )
    save_figure(fig, path)


def draw_similarity(path: Any, label: str, steps: list[Any], threshold: float) -> None:
    """Mean Spearman and SSIM (with their spread over the images) after each step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 0.55 * len(steps) + 1.5), 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(steps))
    for attr, colour in (("spearman", "tab:blue"), ("ssim", "tab:orange")):
        values = [np.asarray(getattr(s, attr)) for s in steps]
        mean = np.array([v.mean() for v in values])
        ax.plot(x, mean, marker="o", color=colour, label=f"mean {attr}")
        ax.fill_between(x, [v.min() for v in values], [v.max() for v in values], color=colour, alpha=0.15)
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"pass line {threshold}")
    every = max(1, len(steps) // 24)  # at most ~24 labels
    ax.set_xticks(x[::every], [s.step for s in steps][::every], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(-0.2, 1.05)
    ax.set_ylabel("similarity to the trained model's maps")
    ax.set_title(label, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
