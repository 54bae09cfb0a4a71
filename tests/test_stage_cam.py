"""CAM stage on a tiny CNN: plan/validate messages, metric targets, localisation, record and render.

Every check pins an exact value or message (a tiny 3-class model, random 2×3×16×16 input).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import hand_context
from torch import nn
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.metrics.localisation import LOCALISATION, localisation
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.compute import _chunk, file_stem
from vizpipe.stages.cam.plan import check_settings, make_plan, method_kwargs, parse_target_class
from vizpipe.stages.cam.rows import metric_target_text, metric_targets


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
