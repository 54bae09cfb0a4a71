"""A data set through the CAM stage: time vs a hand loop, and memory and time as it grows.

    .venv/bin/python -m benchmarks.dataset [--images 500] [--big 2000] [--small 64] [--repeats 1]

Data: ``--big`` random 224x224 JPEGs written into a temporary folder (a data set of any size is
streamed: ``input.path`` a folder, ``input.limit=null``). Model: resnet18, random init, GradCAM on
its default layer, each image's top-1 class; every map written as overlay PNG, heatmap PNG and
``.npy``. ``OMP_NUM_THREADS=--threads`` for every process (1 by default: see benchmarks/sweep.py).

1. **time**: ``run.py 'stages=[cam]' input=image input.path=<first --images> input.limit=null``
   (batches of 32, a manifest, cam.json, a report) vs a hand loop over the same files (one script:
   one ``GradCAM`` object, each image read, preprocessed as torchvision's preset, mapped and
   written: ``HAND_LOOP``; ``python -m benchmarks.dataset --hand-loop FOLDER OUT``). Fresh
   processes, sides alternating, medians and their ratio (target <= 1.0x).
2. **memory and growth**: peak RSS of ``run.py`` on ``--small`` and on ``--big`` images, each in a
   fresh process (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper that runs only
   it; target: big within 1.5x of small), and the time per image between sizes: with a fixed
   start-up cost ``a`` and ``b`` seconds per image, ``t(n) = a + b n``; the marginal seconds per
   image from small to ``--images`` and from ``--images`` to big should agree (linear growth).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.process import ROOT, precompile, timed

HAND_LOOP = """
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

F = torchvision.transforms.functional
files = sorted(Path(FOLDER).glob("*.jpg"))
out = Path(OUT)
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
with GradCAM(model=model, target_layers=[model.layer4]) as cam:
    for path in files:
        img = F.pil_to_tensor(Image.open(path).convert("RGB"))
        x = F.center_crop(F.resize(img, [256], antialias=True), [224]).float() / 255
        rgb = x.permute(1, 2, 0).numpy()
        x = F.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]
        m = cam(input_tensor=x, targets=None)[0]  # top-1 class
        d = out / path.stem
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "map.npy", m)
        Image.fromarray(show_cam_on_image(rgb, m, use_rgb=True)).save(d / "overlay.png")
        heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * m), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        Image.fromarray(heat).save(d / "heatmap.png")
"""

PEAK = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def write_images(folder: Path, n: int) -> None:
    """``n`` random 224x224 JPEGs (quality 75), img_00000.jpg ..."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(
            folder / f"img_{i:05d}.jpg", quality=75
        )


def vizpipe(folder: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "run.py",
        "stages=[cam]",
        "input=image",
        f"input.path={folder}",
        "input.limit=null",
        f"hydra.run.dir={out}",
    ]


def peak(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of ``cmd`` run alone in a fresh wrapper process."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PEAK, *cmd], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t
    rc, kib = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({rc})")
    return seconds, int(kib) / 1024


def subset(src: Path, dst: Path, n: int) -> Path:
    """A folder of links to the first ``n`` images of ``src``."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*.jpg"))[:n]:
        (dst / p.name).symlink_to(p)
    return dst


def main(argv: list[str] | None = None) -> int:
    """Run both parts and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="images for the time comparison")
    parser.add_argument("--small", type=int, default=64, help="the small data set (memory, growth)")
    parser.add_argument("--big", type=int, default=2000, help="the big data set (memory, growth)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side (median)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--hand-loop", nargs=2, type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hand_loop is not None:
        folder, out = args.hand_loop
        exec(HAND_LOOP, {"FOLDER": str(folder), "OUT": str(out), "__name__": "hand"})
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    precompile()
    with tempfile.TemporaryDirectory(prefix="vizpipe-data-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        write_images(base / "all", args.big)
        print(
            f"{args.big} random 224x224 JPEGs written in {time.perf_counter() - t:.1f} s; "
            f"OMP_NUM_THREADS={args.threads}",
            flush=True,
        )
        mid = subset(base / "all", base / "mid", args.images)
        small = subset(base / "all", base / "small", args.small)
        hand: list[float] = []
        ours: list[float] = []
        timed(vizpipe(small, base / "warm"), env)  # warm the page cache
        for r in range(args.repeats):
            hand.append(
                timed(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.dataset",
                        "--hand-loop",
                        str(mid),
                        str(base / f"h{r}"),
                    ],
                    env,
                )
            )
            ours.append(timed(vizpipe(mid, base / f"v{r}"), env))
            print(f"repeat {r + 1}: hand loop {hand[-1]:.1f} s, vizpipe {ours[-1]:.1f} s", flush=True)
        ratio = statistics.median(o / h for o, h in zip(ours, hand, strict=True))
        print(
            f"\nCAM over {args.images} images: vizpipe {statistics.median(ours):.1f} s, hand loop "
            f"{statistics.median(hand):.1f} s: {ratio:.2f}x (target <= 1.0x)"
        )
        t_small, rss_small = peak(vizpipe(small, base / "p-small"), env)
        t_big, rss_big = peak(vizpipe(base / "all", base / "p-big"), env)
        t_mid = statistics.median(ours)
        print(
            f"peak RSS: {args.small} images {rss_small:.0f} MiB, {args.big} images {rss_big:.0f} MiB: "
            f"{rss_big / rss_small:.2f}x (target <= 1.5x)"
        )
        b1 = (t_mid - t_small) / (args.images - args.small)
        b2 = (t_big - t_mid) / (args.big - args.images)
        print(
            f"time: {args.small} images {t_small:.1f} s, {args.images} {t_mid:.1f} s, "
            f"{args.big} {t_big:.1f} s; "
            f"per image {args.small}->{args.images}: {b1 * 1000:.1f} ms, {args.images}->{args.big}: "
            f"{b2 * 1000:.1f} ms ({b2 / b1:.2f}x: 1.0 = linear)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
