"""vizpipe.stages.train pinned exactly on runs of a few steps: history.json keys and values (checked
against an independent evaluation of the checkpoint and against the TensorBoard steps), the
TensorBoard tags, steps and values read back with TensorBoard's own reader, the stage's record
(summary, params, tables, scalars, pictures), the learning rate per step with a scheduler, the
NaN-loss and interrupt messages, and every rule of the plan with its message."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import compose_config
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.models import ShapesNet
from vizpipe.stages.train.record import EpochRecord, History

#: 10 train images in batches of 4 (steps of 4, 4, 2 images), 6 val, 4 visualised; 32 px
TINY = [
    "model=shapes_net",
    "model.kwargs.width=4",
    "input=shapes",
    "input.size=32",
    "input.train_count=10",
    "input.val_count=6",
    "input.test_count=4",
    "input.limit=4",
    "train.epochs=2",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.cam_images=2",
    "report.enabled=false",
    "stages=[train]",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """Heavy imports paid once in setup; training on one torch thread (restored afterwards)."""
    import pytorch_grad_cam  # noqa: F401
    import tensorboardX  # noqa: F401

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_stage(out: Path, *extra: str, keep: list | None = None) -> tuple[Any, Any, Any]:
    """(ctx, settings, StageResult) of the train stage run in-process on TINY + extra (the context
    is also appended to ``keep``, for runs that raise)."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.runner import shared_config
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.stages.train import TrainStage

    cfg = compose_config([*TINY, *extra])
    ctx = build_context(cfg, out)
    if keep is not None:
        keep.append(ctx)
    settings = settings_of(cfg, "train")
    stage = TrainStage()
    stage.check_settings(settings, shared_config(cfg))
    stage.check_model(ctx, settings)
    return ctx, settings, stage.run(ctx, settings)


