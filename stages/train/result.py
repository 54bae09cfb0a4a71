"""The train stage's record: curves and CAM strips for the report, tables and key numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.render import save_figure
from vizpipe.pipeline.stage import Picture, Scalar, StageResult, Table, Text

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.train.frames import CamFrames
    from vizpipe.stages.train.record import History, Localisation

CURVES = "train/curves.png"
STRIPS = "train/cam_over_time"
GROUP = "CAM over time"


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.1f}%" if pct else f"{value:.4g}"


def write_curves(ctx: RunContext, history: History) -> str | None:
    """Loss and accuracy per epoch, train and val, as one PNG (matplotlib, no global state)."""
    if not history.epochs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r.epoch for r in history.epochs]
    fig = Figure(figsize=(8, 3), dpi=100)
    FigureCanvasAgg(fig)
    for k, (what, key) in enumerate((("loss", "loss"), ("accuracy", "accuracy"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for run in ("train", "val"):
            values = [getattr(r, f"{run}_{key}") for r in history.epochs]
            ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=run)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, ctx.claim(CURVES))
    return CURVES


def result(
    ctx: RunContext, settings: Any, history: History, files: list[str], frames: CamFrames
) -> StageResult:
    """The record of a finished training run; ``files``: its event files, checkpoint and history."""
    from vizpipe.stages.train.record import CHECKPOINT

    pictures = _pictures(ctx, history, frames)
    tables = [epochs_table(history, CHECKPOINT in files)]
    scalars = headline(history)
    summary_loc = ""
    loc = history.localisation
    if loc is not None:
        table, more, summary_loc = localisation_parts(loc)
        tables.append(table)
        scalars += more
    last = history.last
    accuracy = (
        f"val accuracy {_fmt(last.val_accuracy, True)}, loss {_fmt(last.val_loss)}" if last else "no epoch"
    )
    planned = history.settings.get("epochs")
    done = f"{history.epochs_done}/{planned}" if planned is not None else str(history.epochs_done)
    return StageResult(
        stage="train",
        summary=f"{done} epoch(s), {history.steps_done} steps: " + accuracy + summary_loc,
        params=_params(history.settings),
        pictures=pictures,
        tables=tables,
        texts=[Text("View and reuse", _reuse(ctx, history, CHECKPOINT in files), open=True)],
        scalars=scalars,
        files=list(files),
        data=history,
    )


def _pictures(ctx: RunContext, history: History, frames: CamFrames) -> list[Picture]:
    """The curves and one CAM strip per image, written now."""
    from vizpipe.pipeline.render import save_png

    pictures: list[Picture] = []
    curves = write_curves(ctx, history)
    if curves:
        pictures.append(Picture(curves, "Loss and accuracy after each epoch (TensorBoard has every step)"))
    for name, caption, strip in frames.strips():
        rel = f"{STRIPS}/{name}.png"
        save_png(ctx.claim(rel), strip)
        pictures.append(Picture(rel, caption, group=GROUP, wide=True))
    return pictures


def epochs_table(history: History, checkpoint: bool) -> Table:
    """One row per epoch."""
    from vizpipe.stages.train.record import CHECKPOINT

    rows = [
        [r.epoch, r.steps, _fmt(r.train_loss), _fmt(r.train_accuracy, True), _fmt(r.val_loss)]
        + [_fmt(r.val_accuracy, True), _fmt(r.lr), "" if r.complete else "cut short (train.max_steps)"]
        for r in history.epochs
    ]
    if history.train_images:
        caption = f"{history.train_images} training and {history.val_images} validation images of "
        caption += f"input={history.data}"
    else:
        caption = f"{history.val_images} validation images watched"
    if checkpoint:
        caption += f"; the weights of the last epoch are in {CHECKPOINT}"
    return Table(
        "Epochs",
        ["Epoch", "Steps", "Train loss", "Train accuracy", "Val loss", "Val accuracy", "lr", "Note"],
        rows,
        caption=caption,
    )


def headline(history: History) -> list[Scalar]:
    """The last epoch's numbers (the sweep index's columns)."""
    last = history.last
    return [
        Scalar("train/val_accuracy", last.val_accuracy if last else None, key=True, better="higher"),
        Scalar("train/val_loss", last.val_loss if last else None, key=True, better="lower"),
        Scalar("train/train_accuracy", last.train_accuracy if last else None, key=True, better="higher"),
        Scalar("train/train_loss", last.train_loss if last else None, key=True, better="lower"),
        Scalar("train/epochs_done", float(history.epochs_done), key=True),
    ]


def localisation_parts(loc: Localisation) -> tuple[Table, list[Scalar], str]:
    """The before/after table, its scalars and the summary's words."""
    if "mask_iou" in loc.before or "mask_iou" in loc.after:
        return mask_parts(loc)
    if "recall" in loc.before or "recall" in loc.after:
        return box_parts(loc)
    names = [("top1_accuracy", "Top-1 accuracy", True), ("pointing_game", "Pointing game", False)]
    names.append(("energy_in_box", "Energy in box", False))
    table = Table(
        "Before and after training",
        ["Measure", "Before", "After", "Chance"],
        [
            [label, _fmt(loc.before.get(k), pct), _fmt(loc.after.get(k), pct)]
            + [_fmt(loc.chance) if k == "pointing_game" else ""]
            for k, label, pct in names
        ],
        caption=f"{loc.method} on {loc.layer} for each image's top-1 class, on the {loc.images} "
        f"images of input.split={loc.split}; pointing game tolerance {loc.tolerance}; chance: a "
        "random point's pointing game (the mean share of the image the grown box covers)",
    )
    before, after = loc.before.get("pointing_game"), loc.after.get("pointing_game")
    scalars = [
        Scalar("train/pointing_game_before", before, key=True),
        Scalar("train/pointing_game_after", after, key=True, better="higher"),
        Scalar("train/pointing_game_chance", loc.chance),
    ]
    words = ""
    if before is not None and after is not None:
        words = f"; {loc.method} pointing game {before:.2f} -> {after:.2f} (chance {_fmt(loc.chance)})"
    return table, scalars, words


