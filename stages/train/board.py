"""TensorBoard for training: two writers, one tag per number (the seed's §3.6 two-curve trick).

``<run>/tensorboard/train`` and ``<run>/tensorboard/val`` are two runs to TensorBoard; both
write ``loss`` and ``accuracy``, so each chart shows the train curve (every ``train.log_every``
steps) and the val curve (after every epoch, at the same step axis) together.

==================================  ========  =====  ======================================
tag                                 kind      run    step
==================================  ========  =====  ======================================
``loss``, ``accuracy``              scalars   both   optimizer step
``lr``                              scalar    train  optimizer step
``weights/<param>``,                          train  epoch (0: the weights training starts
``gradients/<param>``               histos           from; gradients from 1: the epoch's
                                                     last batch)
``inputs/train_batch``              image     train  0: ``make_grid`` of the first batch
``cam_over_time/<image>``           images    val    epoch (0: before training)
(graph)                             graph     train  once
==================================  ========  =====  ======================================
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.tensorboard_io import backend_value, histogram_raw, open_writer

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from vizpipe.pipeline.context import RunContext

log = logging.getLogger(__name__)

LOGDIR = "tensorboard"
RUNS = ("train", "val")
GRID_IMAGES = 32  # images of the first batch in the make_grid picture


class Board:
    """The train and val writers (a context manager: both closed on exit, also after an error)."""

    def __init__(self, ctx: RunContext, settings: Any) -> None:
        self.ctx = ctx
        self.backend = backend_value(settings.backend)
        self.histograms = bool(settings.histograms)
        self.graph_on = bool(settings.graph)
        self.folders = {run: ctx.output_dir / LOGDIR / run for run in RUNS}
        self.writers: dict[str, Any] = {}
        self.purge_step: int | None = None  # a resumed run's first step (``open_writer``)

    def __enter__(self) -> Board:
        """Open both writers."""
        for run, folder in self.folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            self.writers[run] = open_writer(self.backend, folder, purge_step=self.purge_step)
        return self

    def __exit__(self, *exc: object) -> None:
        """Close both writers (their files stay, whatever happened)."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def files(self) -> list[str]:
        """The event files, run-relative."""
        found = [p for folder in self.folders.values() for p in sorted(folder.glob("events.out.tfevents.*"))]
        return [p.relative_to(self.ctx.output_dir).as_posix() for p in found]

    # ------------------------------------------------------------------ numbers

    def step(self, step: int, loss: float | None, accuracy: float | None, lr: float | None) -> None:
        """One training step's numbers (those known)."""
        w = self.writers["train"]
        for tag, value in (("loss", loss), ("accuracy", accuracy), ("lr", lr)):
            if value is not None:
                w.add_scalar(tag, value, step)

    def validation(self, step: int, loss: float | None, accuracy: float | None) -> None:
        """The val split's numbers after an epoch, on the train curve's step axis."""
        w = self.writers["val"]
        if loss is not None:
            w.add_scalar("loss", loss, step)
        if accuracy is not None:
            w.add_scalar("accuracy", accuracy, step)
        w.flush()

    def parameters(self, model: nn.Module, epoch: int, gradients: bool) -> None:
        """Weight (and gradient) histograms of every parameter, at step ``epoch``."""
        if not self.histograms:
            return
        w = self.writers["train"]
        for name, p in model.named_parameters():
            kinds = [("weights", p.detach())]
            if gradients and p.grad is not None:
                kinds.append(("gradients", p.grad.detach()))
            for kind, values in kinds:
                hist = histogram_raw(values)
                if hist is not None:
                    w.add_histogram_raw(f"{kind}/{name}", global_step=epoch, **hist)
        w.flush()

    # ------------------------------------------------------------------ pictures

    def input_grid(self, rgb: torch.Tensor) -> None:
        """``make_grid`` of a training batch (B, 3, H, W) in [0, 1] (seed §3.5)."""
        from torchvision.utils import make_grid

        grid = make_grid(rgb[:GRID_IMAGES], nrow=8, padding=2, pad_value=1.0)  # (3, H', W')
        self.writers["train"].add_image("inputs/train_batch", grid.numpy(), 0, dataformats="CHW")

    def cam_frames(self, epoch: int, frames: dict[str, np.ndarray]) -> None:
        """Each image's CAM overlay (H, W, 3) uint8 at step ``epoch``."""
        w = self.writers["val"]
        for name, overlay in frames.items():
            w.add_image(f"cam_over_time/{name}", overlay, epoch, dataformats="HWC")
        w.flush()

    def graph(self, model: nn.Module, x: torch.Tensor) -> None:
        """The model graph, traced once on ``x``; a model that cannot be traced only warns."""
        if not self.graph_on:
            return
        import torch
        from vizpipe.pipeline.hooks import preserved
        from vizpipe.pipeline.tasks.wrappers import model_for_cam

        said = io.StringIO()
        try:
            with (
                preserved(model),
                torch.no_grad(),
                contextlib.redirect_stdout(said),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")  # TracerWarnings about data-dependent Python values
                self.writers["train"].add_graph(
                    model_for_cam(model, getattr(self.ctx, "task", "")), x
                )  # seg: "out"
        except Exception as exc:  # noqa: BLE001 - a graph never fails training
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            self.ctx.warn(
                f"Training: no model graph in TensorBoard, {self.ctx.model_name} cannot be traced ({first})"
            )
        finally:
            if said.getvalue().strip():
                log.debug("Tracing printed:\n%s", said.getvalue())
