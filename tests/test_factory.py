"""Building a run in-process: device, model factories, checkpoints, categories, targets, the context."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from vizpipe.pipeline import factory, models
from vizpipe.pipeline.errors import ConfigError, closest_first
from vizpipe.pipeline.factory.device import build_device
from vizpipe.pipeline.factory.model import build_model, load_categories, load_checkpoint, nonfinite_parameters
from vizpipe.pipeline.factory.targets import instantiate

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU messages")

# ------------------------------------------------------------------ device


def test_build_device_cpu_and_auto():
    """cpu (any case, spaces) is cpu; auto is cpu without a GPU."""
    assert build_device(" CPU ") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert build_device("auto").type == want


@no_cuda
def test_build_device_cuda_missing():
    """cuda / cuda:N without a GPU: one line with the valid choices."""
    for kind in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError) as info:
            build_device(kind)
        assert str(info.value) == (
            f"device '{kind}' was requested but no CUDA GPU is available "
            "(torch.cuda.is_available() is False); valid choices here: auto, cpu"
        )


def test_build_device_cuda_index_out_of_range(monkeypatch):
    """cuda:N beyond the visible GPUs names how many there are and the valid choices."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError) as info:
        build_device("cuda:2")
    assert (
        str(info.value)
        == "device 'cuda:2' does not exist: 2 GPU(s) visible; valid choices: auto, cpu, cuda:0, cuda:1"
    )
    assert build_device("cuda:1") == torch.device("cuda:1")
    assert build_device("cuda") == torch.device("cuda")
    assert build_device("auto") == torch.device("cuda")


