"""Whole data sets at the speed of the model: vizpipe's CAM and features stages vs the bound and a hand loop.

    .venv/bin/python -m benchmarks.throughput [--images 2000] [--batch 32] [--threads 1]
        [--model resnet18] [--device cpu] [--repeats 1] [--small 64] [--serial] [--skip ...]

Data: ``--images`` photo-like 320x240 JPEGs (smooth colour fields plus noise, quality 90: they
compress like photos, unlike pure noise) written into a temporary folder; every side preprocesses
them alike (resize 256, centre crop 224, ImageNet normalisation). Model ``--model`` with random
init (seed 0, nothing downloaded). Every process runs with ``OMP_NUM_THREADS=MKL_NUM_THREADS=
--threads`` (default 1: the model on one core, so the other core is free for what vizpipe
overlaps with it; ``--threads 2`` gives the model every core of a 2-core machine). Sides, each in
fresh processes, alternating when ``--repeats`` > 1 (medians); images/s = images / wall seconds:

1. **bound (cam)**: the model's forward pass and the backward pass down to the CAM layer (``layer4``
   for resnets: the graph cut there, parameters frozen, as vizpipe's CAM runs it), batches of
   ``--batch`` pre-loaded tensors, no I/O, no maps (``--bound cam``);
2. **bound (features)**: the forward pass alone, no gradients (``--bound features``);
3. **vizpipe** ``run.py stages=[cam]`` end to end (start-up, probe, maps, files, cam.json,
   manifest, report) with all outputs (``cam.save=[npy,overlay,heatmap]``), with ``cam.save=[npy]``,
   and ``stages=[features]`` on the model's 4 blocks (``features.layers=[blocks]``: arrays and
   grids); ``--serial`` adds the all-outputs run with ``writers=0 input.workers=0`` (no overlap);
4. **hand loop**: what a user writes (``HAND_LOOP``): a ``DataLoader`` (as many workers as
   vizpipe's ``input.workers`` auto), one ``GradCAM`` object, per image ``show_cam_on_image`` +
   ``Image.save`` of the overlay and the heatmap (PIL's default PNG level) and ``np.save``.

Printed: images/s of each, the ratios vizpipe/bound (targets: CAM all outputs >= 0.6x, npy only
>= 0.85x, features >= 0.6x) and vizpipe/hand loop (target >= 3x), and the peak RSS of the
all-outputs CAM run on ``--images`` vs on ``--small`` images (target <= 1.2x). The maps of the
all-outputs run and the hand loop are compared (max |difference|) so speed is not bought with
results. On a GPU: ``--device cuda --model resnet50 --batch 64`` (``benchmarks/gpu.sh`` runs it).
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

from benchmarks.process import ROOT, precompile

#: the target layer of the CAM bound (resnets' last block; vizpipe's cam.layer=auto)
CAM_LAYER = "layer4"

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


class Folder(torch.utils.data.Dataset):
    def __init__(self, folder):
        self.files = sorted(Path(folder).glob("*.jpg"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):  # torchvision's ImageNet preset, as vizpipe preprocesses
        img = F.pil_to_tensor(Image.open(self.files[i]).convert("RGB"))
        rgb = F.center_crop(F.resize(img, [256], antialias=True), [224]).float() / 255
        return F.normalize(rgb, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), rgb, i


data = Folder(FOLDER)
out = Path(OUT)
torch.manual_seed(0)
model = getattr(torchvision.models, MODEL)().eval().to(DEVICE)
loader = torch.utils.data.DataLoader(data, batch_size=BATCH, num_workers=WORKERS)
with GradCAM(model=model, target_layers=[model.get_submodule(LAYER)]) as cam:
    for x, rgb, index in loader:
        maps = cam(input_tensor=x.to(DEVICE), targets=None)  # each image's top-1 class
        for m, image, i in zip(maps, rgb.permute(0, 2, 3, 1).numpy(), index.tolist()):
            d = out / data.files[i].stem
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "map.npy", m)
            Image.fromarray(show_cam_on_image(image, m, use_rgb=True)).save(d / "overlay.png")
            heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * m), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            Image.fromarray(heat).save(d / "heatmap.png")
"""

