"""The CAM stage's per-batch progress record: what a finished batch added, and how to put it back.

``collect`` (``compute.py``) records each batch of each layer group in ``ctx.progress``
(``vizpipe.pipeline.progress``) once all its maps' files are written: the rows of the images it
saw first (``CamImage`` without maps), the ``CamMap`` rows it added and the perturbation passes
it ran. A resumed run skips the recorded batches and ``replay`` puts their rows back in the
original order, so ``cam.json`` and every ``.npy`` are what an uninterrupted run writes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.stage import from_dict
from vizpipe.stages.cam.record import CamImage, CamMap

if TYPE_CHECKING:
    from vizpipe.pipeline.inputs import Batch
    from vizpipe.stages.cam.rows import Collector

__all__ = ["batch_record", "marks", "replay"]


def marks(run: Collector) -> dict[int, int]:
    """How many maps each image row holds now (``batch_record`` takes what came after)."""
    return {index: len(img.maps) for index, img in run.images.items()}


def batch_record(
    run: Collector, batch: Batch, before: dict[int, int], passes: int
) -> tuple[list[str], dict[str, Any]]:
    """(files, data) of what ``batch`` added since ``before`` (``marks``): new image rows, new map rows."""
    images: dict[str, Any] = {}
    maps: dict[str, Any] = {}
    files: list[str] = []
    for index in batch.index:
        img = run.images.get(index)
        if img is None:
            continue
        start = before.get(index)
        if start is None:
            images[str(index)] = dataclasses.asdict(dataclasses.replace(img, maps=[]))
            if img.prediction:  # a segmentation's or detection's prediction picture
                files.append(img.prediction)
        added = img.maps[start or 0 :]
        maps[str(index)] = [dataclasses.asdict(m) for m in added]
        files += [path for m in added for path in (m.npy, m.overlay, m.heatmap) if path]
    return files, {"images": images, "maps": maps, "passes": passes}


def replay(run: Collector, data: dict[str, Any]) -> None:
    """Put a recorded batch's rows back (as if it had just been computed)."""
    for key, head in data["images"].items():
        run.images.setdefault(int(key), from_dict(CamImage, head))
    for key, rows in data["maps"].items():
        run.images[int(key)].maps.extend(from_dict(CamMap, row) for row in rows)
    run.passes += int(data.get("passes") or 0)
