"""Blocks and ``cam.layer=auto``: one home (vizpipe.pipeline.layers), the last spatial block everywhere.

``vizpipe.pipeline.layers`` on small hand-built models: probes, specs, layouts and default blocks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torchvision
from conftest import group_options
from torch import nn
from vizpipe.pipeline import layers as L
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.gradcam.layers import auto_layer, spatial_layers
from vizpipe.pipeline.layers import default_blocks, model_blocks, probe_model

# ---- Blocks and ``cam.layer=auto``: one home (vizpipe.pipeline.layers), the last spatial block
# everywhere.
SLOW_BUILDS = {  # over 1 s each; the others build and probe in well under a second
    "densenet121",
    "vgg16",
    "fcn_resnet50",
    "fasterrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "embedding",  # a ResNet-50
}
#: conf/model option -> what cam.layer=auto picks (the YAML's blocks are honoured)
AUTO = {
    "alexnet": "features.12",
    "densenet121": "features.denseblock4",  # not features.pool0, the 56×56 stem pool
    "efficientnet_b0": "features.8",
    "mobilenet_v3_small": "features.12",
    "resnet18": "layer4",
    "resnet50": "layer4",
    "seed_net": "conv2",
    "shapes_net": "conv3",
    "torchvision": "features.12",  # model.name=squeezenet1_0: its last Fire module, not the max pool
    "timm": "layer4",  # model.name=test_resnet (timm's small ResNet)
    "vgg11": "features.20",
    "vgg16": "features.30",
    "vit_b_16": "encoder.layers.encoder_layer_11.ln_1",  # a transformer: the last block's first norm
    # segmentation and detection: the backbone's last block (pipeline/layers.py BACKBONES)
    "fcn_resnet50": "backbone.layer4",
    "deeplabv3_mobilenet_v3_large": "backbone.16",
    "lraspp_mobilenet_v3_large": "backbone.16",
    "shapes_seg_net": "conv3",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "backbone.body.16",
    "fasterrcnn_resnet50_fpn_v2": "backbone.body.layer4",
    "retinanet_resnet50_fpn_v2": "backbone.body.layer4",
    "fcos_resnet50_fpn": "backbone.body.layer4",
    "maskrcnn_resnet50_fpn": "backbone.body.layer4",
    "shapes_det_net": "backbone.c5",  # its backbone's last level (no FPN: the levels are its blocks)
    "embedding": "layer4",  # a ResNet-50 without its head
}


def test_every_model_option_is_covered() -> None:
    assert set(AUTO) == set(group_options("model"))


@pytest.mark.parametrize(
    "option", [pytest.param(o, marks=pytest.mark.slow) if o in SLOW_BUILDS else o for o in sorted(AUTO)]
)
def test_auto_picks_the_last_spatial_block_of_every_model_option(make_ctx, option: str) -> None:
    from vizpipe.stages.cam import CamConfig
    from vizpipe.stages.cam.plan import make_plan

    extra = {"torchvision": ["model.name=squeezenet1_0"], "timm": ["model.name=test_resnet"]}.get(option, [])
    if option == "timm":
        pytest.importorskip("timm", reason="the timm extra is not installed")
    size = 224 if option == "vit_b_16" else 96
    if option.startswith(("fasterrcnn", "maskrcnn", "retinanet", "fcos")):  # they resize inside: small
        extra = ["+model.kwargs.min_size=128", "+model.kwargs.max_size=128"]
    ctx = make_ctx([f"model={option}", *extra, "input=random", f"input.shape=[1,3,{size},{size}]"])
    if option == "embedding":  # an embedding's maps need a concept
        from vizpipe.pipeline.inputs.images import bundled_photo

        settings = CamConfig(concept=str(bundled_photo()))
    else:
        settings = CamConfig()
    plan = make_plan(ctx, settings)
    assert [layer.name for layer in plan.layers] == [AUTO[option]]
    if option != "vit_b_16":
        assert plan.layers[0].name in ctx.blocks()  # auto is one of the blocks features draws
        assert ctx.blocks()[-1] == AUTO[option]


#: torchvision classifiers with no conf/model option: blocks found from the model
FOUND = {
    "squeezenet1_0": ("features.12", ["features.1", "features.5", "features.10", "features.12"]),
    "densenet121": ("features.norm5", None),
    "shufflenet_v2_x0_5": ("conv5", ["conv1", "maxpool", "stage2", "stage3", "conv5"]),
    "mnasnet0_5": ("layers.16", None),
    "regnet_y_400mf": ("trunk_output.block4", [f"trunk_output.block{i}" for i in range(1, 5)]),
    "googlenet": ("inception5b", None),
    "convnext_tiny": ("features.7", ["features.1", "features.3", "features.5", "features.7"]),
    "mobilenet_v2": ("features.18", None),
    "resnext50_32x4d": ("layer4", ["layer1", "layer2", "layer3", "layer4"]),
    "vgg11_bn": ("features.28", None),
    "swin_t": ("features.7.1.norm1", ["features.1", "features.3", "features.5", "features.7"]),
    "maxvit_t": ("blocks.3", ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]),
    "efficientnet_v2_s": ("features.7", None),
}


@pytest.mark.slow
def test_found_blocks_end_at_the_last_spatial_block_of_torchvision_classifiers() -> None:
    assert set(FOUND) <= set(torchvision.models.list_models(torchvision.models))
    for name, (auto, blocks) in FOUND.items():
        torch.manual_seed(0)
        kw = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        model = torchvision.models.get_model(name, **kw).eval()
        size = 224 if name == "maxvit_t" else 128
        probe = probe_model(model, torch.randn(1, 3, size, size))
        found = default_blocks(model, probe)
        assert auto_layer(model, probe, spatial_layers(model, probe), found) == auto, name
        if blocks is not None:
            assert found == blocks, name
        # every block is spatial, and each ends a resolution: the next block is smaller
        layouts = spatial_layers(model, probe)
        sizes = [layouts[b].layout.h * layouts[b].layout.w for b in found]
        assert all(a > b for a, b in zip(sizes, sizes[1:], strict=False)), (name, found, sizes)


def test_the_yaml_blocks_are_honoured_and_checked() -> None:
    from vizpipe.pipeline.errors import ConfigError

    model = torchvision.models.resnet18().eval()
    probe = probe_model(model, torch.randn(1, 3, 64, 64))
    assert model_blocks(model, probe, "layer2,layer3") == ["layer2", "layer3"]
    assert model_blocks(model, probe, None) == ["layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(ConfigError, match="Unknown layer in model.blocks 'layer5'.*did you mean 'layer4'"):
        model_blocks(model, probe, "layer1,layer5")


# ------------------------------------------------------------------ blocks before the run (sweep=cam_layers)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        (["model=torchvision", "model.name=efficientnet_b0"], 224),
        (["model=torchvision", "model.name=regnet_y_400mf"], 224),  # not buildable on meta: the CPU
        (["model=torchvision", "model.name=swin_t", "input=random", "input.shape=[1,3,96,96]"], 96),
        (["model=shapes_net", "input=shapes"], 64),
    ],
)
def test_config_blocks_equal_the_runs_blocks(compose, make_ctx, overrides, size):
    """The blocks found from the config (architecture on the meta device, no weights) are the blocks
    a run finds on the built model and its real input."""
    import torch
    from vizpipe.pipeline.factory.blocks import _input_size, config_blocks

    cfg = compose(overrides)
    rng = torch.get_rng_state()
    found = config_blocks(cfg.model, cfg.input).split(",")
    assert torch.equal(torch.get_rng_state(), rng)  # a CPU build draws from a forked generator
    assert _input_size(cfg.input, dict(cfg.model))[1:] == (size, size)
    ctx = make_ctx(overrides + ["input.limit=1"])
    assert found == ctx.blocks()


def test_config_blocks_named_or_refused(compose):
    """model.blocks wins; an input too small says so as the run would; a forward pass that fails
    otherwise names the fix."""
    from vizpipe.pipeline.errors import ConfigError
    from vizpipe.pipeline.factory.blocks import config_blocks

    cfg = compose(["model=resnet18"])
    assert config_blocks(cfg.model, cfg.input) == "layer1,layer2,layer3,layer4"
    tiny = ["input=random", "input.shape=[1,3,32,32]"]
    small = compose(["model=torchvision", "model.name=inception_v3", *tiny])
    with pytest.raises(ConfigError, match=r"^Input 32×32 px is too small for Inception3: layer "):
        config_blocks(small.model, small.input)
    gray = compose(["model=torchvision", "model.name=resnet18", "input=random", "input.shape=[1,1,64,64]"])
    with pytest.raises(ConfigError) as info:
        config_blocks(gray.model, gray.input)
    assert str(info.value).startswith("The blocks of model 'resnet18' cannot be found before the run")
    assert str(info.value).endswith(
        "name them: model.blocks='\"a,b,c\"' (summary/layers.txt lists the layers)"
    )


def test_config_blocks_build_only_vizpipes_factories(compose, tmp_path, monkeypatch):
    """A model factory of the user's (or of a config someone sent) is not run before a sweep is
    vetted: the blocks must be named."""
    from vizpipe.pipeline.errors import ConfigError
    from vizpipe.pipeline.factory.blocks import config_blocks

    (tmp_path / "mine.py").write_text("import torch\nMARK = []\ndef build(**kw):\n    MARK.append(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose(["model=torchvision", "model.name=x", "model._target_=mine.build"])
    with pytest.raises(ConfigError, match=r"model._target_='mine.build' is not one of vizpipe's factories"):
        config_blocks(cfg.model, cfg.input)
    import sys

    assert "mine" not in sys.modules  # never imported


# ---- vizpipe.pipeline.layers`` on small hand-built models: probes, specs, layouts and default
# blocks.
class Net(nn.Module):
    """features (conv 8x8 -> pool 4x4 -> conv 4x4 -> pool 2x2), a shared relu, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.MaxPool2d(2),
        )
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 8, 8) -> (N, 3)."""
        x = self.act(self.features[0](x))
        x = self.features[1](x)
        x = self.act(self.features[2](x))
        return self.head(self.features[3](x))


def x8(n: int = 2) -> torch.Tensor:
    """A seeded (n, 3, 8, 8) batch."""
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_probe_model_records() -> None:
    """Output shapes (first call, completion order), input shapes, types, call counts, last module."""
    m = Net()
    p = L.probe_model(m, x8())
    assert list(p.shapes) == [
        "features.0",
        "act",
        "features.1",
        "features.2",
        "features.3",
        "head.0",
        "head.1",
        "head",
    ]
    assert p.shapes["features.1"] == (2, 4, 4, 4) and p.shapes["act"] == (2, 4, 8, 8)
    assert p.in_shapes["features.2"] == (2, 4, 4, 4) and p.in_shapes["head.1"] == (2, 16)
    assert p.calls == {
        "features.0": 1,
        "act": 2,
        "features.1": 1,
        "features.2": 1,
        "features.3": 1,
        "head.0": 1,
        "head.1": 1,
        "head": 1,
    }
    assert p.types == {
        "features": "Sequential",
        "features.0": "Conv2d",
        "features.1": "MaxPool2d",
        "features.2": "Conv2d",
        "features.3": "MaxPool2d",
        "act": "ReLU",
        "head": "Sequential",
        "head.0": "Flatten",
        "head.1": "Linear",
    }
    assert p.input_hw == (8, 8) and p.last == "head" and p.logits.shape == (2, 3)
    torch.testing.assert_close(p.logits, m(x8()))
    assert m.training is True
    one = L.probe_model(nn.Sequential(nn.Flatten(0)), torch.zeros(2, 3, 1, 1))
    assert one.logits.shape == (6, 1) and one.last == "0"
    cube = L.probe_model(nn.Identity(), torch.zeros(2, 3, 4, 5))
    assert cube.logits.shape == (2, 60) and cube.last is None and cube.input_hw == (4, 5)


def test_model_output_kinds() -> None:
    """Tensor, .logits, dict['out'], first tensor of a tuple; no tensor is a TypeError."""
    t = torch.ones(1)
    assert L.model_output(t) is t
    assert L.model_output(SimpleNamespace(logits=t)) is t
    assert L.model_output({"out": t, "aux": torch.zeros(1)}) is t
    assert L.model_output((None, t)) is t
    with pytest.raises(TypeError, match=r"^model returned str, which holds no tensor$"):
        L.model_output("x")


def test_top_classes_rank_ties_by_the_lowest_index_and_nan_last() -> None:
    """The one ranking of predictions: highest output first; ties as torch.argmax breaks them."""
    out = torch.tensor([[1.0, 3.0, 3.0, 0.0], [math.nan, 2.0, 2.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    assert L.top_classes(out, 4).tolist() == [[1, 2, 0, 3], [3, 1, 2, 0], [0, 1, 2, 3]]
    assert L.top_classes(out, 1)[:, 0].tolist() == [1, 3, 0]
    assert L.top_classes(out[2:], 1)[:, 0].tolist() == out[2:].argmax(dim=1).tolist()  # argmax agrees
    assert L.top_classes(out, 10).shape == (3, 4)  # k is capped at the number of classes
    # torch.topk leaves the order of ties undefined; this ranking is stable for any width
    wide = torch.zeros(2, 1000)
    assert L.top_classes(wide, 5).tolist() == [[0, 1, 2, 3, 4]] * 2


def test_layer_names_and_get_module() -> None:
    """Dotted names in definition order; an unknown name suggests the closest."""
    m = Net()
    assert L.layer_names(m) == [
        "features",
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "act",
        "head",
        "head.0",
        "head.1",
    ]
    assert L.get_module(m, "features.2") is m.features[2]
    with pytest.raises(ConfigError) as exc:
        L.get_module(m, "featurs")
    assert str(exc.value).startswith(
        "Unknown layer 'featurs'; did you mean 'features'? Valid choices (closest first): features"
    )


def conv_only(name: str, mod: nn.Module) -> bool:
    """Qualifies convolutions."""
    return isinstance(mod, nn.Conv2d)


def test_resolve_all_blocks_types_globs_exact() -> None:
    """Each spec kind, the qualifying filter, order kept and duplicates dropped."""
    m = Net()
    assert L.resolve_layers(m, "all") == [
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "act",
        "head.0",
        "head.1",
    ]
    assert L.resolve_layers(m, "all", qualifies=conv_only) == ["features.0", "features.2"]
    assert L.resolve_layers(m, ["features.*", " features.1 ", "act"]) == [
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "act",
    ]
    assert L.resolve_layers(m, "features.[02]", qualifies=conv_only) == ["features.0", "features.2"]
    assert L.resolve_layers(m, "features.?") == ["features.0", "features.1", "features.2", "features.3"]
    assert L.resolve_layers(m, "type:maxpool2d") == ["features.1", "features.3"]
    assert L.resolve_layers(m, "TYPE: Conv2d") == ["features.0", "features.2"]
    assert L.resolve_layers(m, "blocks", blocks=["features.2", "nope", "features.0"]) == [
        "features.2",
        "features.0",
    ]
    assert L.resolve_layers(m, "blocks", blocks=["features.1", "features.2"], qualifies=conv_only) == [
        "features.2"
    ]
    assert L.resolve_layers(m, ("head", "head")) == ["head"]
    assert L.resolve_layers(m, []) == []


def test_resolve_errors_exact() -> None:
    """Unknown names, patterns, types, blocks and unusable layers: messages name rule and choices."""
    m = Net()
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "featurs.0", model_name="net")
    assert str(exc.value).startswith("Unknown layer 'featurs.0' for net; did you mean 'features.0'?")
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "xyz*", what="target layer", qualifies=conv_only)
    assert str(exc.value) == (
        "Unknown target layer pattern 'xyz*'. Valid choices (closest first): features.0, features.2. "
        "the pattern matched no usable layer"
    )
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "type:Conv3d", model_name="net")
    assert str(exc.value).startswith("Unknown module type 'Conv3d' for net; did you mean 'Conv2d'?")
    assert str(exc.value).endswith("(closest first): Conv2d, MaxPool2d, Linear, Flatten, Sequential, ReLU")
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "features.1", qualifies=conv_only, rule="needs conv weights")
    assert str(exc.value) == (
        "Layer 'features.1' (MaxPool2d) cannot be used: needs conv weights. "
        "Layers that qualify: features.0, features.2"
    )
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "features.1", qualifies=lambda n, mod: False)
    assert str(exc.value) == (
        "Layer 'features.1' (MaxPool2d) cannot be used: it does not qualify. Layers that qualify: (none)"
    )
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(
            m, "blocks", blocks=["features.1"], qualifies=conv_only, rule="conv", model_name="net"
        )
    assert str(exc.value) == (
        "'blocks' of net (features.1) have no usable output: conv. "
        "Layers that qualify: features.0, features.2"
    )
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "blocks")
    assert str(exc.value) == (
        "'blocks' of this model (none) have no usable output: no match. Layers that qualify: "
        + ", ".join(L.layer_names(m))
    )
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(
            m, "type:Flatten", qualifies=conv_only, rule="conv", what="cam layer", model_name="net"
        )
    assert str(exc.value) == (
        "Cam layer spec 'type:Flatten' selects nothing for net: conv. "
        "Layers that qualify: features.0, features.2"
    )
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "all", qualifies=lambda n, mod: False)
    assert str(exc.value) == "Layer spec 'all' selects nothing : no match. Layers that qualify: (none)"


def test_resolve_lists_at_most_thirty_qualifying() -> None:
    """An unusable exact name lists the first 30 qualifying layers and how many more."""
    m = nn.Sequential(nn.Identity(), *[nn.Conv2d(1, 1, 1) for _ in range(32)])
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "0", qualifies=conv_only)
    msg = str(exc.value)
    assert msg.endswith("Layers that qualify: " + ", ".join(str(i) for i in range(1, 31)) + ", ... (2 more)")
    m2 = nn.Sequential(nn.Identity(), *[nn.Conv2d(1, 1, 1) for _ in range(30)])
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m2, "0", qualifies=conv_only)
    assert str(exc.value).endswith(", 29, 30")


def test_layout_describe() -> None:
    """Each layout describes how maps are made; only nchw needs no reshape."""
    assert L.Layout("nchw", 4, 5, 8).describe() == "N×8×4×5 maps as they are"
    assert not L.Layout("nchw", 4, 5, 8).needs_reshape
    assert L.Layout("nhwc", 4, 5, 8).describe() == "channels-last N×4×5×8, channels moved first"
    assert L.Layout("nhwc", 4, 5, 8).needs_reshape and L.Layout("tokens", 1, 2, 3).needs_reshape
    assert (
        L.Layout("tokens", 2, 3, 8, 1).describe()
        == "tokens: 1 leading token(s) dropped, 6 tokens laid on a 2×3 grid"
    )
    assert L.Layout("tokens", 2, 3, 8).describe() == "tokens: 6 tokens laid on a 2×3 grid"
    assert L.MAX_PREFIX_TOKENS == 8 and L.STRIDE_TOLERANCE == 0.1


def test_same_stride() -> None:
    """Same stride both ways within 10%; grids larger than the input or empty never match."""
    assert L._same_stride(4, 4, 8, 8) and L._same_stride(7, 7, 224, 224)
    assert L._same_stride(10, 11, 100, 100)  # strides 10 and 9.09: 9% apart
    assert not L._same_stride(10, 12, 100, 100)
    assert not L._same_stride(0, 4, 8, 8) and not L._same_stride(4, 0, 8, 8)
    assert not L._same_stride(9, 4, 8, 8) and not L._same_stride(4, 9, 8, 8)
    assert L._same_stride(8, 8, 8, 8) and L._same_stride(1, 1, 8, 8)
    assert L._same_stride(10, 11, 100, 110) and L._same_stride(9, 10, 90, 111)


def test_infer_layout() -> None:
    """nchw by default, nhwc for channels-last (or a last-dim LayerNorm), tokens with prefixes."""
    assert L.infer_layout((2, 16, 4, 4), (8, 8)) == L.Layout("nchw", 4, 4, 16)
    assert L.infer_layout((2, 4, 4, 16), (8, 8)) == L.Layout("nhwc", 4, 4, 16)
    assert L.infer_layout((2, 4, 4, 4), (8, 8)) == L.Layout("nchw", 4, 4, 4)
    assert L.infer_layout((2, 4, 4, 4), (8, 8), nn.LayerNorm(4)) == L.Layout("nhwc", 4, 4, 4)
    assert L.infer_layout((2, 4, 4, 4), (8, 8), nn.LayerNorm(3)) == L.Layout("nchw", 4, 4, 4)
    assert L.infer_layout((2, 16, 8), (8, 8)) == L.Layout("tokens", 4, 4, 8, 0)
    assert L.infer_layout((2, 17, 8), (8, 8)) == L.Layout("tokens", 4, 4, 8, 1)
    assert L.infer_layout((2, 18, 8), (16, 32)) == L.Layout("tokens", 3, 6, 8, 0)
    assert L.infer_layout((2, 12, 8), (8, 8)) == L.Layout("tokens", 3, 3, 8, 3)
    assert L.infer_layout((2, 24, 8), (8, 8)) == L.Layout("tokens", 4, 4, 8, 8)
    assert L.infer_layout((2, 34, 8), (8, 8)) is None  # a 5x5 grid after 9 tokens: too many dropped
    assert L.infer_layout((2, 1, 8), (8, 8)) is None and L.infer_layout((2, 2, 8), (8, 8)) is None
    assert L.infer_layout((2, 10), (8, 8)) is None and L.infer_layout((2, 3, 4, 5, 6), (8, 8)) is None


def test_to_nchw() -> None:
    """Each layout gives (N, C, h, w) with the values in place."""
    t = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert L.to_nchw(t, L.Layout("nchw", 4, 5, 3)) is t
    nhwc = t.permute(0, 2, 3, 1).contiguous()
    assert torch.equal(L.to_nchw(nhwc, L.Layout("nhwc", 4, 5, 3)), t)
    tokens = torch.cat([torch.full((2, 1, 3), -1), t.flatten(2).transpose(1, 2)], dim=1)
    assert torch.equal(L.to_nchw(tokens, L.Layout("tokens", 4, 5, 3, 1)), t)


def test_spatial_layouts_once_and_min_cells() -> None:
    """Only spatial outputs with >= min_cells cells; shared modules only when once=False."""
    m = Net()
    p = L.probe_model(m, x8())
    lay = L.spatial_layouts(m, p)
    assert list(lay) == ["features.0", "features.1", "features.2", "features.3"]
    assert lay["features.3"] == L.Layout("nchw", 2, 2, 4)
    assert list(L.spatial_layouts(m, p, once=False)) == [
        "features.0",
        "act",
        "features.1",
        "features.2",
        "features.3",
    ]
    assert list(L.spatial_layouts(m, p, min_cells=5)) == ["features.0", "features.1", "features.2"]
    assert list(L.spatial_layouts(m, p, min_cells=4)) == [
        "features.0",
        "features.1",
        "features.2",
        "features.3",
    ]
    p.calls["features.0"] = 0
    p.shapes["ghost"] = (2, 4, 4, 4)
    p.calls["ghost"] = 1
    assert "features.0" not in L.spatial_layouts(m, p) and "ghost" not in L.spatial_layouts(m, p)


class ResLike(nn.Module):
    """Top-level layer1/layer2 like a ResNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.layer1 = nn.Conv2d(4, 4, 1)
        self.layer2 = nn.Conv2d(4, 4, 1, stride=2)
        self.layer10 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, layer1, layer2, layer10."""
        return self.layer10(self.layer2(self.layer1(self.stem(x)))).mean((2, 3))


class Iso(nn.Module):
    """``blocks``: n same-resolution stages (an isotropic network)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[nn.Conv2d(3, 3, 1) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All blocks, then a mean."""
        return self.blocks(x).mean((2, 3))


def test_default_blocks() -> None:
    """ResNet layerN; else the last child at each resolution of the container; isotropic: 4 spaced."""
    r = ResLike()
    assert L.default_blocks(r, L.probe_model(r, x8())) == ["layer1", "layer2", "layer10"]
    m = Net()
    assert L.default_blocks(m, L.probe_model(m, x8())) == ["features.0", "features.2", "features.3"]
    for n, want in ((4, [3]), (5, [0, 1, 2, 4]), (8, [1, 3, 5, 7]), (12, [2, 5, 8, 11])):
        iso = Iso(n)
        assert L.default_blocks(iso, L.probe_model(iso, x8())) == [f"blocks.{i}" for i in want], n
    iso3 = Iso(3)
    assert L.default_blocks(iso3, L.probe_model(iso3, x8())) == ["blocks.2"]
    flat = nn.Sequential(nn.Conv2d(3, 3, 1), nn.MaxPool2d(2), nn.Flatten())
    assert L.default_blocks(flat, L.probe_model(flat, x8())) == ["0", "1"]
    lin = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    assert L.default_blocks(lin, L.probe_model(lin, x8())) == []


def test_main_container() -> None:
    """The first CONTAINERS entry with at least two children."""
    assert L.CONTAINERS == ("features", "trunk_output", "layers", "stages", "blocks", "encoder.layers")
    m = nn.Module()
    m.features = nn.Sequential(nn.Identity())
    m.layers = nn.Sequential(nn.Identity(), nn.Identity())
    assert L._main_container(m) == "layers"
    m.features.append(nn.Identity())
    assert L._main_container(m) == "features"
    assert L._main_container(nn.Sequential(nn.Identity())) is None
    enc = nn.Module()
    enc.encoder = nn.Module()
    enc.encoder.layers = nn.Sequential(nn.Identity(), nn.Identity())
    assert L._main_container(enc) == "encoder.layers"


def test_model_blocks_and_last_spatial_block() -> None:
    """Configured blocks (string or list) are checked; else the default; last spatial block."""
    m = Net()
    p = L.probe_model(m, x8())
    assert L.model_blocks(m, p, "features.0, features.2,") == ["features.0", "features.2"]
    assert L.model_blocks(m, p, ["head", " act "]) == ["head", "act"]
    assert L.model_blocks(m, p, None) == ["features.0", "features.2", "features.3"]
    assert L.model_blocks(m, p, "") == L.model_blocks(m, p, [])
    with pytest.raises(ConfigError) as exc:
        L.model_blocks(m, p, "features.9")
    assert str(exc.value).startswith("Unknown layer in model.blocks 'features.9'; did you mean 'features.3'?")
    assert L.last_spatial_block(m, p, ["features.0", "features.3", "head"]) == "features.3"
    assert L.last_spatial_block(m, p, ["head", "act"]) is None


def test_resolve_error_lists_cut_at_thirty_and_odd_specs() -> None:
    """Blocks and empty-selection errors list 30 qualifying layers; a failed glob lists every name
    when none qualifies; a type spec keeps everything after its first colon."""
    m = nn.Sequential(nn.Identity(), *[nn.Conv2d(1, 1, 1) for _ in range(32)])
    first30 = ", ".join(str(i) for i in range(1, 31))
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "blocks", blocks=["0"], qualifies=conv_only)
    assert str(exc.value).endswith(f"Layers that qualify: {first30}")
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(m, "type:Identity", qualifies=conv_only)
    assert str(exc.value).endswith(f"Layers that qualify: {first30}")
    n = Net()
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(n, "feat*", qualifies=lambda name, mod: False, model_name="net")
    assert str(exc.value).startswith("Unknown layer pattern 'feat*' for net")
    assert "features, features.0" in str(exc.value) or "features.0, features" in str(exc.value)
    assert "head.1" in str(exc.value) and str(exc.value).endswith(". the pattern matched no usable layer")
    with pytest.raises(ConfigError) as exc:
        L.resolve_layers(n, "type:Conv3d:x")
    assert str(exc.value).startswith("Unknown module type 'Conv3d:x'")
    with pytest.raises(ConfigError):
        L.resolve_layers(n, "type:Conv2d:x")
