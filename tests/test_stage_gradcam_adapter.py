"""pipeline/gradcam/adapter.py and eigencam on a tiny CNN: targets, hooks, freezing, the one-forward path."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_stage_cam import TinyCNN
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
from vizpipe.pipeline.gradcam.layers import CamLayer
from vizpipe.pipeline.gradcam.methods import resolve_method
from vizpipe.pipeline.layers import Layout


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
