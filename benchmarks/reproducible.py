"""What byte-identical results cost on the CPU (``vizpipe.pipeline.reproducible``).

    .venv/bin/python -m benchmarks.reproducible [--pairs 5] [--repeats 5] [--threads 2]

Two costs, each timed side by side:

- **the command line's fix** (``MKL_CBWR=AUTO``, MKL's conditional numerical reproducibility):
  fresh worker processes with and without it, alternating, each timing the same passes;
- **a library call's fix** (one thread for a stage of a model with 1×1 convolution outputs,
  when MKL runs without CNR): the same passes on ``--threads`` threads and on one, in one process.

The passes (``WORKLOADS``) are what the stages do: a CAM's forward and backward to a layer
(parameters frozen) at the default size and at small sizes, and a training step. The ratios are
medians of paired ratios (with / without the fix); the times are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

#: name -> (torchvision model or "shapes_net", CAM layer or "train", input shape)
WORKLOADS = {
    "resnet18 CAM 1x224 (the default run)": ("resnet18", "layer4", (1, 3, 224, 224)),
    "resnet18 CAM 8x224": ("resnet18", "layer4", (8, 3, 224, 224)),
    "resnet18 CAM 1x32 (1x1 conv outputs)": ("resnet18", "layer3", (1, 3, 32, 32)),
    "efficientnet_b0 CAM 1x224 (squeeze-excitation)": ("efficientnet_b0", "features.4", (1, 3, 224, 224)),
    "vit_b_16 CAM 1x224 (MKL matrix products)": (
        "vit_b_16",
        "encoder.layers.encoder_layer_6",
        (1, 3, 224, 224),
    ),
    "shapes_net train step 32x64": ("shapes_net", "train", (32, 3, 64, 64)),
}


def _pass(model_name: str, layer: str, shape: tuple[int, ...]) -> Callable[[], object]:
    """One CAM forward + backward to ``layer`` (or one training step), as a closure."""
    import torch
    import torchvision

    torch.manual_seed(0)
    x = torch.randn(*shape)
    if model_name == "shapes_net":
        from vizpipe.pipeline.models import ShapesNet

        net = ShapesNet(num_classes=6)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        y = torch.randint(0, 6, (shape[0],))

        def step() -> object:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss

        return step
    model = getattr(torchvision.models, model_name)().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    module = model.get_submodule(layer)
    x.requires_grad_(True)
    acts: dict[str, torch.Tensor] = {}
    module.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))

    def cam() -> object:
        out = model(x)
        return torch.autograd.grad(out[:, 1].sum(), acts["a"])[0]

    return cam


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: oneDNN primitives, allocator
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def worker(repeats: int, names: list[str]) -> None:
    """Time every workload in this process (its ``MKL_CBWR`` as started); print JSON."""
    print(json.dumps({n: _time(_pass(*WORKLOADS[n]), repeats) for n in names}))


def library(repeats: int, threads: int, names: list[str]) -> dict[str, tuple[float, float]]:
    """(median on ``threads`` threads, on one thread) of each workload, alternating, this process."""
    import torch

    out: dict[str, tuple[float, float]] = {}
    for name in names:
        fn = _pass(*WORKLOADS[name])
        fn()
        many, one = [], []
        for _ in range(repeats):
            torch.set_num_threads(threads)
            many.append(_time(fn, 1))
            torch.set_num_threads(1)
            one.append(_time(fn, 1))
        torch.set_num_threads(threads)
        out[name] = (statistics.median(many), statistics.median(one))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both comparisons and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="worker processes per side (alternating)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per workload and process")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--only", default="", help="comma-separated substrings of workload names")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n for n in WORKLOADS if not args.only or any(s in n for s in args.only.split(","))]
    if args.worker:
        worker(args.repeats, names)
        return 0
    base = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    base.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "benchmarks.reproducible", "--worker", f"--repeats={args.repeats}"]
    cmd += [f"--only={args.only}"] if args.only else []
    runs: dict[str, list[dict[str, float]]] = {"off": [], "cnr": []}
    for _ in range(args.pairs):
        for side, env in (("off", base), ("cnr", {**base, "MKL_CBWR": "AUTO"})):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"MKL_CBWR=AUTO (the command line) vs unset, {args.threads} threads, {args.pairs} process pairs:")
    for n in names:
        off = statistics.median(r[n] for r in runs["off"])
        cnr = statistics.median(r[n] for r in runs["cnr"])
        ratio = statistics.median(c[n] / o[n] for c, o in zip(runs["cnr"], runs["off"], strict=True))
        print(f"  {n:50s} {off * 1e3:8.1f} ms  {cnr * 1e3:8.1f} ms  {ratio:5.2f}x")
    os.environ.pop("MKL_CBWR", None)
    import torch

    torch.set_num_threads(args.threads)
    small = [n for n in names if "1x1" in n or "squeeze" in n]
    print(f"One thread (a library call, MKL without CNR) vs {args.threads} threads, only where needed:")
    for n, (many, one) in library(args.repeats, args.threads, small).items():
        print(f"  {n:50s} {many * 1e3:8.1f} ms  {one * 1e3:8.1f} ms  {one / many:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
