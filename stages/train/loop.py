"""The training loop: epochs over the train split, validation, logging, checkpoints, faults.

``train`` is the stage's body: it reuses an earlier job's identical training when this process
kept one (``reuse.py``), else builds the train and val splits of the configured data set
(``vizpipe.pipeline.inputs.build_split``) and runs ``fit`` under a ``Watcher`` (``watch.py``: the
same code ``vizpipe.Watch`` runs in a hand-written loop), which measures the CAM method on the
visualised images before and after, logs, draws and records every epoch, and returns the record.

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
    from vizpipe.stages.train.plan import TrainPlan
    from vizpipe.stages.train.record import History
    from vizpipe.stages.train.watch import Watcher

log = logging.getLogger(__name__)

VAL_BATCH_FACTOR = 2  # validation needs no gradients: batches twice the training size


class NonFiniteLoss(Exception):
    """Raised inside ``fit`` when a step's loss is NaN or infinite (turned into a VizpipeError)."""

    def __init__(self, epoch: int, step: int, value: float, lr: float | None) -> None:
        super().__init__(f"loss {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value, self.lr = epoch, step, value, lr


class NonFiniteWeights(NonFiniteLoss):
    """Raised by ``fit`` when a parameter or buffer holds NaN/inf after an epoch (a finite loss can
    hide it: BatchNorm's running variance overflows while the normalised outputs stay finite)."""

    def __init__(self, epoch: int, step: int, what: str, lr: float | None) -> None:
        super().__init__(epoch, step, math.nan, lr)
        self.what = what  # e.g. "the buffer conv2.1.running_var holds inf"


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
    from vizpipe.pipeline.inputs import build_split
    from vizpipe.stages.train import random_labels, reuse
    from vizpipe.stages.train.record import CHECKPOINT, HISTORY
    from vizpipe.stages.train.resume import load_state
    from vizpipe.stages.train.watch import Watcher

    key = reuse.training_key(ctx, settings) if reuse.enabled(ctx) else None
    kept = reuse.lookup(key) if key is not None else None
    if kept is not None:
        record = reuse.reuse(ctx, kept)
        if record is not None:
            hand_back(ctx)
            return record
    initial = (
        {k: v.detach().clone() for k, v in ctx.model.state_dict().items()} if settings.random_labels else None
    )
    splits = {s: build_split(ctx.inputs, s) for s in ("train", "val")}
    history = new_history(ctx, settings, plan, splits)
    paths = Paths(ctx.claim(CHECKPOINT), ctx.claim(HISTORY))
    watch = Watcher(
        ctx, settings, plan, splits["val"], history, checkpoint=paths.checkpoint, history_path=paths.history
    )
    state = load_state(ctx.progress.state_path()) if ctx.progress.resume else None
    if state is not None:
        watch.restore(state["watch"])
    try:
        with watch:
            fit(ctx, settings, splits, watch, state)
    except NonFiniteLoss as exc:
        raise stopped(ctx, settings, history, paths, exc) from exc
    except KeyboardInterrupt:
        history.status = "interrupted"
        done = history.epochs_done
        history.error = f"Interrupted during epoch {done + 1}; {CHECKPOINT} holds epoch {done}"
        history.write(paths.history)
        raise
    finally:
        hand_back(ctx)
    record = watch.finish([CHECKPOINT, HISTORY])
    if initial is not None:
        random_labels.add_to_record(record, random_labels.train_copy(ctx, settings, splits, initial, fit))
    if key is not None:
        reuse.remember(key, ctx, record)
    return record


def new_history(ctx: RunContext, settings: Any, plan: TrainPlan, splits: dict[str, Inputs]) -> History:
    """The run's ``history.json`` before its first epoch."""
    import torch
    from vizpipe.stages.train.record import History

    return History(
        model=ctx.model_name,
        seed=ctx.seed,
        data=ctx.inputs.kind,
        classes=list(plan.classes),
        train_images=len(splits["train"]),
        val_images=len(splits["val"]),
        settings=settings_doc(settings),
        threads=torch.get_num_threads(),
    )


def stopped(
    ctx: RunContext, settings: Any, history: History, paths: Paths, exc: NonFiniteLoss
) -> VizpipeError:
    """A non-finite loss: the last good weights back in the model, ``history.json`` says why."""
    from vizpipe.stages.train.record import CHECKPOINT, load_state

    load_state(paths.checkpoint, ctx.model)
    history.status = "stopped"
    where = f"at epoch {exc.epoch}, step {exc.step}: the loss is {exc.value}"
    if isinstance(exc, NonFiniteWeights):
        where = f"after epoch {exc.epoch} (step {exc.step}): {exc.what}"
    history.error = (
        f"Training stopped {where} (train.lr={settings.lr}, the step's lr {exc.lr}); the model keeps "
        f"the weights of epoch {history.epochs_done} ({CHECKPOINT}) and every log stays. Lower "
        "train.lr or set train.grad_clip (e.g. 1.0)"
    )
    history.write(paths.history)
    return VizpipeError(history.error)


def hand_back(ctx: RunContext) -> None:
    """The trained model back in eval mode; later stages probe it afresh."""
    from vizpipe.pipeline.factory.model import nonfinite_parameters

    ctx.model.eval()
    ctx.refresh()
    ctx.nonfinite_params = nonfinite_parameters(ctx.model)


def loaders(ctx: RunContext, settings: Any, splits: dict[str, Inputs]) -> tuple[Any, Any, int]:
    """The shuffled train loader (its own generator, seeded), the val loader and the step budget."""
    import torch
    from torch.utils.data import DataLoader

    bs, workers = int(settings.batch_size), int(settings.workers)
    shuffle = torch.Generator().manual_seed(int(ctx.seed))
    loader = DataLoader(
        splits["train"].dataset, batch_size=bs, shuffle=True, generator=shuffle, num_workers=workers
    )
    val_loader = DataLoader(splits["val"].dataset, batch_size=bs * VAL_BATCH_FACTOR, num_workers=workers)
    total = int(settings.epochs) * len(loader)
    if settings.max_steps is not None:
        total = min(total, int(settings.max_steps))
    return loader, val_loader, total


def fit(
    ctx: RunContext,
    settings: Any,
    splits: dict[str, Inputs],
    watch: Watcher,
    state: dict[str, Any] | None = None,
) -> None:
    """The epochs (see the module docstring); ``watch`` logs, draws and records every one.

    After each epoch the resume state is saved (``resume.py``); ``state``: a killed run's, put
    back before going on with the epoch after its last."""
    from vizpipe.stages.train.plan import make_optimizer, make_scheduler
    from vizpipe.stages.train.resume import apply_state, save_state

    loader, val_loader, total = loaders(ctx, settings, splits)
    optimizer = make_optimizer(ctx.model, settings)
    scheduler = make_scheduler(optimizer, settings, total)
    epochs = int(settings.epochs)
    log.debug(
        "Training %s: %d epoch(s) x %d step(s), at most %d steps", ctx.model_name, epochs, len(loader), total
    )
    first = 1
    if state is not None:
        first = apply_state(state, ctx, optimizer, scheduler, loader.generator) + 1
    else:
        watch.start()
    for epoch in range(first, epochs + 1):
        sums = one_epoch(ctx, settings, loader, optimizer, scheduler, watch, (epoch, epochs, total))
        loss_sum, hits, seen, lr, units = sums
        check_finite(ctx.model, epoch, watch.steps, lr)  # before the epoch's checkpoint is written
        if ctx.task == "detection":  # no loss in eval mode: the share of true boxes found
            val_loss, val_acc = None, evaluate_detection(ctx.model, val_loader, ctx.device)
        else:
            val_loss, val_acc = evaluate(ctx.model, val_loader, ctx.device, _target_key(ctx))
        watch.epoch(
            val_loss,
            val_acc,
            train_loss=_finite(loss_sum / max(seen, 1)),
            train_accuracy=hits / units if units else None,
            lr=lr,
            complete=seen == len(loader.dataset),
        )
        save_state(
            ctx.progress.state_path(), ctx, optimizer, scheduler, loader.generator, epoch, watch.state()
        )
        log.info(
            "train: epoch %d/%d, %d steps: loss %.4f, accuracy %.3f | val loss %s, accuracy %s",
            epoch,
            epochs,
            watch.steps,
            loss_sum / max(seen, 1),
            hits / max(units, 1) if units else float("nan"),
            "–" if val_loss is None else f"{val_loss:.4f}",
            "–" if val_acc is None else f"{val_acc:.3f}",
        )
        if watch.steps >= total:
            break


def check_finite(model: nn.Module, epoch: int, step: int, lr: float | None) -> None:
    """Raise ``NonFiniteWeights`` naming the first parameter or buffer that holds NaN or inf."""
    import torch
    from vizpipe.pipeline.factory.model import nonfinite_parameters

    bad = nonfinite_parameters(model)
    if not bad:
        return
    buffers = dict(model.named_buffers())
    kind = "buffer" if bad[0] in buffers else "parameter"
    tensor = buffers.get(bad[0], dict(model.named_parameters()).get(bad[0]))
    value = "NaN" if tensor is not None and bool(torch.isnan(tensor).any()) else "inf"
    more = f" ({len(bad) - 1} more tensor(s) too)" if len(bad) > 1 else ""
    raise NonFiniteWeights(epoch, step, f"the {kind} {bad[0]} holds {value}{more}", lr)


def _target_key(ctx: RunContext) -> str:
    """What the loss compares the output with: each image's ``label``, a segmentation model's true
    ``mask`` (per-pixel cross-entropy; accuracy is then the share of pixels right), or a detector's
    true ``objects`` (its own losses in train mode; no accuracy per step)."""
    return {"segmentation": "mask", "detection": "objects"}.get(ctx.task, "label")


def detection_targets(batch: dict[str, Any], device: Any) -> list[dict[str, Any]]:
    """torchvision's detection targets from a scene batch's padded ``obj_boxes``/``obj_labels``."""
    out = []
    for boxes, labels in zip(batch["obj_boxes"], batch["obj_labels"], strict=True):
        keep = labels >= 0
        out.append({"boxes": boxes[keep].to(device), "labels": labels[keep].to(device)})
    return out


def evaluate_detection(model: nn.Module, loader: Any, device: Any) -> float | None:
    """A detector's recall over ``loader`` in eval mode: the share of true boxes found (a detection
    scoring >= 0.5 of the same class with IoU >= 0.5; ``frames.recall``)."""
    import torch
    from vizpipe.pipeline.inputs import objects_of
    from vizpipe.stages.train.frames import recall

    model.eval()
    found = total = 0
    with torch.no_grad():
        for batch in loader:
            hit, boxes = recall(model(batch["x"].to(device)), objects_of(batch))
            found, total = found + hit, total + boxes
    return found / total if total else None


def one_epoch(
    ctx: RunContext,
    settings: Any,
    loader: Any,
    optimizer: Any,
    scheduler: Any,
    watch: Watcher,
    where: tuple[int, int, int],
) -> tuple[float, int, int, float | None, int]:
    """One pass over ``loader`` (``where``: epoch, epochs, step budget); returns the epoch's loss
    sum, hits, images seen, last lr and the units the hits are out of (images; pixels for a
    segmentation model). A NaN/inf loss raises ``NonFiniteLoss`` before it can reach the weights."""
    import torch
    from tqdm import tqdm
    from vizpipe.pipeline.layers import model_output

    model, clip = ctx.model, settings.grad_clip
    epoch, epochs, total = where
    key = _target_key(ctx)
    model.train()
    loss_sum, hits, seen, lr, units = 0.0, 0, 0, None, 0
    with tqdm(loader, desc=f"train {epoch}/{epochs}", unit="step", leave=False, disable=None) as bar:
        for batch in bar:
            x = batch["x"].to(ctx.device)  # (B, C, H, W)
            if watch.steps == 0:
                watch.first_batch(x, batch["rgb"])
            if key == "objects":  # a detector in train mode: its own losses against the true boxes
                y, logits = x, None
                loss = sum(model(list(x), detection_targets(batch, ctx.device)).values())
            else:
                y = batch[key].to(ctx.device)  # (B,) labels, or (B, H, W) true masks
                logits = model_output(model(x))  # (B, K), or (B, K, H, W)
                loss = torch.nn.functional.cross_entropy(logits, y)
            value = float(loss.detach())
            lr = float(optimizer.param_groups[0]["lr"])
            if not math.isfinite(value):
                raise NonFiniteLoss(epoch, watch.steps + 1, value, lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            correct = int((logits.detach().argmax(dim=1) == y).sum()) if logits is not None else 0
            watch.step(value, correct / y.numel() if logits is not None else None, lr, n=len(y))
            loss_sum, hits, seen = loss_sum + value * len(y), hits + correct, seen + len(y)
            units += y.numel() if logits is not None else 0
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{hits / max(units, 1):.3f}", refresh=False)
            if watch.steps >= total:
                break
    return loss_sum, hits, seen, lr, units


def evaluate(
    model: nn.Module, loader: Any, device: Any, key: str = "label"
) -> tuple[float | None, float | None]:
    """Mean cross-entropy and top-1 accuracy over ``loader`` in eval mode, without gradients
    (``key="mask"``: per pixel, the loss averaged over each image's pixels)."""
    import torch
    from vizpipe.pipeline.layers import model_output

    model.eval()
    loss_sum, hits, seen, units = 0.0, 0, 0, 0
    with torch.no_grad():
        for batch in loader:
            x, y = batch["x"].to(device), batch[key].to(device)
            logits = model_output(model(x))
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            loss_sum += float(loss) / (y[0].numel() if y.ndim > 1 else 1)
            hits += int((logits.argmax(dim=1) == y).sum())
            seen += len(y)
            units += y.numel()
    if not seen:
        return None, None
    return _finite(loss_sum / seen), hits / units


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
