"""vizpipe.inspect: the command line's run on a model object, leaving the caller's process as found."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from vizpipe.pipeline.cache import get_cache
from vizpipe.pipeline.errors import ConfigError

import vizpipe

ROOT = Path(__file__).resolve().parent.parent
FAST = {"stages": ["summary", "cam"], "input": {"limit": 2}}


class Tiny(nn.Module):
    """Defined here (not importable by a config): like a class written in a notebook."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        return self.fc(self.pool(torch.relu(self.conv2(x))).flatten(1))


def images(n: int = 2, size: int = 24) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_leaves_the_callers_process_and_model_as_found(tmp_path):
    """RNG states, deterministic flag, thread count, model state and reference count as before."""
    torch.manual_seed(0)
    model = Tiny().train()
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    model.fc.bias.requires_grad_(False)
    model.conv2.register_forward_hook(lambda *a: None)
    model.bn.eval()
    random.seed(123)
    np.random.seed(7)
    torch.manual_seed(99)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    before = {
        "python": random.getstate(),
        "numpy": np.random.get_state()[1].copy(),
        "torch": torch.get_rng_state(),
        "modes": [m.training for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grad": model.conv1.weight.grad,
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [len(m._forward_hooks) for m in model.modules()],
        "refs": sys.getrefcount(model),
    }
    try:
        run = vizpipe.inspect(model, images(), out=tmp_path / "run", **FAST)
        assert run.ok and run.stages == ["summary", "cam"]
        assert random.getstate() == before["python"]
        assert np.array_equal(np.random.get_state()[1], before["numpy"])
        assert torch.equal(torch.get_rng_state(), before["torch"])
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.get_num_threads() == threads
    finally:
        torch.use_deterministic_algorithms(False)
    assert [m.training for m in model.modules()] == before["modes"]
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in before["state"].items())
    assert model.conv1.weight.grad is before["grad"]
    assert [p.requires_grad for p in model.parameters()] == before["requires_grad"]
    assert [len(m._forward_hooks) for m in model.modules()] == before["hooks"]
    del run
    gc.collect()
    assert sys.getrefcount(model) == before["refs"]
    assert not any(e.model is model for e in get_cache()._entries.values())
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # nothing vizpipe holds keeps the model (or its memory) alive


def test_writes_the_run_folder_and_returns_typed_records(tmp_path):
    torch.manual_seed(0)
    run = vizpipe.inspect(Tiny(), images(), out=tmp_path / "run", **FAST, cam={"layer": "conv1"})
    out = tmp_path / "run"
    for name in ("manifest.json", "run.log", "report.html", "report.md", ".hydra/config.yaml"):
        assert (out / name).is_file(), name
    assert run.report_path == out / "report.html" and run.manifest_path == out / "manifest.json"
    cam = run["cam"]
    assert isinstance(cam, vizpipe.StageResult) and cam.data is not None  # the stage's own document
    assert "conv1" in cam.summary
    assert [im.name for im in cam.data.images] == ["input_0", "input_1"]
    assert [m.layer for im in cam.data.images for m in im.maps] == ["conv1", "conv1"]
    assert all(p.is_file() for p in run.files("cam"))
    html = run._repr_html_()
    assert html.startswith("<iframe srcdoc=") and "&lt;html" in html.lower()
    loaded = vizpipe.Run.load(out)
    assert loaded.stages == run.stages and loaded["cam"].summary == cam.summary
    assert "vizpipe.Run ok" in repr(run)
    manifest = (out / "manifest.json").read_text()
    assert '"model": "Tiny"' in manifest and '"kind": "objects"' in manifest


