"""vizpipe.pipeline.gradcam: method and metric names, layer rules and messages, metric calls, the adapter.

Tiny hand-made models; every message and value is pinned exactly.

pipeline/gradcam/adapter.py and eigencam on a tiny CNN: targets, hooks, freezing, the one-forward
path.

vizpipe uses pytorch-grad-cam by its public surface: the README example, the subclass, nothing
patched."""

from __future__ import annotations

import copy
import inspect
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import hand_context
from PIL import Image
from test_cam import Shared, TinyCNN
from torch import nn
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.gradcam.adapter import (
    CamRunner,
    _clone_hook,
    _guard_hook,
    inner_cams,
    targets_for,
)
from vizpipe.pipeline.gradcam.eigencam import _scale, _top_vector, first_component
from vizpipe.pipeline.gradcam.layers import (
    CamLayer,
    LayoutReshape,
    _shown,
    auto_layer,
    probe_input_text,
    resolve_cam_layers,
    spatial_layers,
)
from vizpipe.pipeline.gradcam.methods import (
    MethodSpec,
    _aliases,
    available_methods,
    normalize,
    resolve_method,
)
from vizpipe.pipeline.layers import Layout
from vizpipe.pipeline.metrics.perturbation import library_metric
from vizpipe.pipeline.metrics.registry import METRICS, available_metrics, resolve_metrics
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.record import CamDoc

# ---- vizpipe.pipeline.gradcam: method and metric names, layer rules and messages, metric
# calls, the adapter.
# ----------------------------------------------------------------------------- methods


def test_normalize():
    """Lower case, ++ spelled plusplus, everything but letters and digits dropped."""
    assert normalize("Grad-CAM++") == "gradcamplusplus"
    assert normalize("KPCA_CAM") == "kpcacam"
    assert normalize(" Eigen CAM torch 2") == "eigencamtorch2"
    assert normalize("+") == ""


def test_available_methods_order_and_kinds():
    """The most used first in a fixed order, the rest sorted; meta methods flagged."""
    methods = available_methods()
    assert list(methods)[:10] == [
        "gradcam",
        "gradcamplusplus",
        "hirescam",
        "xgradcam",
        "layercam",
        "eigencam",
        "eigencamtorch",
        "eigengradcam",
        "scorecam",
        "ablationcam",
    ]
    rest = list(methods)[10:]
    assert rest == sorted(rest) and {"fem", "finercam", "fullgrad", "sess", "refinecam"} <= set(rest)
    assert {k for k, s in methods.items() if s.meta} == {"finercam", "sess", "refinecam"}
    assert all(s.key == k == normalize(s.name) for k, s in methods.items())
    assert methods["eigencamtorch"].name == "EigenCAMTorch"
    assert methods["gradcamplusplus"].name == "GradCAMPlusPlus"
    assert {k for k, s in methods.items() if s.perturbation} == {"scorecam", "ablationcam"}


def test_aliases_and_resolution():
    """gradcampp/gcpp and the names without 'cam' resolve; a key never shadows a method."""
    methods = available_methods()
    aliases = _aliases(methods)
    assert aliases["gradcampp"] == aliases["gcpp"] == "gradcamplusplus"
    assert aliases["grad"] == "gradcam" and aliases["score"] == "scorecam" and aliases["kpca"] == "kpcacam"
    assert "eigencamtorch" not in aliases.values() and "fem" not in aliases.values()
    assert not set(aliases) & set(methods)
    fake = {"abcam": None, "ab": None, "cam": None, "xcam": None}
    assert _aliases(fake) == {"x": "xcam"}  # ab is a method itself; "cam" alone is too short
    assert _aliases({"gradcamplusplus": None}) == {"gradcampp": "gradcamplusplus", "gcpp": "gradcamplusplus"}
    for name, cls in [("Grad-CAM++", "GradCAMPlusPlus"), ("gcpp", "GradCAMPlusPlus"), ("SCORE", "ScoreCAM")]:
        assert resolve_method(name).name == cls
    assert resolve_method("eigencam_torch").name == "EigenCAMTorch"


def test_unknown_method_message():
    """The bad name, the closest first, spelled names, the hint."""
    with pytest.raises(ConfigError) as info:
        resolve_method("gradcamm")
    text = str(info.value)
    assert text.startswith(
        "Unknown CAM method 'gradcamm'; did you mean 'gradcam'? Valid choices (closest first): gradcam, "
    )
    assert text.endswith(". Set cam.method=<one of these> (case-insensitive)")
    shown = text.split("(closest first): ")[1].split(". Set")[0].split(", ")
    assert "gradcam++" in shown and "eigencam_torch" in shown
    assert "gradcamplusplus" not in shown and "eigencamtorch" not in shown
    assert len(shown) == len(available_methods())


