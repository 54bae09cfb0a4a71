"""What the CAM stage's metrics mean and cost, for its record: one table, the curves, the times.

``add`` puts into the stage's record, when any metric was recorded:

* the table "Metrics": per metric its family, which way is better, what it scores, one sentence
  and a link to its paper (``vizpipe.pipeline.metrics.registry.METRICS``);
* "Time per metric": the seconds each metric (and the sanity checks) took over the run (the CAM
  maps' own time is the stage's, in the manifest). Timings stay out of ``cam.json``, which is
  byte-identical for one config;
* with deletion/insertion: ``cam/curves.json`` (each curve's mean over the valid maps, and the
  AUC of that mean) and ``cam/curves.png`` (both mean curves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.metrics.registry import METRICS
from vizpipe.pipeline.render import save_figure
from vizpipe.pipeline.stage import Picture, StageResult, Table

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.cam.plan import CamPlan

__all__ = ["add", "metrics_table"]


def metrics_table(names: list[str]) -> Table:
    """The report's explanation of each metric in ``names`` (one sentence, the paper linked)."""
    rows = []
    for name in names:
        m = METRICS[name]
        rows.append([name, m.family, f"{m.better} is better", m.sentence, m.paper, m.url])
    return Table(
        "Metrics",
        ["Metric", "Family", "Direction", "What it measures", "Paper", "Link"],
        rows,
        caption="each number in this section is the mean over the valid maps (vizpipe.pipeline.metrics)",
        links=[5],
        code=[0],
    )


def add(ctx: RunContext, plan: CamPlan, run: Any, record: StageResult) -> None:
    """The metrics' explanations, times and curves, added to the stage's ``record``."""
    names = [k for k in record.data.means if k in METRICS] if record.data is not None else []
    if names:
        record.tables.append(metrics_table(names))
    if run.seconds:
        maps = sum(len(img.maps) for img in run.images.values())
        rows = [
            [name, round(sec, 3), round(1000 * sec / max(maps, 1), 3)] for name, sec in run.seconds.items()
        ]
        record.tables.append(
            Table(
                "Time per metric",
                ["Metric", "Seconds", "ms per map"],
                rows,
                caption=f"{maps} map(s); the sanity checks recompute maps of their own images",
            )
        )
    if run.curves:
        _curves(ctx, run.curves, record)


def _curves(ctx: RunContext, curves: dict[str, list[np.ndarray]], record: StageResult) -> None:
    """``cam/curves.json`` and ``cam/curves.png``: the mean deletion/insertion curves."""
    from vizpipe.pipeline.files import write_json
    from vizpipe.pipeline.metrics.perturbation import auc

    doc: dict[str, Any] = {}
    for mode, items in curves.items():
        lengths = [len(c) for c in items]
        common = max(set(lengths), key=lengths.count)  # images of one size share the number of steps
        mean = np.mean([c for c in items if len(c) == common], axis=0)
        doc[mode] = {
            "maps": lengths.count(common),
            "mean": [float(v) for v in mean],
            "auc_of_mean": float(auc(mean)),
        }
    write_json(ctx.claim("cam/curves.json"), doc)
    _plot(ctx.claim("cam/curves.png"), doc)
    record.files.append("cam/curves.json")
    record.pictures.append(
        Picture(
            "cam/curves.png",
            "Deletion and insertion (RISE): the class's mean probability as the map's top pixels are "
            "deleted / inserted first",
            group="Metrics",
            tag="cam/curves",
        )
    )


def _plot(path: Any, doc: dict[str, Any]) -> None:
    """Both mean curves on one axis: x the fraction of pixels changed, y the class's probability."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for mode, entry in doc.items():
        mean = np.asarray(entry["mean"])
        x = np.linspace(0.0, 1.0, len(mean))
        ax.plot(x, mean, label=f"{mode} (AUC {entry['auc_of_mean']:.3f})")
        ax.fill_between(x, mean, alpha=0.15)
    ax.set_xlabel("fraction of pixels deleted / inserted")
    ax.set_ylabel("probability of the class")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
