"""GPU checks: the same maps and arrays on CUDA as on the CPU. Skipped cleanly without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vizpipe.pipeline.runner import run_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    ),
]
ARGS = [
    "model=vgg11",
    "input=random",
    "input.shape=[2,3,96,96]",
    "stages=[features,cam]",
    "report.enabled=false",
    "features.layers=[features.18]",
    "cam.layer=features.18",
    "cam.target_class=[1,207]",
]


@pytest.fixture
def full_fp32():
    """cuDNN's TF32 convolutions (PyTorch's default on Ampere and later) off for the test.

    With TF32 the maps differ from the CPU's by ~2e-3 of their range (measured on an H200); the
    comparison is of vizpipe's handling of devices, not of TF32's rounding.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_cuda_run_matches_cpu(compose, tmp_path, full_fp32):
    """vgg's in-place ReLU after the hooked conv must not make GPU maps differ from CPU maps."""
    runs = {}
    for device in ("cpu", "cuda"):
        result = run_pipeline(compose([*ARGS, f"device={device}"]), tmp_path / device)
        assert result.ok, result.error
        runs[device] = tmp_path / device
    cpu_files = sorted(p.relative_to(runs["cpu"]) for p in runs["cpu"].rglob("*.npy"))
    assert cpu_files and cpu_files == sorted(p.relative_to(runs["cuda"]) for p in runs["cuda"].rglob("*.npy"))
    for rel in cpu_files:
        a, b = np.load(runs["cpu"] / rel), np.load(runs["cuda"] / rel)
        scale = max(float(np.abs(a).max()), 1e-6)
        assert np.abs(a - b).max() <= 1e-3 * scale, rel


def test_every_stage_runs_on_cuda(compose, tmp_path):
    """device=cuda end to end: every stage, the model and inputs on the GPU, the report written."""
    cfg = compose(
        [
            "model=resnet18",
            "input=random",
            "input.shape=[2,3,64,64]",
            "device=cuda",
            "stages=[summary,kernels,features,cam,tensorboard]",
            "features.layers=[layer2]",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.ok, result.error
    assert (tmp_path / "run" / "report.html").is_file()


def test_eigencam_torch_on_cuda_equals_the_cpu(compose, tmp_path):
    """eigencam_torch keeps everything on the GPU and gives the CPU's maps (1e-3)."""
    from vizpipe.pipeline.cache import get_cache

    args = ["model=resnet18", "input=random", "input.shape=[4,3,96,96]", "stages=[cam]"]
    args += ["report.enabled=false"]
    args += ["cam.method=eigencam_torch", "cam.layer=[layer2,layer4]"]
    for device in ("cpu", "cuda"):
        assert run_pipeline(compose([*args, f"device={device}"]), tmp_path / device).ok
    get_cache().clear()
    files = sorted(p.relative_to(tmp_path / "cpu") for p in (tmp_path / "cpu").rglob("*.npy"))
    assert files
    for rel in files:
        assert np.abs(np.load(tmp_path / "cpu" / rel) - np.load(tmp_path / "cuda" / rel)).max() <= 1e-3, rel


def test_eigencam_torch_is_faster_than_the_library_at_batch_32():
    """The device-side EigenCAM beats the library's (CPU numpy SVD) at least 10x on resnet18's layer1."""
    import time

    import torchvision
    from pytorch_grad_cam import EigenCAM
    from vizpipe.pipeline.gradcam.eigencam import EigenCAMTorch

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().cuda()
    x = torch.randn(32, 3, 224, 224, device="cuda")
    layers = [model.layer1]

    def seconds(cls) -> float:
        best = float("inf")
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with cls(model, layers) as cam:
                cam(x, None)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    seconds(EigenCAMTorch)  # warm-up (cuSOLVER, kernels)
    library, ours = seconds(EigenCAM), seconds(EigenCAMTorch)
    assert library / ours >= 10, f"library {library:.3f} s, eigencam_torch {ours:.3f} s"


@pytest.mark.parametrize("layer", ["layer1", "layer2", "layer3", "layer4"])
def test_eigencam_gram_solver_on_cuda_equals_the_library(layer):
    """The GPU's solver (Gram matrix, repeated squaring) gives the library's sign-corrected projection."""
    import torchvision
    from pytorch_grad_cam.utils import svd_on_activations as svd
    from vizpipe.pipeline.gradcam.eigencam import first_component

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().cuda()
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        model(torch.randn(8, 3, 224, 224, device="cuda"))
    handle.remove()
    ours = first_component(seen[0]).cpu().numpy()  # auto: gram on the GPU
    reference = svd.get_2d_projection_with_sign_correction(seen[0].cpu().numpy())
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