def test_method_spec_is_a_and_accepts():
    """is_a follows the MRO; accepts looks at __call__ then forward (a class may lack forward)."""
    spec = resolve_method("gradcam")
    assert spec.is_a("GradCAM") and spec.is_a("BaseCAM") and not spec.is_a("ScoreCAM")
    assert spec.accepts("aug_smooth") and spec.accepts("eigen_smooth") and not spec.accepts("nope")
    assert not resolve_method("finercam").accepts("aug_smooth")
    assert resolve_method("finercam").accepts("eigen_smooth")

    class CallOnly:
        def __call__(self, x, aug_smooth=False):
            return x

    class ForwardToo:
        def __call__(self, *args):
            return args

        def forward(self, x, eigen_smooth=False):
            return x

    assert MethodSpec("c", "C", CallOnly, False).accepts("aug_smooth")
    assert not MethodSpec("c", "C", CallOnly, False).accepts("eigen_smooth")
    assert MethodSpec("f", "F", ForwardToo, False).accepts("eigen_smooth")
    assert not MethodSpec("f", "F", ForwardToo, False).accepts("aug_smooth")


def test_metric_table_and_names():
    """Every metric is installed; snake-case and class names resolve, duplicates dropped."""
    assert available_metrics() == METRICS
    assert resolve_metrics(["ROADCombined", "road_combined", "Drop-In-Confidence", "arcc"]) == [
        "road_combined",
        "drop_in_confidence",
        "arcc",
    ]
    assert resolve_metrics([]) == []
    with pytest.raises(ConfigError) as info:
        resolve_metrics(["complexityy"])
    text = str(info.value)
    assert text.startswith(
        "Unknown CAM metric 'complexityy'; did you mean 'complexity'? "
        "Valid choices (closest first): complexity, "
    )
    assert text.endswith(". Set cam.metrics=[<names>] (pipeline/metrics/registry.py says what each scores)")
    gradcam = {n: s for n, s in METRICS.items() if s.library == "grad-cam"}
    assert {(n, s.target, s.better, s.forwards) for n, s in gradcam.items() if n.startswith("road_")} == {
        ("road_most_relevant_first", "softmax", "lower", 1),
        ("road_least_relevant_first", "softmax", "higher", 1),
        ("road_most_relevant_first_average", "softmax", "lower", 4),
        ("road_least_relevant_first_average", "softmax", "higher", 4),
        ("road_combined", "softmax", "higher", 8),
    }


