"""CAM stage: names, layers, classes, outputs, equality with pytorch-grad-cam, model left as found.

Models use random weights (seeded); a map may legitimately be all zero for some classes, so the
tests compare with the library called directly instead of assuming a shape of the map.

CAM stage on a tiny CNN: plan/validate messages, metric targets, localisation, record and render."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import RANDOM_INPUT, hand_context
from PIL import Image
from torch import nn
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.gradcam.layers import CamLayer, LayoutReshape
from vizpipe.pipeline.gradcam.methods import available_methods, resolve_method
from vizpipe.pipeline.hooks import hook_count
from vizpipe.pipeline.layers import Layout, infer_layout
from vizpipe.pipeline.metrics.localisation import LOCALISATION, localisation
from vizpipe.pipeline.metrics.registry import available_metrics, resolve_metrics
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.compute import _chunk, file_stem
from vizpipe.stages.cam.plan import check_settings, make_plan, method_kwargs, parse_target_class
from vizpipe.stages.cam.record import CamDoc
from vizpipe.stages.cam.rows import metric_target_text, metric_targets

# ---- CAM stage: names, layers, classes, outputs, equality with pytorch-grad-cam, model left as
# found.
SMALL = ["stages=[cam]", "input=random", "input.shape=[2,3,64,64]", "device=cpu"]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    """Contexts built once per module (model + inputs + probe), copied per test with a fresh folder."""
    from conftest import compose_config
    from vizpipe.pipeline.factory import build_context

    cache = {}

    def get(model: str, *extra: str):
        key = (model, *extra)
        if key not in cache:
            cfg = compose_config([*SMALL, f"model={model}", *extra])
            cache[key] = build_context(cfg, tmp_path_factory.mktemp("ctx"))
        return cache[key]

    return get


def fresh(ctx, out: Path, *, deep: bool = False):
    """A copy of ``ctx`` writing into ``out`` (``deep``: with its own copy of the model)."""
    model = copy.deepcopy(ctx.model) if deep else ctx.model
    return dataclasses.replace(
        ctx, output_dir=out, model=model, warnings=[], results={}, nonfinite_params=[], _claimed=set()
    )


def run_cam(ctx, **settings) -> CamDoc:
    """The stage as the runner runs it; returns cam.json's record (read back from the file)."""
    stage = CamStage()
    s = CamConfig(**settings)
    stage.check_settings(s, RANDOM_INPUT)
    stage.check_model(ctx, s)
    result = stage.run(ctx, s)
    doc = CamDoc.load(ctx.output_dir / "cam" / "cam.json")
    assert doc == result.data
    return doc


def load_maps(ctx, doc: CamDoc) -> dict[tuple[str, str, int], np.ndarray]:
    return {
        (im.name, m.layer, m.target): np.load(ctx.output_dir / m.npy) for im in doc.images for m in im.maps
    }