def mask_parts(loc: Localisation) -> tuple[Table, list[Scalar], str]:
    """A segmentation model's before/after table: pixel accuracy, then the CAM's mask IoU and energy
    in mask against the true masks, overall and per class, beside the centred-blob baseline."""
    classes = [k.split("/", 1)[1] for k in loc.after if k.startswith("mask_iou/")]
    rows = [
        [
            "Pixel accuracy",
            _fmt(loc.before.get("pixel_accuracy"), True),
            _fmt(loc.after.get("pixel_accuracy"), True),
            "",
        ]
    ]
    for key, label in (("mask_iou", "Mask IoU"), ("energy_in_mask", "Energy in mask")):
        for suffix in ["", *(f"/{c}" for c in classes)]:
            base = loc.after.get(f"centre_mask_iou{suffix}") if key == "mask_iou" else None
            name = f"{label}, {suffix[1:]}" if suffix else f"{label}, all classes"
            rows.append(
                [name, _fmt(loc.before.get(key + suffix)), _fmt(loc.after.get(key + suffix)), _fmt(base)]
            )
    table = Table(
        "Before and after training",
        ["Measure", "Before", "After", "Centre blob"],
        rows,
        caption=f"{loc.method} on {loc.layer} for each true object's class over its true mask, on the "
        f"{loc.images} images of input.split={loc.split}; mask IoU: the map at >= 0.5 against the "
        "class's true "
        "mask; centre blob: the same IoU for a centred Gaussian that knows nothing of the image (a baseline)",
    )
    before, after = loc.before.get("mask_iou"), loc.after.get("mask_iou")
    scalars = [
        Scalar("train/mask_iou_before", before, key=True),
        Scalar("train/mask_iou_after", after, key=True, better="higher"),
        Scalar("train/mask_iou_centre_blob", loc.chance),
    ]
    words = ""
    if before is not None and after is not None:
        words = f"; {loc.method} mask IoU {before:.2f} -> {after:.2f} (centre blob {_fmt(loc.chance)})"
    return table, scalars, words


def box_parts(loc: Localisation) -> tuple[Table, list[Scalar], str]:
    """A detector's before/after table: its recall, then the CAM's pointing game and energy in box
    per true box, overall and per class, beside a random point's pointing game."""
    classes = [k.split("/", 1)[1] for k in loc.after if k.startswith("pointing_game/")]
    rows = [
        [
            "Recall (IoU >= 0.5, score >= 0.5)",
            _fmt(loc.before.get("recall"), True),
            _fmt(loc.after.get("recall"), True),
            "",
        ]
    ]
    for key, label in (("pointing_game", "Pointing game"), ("energy_in_box", "Energy in box")):
        for suffix in ["", *(f"/{c}" for c in classes)]:
            name = f"{label}, {suffix[1:]}" if suffix else f"{label}, every true box"
            chance = _fmt(loc.chance) if key == "pointing_game" and not suffix else ""
            rows.append([name, _fmt(loc.before.get(key + suffix)), _fmt(loc.after.get(key + suffix)), chance])
    table = Table(
        "Before and after training",
        ["Measure", "Before", "After", "Chance"],
        rows,
        caption=f"{loc.method} on {loc.layer} for each true box (its class; the target scores the output "
        f"box matching it), on the {loc.images} images of input.split={loc.split}; pointing game tolerance "
        f"{loc.tolerance}; chance: a random point's pointing game (the mean share of the image the "
        "grown box covers)",
    )
    before, after = loc.before.get("pointing_game"), loc.after.get("pointing_game")
    scalars = [
        Scalar("train/pointing_game_before", before, key=True),
        Scalar("train/pointing_game_after", after, key=True, better="higher"),
        Scalar("train/pointing_game_chance", loc.chance),
        Scalar("train/recall_after", loc.after.get("recall"), key=True, better="higher"),
    ]
    words = ""
    if before is not None and after is not None:
        words = f"; {loc.method} pointing game per true box {before:.2f} -> {after:.2f}"
        words += f" (chance {_fmt(loc.chance)})"
    return table, scalars, words


def _params(settings: dict[str, Any]) -> dict[str, str]:
    """The hparams columns: what the run was asked for (those a watched loop knows)."""
    out = {}
    for key in ("epochs", "lr", "batch_size"):
        if settings.get(key) is not None:
            out[key] = str(settings[key])
    if settings.get("optimizer") is not None:
        out["optimizer"] = str(settings["optimizer"].get("_target_", "")).rpartition(".")[2]
    order = ("epochs", "lr", "optimizer", "batch_size")
    return {k: out[k] for k in order if k in out}


def _reuse(ctx: RunContext, history: History, checkpoint: bool) -> str:
    from vizpipe.stages.train.record import CHECKPOINT

    text = f"tensorboard --logdir {ctx.output_dir / 'tensorboard'}"
    if checkpoint:
        text += (
            f"\npython run.py model={ctx.model_name} model.checkpoint={ctx.output_dir / CHECKPOINT} "
            f"input={history.data} 'stages=[cam]'"
        )
    return text
