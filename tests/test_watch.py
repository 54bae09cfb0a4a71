"""vizpipe.Watch in a hand-written loop, and the Lightning callback: the train stage's layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs.shapes import SHAPES, ShapesDataset
from vizpipe.pipeline.models import ShapesNet

import vizpipe

MEAN, STD = [0.5] * 3, [0.5] * 3


def read_events(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


def val_set(n: int = 3) -> tuple[torch.Tensor, list[int], list[list[float]]]:
    items = [ShapesDataset(0, "val", n, 64, MEAN, STD)[i] for i in range(n)]
    return (
        torch.stack([i["x"] for i in items]),
        [i["label"] for i in items],
        [i["box"].tolist() for i in items],
    )


def hand_loop(watch: vizpipe.Watch | None, epochs: int = 2) -> ShapesNet:
    torch.manual_seed(0)
    model = ShapesNet(width=4)
    data = ShapesDataset(0, "train", 32, 64, MEAN, STD)
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if watch is not None:
        watch = watch(model)
    for _ in range(epochs):
        model.train()
        for batch in loader:
            logits = model(batch["x"])
            loss = torch.nn.functional.cross_entropy(logits, batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if watch is not None:
                acc = (logits.argmax(1) == batch["label"]).float().mean()
                watch.step(loss=loss, accuracy=acc, lr=0.1, images=batch["x"])
        if watch is not None:
            watch.epoch(val_loss=1.5, val_accuracy=0.25)
    if watch is not None:
        model.run = watch.close()
    return model


@pytest.mark.slow
def test_watch_writes_the_train_stages_layout_and_changes_nothing_it_watches(tmp_path):
    x, labels, boxes = val_set()

    def make(model):
        return vizpipe.Watch(
            model, x, tmp_path / "w", cam={"images": 2}, boxes=boxes, labels=labels, categories=list(SHAPES)
        )

    watched, alone = hand_loop(make), hand_loop(None)
    for key, value in alone.state_dict().items():  # watching changed no weight, buffer or draw
        assert torch.equal(watched.state_dict()[key], value), key
    run = watched.run
    assert run.ok and run.report_path == tmp_path / "w" / "report.html"
    train, val = read_events(tmp_path / "w/tensorboard/train"), read_events(tmp_path / "w/tensorboard/val")
    assert [e.step for e in train.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in train.Scalars("lr")] == [1, 2, 3, 4]
    assert [e.step for e in val.Scalars("accuracy")] == [2, 4]
    assert [e.step for e in train.Histograms("weights/linear.weight")] == [0, 1, 2]
    assert [e.step for e in train.Histograms("gradients/linear.weight")] == [1, 2]
    assert train.Tags()["graph"] and [e.step for e in train.Images("inputs/train_batch")] == [0]
    frames = sorted(t for t in val.Tags()["images"] if t.startswith("cam_over_time/"))
    assert frames == ["cam_over_time/input_0", "cam_over_time/input_1"]
    assert [e.step for e in val.Images(frames[0])] == [0, 1, 2]
    record = run["train"]
    assert record.data.epochs_done == 2 and record.data.steps_done == 4
    assert record.data.localisation is not None and record.data.localisation.images == 3
    names = [s.name for s in record.scalars]
    assert "train/pointing_game_before" in names and "train/pointing_game_after" in names
    assert [p.path for p in record.pictures] == [
        "train/curves.png",
        "train/cam_over_time/input_0.png",
        "train/cam_over_time/input_1.png",
    ]
    manifest = json.loads((tmp_path / "w/manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["stages"][0]["name"] == "train"
    html = (tmp_path / "w/report.html").read_text()
    assert "Training" in html and "Before and after training" in html


def test_watch_rules_are_one_line(tmp_path):
    x, _, _ = val_set(2)
    model = ShapesNet(width=4)
    with pytest.raises(ConfigError, match="Unknown Watch cam key 'metod'; did you mean 'method'"):
        vizpipe.Watch(model, x, tmp_path / "a", cam={"metod": "gradcam"})
    with pytest.raises(ConfigError, match="every_n_steps must be >= 1"):
        vizpipe.Watch(model, x, tmp_path / "b", every_n_steps=0)
    with pytest.raises(ConfigError, match="boxes has 1 entries for 2 images"):
        vizpipe.Watch(model, x, tmp_path / "c", boxes=[[0, 0, 1, 1]])
    with pytest.raises(ConfigError, match="conv9"):
        vizpipe.Watch(model, x, tmp_path / "d", cam={"layer": "conv9"})
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x").write_text("")
    with pytest.raises(ConfigError, match="already holds"):
        vizpipe.Watch(model, x, tmp_path / "e")


@pytest.mark.slow
def test_lightning_callback_watches_a_real_trainer(tmp_path):
    """A real ``Trainer`` (CPU, 1 epoch on input=shapes data) with no vizpipe call in the module."""
    pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
    from vizpipe.integrations.lightning import VizpipeCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = ShapesNet(width=4)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            logits = self(x)
            self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=True)
            return torch.nn.functional.cross_entropy(logits, y)

        def validation_step(self, batch, _):
            x, y = batch
            logits = self(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, split: str, n: int) -> None:
            self.data = ShapesDataset(0, split, n, 64, MEAN, STD)

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, i: int):
            item = self.data[i]
            return item["x"], item["label"]

    x, labels, boxes = val_set(2)
    callback = VizpipeCallback(x, tmp_path / "vz", every_n_steps=1, boxes=boxes, labels=labels)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[callback],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    torch.manual_seed(0)
    trainer.fit(
        Module(), DataLoader(Pairs("train", 32), batch_size=16), DataLoader(Pairs("val", 16), batch_size=16)
    )
    run = callback.run
    assert run is not None and run.ok and run.report_path.is_file()
    train = read_events(tmp_path / "vz/tensorboard/train")
    assert [e.step for e in train.Scalars("loss")] == [1, 2]
    assert [e.step for e in train.Scalars("accuracy")] == [1, 2]
    val = read_events(tmp_path / "vz/tensorboard/val")
    assert [e.step for e in val.Scalars("loss")] == [2]
    assert sorted(t for t in val.Tags()["images"] if t.startswith("cam_over_time/")) == [
        "cam_over_time/input_0",
        "cam_over_time/input_1",
    ]
    assert run["train"].data.localisation is not None