def test_bad_values_are_one_line_config_errors_before_any_work(tmp_path):
    model, x = Tiny(), images()
    cases = [
        ({"cma": {"layer": "conv1"}}, "Unknown vizpipe.inspect setting 'cma'; did you mean 'cam'?"),
        (
            {"cam": {"target_clas": 1}},
            "Unknown config key 'cam.target_clas'; did you mean 'cam.target_class'?",
        ),
        ({"overrides": ["cam.method=gradcm"]}, "gradcam"),
        ({"stages": ["cma"]}, "Unknown stage 'cma'; did you mean 'cam'?"),
        ({"overrides": ["input=shapes"]}, "give one of them"),
        ({"preprocess": {"rezise": 32}}, "did you mean 'resize'?"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ConfigError) as err:
            vizpipe.inspect(model, x, out=tmp_path / "never", **kwargs)
        assert words in str(err.value) and "\n" not in str(err.value), (kwargs, str(err.value))
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        vizpipe.inspect("resnet18", x)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds"):
        vizpipe.inspect(model, x, out=tmp_path / "used")


def test_a_failing_stage_raises_with_the_run_kept(tmp_path):
    with pytest.raises(vizpipe.RunFailed) as err:
        vizpipe.inspect(Tiny(), images(), out=tmp_path / "run", stages=["cam"], cam={"layer": "layer9"})
    assert "layer9" in str(err.value) and "conv1" in str(err.value)
    assert err.value.run.status == "failed" and (tmp_path / "run" / "manifest.json").is_file()


def test_every_kind_of_input(tmp_path):
    """PIL images, paths, a folder, a Dataset of (image, label) with classes, DataLoaders."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

    pictures = [Image.new("RGB", (40, 30), (i * 60, 100, 200)) for i in range(3)]
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, im in enumerate(pictures):
        im.save(folder / f"p{i}.png")

    class Labelled(Dataset):
        classes = ["a", "b", "c", "d"]

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int):
            return pictures[i], i + 1

    class Stream(IterableDataset):
        def __iter__(self):
            for i in range(5):
                yield torch.full((3, 24, 24), float(i)), i % 4

    tensors = TensorDataset(images(4), torch.tensor([0, 1, 2, 3]))
    prep = {"resize": 24, "crop": 24}
    given = {
        "pil": (pictures, prep),
        "paths": ([folder / "p0.png", str(folder / "p2.png")], prep),
        "folder": (folder, prep),
        "dataset": (Labelled(), prep),
        "loader": (DataLoader(tensors, batch_size=2, shuffle=True), None),
        "stream": (DataLoader(Stream(), batch_size=2), None),
    }
    seen = {}
    for name, (inputs, pre) in given.items():
        run = vizpipe.inspect(
            Tiny(), inputs, out=tmp_path / name, stages=["cam"], preprocess=pre, input={"limit": 4}
        )
        seen[name] = [(im.name, im.label, im.source) for im in run["cam"].data.images]
    assert [n for n, _, _ in seen["pil"]] == ["image_0", "image_1", "image_2"]
    assert seen["paths"] == [("p0", None, str(folder / "p0.png")), ("p2", None, str(folder / "p2.png"))]
    assert [n for n, _, _ in seen["folder"]] == ["p0", "p1", "p2"]
    assert seen["dataset"] == [(f"item_{i:05d}", i + 1, f"Labelled[{i}]") for i in range(3)]
    assert [label for _, label, _ in seen["loader"]] == [0, 1, 2, 3]  # in order, not shuffled
    assert [label for _, label, _ in seen["stream"]] == [0, 1, 2, 3]  # the first 4 (input.limit)
    manifest = (tmp_path / "dataset" / "manifest.json").read_text()
    assert '"name": "a"' in manifest or '"a"' in manifest  # the data set's class names


def test_train_stage_trains_a_copy(tmp_path):
    from vizpipe.pipeline.models import ShapesNet

    torch.manual_seed(0)
    model = ShapesNet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run = vizpipe.inspect(
        model,
        stages=["train"],
        out=tmp_path / "run",
        overrides=["input=shapes", "input.train_count=32", "input.val_count=16", "input.test_count=8"],
        train={"epochs": 1, "cam_images": 2, "graph": False},
    )
    assert run.ok and run["train"].data.epochs_done == 1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


SCRIPT = """\
import torch, vizpipe
from mymodels import TinyNet

torch.manual_seed(0)
model = TinyNet()
x = torch.load("input.pt")
run = vizpipe.inspect(model, x, out="library")
print(run.report_path)
"""

MODELS = """\
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, **_):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))
"""


@pytest.mark.slow
def test_a_ten_line_script_equals_run_py_with_the_model_by_target(tmp_path):
    """Every .npy of ``vizpipe.inspect`` is byte-identical to ``run.py model._target_=...``."""
    (tmp_path / "mymodels.py").write_text(MODELS)
    (tmp_path / "script.py").write_text(SCRIPT)
    torch.save(images(3, 32), tmp_path / "input.pt")
    assert len(SCRIPT.strip().splitlines()) <= 10
    env = {"PYTHONPATH": f"{ROOT}:{tmp_path}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    lib = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert lib.returncode == 0, lib.stderr[-3000:]
    cli = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "model._target_=mymodels.TinyNet",
            "model.name=TinyNet",
            "model.blocks=null",  # the default model's (resnet18's) blocks: found from this model instead
            "input=tensor",
            "input.path=input.pt",
            "hydra.run.dir=cli",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    ours = sorted(p.relative_to(tmp_path / "library") for p in (tmp_path / "library").rglob("*.npy"))
    theirs = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*.npy"))
    assert ours and ours == theirs
    for rel in ours:
        assert (tmp_path / "library" / rel).read_bytes() == (tmp_path / "cli" / rel).read_bytes(), rel
    assert (tmp_path / "library" / "report.html").is_file()


def test_compose_puts_back_the_callers_hydra(tmp_path):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text("x: 1\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = vizpipe.compose(["model=vgg11"])
        assert cfg.model.name == "vgg11"
        assert GlobalHydra.instance().is_initialized()
        from hydra import compose

        assert compose(config_name="app").x == 1
