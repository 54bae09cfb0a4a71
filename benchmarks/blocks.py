"""``sweep=cam_layers``'s blocks found before the sweep: the meta-device architecture vs a real build.

    .venv/bin/python -m benchmarks.blocks [--repeats 3] [--models resnet18,efficientnet_b0,vit_b_16]

Work: the blocks of a torchvision model whose YAML names none (``model=torchvision``), at random
init, for a 224-pixel input, on the CPU.

- **meta**: ``vizpipe.pipeline.factory.blocks.config_blocks`` (what the precheck and the sweeper
  run once per sweep): the architecture built on PyTorch's meta device, one probing pass of a
  meta tensor, ``default_blocks``;
- **real build**: the direct way, what a run does before it knows the blocks: the model built on
  the CPU (random init, ``torchvision.models.get_model``), ``probe_model`` on a real batch of one
  224x224 image, ``default_blocks``.

Both must find the same blocks (checked). Median of ``--repeats`` after one warm-up of each, in
one warm process, sides alternating; ratio = meta / real build (target: < 1.0, the precheck must
stay fast). ``torch.set_num_threads(--threads)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def meta(name: str) -> tuple[float, str]:
    """Seconds and blocks of ``config_blocks`` (its per-process memo cleared)."""
    from omegaconf import OmegaConf
    from vizpipe.pipeline.factory import blocks
    from vizpipe.pipeline.schema import InputConfig, ModelConfig

    model = OmegaConf.structured(ModelConfig(name=name))
    blocks._FOUND.clear()
    start = time.perf_counter()
    found = blocks.config_blocks(model, OmegaConf.structured(InputConfig()))
    return time.perf_counter() - start, found


def real_build(name: str) -> tuple[float, str]:
    """Seconds and blocks of a CPU build and a real probing pass."""
    import torch
    import torchvision
    from vizpipe.pipeline.layers import default_blocks, probe_model

    start = time.perf_counter()
    model = torchvision.models.get_model(name).eval()
    found = default_blocks(model, probe_model(model, torch.zeros(1, 3, 224, 224)))
    return time.perf_counter() - start, ",".join(found)


def main() -> None:
    """Print each model's medians and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="resnet18,efficientnet_b0,vit_b_16,convnext_tiny,regnet_y_400mf")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"{'model':18} {'meta s':>8} {'real s':>8} {'ratio':>6}  blocks")
    for name in args.models.split(","):
        meta(name), real_build(name)  # warm-up: imports, first dispatch
        times: dict[str, list[float]] = {"meta": [], "real": []}
        for _ in range(args.repeats):
            t, a = meta(name)
            times["meta"].append(t)
            t, b = real_build(name)
            times["real"].append(t)
            if a != b:
                raise SystemExit(f"{name}: meta blocks {a} != real blocks {b}")
        m, r = statistics.median(times["meta"]), statistics.median(times["real"])
        print(f"{name:18} {m:8.3f} {r:8.3f} {m / r:6.2f}  {a}")


if __name__ == "__main__":
    main()