def test_build_device_mps_and_unknown(monkeypatch):
    """mps unavailable: its message; an unknown kind lists the choices."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        build_device("mps")
    assert (
        str(info.value)
        == "device 'mps' was requested but MPS is not available; valid choices here: auto, cpu"
    )
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert build_device("mps") == torch.device("mps")
    with pytest.raises(ConfigError) as info:
        build_device("tpu")
    assert str(info.value).startswith("Unknown device 'tpu'")
    assert str(info.value).endswith(
        "Valid choices (closest first): "
        + ", ".join(closest_first("tpu", ["auto", "cpu", "cuda", "cuda:0", "mps"]))
    )


# ------------------------------------------------------------------ model factories


def test_weights_enum_forms():
    """DEFAULT, a member name and the qualified name all resolve; a bad name lists the members."""
    import torchvision

    enum = torchvision.models.ResNet18_Weights
    assert models.weights_enum("resnet18", "DEFAULT") is enum.DEFAULT
    assert models.weights_enum("resnet18", "IMAGENET1K_V1") is enum.IMAGENET1K_V1
    assert models.weights_enum("resnet18", "ResNet18_Weights.IMAGENET1K_V1") is enum.IMAGENET1K_V1
    with pytest.raises(ConfigError) as info:
        models.weights_enum("resnet18", "IMAGENET1K_V9")
    assert str(info.value) == (
        "Unknown weights 'IMAGENET1K_V9' for resnet18; did you mean 'IMAGENET1K_V1'? "
        "Valid choices (closest first): IMAGENET1K_V1, DEFAULT"
    )
    with pytest.raises(ConfigError) as info:
        models.weights_enum("no_such_model", "DEFAULT")
    assert str(info.value) == (
        "Model 'no_such_model' has no pretrained weights in torchvision; use model.weights=null"
    )


def test_torchvision_model_unknown_and_other_tasks():
    """Segmentation and detection models build (backbone weights off); another task names itself;
    an unknown name lists classifiers with the hint."""
    detector = models.torchvision_model("fasterrcnn_mobilenet_v3_large_320_fpn")
    assert type(detector).__name__ == "FasterRCNN"
    with pytest.raises(ConfigError) as info:
        models.torchvision_model("raft_small")
    assert str(info.value) == (
        "model.name 'raft_small' is a torchvision optical flow model; vizpipe supports image classifiers, "
        "segmentation and detection models and embeddings: pick one of "
        "torchvision.models.list_models(torchvision.models) (or .segmentation, .detection)"
    )
    with pytest.raises(ConfigError) as info:
        models.torchvision_model("resnet19")
    assert str(info.value).startswith("Unknown model 'resnet19'; did you mean 'resnet18'?")
    assert str(info.value).endswith(
        ". Set model.name (model=torchvision) to an image classifier, or pick a conf/model file"
    )


def test_torchvision_model_builds_random_init_with_classes():
    """num_classes and kwargs reach torchvision; bad kwargs become one ConfigError line."""
    m = models.torchvision_model("squeezenet1_0", num_classes=3)
    assert isinstance(m, nn.Module)
    assert m.classifier[1].out_channels == 3
    with pytest.raises(ConfigError) as info:
        models.torchvision_model("squeezenet1_0", bogus=1)
    assert str(info.value).startswith("Could not build model 'squeezenet1_0' with {'bogus': 1}: ")


def test_torchvision_model_download_failure(monkeypatch):
    """A weights download failing: offline advice; another runtime error: the plain message."""
    import torchvision

    def offline(name, weights=None, **kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ConfigError) as info:
        models.torchvision_model("resnet18", weights="DEFAULT")
    assert str(info.value) == (
        "Could not download weights ResNet18_Weights.IMAGENET1K_V1 for resnet18: network unreachable. "
        "Without internet, use model.weights=null (random init) or model.checkpoint=<local state_dict>"
    )

    def runtime(name, weights=None, **kw):
        raise RuntimeError("Error fetching URL")

    monkeypatch.setattr(torchvision.models, "get_model", runtime)
    with pytest.raises(ConfigError, match=r"^Could not download weights"):
        models.torchvision_model("resnet18", weights="DEFAULT")

    def other(name, weights=None, **kw):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(torchvision.models, "get_model", other)
    with pytest.raises(ConfigError) as info:
        models.torchvision_model("resnet18", weights="DEFAULT")
    assert str(info.value) == "Could not build model 'resnet18' with {}: shape mismatch"
    with pytest.raises(ConfigError) as info:
        models.torchvision_model("resnet18")  # no weights: never a download problem
    assert str(info.value) == "Could not build model 'resnet18' with {}: shape mismatch"


def test_seed_net_and_shapes_net():
    """SeedNet: sigmoid outputs, num_classes; ShapesNet: logits, width; weights refused."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    s = models.SeedNet()
    y = s(x)
    assert y.shape == (2, 1) and bool(((y > 0) & (y < 1)).all())
    assert models.SeedNet(num_classes=None)(x).shape == (2, 1)
    assert models.SeedNet(num_classes=4)(x).shape == (2, 4)
    assert (s.conv1.out_channels, s.conv2.out_channels, s.conv2.kernel_size) == (32, 64, (5, 5))
    with pytest.raises(ConfigError) as info:
        models.SeedNet(weights="DEFAULT")
    assert str(info.value) == "seed_net has no pretrained weights (got model.weights='DEFAULT'); use null"
    assert (s.pool.kernel_size, s.pool.stride) == (2, 2)
    assert s.pool(s.conv1(x)).shape == (2, 32, 15, 15)
    assert (s.linear1.in_features, s.linear1.out_features, s.linear2.in_features) == (64, 32, 32)
    n = models.ShapesNet(width=4)
    assert n.downsample.kernel_size == 2
    assert (n.pool1.kernel_size, n.pool1.stride, n.pool2.kernel_size, n.pool2.stride) == (2, 2, 2, 2)
    h = n.conv3(n.pool2(n.conv2(n.pool1(n.conv1(n.downsample(torch.zeros(1, 3, 64, 64)))))))
    assert h.shape == (1, 16, 8, 8)
    out = n(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 6)
    assert n.conv3[0].out_channels == 16 and n.linear.in_features == 16
    assert models.ShapesNet(width=2, num_classes=None).linear.out_features == 6
    assert models.ShapesNet(width=2, num_classes=3).linear.out_features == 3
    with pytest.raises(ConfigError) as info:
        models.ShapesNet(weights="x")
    assert str(info.value) == "shapes_net has no pretrained weights (got model.weights='x'); use null"
    block = models._conv_block(3, 5)
    assert (
        block[0].padding == (1, 1) and isinstance(block[1], nn.BatchNorm2d) and isinstance(block[2], nn.ReLU)
    )


# ------------------------------------------------------------------ build_model / targets


def test_build_model_pops_vizpipe_keys_and_evals():
    """build_model drops vizpipe's keys, merges kwargs, returns (model in eval mode, None)."""
    cfg = {
        "_target_": "vizpipe.pipeline.models.ShapesNet",
        "name": "shapes_net",
        "weights": None,
        "checkpoint": None,
        "blocks": "conv1",
        "categories": ["a"],
        "output": "logits",
        "kwargs": {"width": 2},
    }
    model, weights = build_model(cfg)
    assert weights is None and not model.training
    assert model.conv1[0].out_channels == 2


def test_build_model_not_a_module_and_weights():
    """A target returning no nn.Module is refused; torchvision weights come back as the enum."""
    with pytest.raises(ConfigError) as info:
        build_model({"_target_": "builtins.dict", "name": "x"})
    assert str(info.value) == "model._target_ 'builtins.dict' returned dict, not a torch.nn.Module"


def test_build_model_loads_checkpoint(tmp_path):
    """model.checkpoint: the state_dict is loaded."""
    src = models.ShapesNet(width=2)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    cfg = {"_target_": "vizpipe.pipeline.models.ShapesNet", "name": "s", "kwargs": {"width": 2}}
    model, _ = build_model({**cfg, "checkpoint": str(tmp_path / "w.pt")})
    assert torch.equal(model.linear.weight, src.linear.weight)


