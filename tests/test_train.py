"""The train stage: reproducible, checkpoint reloads, faults keep everything, TensorBoard reads back,
and the demo (experiment=shapes_demo) learns and localises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import compose_config, run_cli
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.stages.train.record import History

#: a tiny training run: 96 train, 32 val, 8 visualised images of 32 px; 2 epochs of 6 steps
SMALL = [
    "model=shapes_net",
    "input=shapes",
    "input.size=32",
    "input.train_count=96",
    "input.val_count=32",
    "input.test_count=8",
    "input.limit=8",
    "train.epochs=2",
    "train.batch_size=16",
    "train.lr=0.01",
    "train.cam_images=2",
    "report.enabled=false",
    "stages=[train]",
]


@pytest.fixture(scope="module", autouse=True)
def _heavy_imports_one_thread() -> Any:
    """grad-cam (OpenCV, scikit-learn) and TensorBoard take ~2 s to import once per process: paid
    here, in setup, rather than by whichever test happens to run first. Training runs on one torch
    thread (restored afterwards): these models are tiny, and OpenMP threads that wait for each other
    on a busy 2-core machine make a run many times slower."""
    import pytorch_grad_cam  # noqa: F401
    import tensorboardX  # noqa: F401

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_run(out: Path, *extra: str) -> Any:
    return run_pipeline(compose_config([*SMALL, *extra]), out)


def read_events(logdir: Path) -> Any:
    """TensorBoard's own reader, keeping every event."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


FAULTY = ["model._target_=helper_models.FaultyNet", "model.name=faulty"]


# --------------------------------------------------------------------------- the stage


def test_train_writes_checkpoint_history_and_hands_over_the_trained_model(tmp_path: Path) -> None:
    res = train_run(tmp_path / "a", "stages=[train,cam]", "train.max_steps=9")
    assert res.ok, res.error
    run = tmp_path / "a"
    h = History.load(run / "train/history.json")
    assert h.status == "ok" and h.epochs_done == 2 and h.steps_done == 9
    assert [e.complete for e in h.epochs] == [True, False]  # max_steps cut the second epoch short
    assert h.train_images == 96 and h.val_images == 32 and h.classes[0] == "circle"
    loc = h.localisation
    assert loc is not None and loc.images == 8 and loc.split == "test" and 0 < loc.chance < 1
    record = manifest(run)["stages"][0]
    scalars = {s["name"]: s for s in record["result"]["scalars"]}
    assert scalars["train/epochs_done"]["value"] == 2 and scalars["train/epochs_done"]["key"]
    assert (
        scalars["train/val_accuracy"]["better"] == "higher" and scalars["train/val_loss"]["better"] == "lower"
    )
    assert scalars["train/pointing_game_after"]["value"] == loc.after["pointing_game"]
    arts = {a["path"] for a in record["artifacts"]}
    assert {"train/checkpoint.pt", "train/history.json"} <= arts
    assert any(a.startswith("tensorboard/train/events") for a in arts)
    assert any(a.startswith("tensorboard/val/events") for a in arts)
    assert len([a for a in arts if a.startswith("train/cam_over_time/")]) == 2
    # the CAM stage after it sees the trained model: its numbers are the train stage's "after"
    cam = json.loads((run / "cam/cam.json").read_text())["means"]
    assert cam["pointing_game"] == pytest.approx(loc.after["pointing_game"])
    assert cam["top1_accuracy"] == pytest.approx(loc.after["top1_accuracy"])


def test_same_seed_same_history_and_checkpoint_tensors(tmp_path: Path) -> None:
    from vizpipe.stages.train import reuse

    for name in ("a", "b"):
        reuse.forget()  # train both times (a kept training would be copied: stages/train/reuse.py)
        assert train_run(tmp_path / name).ok
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "train/history.json").read_bytes() == (b / "train/history.json").read_bytes()
    sa = torch.load(a / "train/checkpoint.pt", weights_only=True)
    sb = torch.load(b / "train/checkpoint.pt", weights_only=True)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = train_run(tmp_path / "c", "seed=1")
    assert other.ok
    assert (tmp_path / "c/train/history.json").read_bytes() != (a / "train/history.json").read_bytes()


def test_checkpoint_loads_with_model_checkpoint_strictly(tmp_path: Path) -> None:
    from vizpipe.pipeline.factory import build_context

    assert train_run(tmp_path / "a").ok
    ckpt = tmp_path / "a/train/checkpoint.pt"
    saved = torch.load(ckpt, weights_only=True)  # plain tensors only
    ctx = build_context(compose_config([*SMALL, f"model.checkpoint={ckpt}", "seed=5"]), tmp_path / "b")
    state = ctx.model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert not ctx.model.training
    history = History.load(tmp_path / "a/train/history.json")
    assert ctx.top_k(1)[0][0]["name"] in history.classes


