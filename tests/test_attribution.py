"""vizpipe.pipeline.attribution: captum's methods by name, equal to captum called directly.

Each method through ``AttributionRunner`` (the CAM stage's path) against the captum class called
as its documentation shows, on the same model, images and classes; the map made from it; the
guided backprop grad-cam also has; the names, arguments and errors; the model left as found.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from vizpipe.pipeline.attribution.methods import (
    ARGS,
    ATTRIBUTIONS,
    attribution_kwargs,
    is_attribution,
    resolve_cam_method,
)
from vizpipe.pipeline.attribution.runner import AttributionRunner, display_scale, seeded, sobel_maps, to_maps
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.gradcam.layers import CamLayer
from vizpipe.pipeline.layers import Layout

captum_attr = pytest.importorskip("captum.attr")


class Net(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> pool -> linear: ReLUs as modules (guided backprop, DeepLift)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.r1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.c2, self.r2 = nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.r2(self.c2(self.r1(self.c1(x))))).flatten(1))


def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
CLASSES = [0, 2, 3]
SETTINGS = SimpleNamespace(freeze_params=True)
C2 = CamLayer("c2", (3, 8, 16, 16), Layout("nchw", 16, 16, 8))


def ours(name: str, given: dict | None = None, model: nn.Module | None = None, seed: int = 5) -> np.ndarray:
    spec = resolve_cam_method(name)
    model = model or net()
    with AttributionRunner(
        model, SETTINGS, spec, [C2], kwargs=attribution_kwargs(spec, given or {}), seed=seed
    ) as r:
        logits = model(X).detach()
        _, out = r.maps(X, [CLASSES], logits, first_index=0)
    return out[0][0]


def direct(build, **attribute) -> np.ndarray:
    model = net()
    a = build(model).attribute(X.clone().requires_grad_(True), target=torch.tensor(CLASSES), **attribute)
    return to_maps(a)


CASES = {
    "integrated_gradients": (
        {"n_steps": 16},
        lambda m: captum_attr.IntegratedGradients(m),
        {"n_steps": 16, "baselines": torch.zeros_like(X)},
    ),
    "saliency": ({}, lambda m: captum_attr.Saliency(m), {"abs": True}),
    "input_x_gradient": ({}, lambda m: captum_attr.InputXGradient(m), {}),
    "guided_backprop": ({}, lambda m: captum_attr.GuidedBackprop(m), {}),
    "guided_gradcam": ({}, lambda m: captum_attr.GuidedGradCam(m, m.c2), {}),
    "deeplift": ({}, lambda m: captum_attr.DeepLift(m), {"baselines": torch.zeros_like(X)}),
    "occlusion": (
        {"sliding_window_shapes": [3, 4, 4], "strides": [3, 2, 2]},
        lambda m: captum_attr.Occlusion(m),
        {
            "sliding_window_shapes": (3, 4, 4),
            "strides": (3, 2, 2),
            "baselines": torch.zeros_like(X),
            "perturbations_per_eval": 16,
        },
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_method_equals_captum_called_directly(name: str) -> None:
    given, build, attribute = CASES[name]
    want = direct(build, **attribute)
    np.testing.assert_allclose(ours(name, given), want, atol=1e-6)


@pytest.mark.parametrize("name", ["gradient_shap", "noise_tunnel"])
def test_random_methods_equal_captum_with_the_same_seed(name: str) -> None:
    """gradient_shap and noise_tunnel draw noise: seeded with seed + the batch's first index."""
    model = net()
    with seeded(5):
        if name == "gradient_shap":
            a = captum_attr.GradientShap(model).attribute(
                X.clone().requires_grad_(True),
                baselines=torch.zeros_like(X[:1]),
                n_samples=5,
                stdevs=0.0,
                target=torch.tensor(CLASSES),
            )
        else:
            nt = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
            a = nt.attribute(
                X.clone().requires_grad_(True),
                nt_type="smoothgrad",
                nt_samples=8,
                stdevs=0.15,
                nt_samples_batch_size=None,
                target=torch.tensor(CLASSES),
                abs=True,
            )
    np.testing.assert_allclose(ours(name), to_maps(a), atol=1e-6)
    state, np_state = torch.get_rng_state(), np.random.get_state()
    again = ours(name)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random numbers as they were
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    np.testing.assert_array_equal(again, ours(name))  # the same maps for the same config


def test_noise_tunnel_wraps_another_method_with_its_arguments() -> None:
    model = net()
    with seeded(5):
        nt = captum_attr.NoiseTunnel(captum_attr.IntegratedGradients(model))
        a = nt.attribute(
            X.clone().requires_grad_(True),
            nt_type="smoothgrad_sq",
            nt_samples=2,
            stdevs=0.1,
            target=torch.tensor(CLASSES),
            n_steps=4,
            baselines=torch.zeros_like(X),
            method="gausslegendre",
            internal_batch_size=None,
        )
    given = {"base_method": "ig", "nt_type": "smoothgrad_sq", "nt_samples": 2, "stdevs": 0.1, "n_steps": 4}
    np.testing.assert_allclose(ours("noise_tunnel", given), to_maps(a), atol=1e-6)


def test_baselines_black_and_blur() -> None:
    from vizpipe.pipeline.metrics.perturbation import blur

    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    black = ((0 - torch.tensor(mean)) / torch.tensor(std)).view(1, 3, 1, 1).expand_as(X)
    for kind, base in (("black", black), ("blur", blur(X))):
        want = direct(lambda m: captum_attr.IntegratedGradients(m), n_steps=8, baselines=base)
        spec = resolve_cam_method("integrated_gradients")
        args = attribution_kwargs(spec, {"n_steps": 8, "baselines": kind})
        model = net()
        with AttributionRunner(model, SETTINGS, spec, [], kwargs=args, mean=mean, std=std) as r:
            _, out = r.maps(X, [CLASSES], model(X).detach())
        np.testing.assert_allclose(out[0][0], want, atol=1e-6)


