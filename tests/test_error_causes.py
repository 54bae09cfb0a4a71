"""Errors that used to hide their cause (issue 21): the one console line says what went wrong."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from torch import nn
from vizpipe.pipeline.errors import ConfigError, unknown_choice
from vizpipe.pipeline.factory.model import load_checkpoint
from vizpipe.pipeline.factory.targets import instantiate
from vizpipe.pipeline.layers import probe_model, resolve_layers
from vizpipe.pipeline.runner import run_pipeline

SMALL = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]", "report.enabled=false"]


def test_a_failing_target_names_its_cause_on_the_one_line(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Before: "Could not build ... 'torch.optim.SGD': Error in call to target 'torch.optim.SGD':"."""
    params = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError) as e:
        instantiate({"_target_": "torch.optim.SGD", "momentum": -1}, "train.optimizer", params, lr=0.1)
    assert (
        str(e.value)
        == "Could not build train.optimizer 'torch.optim.SGD': ValueError: Invalid momentum value: -1"
    )
    with pytest.raises(ConfigError) as e:
        instantiate({"_target_": "torch.optim.Adamm"}, "train.optimizer", params, lr=0.1)
    assert str(e.value).startswith(
        "Unknown train.optimizer _target_ 'torch.optim.Adamm'; did you mean 'torch.optim.Adam'? "
        "Valid choices (closest first): torch.optim.Adam, torch.optim.AdamW"
    )
    with pytest.raises(ConfigError) as e:
        instantiate({"_target_": "no_such_package.Thing"}, "model from _target_")
    assert str(e.value) == (
        "Could not build model from _target_ 'no_such_package.Thing': "
        "ModuleNotFoundError: No module named 'no_such_package'"
    )
    cfg = compose([*SMALL, "model._target_=torch.nn.Conv2d", "stages=[summary]"])
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.error == (
        "Could not build model from _target_ 'torch.nn.Conv2d': "
        "TypeError: Conv2d.__init__() got an unexpected keyword argument 'name'"
    )


def test_a_checkpoint_that_is_not_one_says_what_the_file_is(tmp_path: Path) -> None:
    """Before: "rejected it: 101" for a text file, and torch's advice to load unsafely for others."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    files = {
        "notes.pt": ("text", b"epoch 3, loss 0.1\n"),
        "noise.pt": ("bytes", b"\x80\x70" + random.Random(0).randbytes(298)),  # 0x80: not a pickle's PROTO
        "empty.pt": ("bytes", b""),
    }
    for name, (_, data) in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(model, tmp_path / "whole.pt")
    torch.save({"epoch": 3, "where": PurePosixPath("runs")}, tmp_path / "other.pt")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:3000])
    expected = {
        "notes.pt": "a text file (it starts with 'epoch 3, loss 0.1'), not a PyTorch file",
        "noise.pt": "not a PyTorch file (binary data starting ",
        "empty.pt": "an empty file",
        "whole.pt": "a PyTorch file holding pickled Python objects (torch.nn.modules.container.Sequential, "
        "torch.nn.modules.conv.Conv2d, torch.nn.modules.flatten.Flatten), not a state_dict of tensors",
        "other.pt": "a PyTorch file holding pickled Python objects (pathlib.PurePosixPath), not a state_dict",
        "array.npy": "a NumPy .npy array",
        "cut.pt": "a damaged zip archive (a PyTorch file cut short?)",
    }
    for name, what in expected.items():
        with pytest.raises(ConfigError) as e:
            load_checkpoint(model, tmp_path / name)
        message = str(e.value)
        assert message.startswith(f"Checkpoint '{tmp_path / name}' is {what}"), message
        assert message.endswith(
            "; model.checkpoint takes a state_dict saved with torch.save(model.state_dict(), path), "
            "read without running any code in the file"
        )
        assert "weights_only=False" not in message and "\n" not in message


class Shrinks(nn.Module):
    """Three unpadded 3×3 convolutions, two of stride 2: small inputs run out of pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, stride=2)
        self.b = nn.Conv2d(4, 4, 3, stride=2)
        self.c = nn.Conv2d(4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x))).mean((2, 3))


def _runs(model: nn.Module, side: int) -> bool:
    try:
        model(torch.zeros(1, 3, side, side))
    except RuntimeError:
        return False
    return True


def test_an_input_too_small_names_the_layer_what_reached_it_and_the_size_that_works() -> None:
    model = Shrinks().eval()
    smallest = next(s for s in range(1, 64) if _runs(model, s))  # the oracle: every size tried
    assert smallest == 15
    with pytest.raises(ConfigError) as e:
        probe_model(model, torch.zeros(2, 3, 12, 12))
    message = str(e.value)
    assert message.startswith(
        "Input 12×12 px is too small for Shrinks: layer 'c' (Conv2d) received a 2×2 map, shape 2×4×2×2, "
        "and failed (RuntimeError: Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3)."
    )
    assert message.endswith(
        f"; the smallest square input that works is {smallest}×{smallest} px (e.g. input.crop=15)"
    )
    assert [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks] == []


@pytest.mark.slow
def test_inception_on_64_px_says_it_needs_75(compose: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = compose(
        [
            "model=torchvision",
            "model.name=inception_v3",
            "input.resize=64",
            "input.crop=64",
            "stages=[summary]",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.error is not None and result.error.startswith(
        "stage summary failed: Input 64×64 px is too small for Inception3: layer 'Mixed_7a.branch3x3_2.conv' "
        "(Conv2d) received a 2×2 map, shape 1×192×2×2, and failed"
    )
    assert result.error.endswith("the smallest square input that works is 75×75 px (e.g. input.crop=75)")


def test_a_model_without_layers_says_so_instead_of_an_empty_list(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Before: "Unknown layer 'conv'. Valid choices (closest first): " and nothing after it."""
    from helper_models import FlatNet

    assert (
        str(unknown_choice("layer", "conv", [])) == "Unknown layer 'conv': there is no layer to choose from"
    )
    assert str(unknown_choice("layer", "x", [""], hint="Try auto")) == (
        "Unknown layer 'x': there is no layer to choose from. Try auto"
    )
    why = (
        "FlatNet has no addressable layers (no submodules: its forward computes everything itself), so no "
        "layer can be named; build it from nn.Module attributes (e.g. nn.Sequential) to look inside"
    )
    with pytest.raises(ConfigError) as e:
        resolve_layers(FlatNet(), ["conv"], model_name="flat")
    assert str(e.value) == f"Layer spec 'conv' for flat: {why}"
    over = [*SMALL, "model._target_=helper_models.FlatNet", "model.blocks=null"]
    result = run_pipeline(compose([*over, "stages=[features]"]), tmp_path / "features")
    assert result.error == f"features.layers: Layer spec 'blocks' for seed_net: {why}"
    result = run_pipeline(compose([*over, "stages=[cam]", "cam.layer=conv"]), tmp_path / "cam")
    assert result.error is not None and "Valid choices" not in result.error
    assert result.error.startswith("Unknown layer 'conv' for seed_net: there is no layer to choose from. ")