def events(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """One tiny training run shared by the tests that only read its outputs (and its log lines)."""
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.INFO:
                lines.append(record.getMessage())

    logger = logging.getLogger("vizpipe.stages.train.loop")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ctx, settings, res = run_stage(tmp_path_factory.mktemp("tiny") / "run")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    ctx.log_lines = lines
    return ctx, settings, res


def evaluate_by_hand(ctx: Any, weights: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the val split, computed here from the checkpoint."""
    from vizpipe.pipeline.inputs import build_split

    model = ShapesNet(width=4)
    model.load_state_dict(weights)
    model.eval()
    val = build_split(ctx.inputs, "val")
    items = [val.dataset[i] for i in range(len(val))]
    x = torch.stack([it["x"] for it in items])
    y = torch.tensor([it["label"] for it in items])
    with torch.no_grad():
        logits = model(x)
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    return loss, float((logits.argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- history and checkpoint


def test_history_json_keys_and_values(tiny: tuple[Any, Any, Any]) -> None:
    """history.json: its keys in order, the settings that shape the numbers, counts, per-epoch
    steps/lr/completeness; the last val numbers equal an evaluation of the checkpoint by hand."""
    ctx, _, res = tiny
    doc = json.loads((ctx.output_dir / "train/history.json").read_text())
    assert list(doc) == [
        "model", "seed", "data", "classes", "train_images", "val_images", "settings", "threads",
        "status", "epochs_done", "steps_done", "epochs", "localisation", "error",
    ]  # fmt: skip
    assert doc["settings"] == {
        "epochs": 2,
        "max_steps": None,
        "batch_size": 4,
        "lr": 0.01,
        "optimizer": {"_target_": "torch.optim.Adam"},
        "scheduler": None,
        "grad_clip": None,
    }
    assert (doc["model"], doc["seed"], doc["data"]) == ("shapes_net", ctx.seed, "shapes")
    assert doc["classes"] == ["circle", "square", "triangle", "cross", "star", "ring"]
    assert (doc["train_images"], doc["val_images"], doc["threads"]) == (10, 6, 1)
    assert (doc["status"], doc["epochs_done"], doc["steps_done"], doc["error"]) == ("ok", 2, 6, None)
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2] and [e["steps"] for e in doc["epochs"]] == [3, 6]
    assert [e["lr"] for e in doc["epochs"]] == [0.01, 0.01] and all(e["complete"] for e in doc["epochs"])
    assert list(doc["epochs"][0]) == [
        "epoch", "steps", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "complete",
    ]  # fmt: skip
    weights = torch.load(ctx.output_dir / "train/checkpoint.pt", weights_only=True)
    assert set(weights) == set(ctx.model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in ctx.model.state_dict().items())
    loss, acc = evaluate_by_hand(ctx, weights)
    last = doc["epochs"][-1]
    assert last["val_loss"] == pytest.approx(loss, rel=1e-5) and last["val_accuracy"] == pytest.approx(acc)
    assert res.data.status == "ok" and History.load(ctx.output_dir / "train/history.json") == res.data
    assert not ctx.model.training  # handed back in eval mode
    assert ctx.nonfinite_params == []
    with torch.no_grad():  # later stages probe the trained model afresh
        assert torch.allclose(ctx.probe().logits, ctx.model(ctx.inputs.first().tensor), atol=1e-6)


def test_localisation_record_and_chance_level(tiny: tuple[Any, Any, Any]) -> None:
    """The before/after record: method, layer, split, images, tolerance; chance = the mean share of
    the image each grown box covers (computed here); after's top-1 accuracy from the model."""
    ctx, _, res = tiny
    loc = res.data.localisation
    assert (loc.method, loc.layer, loc.split, loc.images, loc.tolerance) == (
        "GradCAM",
        "conv3",
        "test",
        4,
        0.03,
    )
    assert set(loc.before) == {"top1_accuracy", "pointing_game", "energy_in_box"} and set(loc.after) == set(
        loc.before
    )
    batch = ctx.inputs.first()
    h, w = batch.tensor.shape[2:]
    pad = 0.03 * max(h, w)
    shares = []
    for x0, y0, x1, y1 in batch.boxes:
        bw = min(w, x1 + pad) - max(0.0, x0 - pad)
        bh = min(h, y1 + pad) - max(0.0, y0 - pad)
        shares.append(bw * bh / (h * w))
    assert loc.chance == pytest.approx(float(np.mean(shares)), rel=1e-6)
    with torch.no_grad():
        top1 = ctx.model(batch.tensor).argmax(1).tolist()
    assert loc.after["top1_accuracy"] == pytest.approx(
        np.mean([t == y for t, y in zip(top1, batch.labels, strict=True)])
    )
    for key in ("pointing_game", "energy_in_box"):
        assert 0.0 <= loc.before[key] <= 1.0 and 0.0 <= loc.after[key] <= 1.0
    from vizpipe.pipeline.metrics.localisation import localisation
    from vizpipe.stages.train.frames import cam_maps
    from vizpipe.stages.train.plan import make_plan

    _, maps = cam_maps(ctx, make_plan(ctx, settings(pointing_game=True)), batch.tensor, None)
    scores = [localisation(maps[i], box, 0.03) for i, box in enumerate(batch.boxes)]
    assert loc.after["pointing_game"] == pytest.approx(np.mean([s["pointing_game"] for s in scores]))
    assert loc.after["energy_in_box"] == pytest.approx(np.mean([s["energy_in_box"] for s in scores]))


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_tags_steps_and_values(tiny: tuple[Any, Any, Any]) -> None:
    """Train run: loss/accuracy/lr at steps 1..6 (the epoch's loss and accuracy in history are their
    image-weighted means), histograms at epochs 0..2 (gradients 1..2), the input grid at 0; val run:
    loss/accuracy at steps 3 and 6 equal to history; cam_over_time/<image> at epochs 0..2."""
    ctx, _, res = tiny
    train, val = events(ctx.output_dir / "tensorboard/train"), events(ctx.output_dir / "tensorboard/val")
    assert sorted(train.Tags()["scalars"]) == ["accuracy", "loss", "lr"]
    assert sorted(val.Tags()["scalars"]) == ["accuracy", "loss"]
    for tag in ("loss", "accuracy", "lr"):
        assert [e.step for e in train.Scalars(tag)] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in train.Scalars("lr")] == pytest.approx([0.01] * 6)
    losses = [e.value for e in train.Scalars("loss")]
    accs = [e.value for e in train.Scalars("accuracy")]
    sizes = [4, 4, 2]
    for k, epoch in enumerate(res.data.epochs):
        part = slice(3 * k, 3 * k + 3)
        assert epoch.train_loss == pytest.approx(np.dot(losses[part], sizes) / 10, rel=1e-5)
        assert epoch.train_accuracy == pytest.approx(np.dot(accs[part], sizes) / 10)
        assert all(a in (0.0, 0.25, 0.5, 0.75, 1.0) for a in accs[part])
    assert [e.step for e in val.Scalars("loss")] == [3, 6] and [e.step for e in val.Scalars("accuracy")] == [
        3,
        6,
    ]
    assert [e.value for e in val.Scalars("loss")] == pytest.approx(
        [r.val_loss for r in res.data.epochs], rel=1e-5
    )
    assert [e.value for e in val.Scalars("accuracy")] == pytest.approx(
        [r.val_accuracy for r in res.data.epochs]
    )
    hist = train.Tags()["histograms"]
    names = [n for n, _ in ctx.model.named_parameters()]
    assert sorted(hist) == sorted([f"weights/{n}" for n in names] + [f"gradients/{n}" for n in names])
    assert [e.step for e in train.Histograms("weights/conv1.0.weight")] == [0, 1, 2]
    assert [e.step for e in train.Histograms("gradients/conv1.0.weight")] == [1, 2]
    assert train.Tags()["graph"] and not val.Tags()["graph"]
    grid = train.Images("inputs/train_batch")
    assert [e.step for e in grid] == [0] and (grid[0].width, grid[0].height) == (4 * 34 + 2, 36)
    frames = sorted(t for t in val.Tags()["images"])
    assert frames == ["cam_over_time/val_00000_circle", "cam_over_time/val_00001_square"]
    assert [e.step for e in val.Images(frames[0])] == [0, 1, 2]
    assert (val.Images(frames[1])[0].width, val.Images(frames[1])[0].height) == (32, 32)
    assert not train.Tags()["images"] == [] and val.Tags()["histograms"] == []


# --------------------------------------------------------------------------- the record


def test_stage_result_summary_params_tables_scalars_files(tiny: tuple[Any, Any, Any]) -> None:
    """The StageResult: summary text, params, the Epochs and Before/after tables (formatting),
    the key scalars, the curves and one strip per image with its caption, the files."""
    ctx, _, res = tiny
    h = res.data
    last, loc = h.last, h.localisation
    pg0, pg1 = loc.before["pointing_game"], loc.after["pointing_game"]
    assert res.stage == "train"
    assert res.summary == (
        f"2/2 epoch(s), 6 steps: val accuracy {last.val_accuracy * 100:.1f}%, loss {last.val_loss:.4g}"
        f"; GradCAM pointing game {pg0:.2f} -> {pg1:.2f} (chance {loc.chance:.4g})"
    )
    assert res.params == {"epochs": "2", "lr": "0.01", "optimizer": "Adam", "batch_size": "4"}
    epochs, ba = res.tables
    assert epochs.title == "Epochs" and epochs.columns == [
        "Epoch", "Steps", "Train loss", "Train accuracy", "Val loss", "Val accuracy", "lr", "Note",
    ]  # fmt: skip
    r = h.epochs[0]
    assert epochs.rows[0] == [
        1, 3, f"{r.train_loss:.4g}", f"{r.train_accuracy * 100:.1f}%", f"{r.val_loss:.4g}",
        f"{r.val_accuracy * 100:.1f}%", "0.01", "",
    ]  # fmt: skip
    assert epochs.caption == (
        "10 training and 6 validation images of input=shapes; the weights of the last epoch are in "
        "train/checkpoint.pt"
    )
    assert ba.title == "Before and after training" and ba.columns == ["Measure", "Before", "After", "Chance"]
    assert [row[0] for row in ba.rows] == ["Top-1 accuracy", "Pointing game", "Energy in box"]
    assert ba.rows[0][1] == f"{loc.before['top1_accuracy'] * 100:.1f}%" and ba.rows[0][3] == ""
    assert ba.rows[1] == ["Pointing game", f"{pg0:.4g}", f"{pg1:.4g}", f"{loc.chance:.4g}"]
    assert ba.rows[2][3] == "" and ba.rows[2][2] == f"{loc.after['energy_in_box']:.4g}"
    assert ba.caption == (
        "GradCAM on conv3 for each image's top-1 class, on the 4 images of input.split=test; pointing game "
        "tolerance 0.03; chance: a random point's pointing game (the mean share of the image the grown box "
        "covers)"
    )
    scalars = {s.name: (s.value, s.key, s.better) for s in res.scalars}
    assert list(scalars) == [
        "train/val_accuracy", "train/val_loss", "train/train_accuracy", "train/train_loss",
        "train/epochs_done", "train/pointing_game_before", "train/pointing_game_after",
        "train/pointing_game_chance",
    ]  # fmt: skip
    assert scalars["train/val_accuracy"] == (last.val_accuracy, True, "higher")
    assert scalars["train/val_loss"] == (last.val_loss, True, "lower")
    assert scalars["train/train_accuracy"] == (last.train_accuracy, True, "higher")
    assert scalars["train/train_loss"] == (last.train_loss, True, "lower")
    assert scalars["train/epochs_done"] == (2.0, True, None)
    assert scalars["train/pointing_game_before"] == (pg0, True, None)
    assert scalars["train/pointing_game_after"] == (pg1, True, "higher")
    assert scalars["train/pointing_game_chance"] == (loc.chance, False, None)
    curves, *strips = res.pictures
    assert curves.path == "train/curves.png" and (ctx.output_dir / curves.path).is_file()
    assert curves.caption == "Loss and accuracy after each epoch (TensorBoard has every step)"
    assert [p.path for p in strips] == [
        "train/cam_over_time/val_00000_circle.png",
        "train/cam_over_time/val_00001_square.png",
    ]
    assert all(p.group == "CAM over time" and p.wide for p in strips) and not curves.wide
    assert strips[1].caption == (
        "val_00001_square: GradCAM on conv3 for its class 1 square, epochs 0..2 left to right "
        "(0 = before training)"
    )
    from PIL import Image

    with Image.open(ctx.output_dir / strips[0].path) as img:
        assert 64 <= img.size[1] < 80 and img.size[0] >= 3 * 64  # 3 frames side by side, 2x size
    (text,) = res.texts
    assert text.title == "View and reuse" and text.open
    assert text.body == (
        f"tensorboard --logdir {ctx.output_dir / 'tensorboard'}\n"
        f"python run.py model=shapes_net model.checkpoint={ctx.output_dir / 'train/checkpoint.pt'} "
        "input=shapes 'stages=[cam]'"
    )
    assert res.files[-2:] == ["train/checkpoint.pt", "train/history.json"]
    tb = res.files[:-2]
    assert len(tb) == 2 and tb[0].startswith("tensorboard/train/events.out.tfevents.")
    assert tb[1].startswith("tensorboard/val/events.out.tfevents.")


# --------------------------------------------------------------------------- options


def test_max_steps_scheduler_lr_per_step_and_log_every(tmp_path: Path) -> None:
    """StepLR(step_size=2, gamma=0.5): the lr logged at each step is the one that step used, the
    epoch records its last step's; log_every=2 logs steps 2 and 4; max_steps=4 cuts epoch 2 short
    (incomplete, noted in the table); no histograms and no graph when switched off."""
    ctx, _, res = run_stage(
        tmp_path / "run",
        "train.max_steps=4",
        "train.log_every=2",
        "train.histograms=false",
        "train.graph=false",
        "train.cam_images=0",
        "train.pointing_game=false",
        "train.optimizer._target_=torch.optim.SGD",
        "+train.optimizer.momentum=0.5",
        "train.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:2,gamma:0.5}",
    )
    h = res.data
    assert h.steps_done == 4 and [e.steps for e in h.epochs] == [3, 4]
    assert [e.complete for e in h.epochs] == [True, False]
    assert [e.lr for e in h.epochs] == pytest.approx([0.005, 0.005])
    assert h.settings["max_steps"] == 4 and h.settings["optimizer"] == {
        "_target_": "torch.optim.SGD",
        "momentum": 0.5,
    }
    assert h.settings["scheduler"] == {
        "_target_": "torch.optim.lr_scheduler.StepLR",
        "step_size": 2,
        "gamma": 0.5,
    }
    assert h.localisation is None and res.params["optimizer"] == "SGD"
    assert res.tables[0].rows[1][-1] == "cut short (train.max_steps)" and res.tables[0].rows[0][-1] == ""
    assert len(res.tables) == 1 and len(res.pictures) == 1  # curves only: no strips
    assert (
        res.summary.startswith("2/2 epoch(s), 4 steps: val accuracy ") and "pointing game" not in res.summary
    )
    train = events(ctx.output_dir / "tensorboard/train")
    assert [e.step for e in train.Scalars("loss")] == [2, 4]
    assert [e.value for e in train.Scalars("lr")] == pytest.approx([0.01, 0.005])
    assert train.Tags()["histograms"] == [] and not train.Tags()["graph"]
    assert [e.step for e in events(ctx.output_dir / "tensorboard/val").Scalars("loss")] == [3, 4]
    assert [t for t in events(ctx.output_dir / "tensorboard/val").Tags()["images"]] == []


FAULTY = ["model._target_=helper_models.FaultyNet", "model.name=faulty", "train.pointing_game=false"]


def test_nan_loss_stops_with_the_exact_message_and_the_last_good_weights(tmp_path: Path) -> None:
    """A NaN loss at step 5 (epoch 2): one VizpipeError with the exact text; history says stopped
    with the same text; the model holds epoch 1's checkpoint; steps 1..4 are logged."""
    keep: list = []
    with pytest.raises(VizpipeError) as e:
        run_stage(tmp_path / "run", *FAULTY, "+model.kwargs.fault_at=5", "train.cam_images=0", keep=keep)
    (ctx,) = keep
    saved = torch.load(tmp_path / "run/train/checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in ctx.model.state_dict().items())  # epoch 1's weights
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert not ctx.model.training and ctx.nonfinite_params == []
    message = (
        "Training stopped at epoch 2, step 5: the loss is nan (train.lr=0.01, the step's lr 0.01); the "
        "model keeps the weights of epoch 1 (train/checkpoint.pt) and every log stays. Lower train.lr or "
        "set train.grad_clip (e.g. 1.0)"
    )
    assert str(e.value) == message
    h = History.load(tmp_path / "run/train/history.json")
    assert h.status == "stopped" and h.error == message and h.epochs_done == 1 and h.steps_done == 3
    train = events(tmp_path / "run/tensorboard/train")
    assert [x.step for x in train.Scalars("loss")] == [1, 2, 3, 4]


def test_interrupt_writes_history_and_reraises(tmp_path: Path) -> None:
    """Ctrl-C during epoch 1: KeyboardInterrupt goes on; history says interrupted, exact text."""
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "run", *FAULTY, "+model.kwargs.fault=interrupt", "train.cam_images=0")
    h = History.load(tmp_path / "run/train/history.json")
    assert h.status == "interrupted" and h.epochs_done == 0
    assert h.error == "Interrupted during epoch 1; train/checkpoint.pt holds epoch 0"


def test_nonfinite_losses_become_none_and_evaluate_empty_loader() -> None:
    """_finite keeps finite numbers, None otherwise; evaluate on no batch is (None, None)."""
    from vizpipe.stages.train.loop import _finite, evaluate

    assert _finite(1.5) == 1.5 and _finite(float("nan")) is None and _finite(float("inf")) is None
    assert evaluate(torch.nn.Linear(2, 2), [], "cpu") == (None, None)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    net = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    loss, acc = evaluate(net, [{"x": x[:2], "label": y[:2]}, {"x": x[2:], "label": y[2:]}], "cpu")
    assert acc == pytest.approx(1 / 3) and not net.training
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(x, y)))