def library_cam(model, layers, x, classes, method="gradcam", reshape=None, **call):
    """pytorch-grad-cam called the usual way: a ``with`` block, one target per image."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = resolve_method(method).cls
    with cls(model=model, target_layers=layers, reshape_transform=reshape) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes], **call)


def top1(model, x) -> list[int]:
    with torch.no_grad():
        return model(x).argmax(dim=1).tolist()


# ----------------------------------------------------------------------------- names


def test_every_exported_method_resolves_case_insensitively_with_aliases():
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM

    methods = available_methods()
    exported = {
        n
        for n in dir(pytorch_grad_cam)
        if isinstance(getattr(pytorch_grad_cam, n), type)
        and issubclass(getattr(pytorch_grad_cam, n), BaseCAM)
    }
    assert exported <= {m.name for m in methods.values()}
    for spec in methods.values():
        assert resolve_method(spec.name.upper()) == spec
        assert resolve_method(spec.name.lower()) == spec
    for alias, name in [
        ("gradcam++", "GradCAMPlusPlus"),
        ("Grad-CAM++", "GradCAMPlusPlus"),
        ("gradcampp", "GradCAMPlusPlus"),
        ("score", "ScoreCAM"),
        ("scorecam", "ScoreCAM"),
        ("kpca_cam", "KPCA_CAM"),
        ("ablation", "AblationCAM"),
        ("HiResCAM", "HiResCAM"),
        ("eigen-grad-cam", "EigenGradCAM"),
    ]:
        assert resolve_method(alias).name == name
    assert "ActivationsAndGradients" not in {m.name for m in methods.values()}
    assert "GuidedBackpropReLUModel" not in {m.name for m in methods.values()}


def test_unknown_method_lists_the_names_closest_first():
    with pytest.raises(ConfigError) as info:
        resolve_method("gradcma")
    msg = str(info.value)
    assert "\n" not in msg and "'gradcma'" in msg and "did you mean 'gradcam'?" in msg
    assert "scorecam" in msg and "gradcam++" in msg


def test_metrics_by_name():
    assert resolve_metrics(["Confidence_Change", "ROADCombined", "road_combined", "complexity"]) == [
        "confidence_change",
        "road_combined",
        "complexity",
    ]
    assert {"confidence_change", "road_most_relevant_first", "road_least_relevant_first"} <= set(
        available_metrics()
    )
    with pytest.raises(ConfigError, match="Unknown CAM metric 'road_most'.*road_most_relevant_first"):
        resolve_metrics(["road_most"])


# ----------------------------------------------------------------------------- layouts


def test_layouts_are_inferred_from_shapes():
    assert infer_layout((2, 512, 7, 7), (224, 224)) == Layout("nchw", 7, 7, 512)
    assert infer_layout((2, 32, 62, 62), (64, 64)) == Layout("nchw", 62, 62, 32)  # valid conv, not 64/stride
    assert infer_layout((2, 197, 768), (224, 224)) == Layout(
        "tokens", 14, 14, 768, prefix=1
    )  # ViT: class token
    assert infer_layout((2, 49, 768), (224, 224)) == Layout("tokens", 7, 7, 768)  # timm Swin: no prefix
    assert infer_layout((2, 7, 7, 768), (224, 224)) == Layout("nhwc", 7, 7, 768)  # torchvision Swin
    assert infer_layout((2, 2, 3, 96), (64, 96)) == Layout("nhwc", 2, 3, 96)  # non-square input
    ln = torch.nn.LayerNorm(8)
    assert infer_layout((2, 8, 8, 8), (64, 64), ln).kind == "nhwc"  # ambiguous shape: the norm decides
    assert infer_layout((2, 8, 8, 8), (64, 64)).kind == "nchw"
    assert infer_layout((2, 1000), (224, 224)) is None


def test_reshape_matches_the_library_transforms():
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    tokens = torch.randn(2, 197, 16)
    layer = CamLayer("x", (2, 197, 16), infer_layout((2, 197, 16), (224, 224)))
    assert torch.equal(LayoutReshape([layer])(tokens), vit_reshape_transform(tokens))
    nhwc = torch.randn(2, 4, 4, 16)
    layer = CamLayer("y", (2, 4, 4, 16), Layout("nhwc", 4, 4, 16))
    assert torch.equal(LayoutReshape([layer])(nhwc), nhwc.permute(0, 3, 1, 2))
    other = torch.randn(2, 3, 5)
    assert LayoutReshape([layer])(other) is other  # shapes it does not know pass through
    with pytest.raises(ConfigError, match="same output shape"):
        LayoutReshape([layer, CamLayer("z", (2, 4, 4, 16), Layout("nchw", 4, 16, 4))])


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("resnet18", "layer4"),
        ("vgg11", "features.20"),
        ("seed_net", "conv2"),
        ("mobilenet_v3_small", "features.12"),
    ],
)
def test_auto_layer(contexts, model, expected):
    stage = CamStage()
    stage.check_model(contexts(model), CamConfig())
    assert [layer.name for layer in stage.plan.layers] == [expected]


def test_auto_layer_skips_a_1x1_block(contexts):
    ctx = contexts("resnet18", "input.shape=[1,3,32,32]")  # layer4 is 1×1 at 32 px
    stage = CamStage()
    stage.check_model(ctx, CamConfig())
    assert stage.plan.layers[0].name == "layer3"


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        (
            {"layer": "layer5"},
            r"Unknown layer 'layer5' for resnet18; did you mean 'layer4'\?"
            r".*closest first\): layer4, layer1, layer2, layer3,",
        ),
        (
            {"layer": "fc"},
            r"Layer 'fc' \(Linear\) cannot be used for CAM: its output \(2×1000\) "
            r"has no spatial grid.*closest first\)",
        ),
        ({"layer": "layer4.1.relu"}, r"runs 2 times per forward pass"),
        ({"layer": "../x"}, r"Unknown layer '\.\./x'"),
        ({"layer": ["layer4", 3]}, r"Invalid value '3' for cam.layer: expected auto, a dotted layer name"),
        (
            {"target_class": 1000},
            r"cam.target_class 1000 is out of range for resnet18 \(1000 classes\); valid: .*0\.\.999",
        ),
        ({"target_class": -1}, r"cam.target_class -1 is out of range"),
        ({"target_class": [1, 1000]}, r"1000 is out of range"),
        ({"target_class": "abc"}, r"cam.target_class 'abc' is not a class index.*0\.\.999"),
        ({"target_class": []}, r"empty list"),
        ({"target_class": True}, r"Invalid value 'True' for cam.target_class: expected null"),
        ({"target_class": 2.5}, r"Invalid value '2.5' for cam.target_class"),
        ({"method": "gradcma"}, r"did you mean 'gradcam'"),
        ({"batch_size": 0}, r"cam.batch_size must be >= 1, got 0"),
        ({"image_weight": 1.5}, r"cam.image_weight must be in \[0, 1\]"),
        ({"metrics": ["road"]}, r"Unknown CAM metric 'road'"),
        ({"method": "finercam", "aug_smooth": True}, r"not supported by FinerCAM"),
    ],
)
def test_bad_settings_fail_in_validate_with_one_line(contexts, settings, pattern):
    stage, s = CamStage(), CamConfig(**settings)
    with pytest.raises(ConfigError, match=pattern) as info:
        stage.check_settings(s, RANDOM_INPUT)  # config-only: the precheck runs it before Hydra
        stage.check_model(contexts("resnet18"), s)
    assert "\n" not in str(info.value)


def test_class_names_resolve_when_the_weights_carry_them(contexts, tmp_path):
    ctx = fresh(contexts("resnet18"), tmp_path)
    ctx.categories = [f"class {i}" for i in range(1000)]
    stage = CamStage()
    stage.check_model(ctx, CamConfig(target_class=["Class 7", 9]))
    assert stage.plan.classes == [7, 9]
    with pytest.raises(ConfigError, match="did you mean 'class 7'"):
        stage.check_model(ctx, CamConfig(target_class="class 7x"))


# ----------------------------------------------------------------------------- outputs


def test_outputs_per_image_layer_class_and_the_json_record(contexts, tmp_path):
    ctx = fresh(contexts("resnet18"), tmp_path)
    doc = run_cam(ctx, layer=["layer3", "layer4"], per_layer=True, target_class=[1, 207])
    assert (doc.method, doc.method_key, doc.layers, doc.targets) == (
        "GradCAM",
        "gradcam",
        ["layer3", "layer4"],
        [1, 207],
    )
    assert doc.reshape == {"layer3": "N×256×4×4 maps as they are", "layer4": "N×512×2×2 maps as they are"}
    logits = ctx.probe().logits
    probs = torch.softmax(logits, dim=1)
    for i, im in enumerate(doc.images):
        assert im.name == ctx.inputs.names[i] and im.source == ctx.inputs.sources[i] and im.valid
        assert [t.prob for t in im.top5] == sorted((t.prob for t in im.top5), reverse=True)
        assert [t.class_index for t in im.top5] == logits[i].topk(5).indices.tolist()
        assert sorted((m.layer, m.target) for m in im.maps) == sorted(
            (layer, c) for layer in ("layer3+layer4", "layer3", "layer4") for c in (1, 207)
        )
        for m in im.maps:
            assert m.valid is True and m.metrics == {}
            assert m.score == pytest.approx(float(probs[i, m.target]), rel=1e-6)
            assert m.logit == pytest.approx(float(logits[i, m.target]), rel=1e-6)
            for path in (m.overlay, m.heatmap, m.npy):
                assert path.startswith(f"cam/{im.name}/") and "\\" not in path
                assert (tmp_path / path).is_file()
            arr = np.load(tmp_path / m.npy)
            assert arr.dtype == np.float32 and arr.shape == (64, 64)
            assert 0.0 <= arr.min() and arr.max() <= 1.0 + 1e-6
            assert np.asarray(Image.open(tmp_path / m.overlay)).shape == (64, 64, 3)
    assert len(list((tmp_path / "cam").rglob("*.npy"))) == 2 * 6
    assert [c.count for c in doc.classes] and sum(c.count for c in doc.classes) == 2  # by top-1 class


def test_heatmap_pixels_are_the_jet_colormap_of_the_saved_map(contexts, tmp_path):
    import cv2

    ctx = fresh(contexts("resnet18"), tmp_path)
    doc = run_cam(ctx, layer="layer3", target_class=[3, 9])
    for im in doc.images:
        for m in im.maps:
            arr = np.load(tmp_path / m.npy)
            want = cv2.applyColorMap(np.uint8(255 * np.clip(arr, 0, 1)), cv2.COLORMAP_JET)[..., ::-1]
            assert np.array_equal(np.asarray(Image.open(tmp_path / m.heatmap)), want)


@pytest.mark.parametrize(
    ("method", "call"),
    [("gradcam", {}), ("fullgrad", {}), ("gradcam", {"aug_smooth": True})],  # one forward; per class set
)
def test_every_image_gets_its_own_top1_target(contexts, tmp_path, method, call):
    ctx = fresh(contexts("resnet18", "input.shape=[4,3,64,64]"), tmp_path, deep=True)
    feats = {}
    handle = ctx.model.avgpool.register_forward_hook(lambda m, a, o: feats.setdefault("f", o.flatten(1)))
    with torch.no_grad():
        ctx.model(ctx.inputs.tensor)
    handle.remove()
    f = feats["f"]  # (4, 512): each image's pooled features
    with torch.no_grad():  # a head whose top-1 is a different class for each image
        ctx.model.fc.weight.zero_()
        ctx.model.fc.bias.zero_()
        for i, c in enumerate([0, 10, 20, 30]):  # score_c(x) = u_i . (x - mean): largest for x = f_i
            u = (f[i] - f.mean(0)) / (f[i] - f.mean(0)).norm()
            ctx.model.fc.weight[c] = u * 100
            ctx.model.fc.bias[c] = -(u * 100) @ f.mean(0)
    ctx._probe = None
    classes = top1(ctx.model, ctx.inputs.tensor)
    assert classes == [0, 10, 20, 30]
    doc = run_cam(ctx, method=method, **call)
    assert [im.maps[0].target for im in doc.images] == classes
    for i, im in enumerate(doc.images):  # each map is the library's for that image's own class
        x = ctx.inputs.tensor[i : i + 1]
        expected = library_cam(ctx.model, [ctx.model.layer4], x, [classes[i]], method, **call)
        np.testing.assert_allclose(np.load(tmp_path / im.maps[0].npy), expected[0], atol=1e-5)


def test_overlay_is_show_cam_on_image_of_the_raw_map(contexts, tmp_path):
    from pytorch_grad_cam.utils.image import show_cam_on_image

    ctx = fresh(contexts("resnet18"), tmp_path)
    data = run_cam(ctx, image_weight=0.3)
    m = data.images[1].maps[0]
    expected = show_cam_on_image(
        ctx.inputs.first().rgb[1], np.load(tmp_path / m.npy), use_rgb=True, image_weight=0.3
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / m.overlay)), expected)


def test_per_layer_maps_equal_single_layer_runs(contexts, tmp_path):
    ctx = fresh(contexts("resnet18"), tmp_path / "a")
    both = load_maps(ctx, run_cam(ctx, layer=["layer3", "layer4"], per_layer=True, target_class=5))
    ctx4 = fresh(ctx, tmp_path / "b")
    alone = load_maps(ctx4, run_cam(ctx4, layer="layer4", target_class=5))
    for name in ctx.inputs.names:
        np.testing.assert_allclose(both[(name, "layer4", 5)], alone[(name, "layer4", 5)], atol=1e-6)


def test_one_forward_pass_serves_every_class_and_layer(contexts, tmp_path):
    ctx = fresh(contexts("resnet18", "input.shape=[3,3,64,64]"), tmp_path)
    ctx.probe()  # the layer probe (validation) is one forward of its own, cached for the run
    calls = []
    handle = ctx.model.register_forward_hook(lambda m, a, o: calls.append(len(a[0])))
    try:
        run_cam(ctx, layer=["layer3", "layer4"], per_layer=True, target_class=[1, 2])
        assert calls == [3]  # one forward of the batch: both classes, the averaged and per-layer maps
        calls.clear()
        run_cam(fresh(ctx, tmp_path / "b"), target_class=None)
        assert calls == [3]
    finally:
        handle.remove()


def test_null_target_is_each_images_top1(contexts, tmp_path):
    ctx = fresh(contexts("resnet18", "input.shape=[3,3,64,64]"), tmp_path)
    data = run_cam(ctx)
    assert [im.maps[0].target for im in data.images] == top1(ctx.model, ctx.inputs.tensor)


def test_names_with_path_characters_stay_inside_the_run_folder(contexts, tmp_path):
    ctx = fresh(contexts("resnet18"), tmp_path / "run")
    ctx.categories = ["../../evil", "a/b", "c:d\\e", *[f"n{i}" for i in range(997)]]
    data = run_cam(ctx, target_class=[0, 1, 2])
    names = [m.target_name for m in data.images[0].maps]
    assert names == ["../../evil", "a/b", "c:d\\e"]  # kept in the JSON as the weights spell them
    files = [p for p in (tmp_path).rglob("*") if p.is_file()]
    assert files and all((tmp_path / "run" / "cam") in p.parents for p in files)
    assert file_stem("a+b", 3, "../x:y/z") == "a_b__3_x_y_z"


def test_nan_weights_mark_maps_invalid_with_a_warning(contexts, tmp_path):
    from vizpipe.pipeline.factory.model import nonfinite_parameters

    ctx = fresh(contexts("resnet18"), tmp_path, deep=True)
    with torch.no_grad():
        ctx.model.layer4[1].conv2.weight[0, 0, 0, 0] = float("nan")
    ctx.nonfinite_params = nonfinite_parameters(ctx.model)
    ctx._probe = None
    data = run_cam(ctx, target_class=3)
    maps = [m for im in data.images for m in im.maps]
    assert maps and all(m.valid is False for m in maps)
    assert any("invalid" in w and "valid=false" in w for w in ctx.warnings)
    assert all((tmp_path / m.overlay).is_file() for m in maps)  # drawn anyway, marked invalid
    json.loads((tmp_path / "cam" / "cam.json").read_text())  # strict JSON (no NaN)


def test_metrics_recorded_per_map(contexts, tmp_path):
    ctx = fresh(contexts("resnet18", "input.shape=[2,3,32,32]"), tmp_path)
    data = run_cam(
        ctx, layer="layer3", metrics=["confidence_change", "road_most_relevant_first", "complexity"]
    )
    for im in data.images:
        metrics = im.maps[0].metrics
        assert list(metrics) == ["confidence_change", "road_most_relevant_first", "complexity"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        arr = np.load(tmp_path / im.maps[0].npy)
        assert metrics["complexity"] == pytest.approx(float(np.abs(arr).mean()), rel=1e-5)


# ----------------------------------------------------------------------------- correctness


@pytest.fixture(scope="module")
def saved_model_and_input(tmp_path_factory):
    """A resnet18 state_dict and an N×C×H×W tensor on disk (input=tensor, model.checkpoint)."""
    import torchvision

    folder = tmp_path_factory.mktemp("saved")
    torch.manual_seed(123)
    model = torchvision.models.resnet18()
    torch.save(model.state_dict(), folder / "resnet18.pt")
    torch.save(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7)), folder / "batch.pt")
    return folder / "resnet18.pt", folder / "batch.pt"


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"])
def test_npy_equals_pytorch_grad_cam_called_directly(compose, tmp_path, saved_model_and_input, method):
    import torchvision
    from vizpipe.pipeline.runner import run_pipeline

    ckpt, batch = saved_model_and_input
    cfg = compose(
        [
            "stages=[cam]",
            "input=tensor",
            f"input.path={batch}",
            f"model.checkpoint={ckpt}",
            f"cam.method={method}",
            "device=cpu",
            "report.enabled=false",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.ok, result.error
    doc = CamDoc.load(tmp_path / "run" / "cam" / "cam.json")
    ours = np.stack([np.load(tmp_path / "run" / im.maps[0].npy) for im in doc.images])

    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    model.eval()
    x = torch.load(batch, weights_only=True)
    classes = top1(model, x)
    assert [im.maps[0].target for im in doc.images] == classes
    expected = library_cam(model, [model.layer4], x, classes, method)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("model", ["resnet18", pytest.param("vgg11", marks=pytest.mark.slow)])  # vgg: ~3 s
@pytest.mark.parametrize("layers", ["single", "multi"])
def test_freezing_parameters_gives_identical_maps(contexts, tmp_path, model, layers):
    ctx = contexts(model)
    layer = {"resnet18": ["layer3", "layer4"], "vgg11": ["features.15", "features.20"]}[model]
    layer = layer[1] if layers == "single" else layer
    methods = ["gradcam", "gradcam++", "hirescam", "layercam", "eigengradcam", "fullgrad"]
    if model == "vgg11":  # (bigger) one method per path: graph cut, input gradient, FullGrad
        methods = ["gradcam", "layercam", "fullgrad"]
    for method in methods:
        a = fresh(ctx, tmp_path / f"{method}-frozen")
        b = fresh(ctx, tmp_path / f"{method}-full")
        kw = {"method": method, "layer": layer, "target_class": [1, 207], "per_layer": True}
        frozen = load_maps(a, run_cam(a, freeze_params=True, **kw))
        full = load_maps(b, run_cam(b, freeze_params=False, **kw))
        assert frozen.keys() == full.keys()
        for key in frozen:
            np.testing.assert_allclose(frozen[key], full[key], atol=1e-6, err_msg=f"{method} {key}")


@pytest.mark.parametrize(
    ("method", "layers", "cut", "input_gradient"),
    [
        ("gradcam", ["layer4"], True, False),
        ("gradcam", ["layer3", "layer4"], False, True),
        ("fullgrad", ["layer4"], False, True),
        ("scorecam", ["layer4"], False, False),
    ],
)
def test_freeze_paths(contexts, method, layers, cut, input_gradient):
    """Which path a frozen call takes: the graph cut (one layer) or the input gradient."""
    from vizpipe.pipeline.gradcam.adapter import CamRunner, inner_cams
    from vizpipe.pipeline.gradcam.layers import resolve_cam_layers
    from vizpipe.pipeline.hooks import preserved

    ctx = contexts("resnet18")
    resolved = resolve_cam_layers(ctx.model, ctx.probe(), layers, ctx.blocks())
    with preserved(ctx.model):
        with CamRunner(ctx.model, CamConfig(method=method), resolve_method(method), resolved) as runner:
            assert runner.cut is cut
            assert all(c.compute_input_gradient is input_gradient for c in inner_cams(runner.obj))
            assert not any(p.requires_grad for p in ctx.model.parameters())
        assert hook_count(ctx.model) == 0  # the runner removes its hooks itself, before the restore
    assert all(p.requires_grad for p in ctx.model.parameters()) and hook_count(ctx.model) == 0


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
def test_freezing_parameters_gradient_free_methods(contexts, tmp_path, method):
    ctx = contexts("resnet18", "input.shape=[2,3,32,32]")
    maps = []
    for freeze in (True, False):
        c = fresh(ctx, tmp_path / str(freeze))
        maps.append(
            load_maps(
                c,
                run_cam(
                    c, method=method, layer="layer3", target_class=3, batch_size=256, freeze_params=freeze
                ),
            )
        )
    for key in maps[0]:
        np.testing.assert_allclose(maps[0][key], maps[1][key], atol=1e-6)


@pytest.mark.slow
def test_vgg_inplace_relu_map_uses_the_hooked_layers_own_output(contexts, tmp_path):
    ctx = fresh(contexts("vgg11"), tmp_path)
    assert ctx.model.features[19].inplace is True  # features.18 (conv) feeds an in-place ReLU
    flags = [(n, m.inplace) for n, m in ctx.model.named_modules() if hasattr(m, "inplace")]
    data = run_cam(ctx, layer="features.18", target_class=[1, 207])
    ours = load_maps(ctx, data)
    reference = copy.deepcopy(ctx.model)
    for m in reference.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = ctx.inputs.tensor
    for c in (1, 207):
        expected = library_cam(reference, [reference.features[18]], x, [c, c])
        for i, name in enumerate(ctx.inputs.names):
            np.testing.assert_allclose(ours[(name, "features.18", c)], expected[i], atol=1e-5)
    assert [
        (n, m.inplace) for n, m in ctx.model.named_modules() if hasattr(m, "inplace")
    ] == flags  # untouched


def test_aug_and_eigen_smooth_equal_the_library(contexts, tmp_path):
    ctx = fresh(contexts("resnet18"), tmp_path)
    ours = load_maps(ctx, run_cam(ctx, layer="layer3", target_class=4, aug_smooth=True, eigen_smooth=True))
    model = ctx.model
    expected = library_cam(
        model, [model.layer3], ctx.inputs.tensor, [4, 4], aug_smooth=True, eigen_smooth=True
    )
    for i, name in enumerate(ctx.inputs.names):
        np.testing.assert_allclose(ours[(name, "layer3", 4)], expected[i], atol=1e-5)


@pytest.mark.slow
def test_vit_b_16_tokens_reshaped_without_user_code(make_ctx, tmp_path):
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    ctx = make_ctx(
        ["stages=[cam]", "model=vit_b_16", "input=random", "input.shape=[1,3,224,224]", "device=cpu"]
    )
    data = run_cam(ctx)
    layer = "encoder.layers.encoder_layer_11.ln_1"
    assert data.layers == [layer]
    ours = np.load(ctx.output_dir / data.images[0].maps[0].npy)
    model = ctx.model
    expected = library_cam(
        model,
        [model.get_submodule(layer)],
        ctx.inputs.tensor,
        [data.images[0].maps[0].target],
        reshape=vit_reshape_transform,
    )
    np.testing.assert_allclose(ours, expected[0], atol=1e-5)
    assert hook_count(model) == 0


def test_swin_t_channels_last_reshaped_without_user_code(make_ctx, tmp_path):
    ctx = make_ctx(
        [
            "stages=[cam]",
            "model=torchvision",
            "model.name=swin_t",
            "input=random",
            "input.shape=[1,3,128,128]",
            "device=cpu",
        ]
    )
    data = run_cam(ctx)
    layer = "features.7.1.norm1"
    assert data.layers == [layer]
    ours = np.load(ctx.output_dir / data.images[0].maps[0].npy)
    model = ctx.model
    expected = library_cam(
        model,
        [model.get_submodule(layer)],
        ctx.inputs.tensor,
        [data.images[0].maps[0].target],
        reshape=lambda t: t.permute(0, 3, 1, 2),
    )
    np.testing.assert_allclose(ours, expected[0], atol=1e-5)
    assert ours.shape == (128, 128)


# ----------------------------------------------------------------------------- perturbation methods


@pytest.mark.parametrize(("method", "expected"), [("scorecam", 1 + 2 * 4), ("ablationcam", 1 + 1 + 2 * 4)])
def test_perturbation_methods_log_their_forward_passes_and_leave_the_library_alone(
    contexts, tmp_path, caplog, capsys, method, expected
):
    import tqdm
    from pytorch_grad_cam import ablation_cam, score_cam

    ctx = fresh(contexts("resnet18", "input.shape=[2,3,32,32]"), tmp_path)
    seen = []  # the library's module globals, as every forward pass finds them
    handle = ctx.model.register_forward_hook(lambda m, a, o: seen.append((score_cam.tqdm, ablation_cam.tqdm)))
    try:
        with caplog.at_level(logging.DEBUG, logger="vizpipe.stages.cam"):
            doc = run_cam(
                ctx, method=method, layer="layer3", batch_size=64
            )  # layer3: 256 channels -> 4 batches
    finally:
        handle.remove()
    text = caplog.text
    name = resolve_method(method).name
    assert f"{name} on layer3: about {expected} forward passes to run" in text
    assert f"{name} on layer3: {expected} forward passes done" in text  # counted, not assumed
    assert doc.forward_passes == expected
    assert seen and set(seen) == {(tqdm, tqdm)}  # nothing of the library is swapped, even while it runs
    assert "100%|" not in capsys.readouterr().err  # its per-image bars are drawn into a buffer (hidden_bars)


# ----------------------------------------------------------------------------- leave the model as found


ALL_KINDS = [
    "gradcam",
    "scorecam",
    "ablationcam",
    "fullgrad",
    "shapleycam",
    "eigencam",
    "finercam",
    "refinecam",
]


@pytest.mark.parametrize("method", ALL_KINDS)
def test_model_is_left_exactly_as_found(contexts, tmp_path, method):
    ctx = fresh(contexts("resnet18", "input.shape=[2,3,32,32]"), tmp_path, deep=True)
    model = ctx.model
    model.layer1.train()  # a mixed mode must survive (the library calls model.eval())
    model.conv1.weight.requires_grad_(False)  # and a mixed requires_grad
    marker = torch.ones_like(model.fc.bias)
    model.fc.bias.grad = marker  # and an existing gradient, the same object
    children = [(n, id(m)) for n, m in model.named_modules()]
    inplace = [(n, m.inplace) for n, m in model.named_modules() if hasattr(m, "inplace")]
    before = hook_count(model)
    run_cam(
        ctx, method=method, layer=["layer2", "layer3"] if method == "refinecam" else "layer3", batch_size=128
    )
    assert hook_count(model) == before == 0
    assert [(n, id(m)) for n, m in model.named_modules()] == children  # AblationLayer swapped back
    assert [(n, m.inplace) for n, m in model.named_modules() if hasattr(m, "inplace")] == inplace
    assert model.layer1.training and all(m.training for m in model.layer1.modules())
    assert not model.training and not model.layer2.training
    assert model.conv1.weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "conv1.weight")
    assert model.fc.bias.grad is marker
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.bias")


def hook_table(model: torch.nn.Module) -> dict[str, dict[str, list[int]]]:
    """Every module's hook dictionaries (the hooks' ids), to compare a model before and after."""
    from vizpipe.pipeline.hooks import HOOK_DICTS

    extras = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
    return {n: {d: list(getattr(m, d, {})) for d in (*HOOK_DICTS, *extras)} for n, m in model.named_modules()}


@pytest.mark.parametrize("method", ALL_KINDS)
@pytest.mark.parametrize("fail", [False, True])
def test_cam_runner_exit_alone_removes_every_hook_it_added(contexts, method, fail):
    """``CamRunner.__exit__`` without ``preserved`` around it: the hooks it (and the library) added
    are gone, after maps were made or an error, and a hook the user had registered stays."""
    from vizpipe.pipeline.gradcam.adapter import CamRunner
    from vizpipe.pipeline.gradcam.layers import resolve_cam_layers

    ctx = contexts("resnet18", "input.shape=[2,3,32,32]")
    model = copy.deepcopy(ctx.model)
    mine = model.layer3.register_forward_hook(lambda m, a, o: None)
    before = hook_table(model)
    names = ["layer2", "layer3"] if method == "refinecam" else ["layer3"]
    layers = resolve_cam_layers(model, ctx.probe(), names, ctx.blocks())
    runner = CamRunner(model, CamConfig(method=method, batch_size=128), resolve_method(method), layers)
    x = ctx.inputs.first().tensor
    with torch.no_grad():
        logits = model(x)
    with contextlib.suppress(RuntimeError):
        with runner:
            assert hook_table(model) != before  # it did hook the model
            if fail:
                raise RuntimeError("a failure inside the with block")
            _, maps = runner.maps(x, [[1, 2]], logits)
            assert maps[0][0].shape == (2, 32, 32)
    assert hook_table(model) == before
    assert hook_count(model) == 1 and model.layer3._forward_hooks[mine.id] is not None
    mine.remove()


def test_model_restored_when_the_library_call_fails(contexts, tmp_path, monkeypatch):
    from pytorch_grad_cam.base_cam import BaseCAM

    def boom(self, *args, **kwargs):
        raise RuntimeError("library failure")

    monkeypatch.setattr(BaseCAM, "compute_cam_per_layer", boom)
    ctx = fresh(contexts("resnet18", "input.shape=[2,3,32,32]"), tmp_path, deep=True)
    with pytest.raises(RuntimeError, match="library failure"):
        run_cam(ctx, layer="layer3")
    assert hook_count(ctx.model) == 0
    assert all(p.requires_grad and p.grad is None for p in ctx.model.parameters())


@pytest.mark.slow
def test_100_consecutive_runs_leave_no_hooks_and_flat_memory(contexts, tmp_path):
    import gc

    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        pytest.skip("no /proc/self/status")

    ctx = fresh(contexts("resnet18", "input.shape=[1,3,32,32]"), tmp_path, deep=True)
    for i in range(100):
        run_cam(fresh(ctx, tmp_path / str(i)), layer="layer3", target_class=[1, 2])
        if i == 19:
            gc.collect()
            warm = rss_mib()
        assert hook_count(ctx.model) == 0
    gc.collect()
    assert rss_mib() <= warm * 1.10, f"RSS grew from {warm:.0f} MiB to {rss_mib():.0f} MiB"
    assert all(p.grad is None and p.requires_grad for p in ctx.model.parameters())


# ---- CAM stage on a tiny CNN: plan/validate messages, metric targets, localisation, record and
# render.
class TinyCNN(nn.Module):
    """conv(3->4) -> relu -> conv(4->6) -> relu -> pool -> fc(6->3)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global generator untouched
            torch.manual_seed(0)
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.c2 = nn.Conv2d(4, 6, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3)."""
        x = self.act(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(self.pool(x).flatten(1))


class Shared(TinyCNN):
    """``act`` runs twice per forward; ``unused`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3)."""
        x = self.act(self.c1(x))
        x = self.act(self.c2(x))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def ctx(tmp_path):
    """A context around TinyCNN with two random 16×16 images."""
    return hand_context(TinyCNN(), tmp_path / "run", (2, 3, 16, 16))


# ----------------------------------------------------------------------------- localisation


def test_localisation_exact_pointing_and_energy():
    """The maximum's pixel centre inside the box scores 1; energy is the box's share of the sum."""
    cam = np.zeros((10, 10), dtype=np.float32)
    cam[2, 3] = 3.0  # the maximum, centre (3.5, 2.5)
    cam[8, 8] = 1.0
    out = localisation(cam, (2.0, 1.0, 5.0, 4.0), 0.0)
    assert out == {"pointing_game": 1.0, "energy_in_box": 0.75}
    out = localisation(cam, (6.0, 6.0, 10.0, 10.0), 0.0)
    assert out == {"pointing_game": 0.0, "energy_in_box": 0.25}
    assert LOCALISATION == ("pointing_game", "energy_in_box")


def test_localisation_tolerance_boundaries():
    """The box grows by tolerance × max(H, W): a centre exactly on the grown edge counts."""
    cam = np.zeros((10, 20), dtype=np.float32)
    cam[5, 10] = 1.0  # centre (10.5, 5.5)
    # box right edge at 8.5: needs pad >= 2 -> tolerance 0.1 × 20 = 2.0 exactly
    assert localisation(cam, (0.0, 0.0, 8.5, 10.0), 0.1)["pointing_game"] == 1.0
    assert localisation(cam, (0.0, 0.0, 8.5, 10.0), 0.099)["pointing_game"] == 0.0
    # left edge: box starts at 12.5; pad 2 -> 10.5 exactly
    assert localisation(cam, (12.5, 0.0, 20.0, 10.0), 0.1)["pointing_game"] == 1.0
    assert localisation(cam, (12.5, 0.0, 20.0, 10.0), 0.09)["pointing_game"] == 0.0
    # vertical edges
    assert localisation(cam, (0.0, 0.0, 20.0, 3.5), 0.1)["pointing_game"] == 1.0
    assert localisation(cam, (0.0, 0.0, 20.0, 3.5), 0.09)["pointing_game"] == 0.0
    assert localisation(cam, (0.0, 7.5, 20.0, 10.0), 0.1)["pointing_game"] == 1.0
    assert localisation(cam, (0.0, 7.5, 20.0, 10.0), 0.09)["pointing_game"] == 0.0
    # the centre exactly on the un-grown edges
    assert localisation(cam, (10.5, 5.5, 10.5, 5.5), 0.0)["pointing_game"] == 1.0


def test_localisation_energy_box_rounds_outwards_and_clips():
    """Fractional box edges floor/ceil outwards; the box is clipped to the map."""
    cam = np.ones((4, 4), dtype=np.float64)
    # x 0.5..1.5 -> columns 0..1, y 1.2..2.1 -> rows 1..2: 4 of 16 pixels
    assert localisation(cam, (0.5, 1.2, 1.5, 2.1), 0.0)["energy_in_box"] == 0.25
    # outside the map on every side: the whole map
    assert localisation(cam, (-3.0, -3.0, 9.0, 9.0), 0.0)["energy_in_box"] == 1.0
    # exactly integer edges: columns 1..2, rows 0..0
    assert localisation(cam, (1.0, 0.0, 3.0, 1.0), 0.0)["energy_in_box"] == pytest.approx(2 / 16)


def test_localisation_zero_and_nonfinite_maps():
    """A zero map has no energy (None) but points at pixel (0, 0); NaN gives None for both."""
    cam = np.zeros((4, 4))
    assert localisation(cam, (0.0, 0.0, 1.0, 1.0), 0.0) == {"pointing_game": 1.0, "energy_in_box": None}
    assert localisation(cam, (2.0, 2.0, 4.0, 4.0), 0.0) == {"pointing_game": 0.0, "energy_in_box": None}
    cam[1, 1] = np.nan
    assert localisation(cam, (0.0, 0.0, 4.0, 4.0), 0.0) == {"pointing_game": None, "energy_in_box": None}
    cam[1, 1] = np.inf
    assert localisation(cam, (0.0, 0.0, 4.0, 4.0), 0.0) == {"pointing_game": None, "energy_in_box": None}


# ----------------------------------------------------------------------------- check_settings


def settings(**kw):
    return CamConfig(**kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"batch_size": 0}, "cam.batch_size must be >= 1, got 0"),
        ({"batch_size": -3}, "cam.batch_size must be >= 1, got -3"),
        ({"image_weight": -0.01}, "cam.image_weight must be in [0, 1] (show_cam_on_image), got -0.01"),
        ({"image_weight": 1.01}, "cam.image_weight must be in [0, 1] (show_cam_on_image), got 1.01"),
        ({"pointing_tolerance": 0.5}, "cam.pointing_tolerance must be in [0, 0.5), got 0.5"),
        ({"pointing_tolerance": -0.1}, "cam.pointing_tolerance must be in [0, 0.5), got -0.1"),
        (
            {"method": "sess", "aug_smooth": True},
            "cam.aug_smooth=true is not supported by SESS (it takes no aug_smooth); set cam.aug_smooth=false",
        ),
        (
            {"layer": ""},
            "Invalid value '' for cam.layer: expected auto, a dotted layer name or a list of names, "
            "e.g. cam.layer=layer4 or 'cam.layer=[layer3,layer4]'",
        ),
        ({"layer": ["c1", "  "]}, "Invalid value '  ' for cam.layer: expected auto"),
        ({"layer": 3}, "Invalid value '3' for cam.layer"),
        ({"layer": ("c1", None)}, "Invalid value 'None' for cam.layer"),
        (
            {"target_class": []},
            "cam.target_class is an empty list; use null (each image's top-1), an index or a list of indices",
        ),
        ({"target_class": ()}, "cam.target_class is an empty list"),
        (
            {"target_class": [1, False]},
            "Invalid value 'False' for cam.target_class: expected null (top-1), a class index, a class "
            "name or a list of them, e.g. cam.target_class=207 or 'cam.target_class=[1,207]'",
        ),
        ({"target_class": (1.5,)}, "Invalid value '1.5' for cam.target_class"),
        ({"target_class": None, "kwargs": {"bogus": 1}}, "Unknown cam.kwargs key for GradCAM 'bogus'"),
    ],
)
def test_check_settings_messages(kw, message):
    """Each config-only rule raises one line that starts with (or equals) the expected text."""
    with pytest.raises(ConfigError) as info:
        check_settings(settings(**kw))
    text = str(info.value)
    assert text.startswith(message), text
    if message.endswith(("false", "indices", "[layer3,layer4]'", "207]'")):
        assert text == message


@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 1},
        {"image_weight": 0.0},
        {"image_weight": 1.0},
        {"pointing_tolerance": 0.0},
        {"pointing_tolerance": 0.49},
        {"layer": ["c1", "c2"]},
        {"layer": ("c1",)},
        {"target_class": 0},
        {"target_class": "cat"},
        {"target_class": (1, "dog")},
        {"method": "gradcam", "aug_smooth": True},
    ],
)
def test_check_settings_accepts_the_boundaries(kw):
    """The inclusive ends and valid types pass; the method, metrics and kwargs come back."""
    spec, metrics, kwargs = check_settings(settings(**kw))
    assert spec.name == "GradCAM" and metrics == [] and kwargs == {}


def test_check_settings_returns_resolved_metrics_and_kwargs():
    """Metric names become canonical (duplicates dropped); base_method names become classes."""
    from pytorch_grad_cam import GradCAMPlusPlus

    spec, metrics, kwargs = check_settings(
        settings(
            method="finercam",
            metrics=["Complexity", "complexity", "drop_in_confidence"],
            kwargs={"base_method": "gradcam++"},
        )
    )
    assert spec.name == "FinerCAM"
    assert metrics == ["complexity", "drop_in_confidence"]
    assert kwargs == {"base_method": GradCAMPlusPlus}


def test_method_kwargs_lists_the_allowed_keys():
    """An unknown key names the method, the key, the constructor's own parameters and the hint."""
    from vizpipe.pipeline.gradcam.methods import resolve_method

    spec = resolve_method("gradcam")
    with pytest.raises(ConfigError) as info:
        method_kwargs(spec, {"model": 1})
    assert str(info.value) == (
        "Unknown cam.kwargs key for GradCAM 'model'. Valid choices (closest first): (none: this method "
        "takes no extra arguments). cam.kwargs are passed to the method's constructor"
    )
    kpca = resolve_method("kpca_cam")
    with pytest.raises(ConfigError) as info:
        method_kwargs(kpca, {"reshape_transform": 1})
    assert str(info.value) == (
        "Unknown cam.kwargs key for KPCA_CAM 'reshape_transform'. Valid choices (closest first): "
        "gamma, kernel. cam.kwargs are passed to the method's constructor"
    )
    assert method_kwargs(kpca, {"gamma": 0.5, "kernel": "rbf"}) == {"gamma": 0.5, "kernel": "rbf"}
    assert method_kwargs(spec, None) == {}
    fem = resolve_method("fem")
    assert method_kwargs(fem, {"k": 2}) == {"k": 2}
    # a base_method given as a class is kept as it is
    finer = resolve_method("finercam")
    assert method_kwargs(finer, {"base_method": fem.cls}) == {"base_method": fem.cls}


# ----------------------------------------------------------------------------- parse_target_class


def test_parse_target_class_values():
    """None -> None; ints, digit strings and names -> indices, de-duplicated in order."""
    cats = ["Cat", "dog", "Bird"]
    assert parse_target_class(None, 3, cats, "tiny") is None
    assert parse_target_class(2, 3, None, "tiny") == [2]
    assert parse_target_class([2, 0, 2], 3, None, "tiny") == [2, 0]
    assert parse_target_class((" 1 ", 0), 3, None, "tiny") == [1, 0]
    assert parse_target_class(["BIRD", " cat ", 1, "dog"], 3, cats, "tiny") == [2, 0, 1]
    assert parse_target_class("0", 3, cats, "tiny") == [0]


@pytest.mark.parametrize(
    ("value", "cats", "message"),
    [
        (
            3,
            None,
            "cam.target_class 3 is out of range for tiny (3 classes); valid: null (each image's top-1), "
            "an integer 0..2 or a list of them",
        ),
        (
            -1,
            None,
            "cam.target_class -1 is out of range for tiny (3 classes); valid: null (each image's top-1), "
            "an integer 0..2 or a list of them",
        ),
        ("-1", None, "cam.target_class -1 is out of range for tiny (3 classes)"),
        (
            "cat",
            None,
            "cam.target_class 'cat' is not a class index (this model's weights carry no class names; "
            "set model.categories to use names); valid: null (each image's top-1), an integer 0..2 "
            "or a list of them",
        ),
        (
            " cat ",
            [],
            "cam.target_class 'cat' is not a class index",
        ),
        (
            "crow",
            ["cat", "cow", "bird"],
            "Unknown class name for cam.target_class 'crow' for tiny; did you mean 'cow'? "
            "Valid choices (closest first): cow, cat, bird",
        ),
        (
            "Cat",
            ["cat", "dog", "CAT"],
            "cam.target_class 'Cat' names 2 classes of tiny: 0 (cat), 2 (CAT); give one index, "
            "e.g. cam.target_class=0",
        ),
    ],
)
def test_parse_target_class_messages(value, cats, message):
    """Out of range, names without categories, unknown and ambiguous names: exact messages."""
    with pytest.raises(ConfigError) as info:
        parse_target_class(value, 3, cats, "tiny")
    assert str(info.value).startswith(message), str(info.value)


# ----------------------------------------------------------------------------- make_plan


def test_make_plan_groups_labels_and_classes(ctx):
    """Layers in the order given, the averaged group first, per-layer groups only when asked."""
    plan = make_plan(ctx, settings(layer=["c2", "c1"], per_layer=True, target_class=[2, "1", 2]))
    assert [layer.name for layer in plan.layers] == ["c2", "c1"]
    assert plan.label == "c2+c1"
    assert [(label, [x.name for x in group]) for label, group in plan.groups] == [
        ("c2+c1", ["c2", "c1"]),
        ("c2", ["c2"]),
        ("c1", ["c1"]),
    ]
    assert plan.classes == [2, 1] and plan.metrics == [] and plan.kwargs == {}
    assert plan.layers[0].shape == (2, 6, 16, 16) and plan.layers[0].layout.channels == 6
    plan = make_plan(ctx, settings(layer=["c2", "c1"], per_layer=False))
    assert [label for label, _ in plan.groups] == ["c2+c1"] and plan.classes is None
    plan = make_plan(ctx, settings(layer="c1", per_layer=True))
    assert [label for label, _ in plan.groups] == ["c1"]
    assert ctx.warnings == []


def test_make_plan_auto_is_the_last_spatial_layer(ctx):
    """auto picks c2 (the last spatial module before pooling): no warning on a 16×16 grid."""
    plan = make_plan(ctx, settings())
    assert plan.label == "c2" and plan.method.key == "gradcam"
    stage = CamStage()
    stage.check_model(ctx, settings(layer="act"))
    assert stage.plan.label == "act"


def test_make_plan_fullgrad_keeps_one_layer_and_warns(ctx):
    """FullGrad: a warning, the first layer only, labelled bias_layers."""
    plan = make_plan(ctx, settings(method="fullgrad", layer=["c1", "c2"], per_layer=True))
    assert ctx.warnings == ["FullGrad ignores cam.layer: it uses the gradients of every conv/batch-norm bias"]
    assert [x.name for x in plan.layers] == ["c1"]
    assert [(label, [x.name for x in g]) for label, g in plan.groups] == [("bias_layers", ["c1"])]


class OneByOne(TinyCNN):
    """c2 covers the whole 16×16 input: a 1×1 output."""

    def __init__(self) -> None:
        super().__init__()
        self.c2 = nn.Conv2d(4, 6, 16)


def test_make_plan_warns_about_a_1x1_layer(tmp_path):
    """A layer with a 1×1 output gets a constant map: one warning naming it."""
    ctx = hand_context(OneByOne(), tmp_path / "run", (1, 3, 16, 16))
    plan = make_plan(ctx, settings(layer=["c1", "c2"]))
    assert [x.name for x in plan.layers] == ["c1", "c2"]
    assert ctx.warnings == [
        "CAM layer 'c2' has a 1×1 output for this input: its map is constant; "
        "use an earlier layer or a larger input"
    ]


def test_make_plan_layer_errors(tmp_path):
    """Unknown, shared, unused and non-spatial layers: exact messages with the usable layers."""
    ctx = hand_context(Shared(), tmp_path / "run", (1, 3, 16, 16))
    with pytest.raises(ConfigError) as info:
        make_plan(ctx, settings(layer="act"))
    assert str(info.value) == (
        "Layer 'act' (ReLU) cannot be used for CAM: it runs 2 times per forward pass (a shared module), "
        "so its map would be ambiguous. Layers with spatial output (closest first): c1, c2, pool"
    )
    with pytest.raises(ConfigError) as info:
        make_plan(ctx, settings(layer="unused"))
    assert str(info.value) == (
        "Layer 'unused' (Conv2d) cannot be used for CAM: it does not run in the model's forward pass. "
        "Layers with spatial output (closest first): c1, c2, pool"
    )
    with pytest.raises(ConfigError) as info:
        make_plan(ctx, settings(layer="fc"))
    assert str(info.value) == (
        "Layer 'fc' (Linear) cannot be used for CAM: its output (1×3) has no spatial grid; CAM needs a "
        "spatial output (N×C×H×W, or ViT/Swin tokens) from a module that runs once per forward. "
        "Layers with spatial output (closest first): c1, c2, pool"
    )
    with pytest.raises(ConfigError) as info:
        make_plan(ctx, settings(layer="c3"))
    assert str(info.value) == (
        "Unknown layer 'c3' for tiny; did you mean 'c2'? Valid choices (closest first): c2, c1, pool. "
        "cam.layer takes auto, a dotted layer name (summary/layers.txt), a glob or a list"
    )
    with pytest.raises(ConfigError) as info:
        make_plan(ctx, settings(layer="fc*"))
    assert str(info.value).startswith("Unknown layer pattern 'fc*' for tiny.")


# ----------------------------------------------------------------------------- compute helpers


def test_file_stem():
    """<layer>__<class>[_<name>], each part through slug."""
    assert file_stem("layer4", 7, None) == "layer4__7"
    assert file_stem("layer4", 7, "") == "layer4__7"
    assert file_stem("a+b", 3, "tabby cat") == "a_b__3_tabby_cat"


def fake_ctx(num_classes: int, probs: bool) -> SimpleNamespace:
    return SimpleNamespace(num_classes=num_classes, outputs_are_probabilities=probs)


def test_metric_targets_follow_each_metrics_convention():
    """softmax metrics use ClassifierOutputSoftmaxTarget unless K == 1 or the outputs are probabilities."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    out = metric_targets("drop_in_confidence", [2, 0], fake_ctx(3, False))
    assert [type(t) for t in out] == [ClassifierOutputSoftmaxTarget] * 2
    assert [t.category for t in out] == [2, 0]
    for name, c in (("drop_in_confidence", fake_ctx(1, False)), ("drop_in_confidence", fake_ctx(3, True))):
        out = metric_targets(name, [np.int64(1)], c)
        assert [type(t) for t in out] == [ClassifierOutputTarget] and out[0].category == 1
        assert type(out[0].category) is int
    out = metric_targets("coherency", [1], fake_ctx(3, False))
    assert type(out[0]) is ClassifierOutputTarget
    # the targets score what they say: softmax probability vs the raw output
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    soft = metric_targets("confidence_change", [2], fake_ctx(3, False))[0](logits[0])
    assert float(soft) == pytest.approx(float(torch.softmax(logits[0], 0)[2]))


def test_metric_target_text():
    """The text cam.json records for each kind of target."""
    soft = "softmax probability of the target class (ClassifierOutputSoftmaxTarget)"
    raw = "raw output of the target class (ClassifierOutputTarget)"
    assert metric_target_text("complexity", fake_ctx(3, False)) == "the map alone"
    assert metric_target_text("road_combined", fake_ctx(3, False)) == soft
    assert metric_target_text("road_combined", fake_ctx(1, False)) == raw
    assert metric_target_text("road_combined", fake_ctx(3, True)) == raw
    assert metric_target_text("road_combined", fake_ctx(1, True)) == raw
    assert metric_target_text("arcc", fake_ctx(3, False)) == raw


def test_chunk_splits_scorecam_by_bytes(monkeypatch):
    """ScoreCAM: images per call = MAX_BYTES // (channels × image bytes), at least 1, at most N."""
    import vizpipe.stages.cam.compute as compute
    from vizpipe.pipeline.gradcam.layers import CamLayer
    from vizpipe.pipeline.gradcam.methods import resolve_method
    from vizpipe.pipeline.layers import Layout

    layers = [
        CamLayer("a", (1, 4, 2, 2), Layout("nchw", 2, 2, 4)),
        CamLayer("b", (1, 8, 2, 2), Layout("nchw", 2, 2, 8)),
    ]
    x = torch.zeros(10, 3, 4, 4)  # 48 values × 4 bytes = 192 bytes per image; × 8 channels = 1536
    plan = SimpleNamespace(method=resolve_method("scorecam"))
    monkeypatch.setattr(compute, "SCORECAM_MAX_BYTES", 1536 * 3)
    assert _chunk(plan, layers, x) == 3
    monkeypatch.setattr(compute, "SCORECAM_MAX_BYTES", 1536 * 3 - 1)
    assert _chunk(plan, layers, x) == 2
    monkeypatch.setattr(compute, "SCORECAM_MAX_BYTES", 10)
    assert _chunk(plan, layers, x) == 1
    monkeypatch.setattr(compute, "SCORECAM_MAX_BYTES", 1 << 40)
    assert _chunk(plan, layers, x) == 10
    assert _chunk(SimpleNamespace(method=resolve_method("gradcam")), layers, x) == 10


def test_auto_and_blocks_use_the_configured_blocks(tmp_path):
    """cam.layer=auto picks the last spatial configured block; 'blocks' selects them all."""
    ctx = hand_context(TinyCNN(), tmp_path / "run", (1, 3, 16, 16))
    ctx.blocks_config = "c1,act"
    assert make_plan(ctx, settings()).label == "act"
    assert make_plan(ctx, settings(layer="blocks")).label == "c1+act"
    assert make_plan(ctx, settings(layer=[" auto "])).label == "act"
    assert make_plan(ctx, settings(layer="c2")).label == "c2"
