"""The training loop: epochs over the train split, validation, logging, checkpoints, faults.

``train`` is the stage's body: it builds the train and val splits of the configured data set
(``vizpipe.pipeline.inputs.build_split``), measures the CAM method on the visualised images, runs ``fit``
with the TensorBoard writers open, measures again and returns the record (``result.py``).

``fit`` trains ``ctx.model`` in place. The DataLoader shuffles with its own ``torch.Generator``
seeded from ``seed``, and nothing else draws random numbers between steps, so the same seed (and
thread count) on a CPU gives the same steps, the same ``history.json`` and checkpoint tensors. Per step:
one forward in train mode, cross-entropy on the logits, the loss checked (a NaN/inf loss stops
training before it can reach the weights), backward, optional clipping, the optimizer and
scheduler steps. Per epoch: validation in eval mode, TensorBoard, the CAM frames, the
checkpoint, ``history.json`` and one console line; the tqdm bar (on a terminal) shows the
running loss and accuracy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import VizpipeError

if TYPE_CHECKING:
    from torch import nn
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Inputs
    from vizpipe.pipeline.stage import StageResult
    from vizpipe.stages.train.board import Board
    from vizpipe.stages.train.frames import CamFrames
    from vizpipe.stages.train.plan import TrainPlan
    from vizpipe.stages.train.record import History

log = logging.getLogger(__name__)

VAL_BATCH_FACTOR = 2  # validation needs no gradients: batches twice the training size


class NonFiniteLoss(Exception):
    """Raised inside ``fit`` when a step's loss is NaN or infinite (turned into a VizpipeError)."""

    def __init__(self, epoch: int, step: int, value: float, lr: float | None) -> None:
        super().__init__(f"loss {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value, self.lr = epoch, step, value, lr


@dataclass
class Paths:
    """Where the run's training files go."""

    checkpoint: Path
    history: Path


def settings_doc(settings: Any) -> dict[str, Any]:
    """The settings that shape the numbers, for ``history.json`` (plain JSON values)."""
    from omegaconf import OmegaConf

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    return {
        "epochs": int(settings.epochs),
        "max_steps": settings.max_steps,
        "batch_size": int(settings.batch_size),
        "lr": float(settings.lr),
        "optimizer": dict(plain(settings.optimizer) or {}),
        "scheduler": None if settings.scheduler is None else dict(plain(settings.scheduler)),
        "grad_clip": settings.grad_clip,
    }


def train(ctx: RunContext, settings: Any, plan: TrainPlan) -> StageResult:
    """Train ``ctx.model`` in place and return the stage's record (see the module docstring)."""
    import torch
    from vizpipe.pipeline.factory.model import nonfinite_parameters
    from vizpipe.pipeline.inputs import build_split
    from vizpipe.stages.train.board import Board
    from vizpipe.stages.train.frames import CamFrames, measure
    from vizpipe.stages.train.record import CHECKPOINT, HISTORY, History, Localisation, load_state
    from vizpipe.stages.train.result import result

    splits = {s: build_split(ctx.inputs, s) for s in ("train", "val")}
    history = History(
        model=ctx.model_name,
        seed=ctx.seed,
        data=ctx.inputs.kind,
        classes=list(plan.classes),
        train_images=len(splits["train"]),
        val_images=len(splits["val"]),
        settings=settings_doc(settings),
        threads=torch.get_num_threads(),
    )
    paths = Paths(ctx.claim(CHECKPOINT), ctx.claim(HISTORY))
    tolerance = float(settings.pointing_tolerance)
    measuring = bool(settings.pointing_game) and plan.method is not None
    before = measure(ctx, plan, tolerance) if measuring else None
    frames = CamFrames(ctx, plan, splits["val"], int(settings.cam_images), float(settings.image_weight))
    board = Board(ctx, settings)
    try:
        with board:
            fit(ctx, settings, splits, board, frames, history, paths)
    except NonFiniteLoss as exc:
        load_state(paths.checkpoint, ctx.model)
        history.status = "stopped"
        history.error = (
            f"Training stopped at epoch {exc.epoch}, step {exc.step}: the loss is {exc.value} "
            f"(train.lr={settings.lr}, the step's lr {exc.lr}); the model keeps the weights of epoch "
            f"{history.epochs_done} ({CHECKPOINT}) and every log stays. Lower train.lr or set "
            "train.grad_clip (e.g. 1.0)"
        )
        history.write(paths.history)
        raise VizpipeError(history.error) from exc
    except KeyboardInterrupt:
        history.status = "interrupted"
        done = history.epochs_done
        history.error = f"Interrupted during epoch {done + 1}; {CHECKPOINT} holds epoch {done}"
        history.write(paths.history)
        raise
    finally:
        ctx.model.eval()
        ctx.refresh()  # later stages probe the trained model afresh
        ctx.nonfinite_params = nonfinite_parameters(ctx.model)
    if measuring and before is not None:
        after = measure(ctx, plan, tolerance)
        history.localisation = Localisation(
            method=plan.method.name if plan.method else "",
            layer="+".join(x.name for x in plan.layers),
            split=ctx.inputs.split or "",
            images=len(ctx.inputs),
            tolerance=tolerance,
            chance=before.pop("chance"),
            before=before,
            after={k: v for k, v in after.items() if k != "chance"},
        )
    history.status = "ok"
    history.write(paths.history)
    return result(ctx, settings, history, board.files(), frames)


def fit(
    ctx: RunContext,
    settings: Any,
    splits: dict[str, Inputs],
    board: Board,
    frames: CamFrames,
    history: History,
    paths: Paths,
) -> None:
    """The epochs (see the module docstring); ``history`` and the checkpoint follow every epoch."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from vizpipe.pipeline.layers import model_output
    from vizpipe.stages.train.plan import make_optimizer, make_scheduler
    from vizpipe.stages.train.record import EpochRecord, save_checkpoint

    model = ctx.model
    bs, workers = int(settings.batch_size), int(settings.workers)
    shuffle = torch.Generator().manual_seed(int(ctx.seed))
    loader = DataLoader(
        splits["train"].dataset, batch_size=bs, shuffle=True, generator=shuffle, num_workers=workers
    )
    val_loader = DataLoader(splits["val"].dataset, batch_size=bs * VAL_BATCH_FACTOR, num_workers=workers)
    epochs = int(settings.epochs)
    total = epochs * len(loader)
    if settings.max_steps is not None:
        total = min(total, int(settings.max_steps))
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, settings, total)
    clip = settings.grad_clip
    log_every = int(settings.log_every)
    log.debug(
        "Training %s: %d epoch(s) x %d step(s), at most %d steps", ctx.model_name, epochs, len(loader), total
    )

    save_checkpoint(paths.checkpoint, model)  # epoch 0: the weights training starts from
    history.write(paths.history)
    board.parameters(model, 0, gradients=False)
    board.cam_frames(0, frames.capture(0))
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, hits, seen, lr = 0.0, 0, 0, None
        bar = tqdm(loader, desc=f"train {epoch}/{epochs}", unit="step", leave=False, disable=None)
        with bar:
            for batch in bar:
                x = batch["x"].to(ctx.device)  # (B, C, H, W)
                y = batch["label"].to(ctx.device)  # (B,)
                if step == 0:
                    board.graph(model, x)
                    board.input_grid(batch["rgb"])
                logits = model_output(model(x))  # (B, K)
                loss = torch.nn.functional.cross_entropy(logits, y)
                value = float(loss.detach())
                lr = float(optimizer.param_groups[0]["lr"])
                if not math.isfinite(value):
                    raise NonFiniteLoss(epoch, step + 1, value, lr)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                correct = int((logits.detach().argmax(dim=1) == y).sum())
                loss_sum, hits, seen = loss_sum + value * len(y), hits + correct, seen + len(y)
                if step % log_every == 0:
                    board.step(step, value, correct / len(y), lr)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{hits / seen:.3f}", refresh=False)
                if step >= total:
                    break
        val_loss, val_acc = evaluate(model, val_loader, ctx.device)
        board.validation(step, val_loss, val_acc)
        board.parameters(model, epoch, gradients=True)
        board.cam_frames(epoch, frames.capture(epoch))
        record = EpochRecord(
            epoch=epoch,
            steps=step,
            train_loss=_finite(loss_sum / max(seen, 1)),
            train_accuracy=hits / max(seen, 1),
            val_loss=val_loss,
            val_accuracy=val_acc,
            lr=lr,
            complete=seen == len(loader.dataset),
        )
        save_checkpoint(paths.checkpoint, model)
        history.add(record)
        history.write(paths.history)
        log.info(
            "train: epoch %d/%d, %d steps: loss %.4f, accuracy %.3f | val loss %s, accuracy %s",
            epoch,
            epochs,
            step,
            loss_sum / max(seen, 1),
            hits / max(seen, 1),
            "–" if val_loss is None else f"{val_loss:.4f}",
            "–" if val_acc is None else f"{val_acc:.3f}",
        )
        if step >= total:
            break


def evaluate(model: nn.Module, loader: Any, device: Any) -> tuple[float | None, float | None]:
    """Mean cross-entropy and top-1 accuracy over ``loader`` in eval mode, without gradients."""
    import torch
    from vizpipe.pipeline.layers import model_output

    model.eval()
    loss_sum, hits, seen = 0.0, 0, 0
    with torch.no_grad():
        for batch in loader:
            x, y = batch["x"].to(device), batch["label"].to(device)
            logits = model_output(model(x))
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            hits += int((logits.argmax(dim=1) == y).sum())
            seen += len(y)
    if not seen:
        return None, None
    return _finite(loss_sum / seen), hits / seen


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
