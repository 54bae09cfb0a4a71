"""``vizpipe.inspect(model, x, stages=["cam"])`` in a warm process vs pytorch-grad-cam written by hand.

    .venv/bin/python -m benchmarks.inspect [--repeats 3] [--model resnet18] [--batch 8] [--size 224]

Work: GradCAM on the model's last block (resnet18 ``layer4``) for a batch of seeded random
images, each image's top-1 class, on the CPU, random init seeded with 0 (nothing downloaded).

- **inspect**: ``vizpipe.inspect(model, x, stages=["cam"], report={"enabled": False})`` on the model
  object: the config composed, every rule checked, a run folder with overlay and heatmap PNGs,
  ``.npy`` maps, ``cam.json``, ``manifest.json`` and ``run.log``, the caller's process put back;
- **inspect + report**: the same with the report (``report.html``, ``report.md``);
- **by hand**: the library's README code plus one overlay PNG per image, what a notebook does::

      with GradCAM(model=model, target_layers=[model.layer4]) as cam:
          maps = cam(input_tensor=x, targets=None)
      for i, m in enumerate(maps):
          Image.fromarray(show_cam_on_image(rgb[i], m, use_rgb=True)).save(f"{i}.png")

Ratio = inspect / by hand (target: <= 1.0). Timings are the median of ``--repeats`` runs after one
warm-up run of each (the process is warm: imports done, as in a notebook), sides alternating.
The maps are compared (max |difference|) so the speed is not bought with results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def by_hand(model: Any, x: Any, layer: Any, out: Path) -> tuple[float, Any]:
    """The README code and one overlay PNG per image; seconds and the maps."""
    import numpy as np
    import torch
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    out.mkdir(parents=True)
    t = time.perf_counter()
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=None)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy().astype(np.float32)
    for i, m in enumerate(maps):
        Image.fromarray(show_cam_on_image(rgb[i], m, use_rgb=True)).save(out / f"{i}.png")
    return time.perf_counter() - t, maps


def inspect_side(model: Any, x: Any, out: Path, report: bool) -> tuple[float, Any]:
    """``vizpipe.inspect`` on the model object; seconds and the maps it wrote."""
    import numpy as np

    import vizpipe

    t = time.perf_counter()
    run = vizpipe.inspect(model, x, stages=["cam"], out=out, report={"enabled": report})
    seconds = time.perf_counter() - t
    maps = np.stack([np.load(out / m.npy) for im in run["cam"].data.images for m in im.maps])
    return seconds, maps


def main(argv: list[str] | None = None) -> None:
    """Run the sides, print the table and the ratios."""
    import logging

    import numpy as np
    import torch
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet18", help="a torchvision classifier with a layer4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    sides = {
        "inspect": lambda out: inspect_side(model, x, out, report=False),
        "inspect + report": lambda out: inspect_side(model, x, out, report=True),
        "by hand": lambda out: by_hand(model, x, model.layer4, out),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    maps: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats + 1):  # run 0 warms up
            for name, side in sides.items():
                seconds, maps[name] = side(Path(tmp, f"{r}_{name.replace(' ', '_')}"))
                if r:
                    times[name].append(seconds)
    hand = statistics.median(times["by hand"])
    print(
        f"vizpipe.inspect vs pytorch-grad-cam by hand: GradCAM, {args.model} layer4, batch {args.batch} "
        f"at {args.size} px, torch threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'side':<18}{'seconds':>9}{'ratio':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18}{median:>9.3f}{median / hand:>8.3f}")
    diff = float(np.abs(maps["inspect"] - np.asarray(maps["by hand"])).max())
    print(f"max |maps(inspect) - maps(by hand)| = {diff:.3g}")


if __name__ == "__main__":
    main()