# --------------------------------------------------------------------------- the plan's rules


def settings(**changes: Any) -> Any:
    """TrainConfig's defaults, changed (no maps unless asked: the rules only)."""
    import dataclasses

    from vizpipe.stages.train import TrainConfig

    return dataclasses.replace(TrainConfig(cam_images=0, pointing_game=False), **changes)


def test_check_settings_messages() -> None:
    """Every config-only rule of train.* with its exact message; the defaults pass."""
    from vizpipe.stages.train.plan import check_settings

    check_settings(settings())
    check_settings(settings(max_steps=1, workers=0, cam_images=0, grad_clip=0.1, pointing_tolerance=0.0))
    check_settings(settings(image_weight=0.0, log_every=1, epochs=1, batch_size=1))
    check_settings(settings(image_weight=1.0, pointing_tolerance=0.49, cam_method="finercam"))
    cases = {
        "train.epochs must be >= 1, got 0": dict(epochs=0),
        "train.max_steps must be >= 1 or null (no cap), got 0": dict(max_steps=0),
        "train.batch_size must be >= 1, got 0": dict(batch_size=0),
        "train.workers must be >= 0, got -1": dict(workers=-1),
        "train.log_every must be >= 1, got 0": dict(log_every=0),
        "train.cam_images must be >= 0 (0 = no maps over time), got -1": dict(cam_images=-1),
        "train.lr must be > 0, got 0.0": dict(lr=0.0),
        "train.lr must be > 0, got -1": dict(lr=-1),
        "train.grad_clip must be > 0 or null (no clipping), got 0": dict(grad_clip=0),
        "train.pointing_tolerance must be in [0, 0.5), got 0.5": dict(pointing_tolerance=0.5),
        "train.pointing_tolerance must be in [0, 0.5), got -0.1": dict(pointing_tolerance=-0.1),
        "train.image_weight must be in [0, 1], got 1.5": dict(image_weight=1.5),
        "train.image_weight must be in [0, 1], got -0.5": dict(image_weight=-0.5),
        "train.optimizer must be a mapping with a _target_, got 'adam'; "
        "e.g. 'train.optimizer={_target_:torch.optim.SGD,momentum:0.9}'": dict(optimizer="adam"),
        "train.scheduler must be a mapping with a _target_, got 3; "
        "e.g. 'train.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:2}'": dict(scheduler=3),
        "train.optimizer needs a _target_ naming a class, "
        "e.g. train.optimizer._target_=torch.optim.SGD": dict(optimizer={"momentum": 0.9}),
        "train.scheduler needs a _target_ naming a class, e.g. "
        "train.scheduler._target_=torch.optim.lr_scheduler.StepLR": dict(scheduler={"_target_": "  "}),
        "train.optimizer.lr is set by the train stage; remove it (set the learning rate with train.lr)": dict(
            optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}
        ),
        "train.optimizer.params is set by the train stage; remove it (the stage passes it)": dict(
            optimizer={"_target_": "torch.optim.SGD", "params": []}
        ),
        "train.scheduler.optimizer is set by the train stage; remove it (the stage passes it)": dict(
            scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "optimizer": 1}
        ),
        "train.cam_method=finercam wraps a base method (FinerCAM); choose a plain CAM method, "
        "e.g. train.cam_method=gradcam": dict(cam_method="finercam", cam_images=1),
        "train.cam_method=sess wraps a base method (SESS); choose a plain CAM method, "
        "e.g. train.cam_method=gradcam": dict(cam_method="sess", pointing_game=True),
    }
    for message, change in cases.items():
        with pytest.raises(ConfigError) as e:
            check_settings(settings(**change))
        assert str(e.value) == message
    with pytest.raises(ConfigError, match=r"^train.optimizer needs a _target_ naming a class"):
        check_settings(settings(optimizer=None))