PEAK = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
    "s = time.perf_counter() - t\n"
    "sys.stderr.write(p.stderr[-3000:] if p.returncode else '')\n"
    "print(p.returncode, s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def write_images(folder: Path, n: int) -> None:
    """``n`` photo-like 320x240 JPEGs: an 8x8 random colour field upsampled (bicubic) plus noise."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        field = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize(
            (320, 240), Image.BICUBIC
        )
        noisy = np.asarray(field).astype(np.int16) + rng.integers(-12, 12, (240, 320, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"img_{i:05d}.jpg", quality=90)


def bound(kind: str, model_name: str, images: int, batch: int, device: str, folder: Path) -> float:
    """Seconds for ``images`` images of the bound (``kind`` cam or features), after a warm-up batch."""
    import torch
    import torchvision
    from vizpipe.pipeline.inputs.images import load_rgb, preprocess, preprocessing

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().eval().to(device)
    model.requires_grad_(False)
    prep = preprocessing(argparse.Namespace(), None)
    files = sorted(folder.glob("*.jpg"))[:batch]
    x = torch.stack([preprocess(load_rgb(f), prep)[0] for f in files]).to(device)  # pre-loaded, no I/O
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def cut(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True)  # the graph starts here: backward stops at the layer

    hook = model.get_submodule(CAM_LAYER).register_forward_hook(cut) if kind == "cam" else None

    def step(part: torch.Tensor) -> None:
        if kind == "cam":
            with torch.enable_grad():
                out = model(part)
                out.gather(1, out.argmax(1, keepdim=True)).sum().backward()  # each image's top-1
        else:
            with torch.no_grad():
                model(part)

    step(x)
    sync()
    t = time.perf_counter()
    for start in range(0, images, batch):
        step(x[: min(batch, images - start)])
    sync()
    seconds = time.perf_counter() - t
    if hook is not None:
        hook.remove()
    return seconds


def vizpipe_cmd(folder: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "run.py",
        f"model={args.model}",
        f"device={args.device}",
        "input=image",
        f"input.path={folder}",
        "input.limit=null",
        f"input.batch_size={args.batch}",
        f"hydra.run.dir={out}",
        *extra,
    ]


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest process) of ``cmd`` in a fresh wrapper process."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK, *cmd], cwd=ROOT, env=env, capture_output=True, text=True
    )
    try:
        rc, seconds, kib = out.stdout.split()
    except ValueError:
        rc, seconds, kib = "?", "0", "0"
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({rc}):\n{out.stderr[-3000:]}")
    return float(seconds), int(kib) / 1024


def helper(env: dict[str, str], *argv: str) -> float:
    """Seconds printed by ``python -m benchmarks.throughput <argv>`` in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmarks.throughput {' '.join(argv[:2])} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.split()[-1])


def hand_workers(images: int, batch: int) -> int:
    """The hand loop's DataLoader workers: what vizpipe's ``input.workers`` auto picks."""
    from vizpipe.pipeline.inputs import auto_workers

    return auto_workers(images, batch, "image")


def max_difference(ours: Path, hand: Path) -> float:
    """max |vizpipe map - hand loop map| over the images both wrote."""
    import numpy as np

    worst = 0.0
    for npy in sorted(ours.glob("cam/*/*.npy")):
        other = hand / npy.parent.name / "map.npy"
        if other.is_file():
            worst = max(worst, float(np.abs(np.load(npy) - np.load(other)).max()))
    return worst