def test_nan_loss_stops_with_one_message_and_keeps_checkpoint_and_logs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = train_run(run, *FAULTY, "+model.kwargs.fault=nan", "+model.kwargs.fault_at=9", "stages=[train,cam]")
    assert not res.ok and res.status == "failed"
    assert "Training stopped at epoch 2, step 9: the loss is nan" in res.error
    assert "train.lr" in res.error and "train.grad_clip" in res.error
    rec = manifest(run)["stages"]
    assert (
        rec[0]["status"] == "failed"
        and rec[0]["error_type"] == "VizpipeError"
        and rec[1]["status"] == "skipped"
    )
    h = History.load(run / "train/history.json")
    assert (
        h.status == "stopped"
        and h.epochs_done == 1
        and h.error == res.error.removeprefix("stage train failed: ")
    )
    state = torch.load(run / "train/checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert {a["path"] for a in rec[0]["artifacts"]} >= {"train/checkpoint.pt", "train/history.json"}
    acc = read_events(run / "tensorboard/train")
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 9))  # every good step logged
    assert [e.step for e in read_events(run / "tensorboard/val").Scalars("loss")] == [6]


def test_keyboard_interrupt_keeps_checkpoint_history_and_logs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_run(run, *FAULTY, "+model.kwargs.fault=interrupt", "+model.kwargs.fault_at=8")
    m = manifest(run)
    assert m["status"] == "interrupted" and m["stages"][0]["status"] == "interrupted"
    h = History.load(run / "train/history.json")
    assert h.status == "interrupted" and h.epochs_done == 1 and "epoch 2" in h.error
    assert {a["path"] for a in m["stages"][0]["artifacts"]} >= {"train/checkpoint.pt", "train/history.json"}
    torch.load(run / "train/checkpoint.pt", weights_only=True)
    assert [e.step for e in read_events(run / "tensorboard/train").Scalars("loss")] == list(range(1, 8))


def test_tensorboard_two_runs_one_tag_histograms_and_cam_over_time(tmp_path: Path) -> None:
    assert train_run(tmp_path / "run", "train.epochs=3").ok
    train = read_events(tmp_path / "run/tensorboard/train")
    val = read_events(tmp_path / "run/tensorboard/val")
    for tag in ("loss", "accuracy"):
        steps = [e.step for e in train.Scalars(tag)]
        assert steps == list(range(1, 19))  # 3 epochs x 6 steps, every step
        assert [e.step for e in val.Scalars(tag)] == [6, 12, 18]  # after each epoch, same axis
    assert [e.step for e in train.Scalars("lr")] == list(range(1, 19))
    hist = train.Tags()["histograms"]
    assert "weights/conv1.0.weight" in hist and "gradients/linear.weight" in hist
    assert [e.step for e in train.Histograms("weights/linear.weight")] == [0, 1, 2, 3]
    assert [e.step for e in train.Histograms("gradients/linear.weight")] == [1, 2, 3]
    assert train.Tags()["graph"] and [e.step for e in train.Images("inputs/train_batch")] == [0]
    frames = [t for t in val.Tags()["images"] if t.startswith("cam_over_time/")]
    assert frames == ["cam_over_time/val_00000_circle", "cam_over_time/val_00001_square"]
    assert [e.step for e in val.Images(frames[0])] == [0, 1, 2, 3]  # epoch 0 = before training


def test_console_is_one_line_per_epoch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="vizpipe.stages.train"):
        assert train_run(tmp_path / "run").ok
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("vizpipe.stages.train") and r.levelno >= logging.INFO
    ]
    assert len(lines) == 2 and lines[0].startswith("train: epoch 1/2, 6 steps: loss")


# --------------------------------------------------------------------------- rules


