"""model=timm: any timm model, its blocks, layouts and CAM layer, preprocessed by its own data config."""

from __future__ import annotations

import pytest
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.runner import run_pipeline

pytest.importorskip("timm", reason="the timm extra is not installed (pip install 'vizpipe[timm]')")

#: timm's own small test variants of each family (random init, 160 px inputs)
FAMILIES = {
    "test_resnet": (["layer1", "layer2", "layer3", "layer4"], "nchw"),
    "test_convnext": (["stages.0", "stages.1", "stages.2", "stages.3"], "nchw"),
    "test_vit": (["blocks.0", "blocks.2", "blocks.3", "blocks.5"], "tokens"),
    "test_efficientnet": (["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"], "nchw"),
}
BASE = ["model=timm", "input=photo", "device=cpu", "report.enabled=false"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_cam_features_summary(compose, tmp_path, name):
    """Blocks found, the last one CAM's auto layer, features drawn, inputs at the data config's size."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.layers import infer_layout

    blocks, layout = FAMILIES[name]
    cfg = compose([*BASE, f"model.name={name}", "stages=[summary,features,cam]", "features.layers=[blocks]"])
    ctx = build_context(cfg, tmp_path / "ctx")
    assert ctx.blocks() == blocks
    assert tuple(ctx.inputs.first().tensor.shape) == (1, 3, 160, 160)  # the model's data config
    probe = ctx.probe()
    assert infer_layout(probe.shapes[blocks[-1]], probe.input_hw).kind == layout
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.ok, result.error
    cam = (tmp_path / "run" / "cam" / "cam.json").read_text()
    assert f'"{blocks[-1]}' in cam  # the last block (a ViT's: its norm1, as grad-cam advises)
    assert len(list((tmp_path / "run" / "features").glob("*.npy"))) == len(blocks)
    assert (tmp_path / "run" / "summary" / "summary.txt").is_file()


def test_preprocessing_comes_from_the_models_data_config(compose, tmp_path):
    from vizpipe.pipeline.factory import build_context

    vit = build_context(compose([*BASE, "model.name=test_vit", "input.limit=1"]), tmp_path / "a")
    assert vit.inputs.mean == [0.5, 0.5, 0.5] and vit.inputs.std == [0.5, 0.5, 0.5]
    assert vit.weights.startswith("timm:") and vit.categories is None  # random init: no class names
    resized = build_context(
        compose([*BASE, "model.name=test_vit", "+model.kwargs.img_size=64"]), tmp_path / "b"
    )
    assert tuple(resized.inputs.first().tensor.shape) == (1, 3, 64, 64)
    mine = build_context(compose([*BASE, "model.name=test_resnet", "input.crop=96"]), tmp_path / "c")
    assert tuple(mine.inputs.first().tensor.shape) == (1, 3, 96, 96)  # input.* still overrides it


def test_swin_layout_is_channels_last(compose, tmp_path):
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.layers import infer_layout

    small = "{img_size:64,window_size:4,embed_dim:12,depths:[1,1,1,1],num_heads:[1,1,1,1]}"
    cfg = compose([*BASE, "model.name=swin_tiny_patch4_window7_224", f"++model.kwargs={small}"])
    ctx = build_context(cfg, tmp_path / "ctx")
    probe = ctx.probe()
    assert ctx.blocks() == ["layers.0", "layers.1", "layers.2", "layers.3"]
    assert (
        infer_layout(probe.shapes["layers.3"], probe.input_hw, ctx.model.get_submodule("layers.3")).kind
        == "nhwc"
    )
    assert run_pipeline(
        compose([*BASE, f"model.name={cfg.model.name}", f"++model.kwargs={small}", "stages=[cam]"]),
        tmp_path / "run",
    ).ok


def test_unknown_names_are_one_line(compose, tmp_path):
    from vizpipe.pipeline.factory import build_context

    with pytest.raises(ConfigError, match="Unknown timm model 'test_resnt'; did you mean 'test_resnet'"):
        build_context(compose([*BASE, "model.name=test_resnt"]), tmp_path / "a")


def test_a_timm_model_object_keeps_its_data_config(tmp_path):
    """vizpipe.inspect on a timm model object preprocesses images by the model's own data config."""
    import numpy as np
    import timm
    from PIL import Image

    import vizpipe

    model = timm.create_model("test_vit")
    run = vizpipe.inspect(model, [Image.new("RGB", (300, 200), (90, 30, 200))], ["cam"], out=tmp_path / "run")
    assert run.ok and run["cam"].data.images[0].maps[0].layer.startswith("blocks.5")
    maps = [p for p in (tmp_path / "run" / "cam").rglob("*.npy")]
    assert maps and all(np.load(p).shape[-2:] == (160, 160) for p in maps)  # test_vit's input size