def run_sides(args: argparse.Namespace, base: Path, env: dict[str, str]) -> dict[str, list[float]]:
    """Every side ``--repeats`` times, alternating; seconds per side (and peak RSS of the CAM runs)."""
    folder = base / "images"
    sides: dict[str, list[str] | None] = {
        "bound cam": None,
        "bound features": None,
        "vizpipe cam (all outputs)": ["stages=[cam]"],
        "vizpipe cam (cam.save=[npy])": ["stages=[cam]", "cam.save=[npy]"],
        "vizpipe features (4 blocks)": ["stages=[features]", "features.layers=[blocks]"],
        "hand loop": None,
    }
    if args.serial:
        sides["vizpipe cam, serial (writers=0 input.workers=0)"] = [
            "stages=[cam]",
            "writers=0",
            "input.workers=0",
        ]
    sides = {k: v for k, v in sides.items() if not any(k.startswith(s) for s in args.skip)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    times["rss big"] = []
    common = ["--images", str(args.images), "--batch", str(args.batch), "--model", args.model]
    common += ["--device", args.device]
    runs = 0
    for r in range(args.repeats):
        for name, extra in sides.items():
            runs += 1
            out = base / f"run{runs}"
            if name.startswith("bound"):
                seconds = helper(env, "--bound", name.split()[1], str(folder), *common)
            elif name == "hand loop":
                seconds = helper(env, "--hand", str(folder), str(out), *common)
                args.hand_out = out
            else:
                seconds, rss = measured(vizpipe_cmd(folder, out, args, extra or []), env)
                if name == "vizpipe cam (all outputs)":
                    times["rss big"].append(rss)
                    args.cam_out = out
            times[name].append(seconds)
            print(
                f"repeat {r + 1}: {name:48s} {seconds:8.1f} s  {args.images / seconds:7.1f} images/s",
                flush=True,
            )
    return times


def report(args: argparse.Namespace, times: dict[str, list[float]], small_rss: float | None) -> None:
    """The table of images/s and the ratios with their targets."""
    n = args.images
    rate = {k: n / statistics.median(v) for k, v in times.items() if v and k != "rss big"}
    print(
        f"\n{n} images, {args.model}, batch {args.batch}, device {args.device}, "
        f"OMP_NUM_THREADS={args.threads}, {os.cpu_count()} cores, medians of {args.repeats}"
    )
    for name, value in rate.items():
        print(f"  {name:50s} {value:8.1f} images/s")
    checks = [
        ("vizpipe cam (all outputs)", "bound cam", 0.6),
        ("vizpipe cam (cam.save=[npy])", "bound cam", 0.85),
        ("vizpipe features (4 blocks)", "bound features", 0.6),
        ("vizpipe cam (all outputs)", "hand loop", 3.0),
    ]
    if "vizpipe cam, serial (writers=0 input.workers=0)" in rate:
        checks.append(("vizpipe cam, serial (writers=0 input.workers=0)", "bound cam", None))
    print()
    for ours, other, target in checks:
        if ours in rate and other in rate:
            ratio = rate[ours] / rate[other]
            goal = f" (target >= {target}x: {'met' if ratio >= target else 'NOT met'})" if target else ""
            print(f"  {ours} / {other}: {ratio:.2f}x{goal}")
    if small_rss and times["rss big"]:
        big = statistics.median(times["rss big"])
        ratio = big / small_rss
        verdict = "met" if ratio <= 1.2 else "NOT met"
        print(
            f"  peak RSS, CAM all outputs: {args.small} images {small_rss:.0f} MiB, "
            f"{n} images {big:.0f} MiB: {ratio:.2f}x (target <= 1.2x: {verdict})"
        )
    if getattr(args, "cam_out", None) and getattr(args, "hand_out", None):
        print(f"  max |vizpipe map - hand loop map|: {max_difference(args.cam_out, args.hand_out):.1e}")


def main(argv: list[str] | None = None) -> int:
    """Write the images, run every side, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the folder (default 2000)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of every side")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--model", default="resnet18", help="a torchvision resnet (CAM layer layer4)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, alternating (medians)")
    parser.add_argument(
        "--small", type=int, default=64, help="images of the small run for peak memory (0: none)"
    )
    parser.add_argument("--serial", action="store_true", help="also vizpipe with writers=0 input.workers=0")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="sides to leave out, by name prefix (e.g. hand)"
    )
    parser.add_argument("--bound", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--hand", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bound is not None:
        print(bound(args.bound[0], args.model, args.images, args.batch, args.device, Path(args.bound[1])))
        return 0
    if args.hand is not None:
        folder, out = args.hand
        code = {
            "FOLDER": folder,
            "OUT": out,
            "MODEL": args.model,
            "BATCH": args.batch,
            "DEVICE": args.device,
            "LAYER": CAM_LAYER,
            "WORKERS": hand_workers(args.images, args.batch),
            "__name__": "hand",
        }
        t = time.perf_counter()
        exec(HAND_LOOP, code)
        print(time.perf_counter() - t)
        return 0
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)}
    precompile()
    with tempfile.TemporaryDirectory(prefix="vizpipe-throughput-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        write_images(base / "images", args.images)
        print(f"{args.images} JPEGs written in {time.perf_counter() - t:.1f} s", flush=True)
        small_rss = None
        if args.small:
            small = base / "small"
            small.mkdir()
            for p in sorted((base / "images").glob("*.jpg"))[: args.small]:
                (small / p.name).symlink_to(p)
            measured(vizpipe_cmd(small, base / "warm", args, ["stages=[cam]"]), env)  # page cache, .pyc
            _, small_rss = measured(vizpipe_cmd(small, base / "small-run", args, ["stages=[cam]"]), env)
        times = run_sides(args, base, env)
        report(args, times, small_rss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
