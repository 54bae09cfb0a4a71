"""``train/history.json`` and ``train/checkpoint.pt``: what a training run leaves, also when it stops.

``History`` is written after every epoch and once more when the run ends (ok, stopped by a
non-finite loss, or interrupted), so the file always says how far training got. It holds no
timings: the same seed and thread count on a CPU give the same file (oneDNN's sums depend on the
thread count, so ``threads`` is recorded). The checkpoint is the model's
``state_dict`` after the last good epoch (epoch 0: the weights training started from), written
atomically, loadable with ``model.checkpoint=<run>/train/checkpoint.pt`` (``weights_only=True``).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.files import write_atomic
from vizpipe.pipeline.stage import from_dict

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EpochRecord", "History", "Localisation", "load_state", "save_checkpoint"]

CHECKPOINT = "train/checkpoint.pt"
HISTORY = "train/history.json"


@dataclass
class EpochRecord:
    """One epoch's numbers."""

    epoch: int  # 1-based
    steps: int  # optimizer steps so far (the TensorBoard step at the epoch's end)
    train_loss: float | None  # mean cross-entropy over the epoch's batches (train mode)
    train_accuracy: float | None  # top-1 accuracy over the same batches
    val_loss: float | None  # over the whole val split (eval mode)
    val_accuracy: float | None
    lr: float | None  # the learning rate of the epoch's last step
    complete: bool = True  # False: cut short by train.max_steps


@dataclass
class Localisation:
    """The CAM method's localisation and the model's accuracy on the visualised images."""

    method: str  # the library's class name, e.g. GradCAM
    layer: str
    split: str  # the split they come from (input.split)
    images: int
    tolerance: float  # the pointing game's tolerance (fraction of the image side)
    chance: float | None  # the pointing game of a uniformly random point: the mean grown box area
    before: dict[str, float | None] = field(
        default_factory=dict
    )  # top1_accuracy, pointing_game, energy_in_box
    after: dict[str, float | None] = field(default_factory=dict)


@dataclass
class History:
    """Everything ``train/history.json`` holds."""

    model: str
    seed: int
    data: str  # input kind, e.g. shapes
    classes: list[str]
    train_images: int
    val_images: int
    settings: dict[str, Any]  # epochs, max_steps, batch_size, lr, optimizer, scheduler, grad_clip
    threads: int = 0  # torch.get_num_threads(): CPU results depend on it
    status: str = "running"  # running | ok | stopped (non-finite loss) | interrupted
    epochs_done: int = 0  # epochs run to their end (the last may be cut short by max_steps)
    steps_done: int = 0  # optimizer steps taken
    epochs: list[EpochRecord] = field(default_factory=list)
    localisation: Localisation | None = None
    error: str | None = None  # why training stopped early

    def add(self, record: EpochRecord) -> None:
        """Append an epoch's record and advance the counters."""
        self.epochs.append(record)
        self.epochs_done = len(self.epochs)
        self.steps_done = record.steps

    @property
    def last(self) -> EpochRecord | None:
        """The latest epoch's record."""
        return self.epochs[-1] if self.epochs else None

    def to_json(self) -> str:
        """The JSON text (NaN/inf are refused: the loop stores None)."""
        return json.dumps(dataclasses.asdict(self), indent=2, allow_nan=False) + "\n"

    def write(self, path: Path) -> Path:
        """Write atomically."""
        return write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> History:
        """Read a ``history.json`` back (unknown or missing keys raise)."""
        return from_dict(cls, json.loads(Path(path).read_text(encoding="utf-8")))


def save_checkpoint(path: Path, model: nn.Module) -> Path:
    """``torch.save(model.state_dict())`` through a temp file and a rename (never half a file)."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return write_atomic(path, buffer.getvalue())


def load_state(path: Path, model: nn.Module) -> None:
    """Put the checkpoint's weights back into ``model`` (strict, ``weights_only=True``)."""
    import torch

    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