def test_guided_backprop_equals_grad_cams_but_leaves_the_model_as_found() -> None:
    """grad-cam's GuidedBackpropReLUModel gives the same gradients; it puts new ReLU modules into
    the model, which is why vizpipe runs captum's (its hooks come off again)."""
    from pytorch_grad_cam import GuidedBackpropReLUModel
    from vizpipe.pipeline.hooks import hook_count

    model = net()
    relus = [model.r1, model.r2]
    got = ours("guided_backprop", model=model)
    assert [model.r1, model.r2] == relus and hook_count(model) == 0
    theirs = copy.deepcopy(model)
    gb = GuidedBackpropReLUModel(theirs, device="cpu")
    for i, c in enumerate(CLASSES):
        g = gb(X[i : i + 1].clone(), target_category=c)  # (H, W, C)
        np.testing.assert_allclose(got[i], to_maps(torch.from_numpy(g).permute(2, 0, 1)[None])[0], atol=1e-6)
    assert theirs.r1 is not model.r1  # grad-cam swapped the modules of its copy


def test_the_map_and_how_it_is_drawn() -> None:
    """|sum over channels| / max; drawn as captum's visualize_image_attr scales it (absolute value,
    2% outliers)."""
    from captum.attr._utils.visualization import _normalize_attr

    a = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(3))
    maps = to_maps(a)
    raw = np.abs(a.sum(1).numpy())
    np.testing.assert_allclose(maps, raw / raw.reshape(2, -1).max(1)[:, None, None], atol=1e-6)
    for m in maps:
        np.testing.assert_allclose(display_scale(m), _normalize_attr(m, "absolute_value", 2), atol=1e-6)
    assert to_maps(torch.zeros(1, 3, 4, 4)).max() == 0 and display_scale(np.zeros((4, 4))).max() == 0


def test_sobel_is_grad_cams_sobel_cam() -> None:
    from pytorch_grad_cam.sobel_cam import sobel_cam

    rgb = np.random.default_rng(0).random((2, 12, 12, 3)).astype(np.float32)
    got = sobel_maps(rgb)
    for i in range(2):
        want = sobel_cam(np.uint8(255 * rgb[i])).astype(np.float64)
        np.testing.assert_allclose(got[i], want / want.max(), atol=1e-6)
    x = torch.from_numpy((rgb.transpose(0, 3, 1, 2) - 0.5) / 0.5)
    np.testing.assert_allclose(sobel_maps(x, [0.5] * 3, [0.5] * 3), got, atol=1 / 255)


def test_names_aliases_and_arguments() -> None:
    assert resolve_cam_method("Integrated-Gradients").name == "integrated_gradients"
    assert resolve_cam_method("ig").name == "integrated_gradients"
    assert resolve_cam_method("smoothgrad").name == "noise_tunnel"
    assert is_attribution(resolve_cam_method("sobel")) and not is_attribution(resolve_cam_method("gradcam"))
    assert resolve_cam_method("random").name == "RandomCAM"  # grad-cam's baseline is a CAM class
    assert [s.name for s in ATTRIBUTIONS.values() if s.uses_layer] == ["guided_gradcam"]
    assert set(ARGS["occlusion"]) == {
        "baselines",
        "sliding_window_shapes",
        "strides",
        "perturbations_per_eval",
    }
    with pytest.raises(ConfigError) as info:
        resolve_cam_method("integrated_gradient")
    text = str(info.value)
    assert "did you mean 'integrated_gradients'?" in text and "gradcam" in text and "\n" not in text
    spec = resolve_cam_method("noise_tunnel")
    assert attribution_kwargs(spec, {"base_method": "ig"})["n_steps"] == 50
    bad = {
        "Unknown cam.kwargs key for saliency 'n_steps'": ("saliency", {"n_steps": 3}),
        "Unknown cam.kwargs.baselines for deeplift 'white'": ("deeplift", {"baselines": "white"}),
        "baselines=blur is a per-image baseline": ("gradient_shap", {"baselines": "blur"}),
        "must be one of captum's input attributions": ("noise_tunnel", {"base_method": "guided_gradcam"}),
        "cam.kwargs.n_steps for integrated_gradients must be an integer >= 1": ("ig", {"n_steps": 0}),
        "cam.kwargs.sliding_window_shapes for occlusion must be null": (
            "occlusion",
            {"sliding_window_shapes": 3},
        ),
    }
    for message, (name, given) in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            attribution_kwargs(resolve_cam_method(name), given)


def test_the_model_is_left_as_found() -> None:
    """After every method: the same modules, no hooks, requires_grad and grads as before (the stage
    wraps the runner in hooks.preserved, which puts back requires_grad)."""
    from vizpipe.pipeline.hooks import hook_count, preserved

    model = net()
    model.c1.weight.requires_grad_(False)
    modules = list(model.modules())
    for name in [*CASES, "gradient_shap", "noise_tunnel", "sobel"]:
        with preserved(model):
            ours(name, CASES.get(name, ({},))[0], model=model)
        assert list(model.modules()) == modules and hook_count(model) == 0
        assert not model.c1.weight.requires_grad and model.c2.weight.requires_grad
        assert all(p.grad is None for p in model.parameters()) and not model.training