def test_check_settings_backend_node_and_input_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """OmegaConf nodes are read as dicts; the input kind must have splits (exact message); a missing
    backend package is named with its pip line."""
    import importlib.util

    from omegaconf import OmegaConf
    from vizpipe.stages.train.plan import _target_node, check_settings

    node = OmegaConf.create({"_target_": "torch.optim.SGD", "momentum": 0.9})
    assert _target_node(node, "optimizer", ("lr",)) == {"_target_": "torch.optim.SGD", "momentum": 0.9}
    nested = _target_node(
        OmegaConf.create({"_target_": "torch.optim.Adam", "betas": [0.8, 0.9]}), "optimizer", ()
    )
    assert type(nested["betas"]) is list and nested["betas"] == [0.8, 0.9]  # plain containers
    check_settings(settings(), "shapes")
    check_settings(settings())  # no input kind given: not checked
    with pytest.raises(ConfigError) as e:
        check_settings(settings(), "photo")
    assert str(e.value) == (
        "The train stage needs a labelled data set with train and val splits, but input=photo has none; "
        "use input=cifar10 | input=imagefolder | input=shapes (e.g. experiment=shapes_demo)"
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a)
    )
    with pytest.raises(ConfigError) as e:
        check_settings(settings())
    assert str(e.value) == (
        "train.backend=tensorboardX needs the 'tensorboardX' package, which is not installed; "
        "pip install tensorboardX"
    )


