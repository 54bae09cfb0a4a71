"""vizpipe uses pytorch-grad-cam by its public surface: the README example, the subclass, nothing patched.

The README example (``GradCAM(model=..., target_layers=[model.layer4[-1]])`` called with
``targets=[ClassifierOutputTarget(281)]``, then ``show_cam_on_image``) runs once with the plain
public call on a seeded random-init resnet18 and the bundled photo, and vizpipe's map, logit and
overlay for the same model, image, layer and class are compared with it **exactly**: vizpipe runs
the library's own code (its ``compute_cam_per_layer`` and ``aggregate_multi_layers``) on the same
activations, and the gradient that reaches the layer goes through the same autograd operations
above it whether the parameters are frozen and the graph cut there (vizpipe) or not (the README),
so on one CPU thread the float32 numbers are the same bits, and so are the PNG's bytes.
"""

from __future__ import annotations

import copy
import inspect
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from vizpipe.pipeline.gradcam.methods import resolve_method
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.record import CamDoc

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
