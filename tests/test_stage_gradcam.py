"""vizpipe.pipeline.gradcam: method and metric names, layer rules and messages, metric calls, the adapter.

Tiny hand-made models; every message and value is pinned exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hand_context
from test_stage_cam import Shared, TinyCNN
from torch import nn
from vizpipe.pipeline.errors import ConfigError
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