def test_uses_cam() -> None:
    """Maps are drawn when cam_images > 0 or the pointing game is on."""
    from vizpipe.stages.train.plan import uses_cam

    assert not uses_cam(settings(cam_images=0, pointing_game=False))
    assert uses_cam(settings(cam_images=0, pointing_game=True))
    assert uses_cam(settings(cam_images=1, pointing_game=False))


def test_make_optimizer_and_scheduler_fill_the_run_s_numbers() -> None:
    """The optimizer gets the trainable parameters only and lr=train.lr; the scheduler gets
    total_steps/T_max (the run's steps) and max_lr (train.lr) when it takes them and the config
    leaves them out; with epochs, OneCycleLR counts its own steps; no trainable parameter fails."""
    from vizpipe.stages.train.plan import _parameters, make_optimizer, make_scheduler

    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
    net[0].weight.requires_grad_(False)
    opt = make_optimizer(net, settings(lr=0.25, optimizer={"_target_": "torch.optim.SGD", "momentum": 0.5}))
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert group["lr"] == 0.25 and group["momentum"] == 0.5 and len(group["params"]) == 3
    assert make_scheduler(opt, settings(), 7) is None
    one = make_scheduler(
        opt, settings(lr=0.25, scheduler={"_target_": "torch.optim.lr_scheduler.OneCycleLR"}), 7
    )
    assert isinstance(one, torch.optim.lr_scheduler.OneCycleLR) and one.total_steps == 7
    assert opt.param_groups[0]["max_lr"] == 0.25
    node = {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "epochs": 2,
        "steps_per_epoch": 3,
        "max_lr": 0.5,
    }
    own = make_scheduler(make_optimizer(net, settings()), settings(scheduler=node), 7)
    assert own.total_steps == 6
    cos = make_scheduler(
        opt, settings(scheduler={"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"}), 9
    )
    assert cos.T_max == 9
    fixed = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 3}
    assert make_scheduler(opt, settings(scheduler=fixed), 9).T_max == 3
    step = make_scheduler(
        opt, settings(scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2}), 9
    )
    assert step.step_size == 2
    assert {"step_size", "gamma"} <= _parameters("torch.optim.lr_scheduler.StepLR")
    assert (
        _parameters("torch.optim.lr_scheduler.NoSuchLR") == set() and _parameters("nosuchmodule.X") == set()
    )
    with pytest.raises(ConfigError) as e:
        make_optimizer(net, settings(optimizer={"_target_": "torch.optim.SGD", "lr": 1}))
    assert str(e.value).startswith("train.optimizer.lr is set by the train stage; remove it")
    with pytest.raises(ConfigError, match=r"^Unknown train.optimizer _target_ 'torch.optim.NoSuchOpt'; "):
        make_optimizer(net, settings(optimizer={"_target_": "torch.optim.NoSuchOpt"}))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError) as e:
        make_optimizer(frozen, settings())
    assert (
        str(e.value)
        == "The model has no trainable parameters (every requires_grad is False); nothing to train"
    )


