"""The CAM stage's per-batch progress record: what a finished batch added, and how to put it back.

``collect`` (``compute.py``) records each batch of each layer group in ``ctx.progress``
(``vizpipe.pipeline.progress``) once all its maps' files are written: the rows of the images it
saw first (``CamImage`` without maps), the ``CamMap`` rows it added, the perturbation passes
it ran, the deletion/insertion curves of its valid maps (``cam/curves.json``'s means; float64,
exact through JSON) and the seconds its metrics took. A resumed run skips the recorded batches
and ``replay`` puts their rows back in the original order, so ``cam.json``, ``cam/curves.json``
and every ``.npy`` are what an uninterrupted run writes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.stage import from_dict
from vizpipe.stages.cam.record import CamImage, CamMap

if TYPE_CHECKING:
    from vizpipe.pipeline.inputs import Batch
    from vizpipe.stages.cam.rows import Collector

__all__ = ["Marks", "batch_record", "marks", "replay"]


@dataclasses.dataclass
class Marks:
    """What the collector held before a batch (``batch_record`` takes what came after)."""

    maps: dict[int, int]  # image index -> map rows
    curves: dict[str, int]  # deletion/insertion -> curves kept
    seconds: dict[str, float]  # metric -> seconds so far


def marks(run: Collector) -> Marks:
    """How many maps each image row holds now, the curves kept and the metrics' seconds."""
    return Marks(
        {index: len(img.maps) for index, img in run.images.items()},
        {mode: len(items) for mode, items in run.curves.items()},
        dict(run.seconds),
    )


def batch_record(
    run: Collector, batch: Batch, before: Marks, passes: int
) -> tuple[list[str], dict[str, Any]]:
    """(files, data) of what ``batch`` added since ``before`` (``marks``): new image rows, new map
    rows, new curves and the metrics' seconds."""
    images: dict[str, Any] = {}
    maps: dict[str, Any] = {}
    files: list[str] = []
    for index in batch.index:
        img = run.images.get(index)
        if img is None:
            continue
        start = before.maps.get(index)
        if start is None:
            images[str(index)] = dataclasses.asdict(dataclasses.replace(img, maps=[]))
            if img.prediction:  # a segmentation's or detection's prediction picture
                files.append(img.prediction)
        added = img.maps[start or 0 :]
        maps[str(index)] = [dataclasses.asdict(m) for m in added]
        files += [path for m in added for path in (m.npy, m.overlay, m.heatmap) if path]
    curves = {
        mode: [[float(v) for v in c] for c in items[before.curves.get(mode, 0) :]]
        for mode, items in run.curves.items()
    }
    seconds = {k: v - before.seconds.get(k, 0.0) for k, v in run.seconds.items()}
    data = {"images": images, "maps": maps, "passes": passes, "curves": curves, "seconds": seconds}
    return files, data


def replay(run: Collector, data: dict[str, Any]) -> None:
    """Put a recorded batch's rows back (as if it had just been computed)."""
    for key, head in data["images"].items():
        run.images.setdefault(int(key), from_dict(CamImage, head))
    for key, rows in data["maps"].items():
        run.images[int(key)].maps.extend(from_dict(CamMap, row) for row in rows)
    run.passes += int(data.get("passes") or 0)
    for mode, items in (data.get("curves") or {}).items():
        run.curves.setdefault(mode, []).extend(np.asarray(c, dtype=np.float64) for c in items)
    for name, seconds in (data.get("seconds") or {}).items():
        run.seconds[name] = run.seconds.get(name, 0.0) + float(seconds)
