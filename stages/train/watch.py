"""Watching a model learn: the one implementation behind the train stage and ``vizpipe.Watch``.

A ``Watcher`` gets told what a training loop did, whoever wrote the loop (the train stage's
``loop.fit``, a hand-written loop through ``vizpipe.Watch``, a Lightning ``Trainer`` through
``vizpipe.integrations.lightning``), and writes everything the train stage is known for:

* ``start()``, before the first step: the pointing game before training (data with boxes), the
  checkpoint and ``history.json`` of epoch 0 (when asked), weight histograms and CAM frames at 0;
* ``first_batch(x, rgb)``: the model graph and the ``make_grid`` of the first training batch;
* ``step(loss, accuracy, lr)``: the step counter and, every ``log_every`` steps, the scalars;
* ``epoch(val_loss, val_accuracy, ...)``: the val curve, weight and gradient histograms, the CAM
  frames, the epoch's record (``history.json``, the checkpoint) and one log line;
* ``finish()``: the pointing game after training and the record (``result.py``), also the
  report section.

TensorBoard is ``board.py`` (two writers, one tag per number), the frames and the pointing game
are ``frames.py``, the files ``record.py``. The model is only read: every drawing runs inside
``vizpipe.pipeline.hooks.preserved``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Inputs
    from vizpipe.pipeline.stage import StageResult
    from vizpipe.stages.train.plan import TrainPlan
    from vizpipe.stages.train.record import EpochRecord, History

log = logging.getLogger(__name__)

__all__ = ["Watcher"]


class Watcher:
    """TensorBoard, CAM over time, histograms, pointing game and record of one training run.

    ``ctx``: the model, device and run folder (``ctx.inputs``: the images the pointing game is
    measured on); ``settings``: a ``TrainConfig`` (``log_every``, ``histograms``, ``graph``,
    ``backend``, ``cam_images``, ``pointing_game``, ``pointing_tolerance``, ``image_weight``);
    ``plan``: the CAM method and layers; ``val``: the images whose maps are drawn over time;
    ``checkpoint``/``history_path``: where the weights and ``history.json`` go (None: not written).
    A context manager: the writers are closed on exit, also after an error.
    """

    def __init__(
        self,
        ctx: RunContext,
        settings: Any,
        plan: TrainPlan,
        val: Inputs | None,
        history: History,
        *,
        checkpoint: Path | None = None,
        history_path: Path | None = None,
    ) -> None:
        from vizpipe.stages.train.board import Board
        from vizpipe.stages.train.frames import CamFrames, measure

        self.ctx, self.settings, self.plan, self.history = ctx, settings, plan, history
        self.checkpoint, self.history_path = checkpoint, history_path
        self.tolerance = float(settings.pointing_tolerance)
        self.measuring = bool(settings.pointing_game) and plan.method is not None
        self.before = measure(ctx, plan, self.tolerance) if self.measuring else None
        count = int(settings.cam_images) if val is not None else 0
        self.frames = CamFrames(ctx, plan, val, count, float(settings.image_weight))
        self.board = Board(ctx, settings)
        self.log_every = max(1, int(settings.log_every))
        self.steps = 0  # optimizer steps seen
        self.last_lr: float | None = None  # the lr of the latest step that gave one
        self.epochs = 0  # epochs ended
        self._sums = [0.0, 0.0, 0.0, 0.0]  # loss, accuracy, their weights: this epoch's running means
        self._graphed = False

    def __enter__(self) -> Watcher:
        """Open the TensorBoard writers."""
        self.board.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the writers (their files stay)."""
        self.board.__exit__(*exc)

    # ------------------------------------------------------------------ what the loop tells

    def start(self) -> None:
        """Epoch 0: the weights training starts from (checkpoint, histograms) and their maps."""
        from vizpipe.stages.train.record import save_checkpoint

        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.ctx.model)
        self.write_history()
        self.board.parameters(self.ctx.model, 0, gradients=False)
        self.board.cam_frames(0, self.frames.capture(0))

    def first_batch(self, x: torch.Tensor, rgb: torch.Tensor | None) -> None:
        """The model graph (traced on ``x``) and the grid of the first training batch ``rgb``."""
        if self._graphed:
            return
        self._graphed = True
        self.board.graph(self.ctx.model, x)
        if rgb is not None:
            self.board.input_grid(rgb)

    def step(self, loss: float, accuracy: float | None = None, lr: float | None = None, n: int = 1) -> int:
        """One optimizer step (``n`` images); scalars every ``log_every`` steps. Returns the step."""
        self.steps += 1
        if lr is not None:
            self.last_lr = lr
        if loss is not None:
            self._sums[0] += float(loss) * n
            self._sums[2] += n
        if accuracy is not None:
            self._sums[1] += float(accuracy) * n
            self._sums[3] += n
        if self.steps % self.log_every == 0:
            self.board.step(self.steps, loss, accuracy, lr)
        return self.steps

    def epoch(
        self,
        val_loss: float | None = None,
        val_accuracy: float | None = None,
        *,
        train_loss: float | None = None,
        train_accuracy: float | None = None,
        lr: float | None = None,
        complete: bool = True,
    ) -> EpochRecord:
        """An epoch ended: val curve, histograms, CAM frames, its record, checkpoint and history.

        ``train_loss``/``train_accuracy`` default to the means of this epoch's ``step`` values.
        """
        from vizpipe.stages.train.record import EpochRecord, save_checkpoint

        loss_sum, acc_sum, loss_n, acc_n = self._sums
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self.epochs += 1
        self.board.validation(self.steps, val_loss, val_accuracy)
        self.board.parameters(self.ctx.model, self.epochs, gradients=True)
        self.board.cam_frames(self.epochs, self.frames.capture(self.epochs))
        record = EpochRecord(
            epoch=self.epochs,
            steps=self.steps,
            train_loss=train_loss if train_loss is not None or not loss_n else loss_sum / loss_n,
            train_accuracy=train_accuracy if train_accuracy is not None or not acc_n else acc_sum / acc_n,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            complete=complete,
        )
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.ctx.model)
        self.history.add(record)
        self.write_history()
        return record

    def state(self) -> dict[str, Any]:
        """What a resumed run needs of this watcher after an epoch (``stages/train/resume.py``)."""
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "last_lr": self.last_lr,
            "graphed": self._graphed,
            "history": self.history.to_json(),
            "frames": self.frames.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from ``state`` (call before entering: the writers then purge the later steps)."""
        import dataclasses
        import json

        from vizpipe.pipeline.stage import from_dict
        from vizpipe.stages.train.record import History

        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])
        self.last_lr, self._graphed = state["last_lr"], bool(state["graphed"])
        saved = from_dict(History, json.loads(state["history"]))
        for f in dataclasses.fields(History):  # the same object the stage holds
            setattr(self.history, f.name, getattr(saved, f.name))
        self.frames.restore(state["frames"])
        self.board.purge_step = self.steps + 1

    def write_history(self) -> None:
        """``history.json`` as it stands (when it has a place)."""
        if self.history_path is not None:
            self.history.write(self.history_path)

    # ------------------------------------------------------------------ the end

    def finish(self, files: list[str] | None = None) -> StageResult:
        """The pointing game after training, ``history.json`` (status ok) and the record."""
        from vizpipe.stages.train.frames import measure
        from vizpipe.stages.train.record import Localisation
        from vizpipe.stages.train.result import result

        if self.measuring and self.before is not None:
            after = measure(self.ctx, self.plan, self.tolerance)
            before = dict(self.before)
            self.history.localisation = Localisation(
                method=self.plan.method.name if self.plan.method else "",
                layer="+".join(x.name for x in self.plan.layers),
                split=self.ctx.inputs.split or "",
                images=len(self.ctx.inputs),
                tolerance=self.tolerance,
                chance=before.pop("chance"),
                before=before,
                after={k: v for k, v in after.items() if k != "chance"},
            )
        self.history.status = "ok"
        self.write_history()
        files = [*self.board.files(), *(files or [])]
        return result(self.ctx, self.settings, self.history, files, self.frames)