def test_compute_metric_calls_each_convention_like_the_library():
    """cams / perturb / base_method: one float64 per image, equal to the library called directly."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.metrics.arcc import Coherency, Complexity
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    model = TinyCNN().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cams = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    out = library_metric("complexity", {}, x, cams, [], model, None)
    assert out.dtype == np.float64 and out.shape == (2,)
    np.testing.assert_allclose(out, np.asarray(Complexity()(cams)).reshape(2))
    targets = [ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(2)]
    out = library_metric("drop_in_confidence", {}, x, cams, targets, model, None)
    want = np.asarray(DropInConfidence()(x, cams, targets, model)).reshape(2)
    assert out.shape == (2,)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    raw = [ClassifierOutputTarget(1), ClassifierOutputTarget(2)]
    with GradCAM(model, [model.c2]) as cam:
        out = library_metric("coherency", {}, x, cams, raw, model, cam)
        want = np.asarray(Coherency()(x, cams, raw, model, cam)).reshape(2)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    from pytorch_grad_cam.metrics.arcc import ARCC

    with GradCAM(model, [model.c2]) as cam, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random draws for both calls
        out = library_metric("arcc", {}, x, cams, raw, model, cam)
        torch.manual_seed(0)
        want = np.asarray(ARCC(base_method=cam)(x, cams, raw, model)).reshape(2)
    assert out.shape == (2,) and out.dtype == np.float64
    np.testing.assert_allclose(out, want, rtol=1e-2, atol=1e-6)  # ARCC recomputes the CAM in float32


# ----------------------------------------------------------------------------- layers


def test_layout_reshape_by_shape_and_conflicts():
    """Layouts keyed by shape without batch; same shape + different layout is an error."""
    nchw = CamLayer("a", (2, 4, 3, 3), Layout("nchw", 3, 3, 4))
    nhwc = CamLayer("b", (2, 4, 3, 3), Layout("nhwc", 4, 3, 3))
    with pytest.raises(ConfigError) as info:
        LayoutReshape([nchw, nhwc])
    assert str(info.value) == (
        "CAM layers with the same output shape (4, 3, 3) need different reshapes (nchw vs nhwc at 'b'); "
        "run them as separate jobs (-m cam.layer=a,b)"
    )
    LayoutReshape([nchw, CamLayer("c", (5, 4, 3, 3), Layout("nchw", 3, 3, 4))])  # same layout: fine
    last = CamLayer("x", (1, 2, 5, 3), Layout("nhwc", 2, 5, 3))
    reshape = LayoutReshape([last])
    assert set(reshape.layouts) == {(2, 5, 3)}
    t = torch.arange(30.0).reshape(1, 2, 5, 3)
    assert torch.equal(reshape(t), t.permute(0, 3, 1, 2))
    other = torch.zeros(1, 9, 9)
    assert reshape(other) is other


@pytest.fixture
def shared_ctx(tmp_path):
    return hand_context(Shared(), tmp_path / "run", (1, 3, 16, 16))


def test_spatial_layers_skip_shared_and_unused(shared_ctx):
    """Only modules called exactly once with a spatial output, in completion order."""
    usable = spatial_layers(shared_ctx.model, shared_ctx.probe())
    assert list(usable) == ["c1", "c2", "pool"]
    assert usable["c2"] == CamLayer("c2", (1, 6, 16, 16), Layout("nchw", 16, 16, 6))


def test_resolve_cam_layers_specs(shared_ctx):
    """Names, globs, type:X, lists (deduplicated, in order) and the messages for bad entries."""
    m, p = shared_ctx.model, shared_ctx.probe()
    names = lambda spec, **kw: [x.name for x in resolve_cam_layers(m, p, spec, [], "tiny", **kw)]  # noqa: E731
    assert names("c2") == ["c2"]
    assert names([" c2 ", "c1", "c2"]) == ["c2", "c1"]
    assert names("c*") == ["c1", "c2"]
    assert names("type:Conv2d") == ["c1", "c2"]
    assert names("auto") == ["c2"]
    with pytest.raises(ConfigError, match=r"^cam.layer is empty; use auto, a layer name or a list of names$"):
        names([])
    with pytest.raises(ConfigError) as info:
        names(["c1", 3], key="train.cam_layer")
    assert str(info.value) == "train.cam_layer entries must be layer names (strings); got 3 (int)"
    with pytest.raises(ConfigError) as info:
        names([None])
    assert str(info.value) == "cam.layer entries must be layer names (strings); got None (NoneType)"
    with pytest.raises(ConfigError) as info:
        names("zz", key="train.cam_layer")
    assert str(info.value).endswith(
        ". train.cam_layer takes auto, a dotted layer name (summary/layers.txt), a glob or a list"
    )
    assert str(info.value).startswith("Unknown layer 'zz' for tiny")
    with pytest.raises(ConfigError) as info:
        resolve_cam_layers(m, p, "zz", [])
    assert str(info.value).startswith("Unknown layer 'zz'. Valid choices")
    with pytest.raises(ConfigError) as info:
        names("")
    assert str(info.value).startswith("Unknown layer ''")


def test_resolve_blocks_and_empty_selection(shared_ctx):
    """'blocks' selects the given blocks that are usable."""
    m, p = shared_ctx.model, shared_ctx.probe()
    got = resolve_cam_layers(m, p, "blocks", ["c1", "c2"], "tiny")
    assert [x.name for x in got] == ["c1", "c2"]


class Flat(nn.Module):
    """Only 1×1 outputs after the first layer: nothing for auto."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 2, 4)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.c(x).flatten(1))


def test_auto_layer_without_a_grid(tmp_path):
    """No spatial candidate: the message names the key, the probed logits and the remedies."""
    ctx = hand_context(Flat(), tmp_path / "r", (2, 3, 4, 4))
    probe = ctx.probe()
    assert probe_input_text(probe) == "(logits (2, 3))"
    with pytest.raises(ConfigError) as info:
        auto_layer(ctx.model, probe, spatial_layers(ctx.model, probe), [], key="train.cam_layer")
    assert str(info.value) == (
        "train.cam_layer=auto found no layer with a spatial output (N×C×H×W with H×W > 1, or ViT/Swin "
        "tokens) for this model and input (logits (2, 3)); name one with train.cam_layer=<layer> "
        "(summary/layers.txt lists every layer's output shape) or use a larger input"
    )