def test_rules_fail_before_training(tmp_path: Path) -> None:
    from vizpipe.pipeline.runner import check_config

    with pytest.raises(
        ConfigError, match=r"needs a labelled data set with train and val splits, but input=photo"
    ):
        check_config(compose_config(["stages=[train]"]))
    with pytest.raises(ConfigError, match=r"train.optimizer.lr is set by the train stage; .*train.lr"):
        check_config(compose_config([*SMALL, "+train.optimizer.lr=0.1"]))
    with pytest.raises(ConfigError, match=r"Unknown CAM method 'gradcan'"):
        check_config(compose_config([*SMALL, "train.cam_method=gradcan"]))
    res = train_run(tmp_path / "a", "model.num_classes=4")
    assert "shapes_net has 4 outputs but input=shapes has 6 classes" in res.error
    assert "model.num_classes=6" in res.error
    res = train_run(tmp_path / "b", "train.cam_layer=conv9")
    assert "Unknown layer 'conv9'" in res.error and "train.cam_layer takes auto" in res.error
    res = train_run(tmp_path / "c", "train.scheduler={_target_:torch.optim.lr_scheduler.NoSuchLR}")
    assert "Unknown train.scheduler _target_ 'torch.optim.lr_scheduler.NoSuchLR'; did you mean" in res.error
    assert not (tmp_path / "c/train").exists()  # failed in validate: nothing ran


def test_scheduler_gets_the_run_s_steps(tmp_path: Path) -> None:
    sched = "train.scheduler={_target_:torch.optim.lr_scheduler.OneCycleLR}"
    assert train_run(tmp_path / "run", sched).ok
    h = History.load(tmp_path / "run/train/history.json")
    assert h.settings["scheduler"] == {"_target_": "torch.optim.lr_scheduler.OneCycleLR"}
    lrs = [e.value for e in read_events(tmp_path / "run/tensorboard/train").Scalars("lr")]
    assert (
        max(lrs) == pytest.approx(0.01, rel=0.05) and lrs[-1] < 1e-4
    )  # peak train.lr, annealed over 12 steps


@pytest.mark.slow
def test_train_stage_cli_without_splits_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(["stages=[train,summary]", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert proc.stderr.count("vizpipe: error:") == 1 and "input=shapes" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_sweep_index_ranks_a_method_sweep_by_pointing_game_not_by_the_shared_training(tmp_path: Path) -> None:
    """Every job of ``-m experiment=shapes_demo cam.method=...`` trains the same way: the train
    stage's key numbers tie, so the leaderboard ranks by the CAM stage's pointing game."""
    from vizpipe.pipeline.manifest import Manifest
    from vizpipe.pipeline.report.jobs import collect_sweep
    from vizpipe.pipeline.report.sweep import sweep_context
    from vizpipe.pipeline.stage import Scalar, StageResult

    for num, (method, pointing) in enumerate((("eigencam", 0.78), ("gradcam", 0.96), ("gradcam++", 0.99))):
        job = tmp_path / f"{num}_cam.method={method}"
        job.mkdir()
        m = Manifest(job, {"overrides": ["experiment=shapes_demo", f"cam.method={method}"]}, ["train", "cam"])
        train = [Scalar("train/val_accuracy", 0.98, key=True, better="higher")]
        train.append(Scalar("train/pointing_game_after", 0.96, key=True, better="higher"))
        cam = [
            Scalar("cam/score", 0.9, key=True),
            Scalar("cam/pointing_game", pointing, key=True, better="higher"),
        ]
        cam.append(Scalar("cam/energy_in_box", 1.0 - pointing, key=True, better="higher"))
        for rec, scalars in zip(m.stages, (train, cam), strict=True):
            rec.status, rec.result = "ok", StageResult(rec.name, scalars=scalars).to_dict()
        m.setup.status = m.report.status = "ok"
        m.write()
    board = sweep_context(collect_sweep(tmp_path))["leaderboard"]
    assert board["primary"] == "cam/pointing_game" and board["better"] == "higher"
    assert [r["params"] for r in board["rows"]] == [["gradcam++"], ["gradcam"], ["eigencam"]]


# --------------------------------------------------------------------------- the demo


@pytest.mark.slow
def test_shapes_demo_learns_and_its_gradcam_points_at_the_objects(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    cfg = compose_config(["experiment=shapes_demo", "stages=[train,cam]", "report.enabled=false"])
    res = run_pipeline(cfg, run)
    assert res.ok, res.error
    h = History.load(run / "train/history.json")
    assert h.last.val_accuracy >= 0.95, h.last
    cam = json.loads((run / "cam/cam.json").read_text())
    assert cam["method"] == "GradCAM" and len(cam["images"]) >= 100
    assert all(img["box"] is not None for img in cam["images"])
    assert cam["means"]["pointing_game"] >= 0.9, cam["means"]
    loc = h.localisation
    assert loc.after["pointing_game"] == pytest.approx(cam["means"]["pointing_game"])
    assert loc.before["pointing_game"] < loc.after["pointing_game"] - 0.3  # random init vs trained