def test_instantiate_errors():
    """instantiate: a failing target becomes 'Could not build <what> ...'; a VizpipeError passes."""
    assert instantiate({"_target_": "builtins.dict", "a": 1}, "thing") == {"a": 1}
    with pytest.raises(ConfigError) as info:
        instantiate({"_target_": "no.such.Thing"}, "model from _target_")
    assert str(info.value).startswith("Could not build model from _target_ 'no.such.Thing': ")
    with pytest.raises(ConfigError) as info:
        instantiate({"_target_": "vizpipe.pipeline.models.SeedNet", "weights": "w"}, "m")
    assert str(info.value) == "seed_net has no pretrained weights (got model.weights='w'); use null"


# ------------------------------------------------------------------ checkpoints


def tiny():
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))


def test_load_checkpoint_ok_and_wrapped(tmp_path):
    """A plain, a wrapped ('state_dict', 'model', 'model_state_dict') and a DataParallel one load."""
    src = tiny()
    sd = src.state_dict()
    for i, doc in enumerate(
        (
            sd,
            {"state_dict": sd, "epoch": 1},
            {"model": sd},
            {"model_state_dict": sd},
            {f"module.{k}": v for k, v in sd.items()},
        )
    ):
        torch.save(doc, tmp_path / f"c{i}.pt")
        m = tiny()
        load_checkpoint(m, tmp_path / f"c{i}.pt")
        assert torch.equal(m[0].weight, src[0].weight), i


def test_load_checkpoint_errors(tmp_path):
    """Missing file, not a state_dict, mismatched keys and shapes: one line each."""
    with pytest.raises(ConfigError) as info:
        load_checkpoint(tiny(), tmp_path / "none.pt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'none.pt'}' does not exist (model.checkpoint); "
        "give the path of a saved state_dict"
    )
    torch.save([1, 2], tmp_path / "l.pt")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(tiny(), tmp_path / "l.pt")
    assert str(info.value) == f"Checkpoint '{tmp_path / 'l.pt'}' holds a list, not a state_dict"
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(tiny(), tmp_path / "junk.pt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'junk.pt'}' is a text file (it starts with 'not a pickle'), not a PyTorch "
        "file; model.checkpoint takes a state_dict saved with torch.save(model.state_dict(), path), read "
        "without running any code in the file"
    )
    sd = tiny().state_dict()
    sd["extra"] = torch.zeros(1)
    del sd["1.bias"]
    torch.save(sd, tmp_path / "k.pt")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(tiny(), tmp_path / "k.pt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'k.pt'}' does not match the model: "
        "missing keys: 1.bias; unexpected keys: extra"
    )
    sd = tiny().state_dict()
    sd["0.weight"] = torch.zeros(4, 2)
    torch.save(sd, tmp_path / "s.pt")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(tiny(), tmp_path / "s.pt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 's.pt'}' has tensors of the wrong shape (checkpoint vs model): "
        "0.weight (4, 2) vs (3, 2)"
    )


def test_load_checkpoint_many_missing_keys_are_cut(tmp_path):
    """More than 8 missing keys: 8 shown, then '... (N more)'; none: 'none'."""
    big = nn.Sequential(*[nn.Linear(1, 1) for _ in range(6)])  # 12 keys
    torch.save({}, tmp_path / "e.pt")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(big, tmp_path / "e.pt")
    keys = list(big.state_dict())
    assert str(info.value).endswith(
        f"missing keys: {', '.join(keys[:8])}, ... (4 more); unexpected keys: none"
    )


# ------------------------------------------------------------------ categories, nonfinite


def test_load_categories(tmp_path):
    """None; a list (as strings); a file, one name per line, blanks skipped; a missing file."""
    assert load_categories(None) is None
    assert load_categories([1, "b"]) == ["1", "b"]
    f = tmp_path / "c.txt"
    f.write_text(" cat \n\n dog\n")
    assert load_categories(str(f)) == ["cat", "dog"]
    with pytest.raises(ConfigError) as info:
        load_categories(str(tmp_path / "none.txt"))
    assert str(info.value) == (
        f"model.categories file '{tmp_path / 'none.txt'}' does not exist; "
        "give a text file with one class name per line, or a list"
    )


def test_nonfinite_parameters():
    """Names of float parameters/buffers with NaN or inf, also when the sum overflows only."""
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert nonfinite_parameters(m) == []
    with torch.no_grad():
        m[0].weight[0, 0] = float("nan")
        m[1].running_var[0] = float("inf")
    assert nonfinite_parameters(m) == ["0.weight", "1.running_var"]
    big = nn.Linear(2, 2)
    with torch.no_grad():
        big.weight.fill_(3e38)
    assert nonfinite_parameters(big) == []


