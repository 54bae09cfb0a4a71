"""GPU benchmarks: EigenCAM on the device vs the library's, and a CAM run on CUDA vs the CPU.

    .venv/bin/python -m benchmarks.gpu [--device cuda] [--batch 32] [--repeats 5]
    benchmarks/gpu.sh            # the GPU tests and this, results in a file (bare GPU machine)

1. **EigenCAM** at batch ``--batch`` (random 224 px images, resnet18 random init): the library's
   ``EigenCAM`` (activations copied to the CPU, one numpy SVD per image) vs vizpipe's
   ``EigenCAMTorch`` (``cam.method=eigencam_torch``: one batched ``torch.linalg.svd`` on the
   device), per layer; target >= 10x faster on a GPU. The maps are compared (sign-corrected
   library maps, max |difference|) so speed is not bought with results.
2. **CAM stage** (GradCAM, ``layer4``, top-1 class, batch ``--batch``): on ``--device`` vs the CPU.

Timings: median of ``--repeats`` after a warm-up, ``torch.cuda.synchronize()`` around each call.
Runs on the CPU too (``--device cpu``: a dry run of the script; the ratios then mean little).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def eigencam(device: str, batch: int, repeats: int, sync: Callable[[], None]) -> list[str]:
    """EigenCAM per layer: the library vs EigenCAMTorch, with the maps compared."""
    import numpy as np
    import pytorch_grad_cam.eigen_cam as eigen_cam
    import torch
    import torchvision
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils import svd_on_activations as svd
    from vizpipe.pipeline.gradcam.eigencam import EigenCAMTorch

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    lines = []
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        targets = [model.get_submodule(layer)]

        def library(targets: list = targets) -> object:
            with EigenCAM(model, targets) as cam:
                return cam(x, None)

        def ours(targets: list = targets) -> object:
            with EigenCAMTorch(model, targets) as cam:
                return cam(x, None)

        t_lib, t_ours = timed(library, repeats, sync), timed(ours, repeats, sync)
        with mock.patch.object(eigen_cam, "get_2d_projection", svd.get_2d_projection_with_sign_correction):
            reference = library()
        diff = float(np.abs(np.asarray(ours()) - np.asarray(reference)).max())
        lines.append(
            f"EigenCAM {layer:6s} batch {batch}: library {t_lib:8.3f} s, eigencam_torch {t_ours:8.3f} s, "
            f"{t_lib / t_ours:6.1f}x faster (target >= 10x on a GPU); max |diff| {diff:.1e}"
        )
        print(lines[-1], flush=True)
    return lines


def cam_stage(device: str, batch: int, repeats: int, sync: Callable[[], None]) -> list[str]:
    """The CAM stage (GradCAM, layer4, top-1) on ``device`` vs the CPU, maps compared."""
    import tempfile

    import numpy as np
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.stages.cam import CamStage

    from benchmarks.process import compose

    results = {}
    for dev in dict.fromkeys([device, "cpu"]):
        cfg = compose([f"device={dev}", "input=random", f"input.shape=[{batch},3,224,224]", "stages=[cam]"])
        with tempfile.TemporaryDirectory() as tmp:
            ctx = build_context(cfg, Path(tmp))
            settings = settings_of(cfg, "cam")

            def run(ctx: object = ctx, settings: object = settings) -> object:
                ctx._claimed.clear()
                stage = CamStage()
                stage.check_model(ctx, settings)
                return stage.run(ctx, settings)

            seconds = timed(run, repeats, sync)
            maps = [np.load(p) for p in sorted(Path(tmp).rglob("*.npy"))]
        results[dev] = (seconds, maps)
    lines = []
    if device != "cpu":
        (t_dev, m_dev), (t_cpu, m_cpu) = results[device], results["cpu"]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(m_dev, m_cpu, strict=True))
        lines.append(
            f"CAM stage GradCAM layer4 batch {batch}: {device} {t_dev:.3f} s, cpu {t_cpu:.3f} s, "
            f"{t_cpu / t_dev:.1f}x; max |{device} - cpu| {diff:.1e} (TF32 convolutions on, PyTorch's default)"
        )
    else:
        lines.append(f"CAM stage GradCAM layer4 batch {batch}: cpu {results['cpu'][0]:.3f} s")
    print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks; print (and with --out, append to a file) one line per result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (dry run)")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--out", type=Path, default=None, help="also append the results to this file")
    args = parser.parse_args(argv)
    import logging

    import torch

    logging.disable(logging.INFO)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "benchmarks.gpu: no CUDA GPU (torch.cuda.is_available() is False); use --device cpu for a dry run"
        )
        return 2
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    head = f"torch {torch.__version__}, device {args.device}"
    if args.device.startswith("cuda"):
        head += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(head, flush=True)
    lines = [head, *eigencam(args.device, args.batch, args.repeats, sync)]
    lines += cam_stage(args.device, args.batch, args.repeats, sync)
    if args.out is not None:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