def test_make_plan_resolves_and_refuses(tmp_path: Path) -> None:
    """make_plan: classes, the CAM method and its layer; outputs that do not match the classes (with
    ', ...' past 6 names) or that are probabilities are refused with exact messages."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.stages.train.plan import make_plan

    ctx = build_context(compose_config([*TINY, "model.num_classes=8"]), tmp_path / "a")
    with pytest.raises(ConfigError) as e:  # fewer outputs than classes: refused by the build already
        make_plan(ctx, settings())
    assert str(e.value) == (
        "shapes_net has 8 outputs but input=shapes has 6 classes (circle, square, triangle, cross, star, "
        "ring); the train stage needs one output per class: set model.num_classes=6"
    )
    ctx.inputs.classes = [f"c{i}" for i in range(9)]
    with pytest.raises(ConfigError) as e:
        make_plan(ctx, settings())
    assert "has 9 classes (c0, c1, c2, c3, c4, c5, ...); the train" in str(e.value)
    ctx = build_context(compose_config([*TINY, "model.output=probabilities"]), tmp_path / "b")
    with pytest.raises(ConfigError) as e:
        make_plan(ctx, settings())
    assert str(e.value) == (
        "shapes_net's outputs are probabilities (model.output=probabilities); the train stage needs logits "
        "(cross-entropy): drop the final Softmax/Sigmoid or set model.output=logits"
    )
    ctx = build_context(compose_config(TINY), tmp_path / "c")
    plan = make_plan(ctx, settings(cam_images=2))
    assert plan.classes[:2] == ["circle", "square"] and plan.method.name == "GradCAM"
    assert [x.name for x in plan.layers] == ["conv3"]
    plain = make_plan(ctx, settings())
    assert plain.method is None and plain.layers == []
    with pytest.raises(ConfigError, match=r"^train.epochs must be >= 1, got 0$"):
        make_plan(ctx, settings(epochs=0))  # the config rules run again
    with pytest.raises(
        ConfigError, match=r"^Unknown layer 'conv9' for shapes_net; .* train.cam_layer takes auto"
    ):
        make_plan(ctx, settings(cam_images=1, cam_layer="conv9"))
    blocks = make_plan(ctx, settings(cam_images=1, cam_layer="blocks"))
    assert [x.name for x in blocks.layers] == ["conv1", "conv2", "conv3"]  # the model's blocks
    with pytest.raises(
        ConfigError,
        match=r"^Unknown train.scheduler _target_ 'torch.optim.lr_scheduler.NoSuchLR'; did you mean",
    ):
        make_plan(ctx, settings(scheduler={"_target_": "torch.optim.lr_scheduler.NoSuchLR"}))
    ctx.inputs.kind = "photo"
    with pytest.raises(
        ConfigError, match=r"^The train stage needs a labelled data set .* input=photo has none"
    ):
        make_plan(ctx, settings())


# --------------------------------------------------------------------------- record, result, board


def test_history_record_and_checkpoint_helpers(tmp_path: Path) -> None:
    """History: add advances the counters, last, JSON round trip, NaN refused, unknown keys refused;
    checkpoints round-trip strictly."""
    from vizpipe.stages.train.record import load_state, save_checkpoint

    h = History(model="m", seed=1, data="shapes", classes=["a"], train_images=2, val_images=1, settings={})
    assert h.last is None and h.status == "running" and h.threads == 0 and h.error is None
    r1 = EpochRecord(1, 3, 0.5, 0.25, None, None, 0.1)
    r2 = EpochRecord(2, 5, 0.4, 0.5, 0.3, 1.0, 0.1, complete=False)
    h.add(r1)
    h.add(r2)
    assert (h.epochs_done, h.steps_done, h.last) == (2, 5, r2) and r1.complete
    path = h.write(tmp_path / "h.json")
    assert path == tmp_path / "h.json" and path.read_text().endswith("}\n")
    assert History.load(path) == h and json.loads(path.read_text())["epochs"][1]["complete"] is False
    assert '\n  "model": "m"' in h.to_json()
    h.epochs[0].train_loss = float("nan")
    with pytest.raises(ValueError):
        h.to_json()
    doc = json.loads(path.read_text())
    doc["extra"] = 1
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(Exception):  # noqa: B017 - from_dict refuses unknown keys
        History.load(tmp_path / "x.json")
    net = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "c.pt", net)
    other = torch.nn.Linear(2, 2)
    load_state(tmp_path / "c.pt", other)
    assert torch.equal(other.weight, net.weight)
    with pytest.raises(RuntimeError):
        load_state(tmp_path / "c.pt", torch.nn.Linear(2, 3))


def test_fmt_and_curves_without_epochs() -> None:
    """_fmt: None -> '–', 4 significant digits, percentages with one decimal; no epochs, no curves."""
    from vizpipe.stages.train.result import _fmt, write_curves

    assert _fmt(None) == "–" and _fmt(None, True) == "–"
    assert _fmt(1234.5678) == "1235" and _fmt(0.5, True) == "50.0%" and _fmt(0.12344, pct=False) == "0.1234"
    h = History(model="m", seed=1, data="d", classes=[], train_images=0, val_images=0, settings={})
    assert write_curves(SimpleNamespace(), h) is None


def test_board_without_lr_or_val_numbers_and_an_untraceable_graph(tmp_path: Path) -> None:
    """Board.step without lr logs no lr; validation with None logs nothing; a model that cannot be
    traced is one warning naming it and the first line of the error; files are run-relative."""
    from vizpipe.stages.train.board import Board

    class Untraceable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no tracing here\nsecond line")

    warned: list[str] = []
    ctx = SimpleNamespace(output_dir=tmp_path, model_name="odd", warn=warned.append)
    with Board(ctx, settings(histograms=True, graph=True)) as board:
        board.step(1, 0.5, 0.25, None)
        board.step(2, 0.4, 0.5, 0.1)
        board.validation(2, None, None)
        board.validation(3, 0.7, None)
        board.graph(Untraceable(), torch.zeros(1, 2))
        net = torch.nn.Linear(2, 1)
        board.parameters(net, 0, gradients=True)  # no gradients yet: weights only
    assert not board.writers
    assert warned == ["Training: no model graph in TensorBoard, odd cannot be traced (no tracing here)"]
    train, val = events(tmp_path / "tensorboard/train"), events(tmp_path / "tensorboard/val")
    assert [e.step for e in train.Scalars("lr")] == [2] and [e.step for e in train.Scalars("loss")] == [1, 2]
    assert [e.value for e in train.Scalars("accuracy")] == [0.25, 0.5]
    assert [e.step for e in val.Scalars("loss")] == [3] and "accuracy" not in val.Tags()["scalars"]
    assert sorted(train.Tags()["histograms"]) == ["weights/bias", "weights/weight"]
    files = board.files()
    assert [f.split("/")[:2] for f in files] == [["tensorboard", "train"], ["tensorboard", "val"]]
    with Board(ctx, settings(histograms=False, graph=False)) as off:
        off.parameters(net, 1, gradients=True)
        off.graph(Untraceable(), torch.zeros(1, 2))
    assert len(warned) == 1

    class Silent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("   ")

    with Board(ctx, settings()) as again:
        again.graph(Silent(), torch.zeros(1, 2))
    assert warned[-1] == "Training: no model graph in TensorBoard, odd cannot be traced (ValueError)"


def test_cam_frames_single_epoch_caption_and_none(tiny: tuple[Any, Any, Any]) -> None:
    """CamFrames: one capture gives 'epoch 0' in the caption and one tile per strip; count 0 or no
    method draws nothing."""
    from vizpipe.pipeline.inputs import build_split
    from vizpipe.stages.train.frames import CamFrames
    from vizpipe.stages.train.plan import make_plan

    ctx, _, _ = tiny
    plan = make_plan(ctx, settings(cam_images=1))
    val = build_split(ctx.inputs, "val")
    frames = CamFrames(ctx, plan, val, 1, 0.3)
    assert frames.strips() == []  # nothing captured yet
    out = frames.capture(0)
    assert list(out) == ["val_00000_circle"] and out["val_00000_circle"].shape == (32, 32, 3)
    assert out["val_00000_circle"].dtype == np.uint8
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from vizpipe.stages.train.frames import cam_maps

    _, maps = cam_maps(ctx, plan, frames.batch.tensor, [0])  # the image's true class: circle
    want = show_cam_on_image(frames.batch.rgb[0], np.clip(maps[0], 0, 1), use_rgb=True, image_weight=0.3)
    assert np.array_equal(out["val_00000_circle"], want)
    assert frames.epochs == [0] and len(frames.frames["val_00000_circle"]) == 1
    ((name, caption, strip),) = frames.strips()
    assert caption == (
        "val_00000_circle: GradCAM on conv3 for its class 0 circle, epoch 0 left to right "
        "(0 = before training)"
    )
    assert strip.shape[0] >= 64 and strip.shape[1] < 2 * 64 + 16
    none = CamFrames(ctx, plan, val, 0, 0.5)
    assert none.batch is None and none.capture(3) == {} and none.strips() == [] and none.names == []
    nomethod = CamFrames(ctx, make_plan(ctx, settings()), val, 2, 0.5)
    assert nomethod.capture(0) == {}


def test_training_equals_a_hand_written_loop(tiny: tuple[Any, Any, Any], tmp_path: Path) -> None:
    """The trained weights equal a plain loop's: the same initial weights, the train split shuffled by
    a generator seeded with the run's seed, batches of 4, train mode, cross-entropy, zero_grad,
    backward, Adam(lr=0.01) for 2 epochs; the first step's loss and accuracy are the logged ones; the
    logged input grid is make_grid of the first shuffled batch."""
    from torch.utils.data import DataLoader
    from torchvision.utils import make_grid
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.inputs import build_split

    ctx, _, _ = tiny
    fresh = build_context(compose_config(TINY), tmp_path / "fresh")
    model = fresh.model
    train = build_split(fresh.inputs, "train")
    loader = DataLoader(
        train.dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(ctx.seed)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(2):
        model.train()
        for batch in loader:
            logits = model(batch["x"])
            loss = torch.nn.functional.cross_entropy(logits, batch["label"])
            if first is None:
                acc = float((logits.argmax(1) == batch["label"]).float().mean())
                first = (float(loss.detach()), acc, make_grid(batch["rgb"], nrow=8, padding=2, pad_value=1.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained = ctx.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.allclose(trained[key].float(), value.float(), atol=1e-5), key
    tb = events(ctx.output_dir / "tensorboard/train")
    assert tb.Scalars("loss")[0].value == pytest.approx(first[0], rel=1e-5)
    assert tb.Scalars("accuracy")[0].value == pytest.approx(first[1])
    import io

    from PIL import Image

    png = tb.Images("inputs/train_batch")[0].encoded_image_string
    got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255.0
    want = first[2].permute(1, 2, 0).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1 / 255 + 1e-6


def test_console_lines_per_epoch(tiny: tuple[Any, Any, Any]) -> None:
    """One INFO line per epoch with the epoch, steps, train and val numbers, exact format."""
    ctx, _, res = tiny
    expected = [
        f"train: epoch {r.epoch}/2, {r.steps} steps: loss {r.train_loss:.4f}, "
        f"accuracy {r.train_accuracy:.3f} | val loss {r.val_loss:.4f}, accuracy {r.val_accuracy:.3f}"
        for r in res.data.epochs
    ]
    assert ctx.log_lines == expected


def test_stage_attributes_and_config_defaults(compose: Any) -> None:
    """The stage's name, title, order and opt-in; TrainConfig's defaults equal conf/train/default.yaml
    and are pinned; the CAM settings the frames use."""
    import dataclasses

    from omegaconf import OmegaConf
    from vizpipe.pipeline.tensorboard_io import TBBackend
    from vizpipe.stages.train import TrainConfig, TrainStage
    from vizpipe.stages.train.frames import STRIP_FACTOR, CamSettings

    assert (TrainStage.name, TrainStage.title, TrainStage.order, TrainStage.default) == (
        "train",
        "Training",
        5,
        False,
    )
    assert TrainStage.config is TrainConfig and TrainStage().plan is None
    defaults = dataclasses.asdict(TrainConfig())
    assert defaults == {
        "epochs": 5, "max_steps": None, "batch_size": 32, "workers": 0, "lr": 0.001,
        "optimizer": {"_target_": "torch.optim.Adam"}, "scheduler": None, "grad_clip": None,
        "log_every": 1, "histograms": True, "graph": True, "backend": TBBackend.tensorboardX,
        "cam_method": "gradcam", "cam_layer": "auto", "cam_images": 8, "pointing_game": True,
        "pointing_tolerance": 0.03, "image_weight": 0.5, "random_labels": False,
    }  # fmt: skip
    yaml = OmegaConf.to_container(compose(["stages=[train]", "input=shapes"]).train)
    assert {k: v for k, v in yaml.items() if k != "backend"} == {
        k: v for k, v in defaults.items() if k != "backend"
    }
    assert dataclasses.asdict(CamSettings()) == {
        "batch_size": 32, "freeze_params": True, "eigen_smooth": False, "aug_smooth": False,
    }  # fmt: skip
    assert STRIP_FACTOR == 2


def test_run_without_validate_and_the_torch_backend(tmp_path: Path) -> None:
    """run() builds its own plan when validate did not; backend=torch writes the same tags."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.stages.train import TrainStage

    cfg = compose_config([*TINY, "train.backend=torch", "train.epochs=1", "train.cam_images=1"])
    ctx = build_context(cfg, tmp_path / "run")
    res = TrainStage().run(ctx, settings_of(cfg, "train"))
    assert res.data.status == "ok" and res.data.steps_done == 3
    train = events(tmp_path / "run/tensorboard/train")
    assert sorted(train.Tags()["scalars"]) == ["accuracy", "loss", "lr"]
    assert [e.step for e in train.Scalars("loss")] == [1, 2, 3]
    assert [
        e.step for e in events(tmp_path / "run/tensorboard/val").Images("cam_over_time/val_00000_circle")
    ] == [0, 1]