# ------------------------------------------------------------------ seeds and the context


def test_seed_everything():
    """Same seed, same numbers from python, numpy and torch; large seeds are folded for numpy."""
    factory.seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    factory.seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    factory.seed_everything(2**32 + 3)
    assert np.random.rand() == pytest.approx(np.random.RandomState(3).rand())
    try:
        factory.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False
    finally:
        factory.seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_config_reaches_torch(compose, tmp_path):
    """``deterministic=true`` turns torch's deterministic algorithms on for the run's build; false off."""
    from vizpipe.pipeline.cache import get_cache

    small = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]", "stages=[summary]"]
    try:
        get_cache().clear()
        factory.build_context(compose([*small, "deterministic=true"]), tmp_path / "a")
        assert torch.are_deterministic_algorithms_enabled()
        get_cache().clear()
        factory.build_context(compose([*small, "deterministic=false"]), tmp_path / "b")
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        get_cache().clear()
        factory.seed_everything(0, deterministic=False)


def test_data_set_categories():
    """Data set class names name the outputs only when their number matches."""
    ctx = SimpleNamespace(num_classes=2, categories=None)
    factory._data_set_categories(ctx, ["a", "b"])
    assert ctx.categories == ["a", "b"]
    ctx = SimpleNamespace(num_classes=3, categories=None)
    factory._data_set_categories(ctx, ["a", "b"])
    assert ctx.categories is None


def test_build_context_fields(compose, tmp_path):
    """build_context: the context's fields from the config; categories must match the outputs."""
    from vizpipe.pipeline.cache import get_cache

    get_cache().clear()
    ctx = factory._build(
        compose(["model=seed_net", "input=random", "input.shape=[1,3,16,16]", "seed=4"]), tmp_path
    )
    assert (ctx.model_name, ctx.seed, ctx.weights, ctx.categories) == ("seed_net", 4, None, None)
    assert ctx.blocks_config == "conv1,conv2" and ctx.output_kind == "auto"
    assert ctx.output_dir == tmp_path and ctx.device == torch.device("cpu")
    assert not ctx.model.training
    with pytest.raises(ConfigError) as info:
        factory._build(
            compose(["model=seed_net", "input=random", "input.shape=[1,3,16,16]", "model.categories=[a,b]"]),
            tmp_path,
        )
    assert str(info.value) == (
        "model.categories has 2 names but the model has 1 outputs; give exactly one name per class"
    )
    ctx = factory._build(
        compose(["model=seed_net", "input=random", "input.shape=[1,3,16,16]", "model.categories=[a]"]),
        tmp_path,
    )
    assert ctx.categories == ["a"]


def test_build_context_warns_nonfinite(compose, tmp_path, monkeypatch):
    """Non-finite parameters: listed on the context and warned about (first five named)."""
    from vizpipe.pipeline.factory import model as model_mod

    monkeypatch.setattr(model_mod, "nonfinite_parameters", lambda m: [f"p{i}" for i in range(7)])
    ctx = factory._build(compose(["model=seed_net", "input=random", "input.shape=[1,3,16,16]"]), tmp_path)
    assert ctx.nonfinite_params == [f"p{i}" for i in range(7)]
    assert (
        "Model has non-finite (NaN/inf) values in 7 tensor(s): p0, p1, p2, p3, p4; results are invalid"
        in ctx.warnings
    )


def test_build_context_uses_cache(compose, tmp_path):
    """build_context stores a fresh build and hands it out again once released."""
    from vizpipe.pipeline.cache import get_cache

    cache = get_cache()
    cache.clear()
    cfg = compose(["model=seed_net", "input=random", "input.shape=[1,3,16,16]"])
    a = factory.build_context(cfg, tmp_path / "a")
    assert len(cache) == 1
    cache.release(a)
    b = factory.build_context(cfg, tmp_path / "b")
    assert b.model is a.model and b.output_dir == tmp_path / "b"
    cache.release(b)
    cache.clear()


def test_build_model_torchvision_weights_enum(monkeypatch):
    """A torchvision target with weights returns the weights enum (used for preprocessing and names)."""
    import torchvision

    seen = {}

    def fake(name, weights=None, **kw):
        seen.update(name=name, weights=weights, **kw)
        return nn.Linear(1, 1)

    monkeypatch.setattr(torchvision.models, "get_model", fake)
    cfg = {"_target_": "vizpipe.pipeline.models.torchvision_model", "name": "resnet18", "weights": "DEFAULT"}
    model, weights = build_model({**cfg, "num_classes": None, "kwargs": {"zero_init_residual": True}})
    assert weights is torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert seen == {"name": "resnet18", "weights": weights, "zero_init_residual": True}
    assert not model.training
    _, weights = build_model({**cfg, "weights": None})
    assert weights is None