class Pooled(TinyCNN):
    """A spatial adaptive pool (4×4) after c2: auto skips pools and picks c2."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(6 * 16, 3)


def test_auto_layer_prefers_blocks_then_the_last_non_pool(tmp_path):
    """Spatial blocks win (the last of them); else the last spatial module that is not a pool."""
    ctx = hand_context(Pooled(), tmp_path / "r", (1, 3, 16, 16))
    probe = ctx.probe()
    usable = spatial_layers(ctx.model, probe)
    assert "pool" in usable
    assert auto_layer(ctx.model, probe, usable, []) == "c2"
    assert auto_layer(ctx.model, probe, usable, ["c1", "act"]) == "act"
    assert auto_layer(ctx.model, probe, usable, ["c1", "fc"]) == "c1"


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(4)
        self.mix = nn.Linear(4, 4)
        self.norm2 = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm2(self.mix(self.norm1(x)))


class TinyViT(nn.Module):
    """Patch embedding to 4×4 tokens + a class token, two blocks with two LayerNorms each."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 4, stride=4)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 4)
        t = torch.cat([torch.zeros(t.shape[0], 1, 4), t], dim=1)
        return self.head(self.blocks(t)[:, 0])


def test_auto_layer_transformer_picks_the_last_blocks_first_norm(tmp_path):
    """Modules with two LayerNorm children are blocks: auto takes the last one's first norm."""
    ctx = hand_context(TinyViT(), tmp_path / "r", (1, 3, 16, 16))
    probe = ctx.probe()
    usable = spatial_layers(ctx.model, probe)
    assert auto_layer(ctx.model, probe, usable, []) == "blocks.1.norm1"
    layers = resolve_cam_layers(ctx.model, probe, "auto", [], "vit")
    assert layers[0].layout.kind == "tokens" and layers[0].layout.prefix == 1


def test_shown_limits_the_list():
    """Up to 25 names, closest first, then how many more."""
    names = [f"n{i}" for i in range(30)]
    text = _shown(names, "n29")
    assert text.startswith("n29, ") and text.endswith(", ... (5 more)") and text.count(", ") == 25
    assert _shown(names[:25], "n0").count(", ") == 24 and "more" not in _shown(names[:25], "n0")
    assert _shown(["a", "b"], "b", limit=1) == "b, ... (1 more)"


# ---- pipeline/gradcam/adapter.py and eigencam on a tiny CNN: targets, hooks, freezing, the
# one-forward path.
def cfg(**kw):
    base = {"batch_size": 4, "freeze_params": True, "aug_smooth": False, "eigen_smooth": False}
    return SimpleNamespace(**{**base, **kw})


def layer(name: str, channels: int) -> CamLayer:
    return CamLayer(name, (1, channels, 8, 8), Layout("nchw", 8, 8, channels))


C1, C2 = layer("c1", 4), layer("c2", 6)


@pytest.fixture
def model():
    return TinyCNN().eval()


@pytest.fixture
def x():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))


def hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )


def test_targets_for_plain_and_finer():
    """One ClassifierOutputTarget per image; FinerCAM: the 3 classes closest in logit, alpha 1."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget

    logits = torch.tensor([[0.0, 5.0, 4.0, 1.0, 4.5, 9.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    plain = targets_for([np.int64(1), 5], logits, resolve_method("gradcam"))
    assert [type(t) for t in plain] == [ClassifierOutputTarget] * 2 and [t.category for t in plain] == [1, 5]
    assert type(plain[0].category) is int
    finer = targets_for([1, 2], logits, resolve_method("finercam"))
    assert [type(t) for t in finer] == [FinerWeightedTarget] * 2
    assert (finer[0].main_category, finer[0].comparison_categories, finer[0].alpha) == (1, [4, 2, 3], 1.0)
    assert (finer[1].main_category, finer[1].comparison_categories) == (2, [0, 1, 3])


def test_guard_and_clone_hooks():
    """A non-tensor output is refused with one line; cut: a detached leaf; else nothing changes."""
    lin = nn.Linear(2, 2)
    with pytest.raises(ConfigError) as info:
        _guard_hook(False)(lin, (), (torch.zeros(1),))
    assert str(info.value) == (
        "CAM layer Linear returns a tuple, not a tensor; choose a layer that returns one tensor "
        "(summary/layers.txt)"
    )
    t = torch.ones(2, requires_grad=True) * 2
    assert _guard_hook(False)(lin, (), t) is None
    leaf = _guard_hook(True)(lin, (), t)
    assert leaf.is_leaf and leaf.requires_grad and torch.equal(leaf, t)
    c = _clone_hook(lin, (), t)
    assert torch.equal(c, t) and c.data_ptr() != t.data_ptr()


def test_one_forward_per_method(model):
    """The one-forward path for BaseCAM.forward methods only (not FullGrad, meta, aug_smooth, ShapleyCAM)."""
    expected = {
        "gradcam": True,
        "eigencam": True,
        "fullgrad": False,
        "finercam": False,
        "shapleycam": False,
    }
    for name, one in expected.items():
        with CamRunner(model, cfg(), resolve_method(name), [C2]) as runner:
            assert runner.one_forward is one, name
    with CamRunner(model, cfg(aug_smooth=True), resolve_method("gradcam"), [C2]) as runner:
        assert runner.one_forward is False


def test_runner_hooks_freezing_and_cut(model):
    """Enter adds hooks and freezes; one layer + a gradient method cuts the graph; exit removes all."""
    before = hooks(model)
    with CamRunner(model, cfg(), resolve_method("gradcam"), [C2]) as runner:
        assert runner.cut is True and hooks(model) > before
        assert not any(p.requires_grad for p in model.parameters())
        assert len(runner.hooks) == 2
        assert runner.obj.compute_input_gradient is False
    assert hooks(model) == before and len(runner.hooks) == 0 and runner.obj is None
    model.requires_grad_(True)
    with CamRunner(model, cfg(), resolve_method("gradcam"), [C1, C2]) as runner:
        assert runner.cut is False and runner.obj.compute_input_gradient is True and len(runner.hooks) == 4
    model.requires_grad_(True)
    with CamRunner(model, cfg(freeze_params=False), resolve_method("gradcam"), [C2]) as runner:
        assert runner.cut is False and all(p.requires_grad for p in model.parameters())
        assert runner.obj.compute_input_gradient is False
    with CamRunner(model, cfg(), resolve_method("eigencam"), [C1, C2]) as runner:
        # no gradients used: nothing asks for the input's gradient
        assert runner.cut is False and runner.obj.compute_input_gradient is False
    with CamRunner(model, cfg(), resolve_method("finercam"), [C2]) as runner:
        assert runner.cut is False and runner.obj.compute_input_gradient is True
        assert runner.obj.base_cam.compute_input_gradient is True
        assert inner_cams(runner.obj) == [runner.obj.base_cam]
    assert hooks(model) == before


def test_runner_options_reach_the_library(model):
    """ScoreCAM's batch size; AblationCAM a fresh ablation layer each time; kwargs passed on."""
    with CamRunner(model, cfg(batch_size=3), resolve_method("scorecam"), [C2]) as runner:
        assert runner.obj.batch_size == 3
    with CamRunner(model, cfg(batch_size=5), resolve_method("ablationcam"), [C2]) as a:
        first = a.obj.ablation_layer
        assert a.obj.batch_size == 5
    with CamRunner(model, cfg(), resolve_method("ablationcam"), [C2]) as b:
        assert b.obj.ablation_layer is not first
    with CamRunner(model, cfg(), resolve_method("fem"), [C2], kwargs={"k": 3}) as runner:
        assert runner.obj.k == 3


