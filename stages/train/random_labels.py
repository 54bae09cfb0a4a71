"""``train.random_labels``: the same network trained on random labels (the data randomisation check).

Adebayo et al. 2018 (https://arxiv.org/abs/1810.03292) compare a method's maps on the trained model
with its maps on the same network trained, the same way, on labels that carry no information: a
map that explains the model must change. After the real training, the stage trains a copy of the
model *as it was before training* on the train split with each image's label replaced by a class
drawn uniformly at random (fixed per image: seeded by the run's seed and the image's index), with
the same optimizer, schedule, epochs and shuffling, without logging. The copy goes to the stages
after as ``RunContext.variants["random_labels"]`` (the CAM stage's ``cam.sanity=[...,data]``) and
to ``train/random_labels.pt``; the record gets its train and val accuracy (val against the true
labels: near chance when nothing real was learnt). ``resume=`` after the stage finished puts
the copy back from its checkpoint (``restore``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Inputs
    from vizpipe.pipeline.stage import StageResult

log = logging.getLogger(__name__)

CHECKPOINT = "train/random_labels.pt"
NAME = "random_labels"  # its key in RunContext.variants


class RandomLabels:
    """A data set's items with each label replaced by a class drawn at random (fixed per item)."""

    def __init__(self, dataset: Any, classes: int, seed: int) -> None:
        self.dataset, self.classes, self.seed = dataset, int(classes), int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np

        item = dict(self.dataset[i])
        rng = np.random.default_rng([abs(self.seed), 7, int(i)])  # 7: this stream, apart from the data's
        item["label"] = int(rng.integers(self.classes))
        return item


class Quiet:
    """The ``Watcher`` calls ``loop.fit`` makes, counting steps and keeping the last epoch's numbers."""

    def __init__(self) -> None:
        self.steps = 0
        self.last: dict[str, float | None] = {}

    def start(self) -> None:
        """Nothing is written."""

    def first_batch(self, x: Any, rgb: Any) -> None:
        """Nothing is drawn."""

    def step(self, loss: float, accuracy: float | None = None, lr: float | None = None, n: int = 1) -> int:
        """Count the step."""
        self.steps += 1
        return self.steps

    def epoch(self, val_loss: float | None, val_accuracy: float | None, **numbers: Any) -> None:
        """Keep the epoch's numbers."""
        self.last = {"val_loss": val_loss, "val_accuracy": val_accuracy, **numbers}

    def state(self) -> dict[str, Any]:
        """Nothing to resume from: the copy is not in the stage's resume state."""
        return {}


def train_copy(
    ctx: RunContext,
    settings: Any,
    splits: dict[str, Inputs],
    initial: dict[str, torch.Tensor],
    fit: Callable[..., Any],
) -> dict[str, float | None]:
    """Train a copy of the model (from ``initial``) on random labels with ``fit`` (the training
    loop's, handed in by it); put it in ``ctx.variants``."""
    from vizpipe.pipeline.progress import Progress
    from vizpipe.stages.train.record import save_checkpoint

    twin = copy.deepcopy(ctx.model)
    twin.load_state_dict(initial)
    classes = len(ctx.inputs.classes or []) or ctx.num_classes
    shuffled = dataclasses.replace(
        splits["train"], dataset=RandomLabels(splits["train"].dataset, classes, ctx.seed)
    )
    quiet = Quiet()
    log.info(
        "train: now the same network on random labels (train.random_labels: the data randomisation check)"
    )
    # no progress record: the resume state (train.state) stays the real training's; a run killed
    # while the copy trains trains the copy again from ``initial`` when resumed
    alone = dataclasses.replace(ctx, model=twin, progress=Progress.off())
    fit(alone, settings, {"train": shuffled, "val": splits["val"]}, quiet)
    twin.eval()
    save_checkpoint(ctx.claim(CHECKPOINT), twin)
    ctx.variants[NAME] = twin
    return quiet.last


def restore(ctx: RunContext, result: StageResult) -> None:
    """``resume=`` after the train stage finished: its random-label copy back in ``ctx.variants``."""
    from vizpipe.stages.train.record import load_state

    if CHECKPOINT not in result.files:
        return
    twin = copy.deepcopy(ctx.model)
    load_state(ctx.output_dir / CHECKPOINT, twin)
    ctx.variants[NAME] = twin.eval()


def add_to_record(record: StageResult, numbers: dict[str, float | None]) -> None:
    """The random-label model's accuracy and checkpoint, in the train stage's record."""
    from vizpipe.pipeline.stage import Table

    rows = [
        ["train accuracy (on its random labels)", numbers.get("train_accuracy")],
        ["val accuracy (true labels)", numbers.get("val_accuracy")],
        ["val loss (true labels)", numbers.get("val_loss")],
        ["checkpoint", CHECKPOINT],
    ]
    record.tables.append(
        Table(
            "The same network trained on random labels (train.random_labels)",
            ["", "value"],
            rows,
            caption="for the CAM stage's data randomisation check (cam.sanity=[...,data])",
            kv=True,
        )
    )
    record.files.append(CHECKPOINT)
    record.summary += f"; random-label copy: val accuracy {numbers.get('val_accuracy')}"
