"""Figures the sweep index stacks from every job's pictures: ``<sweep>/figures/<name>.png``.

A stage marks a picture with ``Picture.stack`` (a figure's name) when the sweep should show it
as one row of a figure across jobs: the CAM stage's randomisation check draws, per job, the
method's maps on the trained model and after each layer is randomised; stacked, they are
Adebayo et al.'s figure (rows: methods, columns: layers randomised). The rows come in job order,
each job's picture as it is (padded on the right to the widest), and the figure is written next
to ``index.html`` so it can be linked or copied (the README shows the shapes demo's).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.files import write_atomic
from vizpipe.pipeline.report.common import THUMBS, PictureView, embed, url

if TYPE_CHECKING:
    from vizpipe.pipeline.report.jobs import SweepData

__all__ = ["FIGURES", "stacked_figures"]

#: the folder (in the sweep folder) the stacked figures go to
FIGURES = "figures"
#: widest figure embedded in the index (pixels); the file keeps its full size
SHOWN_PX = 1600


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name.split(":")[0].split("(")[0]).strip("_").lower() or "figure"


def stacked_figures(data: SweepData) -> list[dict[str, Any]]:
    """Write every stacked figure of the sweep; their views for the index (name, picture, rows)."""
    import numpy as np
    from PIL import Image

    names = list(dict.fromkeys(p.stack for j in data.jobs for p in j.stacks if p.stack))
    out = []
    for name in names:
        rows, labels = [], []
        for j in data.jobs:
            for p in j.stacks:
                path = data.sweep_dir / j.name / p.path
                if p.stack == name and path.is_file():
                    with Image.open(path) as im:
                        rows.append(np.asarray(im.convert("RGB")))
                    labels.append(j.name)
        if not rows:
            continue
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        rel = f"{FIGURES}/{_slug(name)}.png"
        target = Path(data.sweep_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(np.concatenate(padded)).save(buffer, format="png")
        write_atomic(target, buffer.getvalue())
        view = embed(
            Path(data.sweep_dir), PictureView(rel, name, name), SHOWN_PX, cache=Path(data.sweep_dir) / THUMBS
        )
        out.append({"name": name, "picture": view, "href": url(rel), "rows": len(rows), "jobs": labels})
    return out