def test_maps_equal_the_library_and_count_forwards(model, x):
    """The one-forward path gives the library's maps for each class set, in one forward pass."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with CamRunner(model, cfg(), resolve_method("gradcam"), [C2]) as runner:
        logits, out = runner.maps(x, [[0, 0], [2, 1]])
        assert runner.forwards == 1
    model.requires_grad_(True)  # the stage restores it (vizpipe.pipeline.hooks.preserved); here by hand
    with torch.no_grad():
        want_logits = model(x)
    torch.testing.assert_close(logits, want_logits)
    assert len(out) == 2 and out[0][1] is None
    for classes, (maps, _) in zip([[0, 0], [2, 1]], out, strict=True):
        with GradCAM(model, [model.c2]) as cam:
            want = cam(x, [ClassifierOutputTarget(c) for c in classes])
        assert maps.dtype == np.float32 and maps.shape == (2, 8, 8)
        np.testing.assert_allclose(maps, want, atol=1e-5)
    with CamRunner(model, cfg(), resolve_method("gradcam"), [C2]) as runner:
        logits, out = runner.maps(x, None)
    model.requires_grad_(True)
    top1 = want_logits.argmax(1).tolist()
    with GradCAM(model, [model.c2]) as cam:
        want = cam(x, [ClassifierOutputTarget(c) for c in top1])
    assert len(out) == 1
    np.testing.assert_allclose(out[0][0], want, atol=1e-5)


def test_maps_per_class_set_need_logits(model, x):
    """Methods called once per class set need the logits; they run once per set."""
    with CamRunner(model, cfg(), resolve_method("finercam"), [C2]) as runner:
        with pytest.raises(ValueError) as info:
            runner.maps(x, [[0, 1]])
        assert str(info.value) == (
            "CamRunner.maps: this method is called once per class set and needs the batch's logits"
        )
        with torch.no_grad():
            logits = model(x)
        got, out = runner.maps(x, [[0, 1], [1, 1]], logits)
        assert got is logits and len(out) == 2 and runner.forwards == 2
    model.requires_grad_(True)
    from pytorch_grad_cam import FinerCAM

    for classes, (maps, per_layer) in zip([[0, 1], [1, 1]], out, strict=True):
        with FinerCAM(model, [model.c2]) as cam:
            want = cam(x, targets_for(classes, logits, resolve_method("finercam")))
        np.testing.assert_allclose(maps, want, atol=1e-5)
        assert per_layer is None
    with CamRunner(model, cfg(), resolve_method("finercam"), [C2]) as runner:
        _, out = runner.maps(x, None, logits)
        assert len(out) == 1 and runner.forwards == 1


def test_capture_per_layer_equals_single_layer_maps(model, x):
    """capture=True with two layers: each layer's own map from the averaged call."""
    with CamRunner(model, cfg(), resolve_method("gradcam"), [C1, C2], capture=True) as runner:
        assert runner.capture is True
        _, out = runner.maps(x, [[1, 2]])
    maps, per_layer = out[0]
    assert len(per_layer) == 2
    for lay, got in zip([C1, C2], per_layer, strict=True):
        with CamRunner(model, cfg(), resolve_method("gradcam"), [lay]) as single:
            _, ref = single.maps(x, [[1, 2]])
        np.testing.assert_allclose(got[:, :, :], ref[0][0], atol=1e-5)
    with CamRunner(model, cfg(), resolve_method("gradcam"), [C2], capture=True) as runner:
        assert runner.capture is False


def test_first_component_solvers_and_sign():
    """svd and gram agree; the sign makes the largest magnitude positive; NaN counts as 0."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 3, 4, generator=g)
    svd = first_component(a, "svd")
    gram = first_component(a, "gram")
    assert svd.shape == (2, 3, 4)
    torch.testing.assert_close(svd, gram, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(first_component(a), svd)
    flat = svd.flatten(1)
    assert (flat.amax(1).abs() >= flat.amin(1).abs()).all()
    wide = torch.randn(1, 20, 2, 2, generator=g)  # fewer pixels than channels
    torch.testing.assert_close(
        first_component(wide, "svd"), first_component(wide, "gram"), atol=1e-4, rtol=1e-4
    )
    with_nan = a.clone()
    with_nan[0, 0, 0, 0] = float("nan")
    zeroed = a.clone()
    zeroed[0, 0, 0, 0] = 0.0
    torch.testing.assert_close(first_component(with_nan), first_component(zeroed))
    with pytest.raises(ValueError, match=r"^eigencam solver 'qr': choose auto, svd or gram$"):
        first_component(a, "qr")
    rank_one = torch.outer(torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 1.0])).reshape(1, 3, 2)
    proj = _top_vector(rank_one.double())
    torch.testing.assert_close(proj.abs(), torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64) * 5**0.5)


def test_scale_is_min_max_then_bilinear():
    """(B, h, w) -> min 0, max ~1, resized to (H, W) given as (width, height)."""
    cams = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    out = _scale(cams, (4, 2))
    assert out.shape == (1, 2, 4)
    same = _scale(cams, (2, 2))
    torch.testing.assert_close(same, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), atol=1e-6, rtol=0)


def test_eigencam_torch_maps_are_the_first_component_of_the_layer(model, x):
    """EigenCAMTorch: ReLU of the first component of the layer's output, min-max scaled."""
    with CamRunner(model, cfg(), resolve_method("eigencam_torch"), [C2]) as runner:
        assert runner.one_forward is False
        with torch.no_grad():
            logits = model(x)
        _, out = runner.maps(x, [[0, 0]], logits)
    with torch.no_grad():
        act = model.c2(torch.relu(model.c1(x)))
    want = _scale(torch.clamp(first_component(act), min=0), (8, 8)).numpy()
    ours = out[0][0]
    assert ours.shape == (2, 8, 8) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, want, atol=1e-5)
    assert ours.min() == 0 and ours.max() == pytest.approx(1.0, abs=1e-5)


