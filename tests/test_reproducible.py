"""Same config and seed, the same bytes with several threads (``vizpipe.pipeline.reproducible``).

On the CPU, MKL sums the input gradient of a convolution with a 1×1 output in a varying order when
it runs on several threads: before the fix, two identical CAM runs with 2 threads differed in
their ``.npy`` (~2e-7) almost every time with 16 target classes (16 backward passes per run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from omegaconf import DictConfig
from vizpipe.pipeline import process
from vizpipe.pipeline.reproducible import CNR_ENV, cnr_requested, one_position_convolutions, reproducible
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.stages.train import reuse

#: a 32-px input: resnet18's layer4 convolutions have 1×1 outputs (the case MKL sums unordered)
SMALL_CAM = [
    "model=resnet18",
    "stages=[cam]",
    "input=random",
    "input.shape=[1,3,32,32]",
    "cam.layer=layer3",
    "cam.target_class=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]",
    "report.enabled=false",
]


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two torch threads, MKL without a reproducibility request (as in a notebook); put back after."""
    monkeypatch.delenv(CNR_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _arrays(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*.npy"))}


def test_cam_maps_are_byte_identical_in_process_with_two_threads(
    compose: Callable[..., DictConfig], tmp_path: Path, two_threads: None
) -> None:
    cfg = compose(SMALL_CAM)
    runs = []
    for i in range(2):
        result = run_pipeline(cfg, tmp_path / str(i))
        assert result.ok, result.error
        runs.append(_arrays(tmp_path / str(i)))
        assert torch.get_num_threads() == 2  # the caller's thread count is put back
    assert len(runs[0]) == 16
    for other in runs[1:]:
        assert other.keys() == runs[0].keys()
        assert [k for k in runs[0] if other[k] != runs[0][k]] == []


@pytest.mark.slow
def test_features_and_train_are_byte_identical_with_two_threads(
    compose: Callable[..., DictConfig], tmp_path: Path, two_threads: None
) -> None:
    cfg = compose(
        [
            "model=shapes_net",
            "input=shapes",
            "input.limit=4",
            "input.train_count=24",
            "input.val_count=8",
            "stages=[train,features]",
            "train.epochs=1",
            "train.max_steps=3",
            "train.batch_size=8",
            "train.cam_images=0",
            "train.pointing_game=false",
            "train.histograms=false",
            "train.graph=false",
            "features.layers=[conv3]",
            "report.enabled=false",
        ]
    )
    tensors, arrays = [], []
    for i in range(2):
        reuse.forget()  # each run trains (not the kept training: stages/train/reuse.py)
        result = run_pipeline(cfg, tmp_path / str(i))
        assert result.ok, result.error
        tensors.append(torch.load(tmp_path / str(i) / "train" / "checkpoint.pt", weights_only=True))
        arrays.append(_arrays(tmp_path / str(i)))
    a, b = tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert arrays[0] and arrays[0] == arrays[1]


def test_one_thread_only_where_needed_and_threads_put_back(
    make_ctx: Callable, monkeypatch: pytest.MonkeyPatch, two_threads: None
) -> None:
    small = make_ctx(["model=resnet18", "input=random", "input.shape=[1,3,32,32]"])
    found = one_position_convolutions(small.model, small.probe())
    assert "layer4.0.conv1" in found and "layer4.1.conv2" in found and "layer4.0.downsample.0" in found
    assert all(n.startswith("layer4.") for n in found)
    with reproducible(small):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), reproducible(small):
        raise RuntimeError("a stage failed")
    assert torch.get_num_threads() == 2
    large = make_ctx(["model=resnet18", "input=random", "input.shape=[1,3,224,224]"])
    assert one_position_convolutions(large.model, large.probe()) == []  # 7×7 at the smallest
    with reproducible(large):
        assert torch.get_num_threads() == 2  # no 1×1 convolution output: every thread
    monkeypatch.setenv(CNR_ENV, "AUTO")  # MKL asked for reproducible sums (the command line does)
    with reproducible(small):
        assert torch.get_num_threads() == 2


@pytest.mark.slow
def test_squeeze_excitation_convolutions_have_one_position(make_ctx: Callable) -> None:
    se = make_ctx(["model=mobilenet_v3_small", "input=random", "input.shape=[1,3,224,224]"])
    assert "features.1.block.1.fc1" in one_position_convolutions(se.model, se.probe())


def test_the_command_line_asks_mkl_for_reproducible_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CNR_ENV, raising=False)
    assert not cnr_requested()
    assert process.reproducible_math() and os.environ[CNR_ENV] == "AUTO"
    monkeypatch.setenv(CNR_ENV, "OFF")  # the user's own choice is kept
    assert not process.reproducible_math() and os.environ[CNR_ENV] == "OFF"
    monkeypatch.setenv(CNR_ENV, "COMPATIBLE")
    assert process.reproducible_math() and os.environ[CNR_ENV] == "COMPATIBLE"


@pytest.mark.slow
def test_two_command_line_runs_with_two_threads_write_the_same_maps(tmp_path: Path) -> None:
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    for name in ("a", "b"):
        proc = run_cli([*SMALL_CAM, f"hydra.run.dir={tmp_path / name}"], env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    assert len(a) == 16 and a == b
