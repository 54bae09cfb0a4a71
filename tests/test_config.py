"""Unit tests of the config layer: every option of every group composes and builds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_options
from omegaconf import OmegaConf
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.factory.device import build_device
from vizpipe.pipeline.factory.model import build_model
from vizpipe.pipeline.inputs import build_inputs
from vizpipe.pipeline.names import safe_dirname
from vizpipe.pipeline.registry import default_stages, stage_classes

STAGES = list(stage_classes())

MODELS = group_options("model")


def test_defaults_list_is_the_table_of_contents(compose):
    cfg = compose()
    assert OmegaConf.get_type(cfg).__name__ == "Config"
    assert list(cfg.stages) == default_stages() == ["summary", "kernels", "features", "cam", "tensorboard"]
    assert cfg.model.name == "resnet18" and cfg.model.weights is None
    assert cfg.device.type == "auto" and cfg.input.kind == "photo" and cfg.seed == 0
    for stage in STAGES:
        assert stage in cfg, f"stage settings {stage}.* missing"
    text = (Path(__file__).parent.parent / "conf" / "config.yaml").read_text()
    primary = OmegaConf.load(Path(__file__).parent.parent / "conf" / "config.yaml")
    groups = [next(iter(d)) if isinstance(d, dict) else d for d in primary.defaults]
    assert not set(STAGES) & {str(g).split(" ")[-1] for g in groups}, groups  # stages are discovered
    assert "stages" not in primary
    for entry in (
        "model:",
        "device:",
        "input:",
        "experiment: null",
        "sweep: null",
        "optional local: default",
    ):
        assert entry in text


@pytest.mark.parametrize("overrides", [["stages=[cam]"], ["stages=[summary,cam]"], ["stages=[cam,summary]"]])
def test_stages_are_ordered_lists(compose, overrides):
    cfg = compose(overrides)
    assert list(cfg.stages) == overrides[0].split("=")[1].strip("[]").split(",")


@pytest.mark.parametrize(
    "override",
    [
        "cam.target_clas=1",
        "summary.depht=2",
        "stages=summary",
        "seed=abc",
        "on_error=maybe",
        "features.select=best",
        "tensorboard.backend=tf",
        "kernels.max_out=many",
    ],
)
def test_schema_rejects_typos_and_wrong_types(compose, override):
    with pytest.raises(Exception) as info:
        compose([override])
    assert "override" in str(info.value).lower() or "error" in str(info.value).lower()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_option_builds(compose, name):
    extra = {"torchvision": ["model.name=squeezenet1_0"], "timm": ["model.name=test_resnet"]}
    if name == "timm":
        pytest.importorskip("timm", reason="the timm extra is not installed")
    cfg = compose([f"model={name}", *extra.get(name, [])])
    torch.manual_seed(0)
    model, weights = build_model(cfg.model)
    # a timm model's preset is its own data config; a segmentation or detection model's its TaskPreset
    assert weights is None or name == "timm" or type(weights).__name__ == "TaskPreset"
    assert not model.training
    if cfg.model.blocks:
        names = dict(model.named_modules())
        for block in cfg.model.blocks.split(","):
            assert block in names, f"{name}: blocks entry {block} is not a module"


def test_seed_net_is_the_seeds_cnn(compose):
    model, _ = build_model(compose(["model=seed_net"]).model)
    out = model(torch.rand(1, 3, 224, 224)).detach()
    assert out.shape == (1, 1) and 0 <= float(out) <= 1
    assert str(model).startswith("SeedNet(\n  (conv1): Conv2d(3, 32, kernel_size=(3, 3), stride=(1, 1))")


@pytest.mark.parametrize("device", group_options("device"))
def test_every_device_option(compose, device):
    kind = compose([f"device={device}"]).device.type
    if kind == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            build_device(kind)
    else:
        assert build_device(kind).type in ("cpu", "cuda")


def _write_tensor(tmp_path: Path) -> Path:
    path = tmp_path / "batch.npy"
    np.save(path, np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    return path


@pytest.mark.parametrize("kind", group_options("input"))
def test_every_input_option_builds(compose, tmp_path, kind, monkeypatch):
    from test_datasets import cifar_root, write_folder
    from vizpipe.pipeline.inputs.images import bundled_photo

    extra = {
        "image": [f"input.path={bundled_photo()}"],
        "tensor": [f"input.path={_write_tensor(tmp_path)}"],
        "random": ["input.shape=[2,3,32,32]"],
    }.get(kind, [])
    if kind == "imagefolder":
        write_folder(tmp_path / "folder", {"cat": 10, "dog": 10})
        extra = [f"input.root={tmp_path / 'folder'}"]
    if kind == "cifar10":
        root, _ = cifar_root.__wrapped__(tmp_path, monkeypatch)  # a tiny CIFAR-10 in its own format
        extra = [f"input.root={root}"]
    cfg = compose([f"input={kind}", *extra])
    model, weights = build_model(cfg.model)
    inputs = build_inputs(cfg.input, weights, torch.device("cpu"), 0, model)
    batch = inputs.first()
    n, c, h, w = batch.tensor.shape
    assert c == 3 and batch.rgb.shape == (n, h, w, 3)
    assert batch.rgb.dtype == np.float32 and 0.0 <= batch.rgb.min() and batch.rgb.max() <= 1.0
    assert len(inputs.names) == n == len(inputs.sources) == len(inputs)
    if kind in ("photo", "image"):
        assert (h, w) == (224, 224) and inputs.names == ["grace_hopper"]
        # un-normalised rgb and model input agree through the documented normalisation
        mean = torch.tensor(inputs.mean).view(3, 1, 1)
        std = torch.tensor(inputs.std).view(3, 1, 1)
        back = batch.tensor[0] * std + mean
        assert torch.allclose(back.permute(1, 2, 0), torch.from_numpy(batch.rgb[0]), atol=1e-5)
    if kind == "tensor":
        assert torch.equal(inputs.tensor, torch.from_numpy(np.load(tmp_path / "batch.npy")))


@pytest.mark.parametrize("spec", ["folder", "glob"])
def test_image_folders_are_read_in_sorted_path_order(compose, tmp_path, spec):
    """Several images (one nested) written in a shuffled order come out sorted by path, each with
    its own pixels, whatever order the file system lists them in."""
    from PIL import Image

    colors = {"b.png": (200, 0, 0), "d.jpg": (0, 200, 0), "a.png": (0, 0, 200), "sub/c.png": (90, 90, 0)}
    for rel in ["d.jpg", "a.png", "sub/c.png", "b.png"]:  # neither sorted nor reverse-sorted
        (tmp_path / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), colors[rel]).save(tmp_path / "imgs" / rel, quality=100)
    path = tmp_path / "imgs" if spec == "folder" else tmp_path / "imgs" / "**" / "*.*"
    cfg = compose(["input=image", f"input.path={path}", "input.resize=32", "input.crop=32"])
    inputs = build_inputs(cfg.input, None, torch.device("cpu"), 0)
    order = sorted(colors)  # a.png, b.png, d.jpg, sub/c.png
    assert inputs.sources == [str(tmp_path / "imgs" / rel) for rel in order]
    assert inputs.names == ["a", "b", "d", "c"]
    rgb = inputs.first().rgb  # (4, 32, 32, 3) in [0, 1]
    for i, rel in enumerate(order):
        assert np.abs(rgb[i] * 255 - np.array(colors[rel])).max() <= 2, rel


@pytest.mark.parametrize("std", ["[0]", "[0.2,0,0.2]", "[0.2,-0.1,0.2]"])
def test_a_std_that_is_not_positive_fails_before_any_work(compose, std):
    from vizpipe.pipeline.inputs import check_input

    values = [float(v) for v in std.strip("[]").split(",")]
    with pytest.raises(ConfigError, match=r"input\.std must be positive, got " + re.escape(str(values))):
        check_input(compose([f"input.std={std}"]).input)
    check_input(compose(["input.std=[0.5]"]).input)  # a positive one passes


def test_random_input_is_seeded(compose):
    cfg = compose(["input=random", "input.shape=[1,3,16,16]"])
    a = build_inputs(cfg.input, None, torch.device("cpu"), 7).tensor
    b = build_inputs(cfg.input, None, torch.device("cpu"), 7).tensor
    c = build_inputs(cfg.input, None, torch.device("cpu"), 8).tensor
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_stage_group_and_experiment_compose(compose):
    for stage in STAGES:
        for option in group_options(stage):
            assert stage in compose([f"{stage}={option}"])
    for exp in group_options("experiment"):
        cfg = compose([f"experiment={exp}"])
        assert cfg.stages


def test_safe_dirname_is_filesystem_safe():
    name = safe_dirname('cam.layer=../x,input.path=/a/b:c*?"<>|\\')
    assert "/" not in name and "\\" not in name and ":" not in name and not name.startswith(".")
    assert len(safe_dirname("x=" + "a" * 500)) <= 120
    assert safe_dirname("x=" + "a" * 500) != safe_dirname("x=" + "a" * 499 + "b")


def test_pretrained_weights_resolve_and_drive_preprocessing(compose):
    from vizpipe.pipeline.inputs.images import preprocessing
    from vizpipe.pipeline.models import weights_enum

    w = weights_enum("resnet50", "DEFAULT")
    assert str(w) == "ResNet50_Weights.IMAGENET1K_V2"
    assert weights_enum("resnet50", "ResNet50_Weights.IMAGENET1K_V1").name == "IMAGENET1K_V1"
    prep = preprocessing(compose().input, w)
    assert (prep["resize"], prep["crop"]) == (232, 224)  # from the weights' own transforms()
    prep = preprocessing(compose(["input.resize=300", "input.crop=256"]).input, w)
    assert (prep["resize"], prep["crop"]) == (300, 256)
    assert len(w.meta["categories"]) == 1000
    with pytest.raises(ConfigError, match="IMAGENET9K.*DEFAULT"):
        weights_enum("resnet50", "IMAGENET9K")


def test_offline_download_failure_is_a_clear_error(compose, monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="Could not download weights.*model.weights=null"):
        build_model(compose(["model.weights=DEFAULT"]).model)
    assert calls, "the download went through torchvision's loader (never the network in tests)"


def test_class_names_resolve_only_when_the_model_has_names():
    from vizpipe.stages.cam.plan import parse_target_class

    names = ["tench", "goldfish", "crane", "crane"]
    assert parse_target_class(["goldfish", 0, "1"], 4, names, "m") == [1, 0]
    with pytest.raises(ConfigError, match="'tench' is not a class index.*no class names"):
        parse_target_class("tench", 4, None, "m")
    with pytest.raises(ConfigError, match="crane' names 2 classes of m: 2 \\(crane\\), 3 \\(crane\\)"):
        parse_target_class("crane", 4, names, "m")
    with pytest.raises(ConfigError, match="Unknown class name.*'tenchh'.*did you mean 'tench'"):
        parse_target_class("tenchh", 4, names, "m")