def test_first_component_sign_is_fixed_per_image():
    """Each image's sign is fixed on its own: a weak image beside a strong one still gets flipped."""
    g = torch.Generator().manual_seed(1)
    strong = torch.randn(3, 4, 4, generator=g) * 1000
    skewed = torch.zeros(3, 4, 4)
    skewed[0] = 1.0
    skewed[0, 0, 0] = -10.0  # one pixel far out: the component's largest magnitude is that pixel
    skewed[1] = torch.linspace(0, 0.1, 16).reshape(4, 4)
    for sign in (1.0, -1.0):  # one of the two signs comes out of the SVD negative
        proj = first_component(torch.stack([strong, sign * skewed]), "svd")
        weak = proj[1].flatten()
        assert weak.max().abs() >= weak.min().abs()
        assert int(weak.argmax()) == 0


def test_hidden_bars_drops_the_library_bars_and_keeps_warnings(capsys):
    """A tqdm bar written inside is dropped; a warning raised inside is shown after; stderr put back."""
    import sys
    import warnings

    from tqdm import tqdm
    from vizpipe.pipeline.gradcam.adapter import hidden_bars

    before = sys.stderr
    with pytest.warns(UserWarning, match="kept for the console"), hidden_bars():  # shown after
        for _ in tqdm(range(3)):
            pass
        warnings.warn("kept for the console", UserWarning, stacklevel=1)
    assert sys.stderr is before
    err = capsys.readouterr().err
    assert "it/s" not in err and "3/3" not in err
    with hidden_bars(active=False):
        for _ in tqdm(range(3)):
            pass
    assert "3/3" in capsys.readouterr().err  # other methods: nothing hidden


# ---- vizpipe uses pytorch-grad-cam by its public surface: the README example, the subclass,
# nothing patched.
SETTINGS = {"layer": "layer4.1", "target_class": 281}  # model.layer4[-1], the README's class


