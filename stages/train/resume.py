"""The train stage's resume state: everything that makes the next epoch what it would have been.

After every epoch (``loop.fit``) the stage writes, atomically, into its progress state file
(``ctx.progress.state_path()``, ``.vizpipe/progress/train.state``, not an artifact): the model's
weights and buffers, the optimizer's and the scheduler's state, the step and epoch counters,
the random generators (the train loader's shuffling generator, torch's global one, which the
validation loader and dropout draw from, numpy's and Python's), and the ``Watcher``'s state
(history, CAM frames so far, the last learning rate). ``resume=`` loads it (``weights_only``:
a run folder never runs code) and goes on with the next epoch: on a CPU the resumed run ends
with the same weights as an uninterrupted one. TensorBoard's writers reopen with ``purge_step``
so the steps the killed run logged after its last epoch are not shown twice.
"""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext

log = logging.getLogger(__name__)

__all__ = ["load_state", "save_state"]

VERSION = 1


def _numpy_state() -> list[Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [
        str(kind),
        torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        int(pos),
        int(has_gauss),
        float(gauss),
    ]


def _set_numpy_state(state: list[Any]) -> None:
    import numpy as np

    kind, keys, pos, has_gauss, gauss = state
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def save_state(
    path: Path | None,
    ctx: RunContext,
    optimizer: Any,
    scheduler: Any,
    shuffle: Any,
    epoch: int,
    watch: dict[str, Any],
) -> None:
    """Write the state after ``epoch`` (nothing when ``path`` is None: no progress record)."""
    if path is None:
        return
    import torch
    from vizpipe.pipeline.files import write_atomic

    doc = {
        "version": VERSION,
        "epoch": epoch,
        "model": ctx.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "shuffle": shuffle.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(),
        "python": random.getstate(),
        "watch": watch,
    }
    buffer = io.BytesIO()
    torch.save(doc, buffer)
    write_atomic(path, buffer.getvalue())


def load_state(path: Path | None) -> dict[str, Any] | None:
    """The state a killed run left (None: none, or one that cannot be read: training starts over)."""
    if path is None or not path.is_file():
        return None
    import torch

    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: start over, say so
        log.warning("train: the resume state %s cannot be read (%s); training starts over", path, exc)
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None
    return doc


def apply_state(doc: dict[str, Any], ctx: RunContext, optimizer: Any, scheduler: Any, shuffle: Any) -> int:
    """Put the state back (weights, optimizer, scheduler, generators); returns the epoch it ended."""
    import torch

    ctx.model.load_state_dict(doc["model"], strict=True)
    optimizer.load_state_dict(doc["optimizer"])
    if scheduler is not None and doc["scheduler"] is not None:
        scheduler.load_state_dict(doc["scheduler"])
    shuffle.set_state(doc["shuffle"])
    torch.set_rng_state(doc["torch"])
    if doc["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(doc["cuda"])
    _set_numpy_state(doc["numpy"])
    random.setstate(doc["python"])
    log.info("train: resuming after epoch %d (step %d)", int(doc["epoch"]), int(doc["watch"]["steps"]))
    return int(doc["epoch"])
