"""Blocks and ``cam.layer=auto``: one home (vizpipe.pipeline.layers), the last spatial block everywhere."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import group_options
from vizpipe.pipeline.gradcam.layers import auto_layer, spatial_layers
from vizpipe.pipeline.layers import default_blocks, model_blocks, probe_model

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