def test_input_grid_takes_the_first_32_images(tmp_path: Path) -> None:
    """inputs/train_batch: make_grid of at most 32 images, 8 a row, 2 px white padding, step 0."""
    from vizpipe.stages.train.board import Board

    ctx = SimpleNamespace(output_dir=tmp_path, model_name="m", warn=print)
    with Board(ctx, settings()) as board:
        board.input_grid(torch.zeros(40, 3, 2, 2))
    (img,) = events(tmp_path / "tensorboard/train").Images("inputs/train_batch")
    assert (img.step, img.width, img.height) == (0, 8 * 4 + 2, 4 * 4 + 2)


def test_clipping_sgd_scheduler_and_max_steps_equal_a_hand_written_loop(tmp_path: Path) -> None:
    """With grad_clip, SGD(momentum), StepLR and max_steps=4 the weights equal a plain loop that
    clips the total gradient norm before each step, steps the scheduler after it, stops at step 4."""
    from torch.utils.data import DataLoader
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.inputs import build_split

    extra = [
        "train.grad_clip=0.05",
        "train.max_steps=4",
        "train.cam_images=0",
        "train.pointing_game=false",
        "train.optimizer._target_=torch.optim.SGD",
        "+train.optimizer.momentum=0.5",
        "train.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:2,gamma:0.5}",
    ]
    ctx, _, res = run_stage(tmp_path / "run", *extra)
    fresh = build_context(compose_config([*TINY, *extra]), tmp_path / "fresh")
    model = fresh.model
    loader = DataLoader(
        build_split(fresh.inputs, "train").dataset,
        batch_size=4,
        shuffle=True,
        generator=torch.Generator().manual_seed(ctx.seed),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    step = 0
    for _ in range(2):
        model.train()
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            opt.step()
            sched.step()
            step += 1
            if step == 4:
                break
        if step == 4:
            break
    trained = ctx.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.allclose(trained[key].float(), value.float(), atol=1e-6), key
    assert res.data.steps_done == 4 and res.data.settings["grad_clip"] == 0.05


def test_result_of_a_history_without_epochs(tmp_path: Path) -> None:
    """No epoch: no curves, scalars None (epochs_done 0), 'no epoch' in the summary, no strips;
    the curves of one epoch are an 800×300 PNG."""
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.train.result import result, write_curves

    ctx = RunContext(
        model=torch.nn.Linear(1, 1), model_name="m", inputs=None, device="cpu", output_dir=tmp_path
    )
    h = History(model="m", seed=0, data="shapes", classes=["a"], train_images=3, val_images=2, settings={
        "epochs": 4, "lr": 0.5, "batch_size": 2, "optimizer": {"_target_": "torch.optim.SGD"},
    })  # fmt: skip
    frames = SimpleNamespace(strips=lambda: [])
    res = result(ctx, None, h, ["train/checkpoint.pt", "train/history.json"], frames)
    assert res.summary == "0/4 epoch(s), 0 steps: no epoch" and res.pictures == []
    assert res.params == {"epochs": "4", "lr": "0.5", "optimizer": "SGD", "batch_size": "2"}
    assert [(s.name, s.value) for s in res.scalars] == [
        ("train/val_accuracy", None), ("train/val_loss", None), ("train/train_accuracy", None),
        ("train/train_loss", None), ("train/epochs_done", 0.0),
    ]  # fmt: skip
    assert (
        res.tables[0].rows == []
        and len(res.tables) == 1
        and res.files == ["train/checkpoint.pt", "train/history.json"]
    )
    h.add(EpochRecord(1, 2, 1.0, 0.5, None, None, 0.5))
    assert write_curves(ctx, h) == "train/curves.png"
    from PIL import Image

    with Image.open(tmp_path / "train/curves.png") as img:
        assert img.size == (800, 300)
    res = result(
        RunContext(model=ctx.model, model_name="m", inputs=None, device="cpu", output_dir=tmp_path / "b"),
        None,
        h,
        [],
        frames,
    )
    assert res.tables[0].rows == [[1, 2, "1", "50.0%", "–", "–", "0.5", ""]]