def test_the_readme_example_and_vizpipe_give_the_same_map_bit_for_bit(make_ctx):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ctx = make_ctx(
        ["stages=[cam]", "model=resnet18", "input=photo", "input.resize=128", "input.crop=112", "device=cpu"]
    )
    batch = ctx.inputs.first()
    rgb_img = batch.rgb[0]  # (112, 112, 3) float32 in [0, 1]
    model = copy.deepcopy(ctx.model)  # the README's own copy of the same seeded weights

    # ---- the README, as written (with the names it uses)
    target_layers = [model.layer4[-1]]
    input_tensor = batch.tensor
    targets = [ClassifierOutputTarget(281)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
        grayscale_cam = grayscale_cam[0, :]
        visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
        model_outputs = cam.outputs

    # ---- vizpipe's CAM stage on the same model, image, layer and class
    stage, settings = CamStage(), CamConfig(**SETTINGS)
    stage.check_model(ctx, settings)
    stage.run(ctx, settings)
    doc = CamDoc.load(ctx.output_dir / "cam" / "cam.json")
    (m,) = doc.images[0].maps
    ours = np.load(ctx.output_dir / m.npy)
    assert (m.layer, m.target, m.valid) == ("layer4.1", 281, True)
    assert ours.dtype == np.float32 and ours.shape == grayscale_cam.shape == (112, 112)
    assert float(ours.max()) > 0  # a map with something on it, so the equality says something
    assert np.array_equal(ours, grayscale_cam)  # exact: the same bits
    assert m.logit == float(model_outputs[0, 281].detach())
    assert np.array_equal(np.asarray(Image.open(ctx.output_dir / m.overlay)), visualization)


def library_state() -> dict[str, object]:
    """Every module global of pytorch_grad_cam's loaded modules and every attribute of their classes."""
    out = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not mod_name.startswith("pytorch_grad_cam"):
            continue
        for key, value in vars(mod).items():
            out[f"{mod_name}.{key}"] = value
            if inspect.isclass(value) and value.__module__ == mod_name:
                out.update({f"{mod_name}.{key}.{attr}": v for attr, v in vars(value).items()})
    return out


@pytest.mark.parametrize(
    "method", ["gradcam", "scorecam", "ablationcam", "fullgrad", "finercam", "eigencam_torch"]
)
def test_nothing_of_the_library_is_patched_during_or_after_a_run(make_ctx, tmp_path, method):
    """No module global or class attribute of pytorch_grad_cam is replaced, even while maps are
    computed (checked at every forward pass of the model), for every kind of method."""
    import pytorch_grad_cam  # noqa: F401 - every module the stage uses is loaded before the snapshot
    from pytorch_grad_cam.metrics import road  # noqa: F401

    ctx = make_ctx(
        ["stages=[cam]", "model=resnet18", "input=random", "input.shape=[1,3,32,32]", "device=cpu"]
    )
    stage = CamStage()
    settings = CamConfig(method=method, layer="layer3", target_class=[1, 2], batch_size=128)
    if not resolve_method(method).perturbation:
        settings.layer, settings.per_layer = ["layer2", "layer3"], True
    stage.check_model(ctx, settings)
    before = library_state()
    changed: set[str] = set()

    def check(*_: object) -> None:
        now = library_state()
        changed.update(k for k, v in before.items() if now.get(k, v) is not v)

    handle = ctx.model.register_forward_hook(check)
    try:
        stage.run(ctx, settings)
    finally:
        handle.remove()
    check()
    assert changed == set()


def test_extended_is_a_subclass_that_adds_and_patches_nothing():
    from pytorch_grad_cam import FullGrad, GradCAM, ScoreCAM
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
    from pytorch_grad_cam.base_cam import BaseCAM
    from vizpipe.pipeline.gradcam.eigencam import EigenCAMTorch
    from vizpipe.pipeline.gradcam.extended import Extensions, Recorder, extended

    cls = extended(GradCAM)
    assert cls is extended(GradCAM) and issubclass(cls, GradCAM) and cls.__name__ == "GradCAM"
    assert cls.library is GradCAM and cls.__mro__[1:3] == (Extensions, GradCAM)
    own = {k for k in vars(Extensions) if not k.startswith("__")}
    assert own == {
        "library",
        "one_forward",
        "averages_layers",
        "forward_once",
        "cams_for",
        "aggregate_multi_layers",
    }
    assert not (own - {"aggregate_multi_layers", "library"}) & set(dir(BaseCAM))  # additions, one override
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with cls(model, [model[0]]) as cam:
        assert type(cam.activations_and_grads) is Recorder and cam.one_forward and cam.averages_layers
        assert len(cam.activations_and_grads.handles) == 2  # the library's two hooks, once
    assert len(model[0]._forward_hooks) == 0
    with extended(FullGrad)(model, []) as cam:
        assert not cam.one_forward and not cam.averages_layers  # its own per-layer maps and sum
    with extended(ScoreCAM)(model, [model[0]]) as cam:
        assert cam.one_forward and not cam.uses_gradients
    with extended(EigenCAMTorch)(model, [model[0]]) as cam:  # keeps its own recorder (on the device)
        assert type(cam.activations_and_grads) is not ActivationsAndGradients and not cam.one_forward
    with pytest.raises(TypeError, match="not a pytorch_grad_cam BaseCAM subclass"):
        extended(int)


def test_recorder_keeps_one_backward_pass_of_gradients():
    """Two backward passes on one forward: ``new_backward`` leaves only the second one's gradients."""
    from vizpipe.pipeline.gradcam.extended import Recorder

    conv = torch.nn.Conv2d(3, 2, 3)
    model = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    rec = Recorder(model, [conv], None)
    try:
        out = rec(torch.randn(1, 3, 6, 6))  # conv output (1, 2, 4, 4)
        out[0, 0].backward(retain_graph=True)
        rec.new_backward()
        out[0, 1].backward(retain_graph=True)
        assert len(rec.gradients) == 1 and len(rec.activations) == 1
        (grad,) = rec.gradients  # d out[0, 1] / d conv output: channel 1 only, 1/16 per pixel
        assert torch.equal(grad[0, 0], torch.zeros(4, 4)) and torch.equal(
            grad[0, 1], torch.full((4, 4), 1 / 16)
        )
    finally:
        rec.release()
    assert len(conv._forward_hooks) == 0
