"""A 12-job CAM sweep: ``run.py -m`` vs a hand-written loop vs 12 separate ``run.py`` processes.

    .venv/bin/python -m benchmarks.sweep [--repeats 3] [--threads 1] [--index-jobs 1000]

Work (resnet18, random init, seed 0, the bundled photo, on the CPU): GradCAM maps for
``cam.layer=layer1,layer2,layer3,layer4`` x ``cam.target_class=1,207,281``, each written as an
overlay PNG, a heatmap PNG and the raw ``.npy``.

- **sweep**: ``python run.py -m model=resnet18 'stages=[cam]' cam.layer=... cam.target_class=...``
  (as users write it: Hydra repeats ``model=resnet18`` in every job; one process,
  Hydra's basic launcher; every job also writes its manifest, ``.hydra/``, log and report, and
  the sweep its index);
- **hand loop**: one script that imports torch, torchvision and pytorch-grad-cam, builds the
  model once and calls ``GradCAM`` in a loop, writing the same three files per map
  (``HAND_LOOP`` below; run as ``python -m benchmarks.sweep --hand-loop OUT``);
- **12 processes**: ``python run.py 'stages=[cam]' cam.layer=L cam.target_class=C`` 12 times;
- **hand loop in Hydra** (``--hydra-floor``): the hand loop's body as the task of a plain
  ``@hydra.main`` app on vizpipe's config, swept with Hydra's own basic sweeper and launcher (the
  model built once per process, one job = one ``GradCAM`` call and its three files): what Hydra
  itself costs a 12-job sweep before vizpipe does anything.

Each is a fresh process timed from outside (``time.perf_counter`` around ``subprocess.run``),
the sides alternating, ``--repeats`` times; medians and ratios are printed. Every process gets
``OMP_NUM_THREADS=--threads`` (torch's threads; 1 keeps two busy processes on this 2-core machine
from slowing each other down ~10x). The project's modules are byte-compiled first, as the
libraries in the venv are (``PYTHONDONTWRITEBYTECODE`` would otherwise recompile only vizpipe's
on every start).

``--index-jobs N`` also times the sweep index for an N-job sweep (copies of one real job folder)
written once, against the old way (rewritten after every job: N indexes of 1..N jobs, estimated
from the time of the N-job index, which is linear in jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.process import ROOT, precompile, timed

LAYERS = ["layer1", "layer2", "layer3", "layer4"]
CLASSES = [1, 207, 281]

HAND_LOOP_SETUP = """
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
img = Image.open(Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")
F = torchvision.transforms.functional
x = F.center_crop(F.resize(F.pil_to_tensor(img), [256], antialias=True), [224]).float() / 255
rgb = x.permute(1, 2, 0).numpy()
x = F.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]
"""

HAND_LOOP_BODY = """
for layer in LAYERS:
    for c in CLASSES:
        with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
            m = cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0]
        d = out / f"{layer}_{c}"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "map.npy", m)
        Image.fromarray(show_cam_on_image(rgb, m, use_rgb=True)).save(d / "overlay.png")
        heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * m), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        Image.fromarray(heat).save(d / "heatmap.png")
"""

HAND_LOOP = HAND_LOOP_SETUP + "out = Path(OUT)\n" + HAND_LOOP_BODY

HYDRA_FLOOR = """
from pathlib import Path

import hydra

import vizpipe.pipeline.config_store  # vizpipe's config schema, as run.py registers it

MODEL = {}


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    if not MODEL:  # built once per process, as vizpipe's cache does
        exec(SETUP, MODEL)
    out = Path(HydraConfig.get().runtime.output_dir)
    exec(BODY, dict(MODEL, LAYERS=[cfg.cam.layer], CLASSES=[cfg.cam.target_class], out=out))


main()
"""


def sweep_cmd(folder: Path) -> list[str]:
    layers, classes = ",".join(LAYERS), ",".join(map(str, CLASSES))
    return [
        sys.executable,
        "run.py",
        "-m",
        "model=resnet18",
        "stages=[cam]",
        f"cam.layer={layers}",
        f"cam.target_class={classes}",
        f"hydra.sweep.dir={folder}",
    ]


def floor_cmd(base: Path, r: int) -> list[str]:
    """The hand loop's body as the jobs of a plain Hydra sweep (script written into ``base``)."""
    script = base / "hydra_floor.py"
    if not script.exists():
        script.write_text(
            f"CONF = {str(ROOT / 'conf')!r}\nSETUP = {HAND_LOOP_SETUP!r}\n"
            f"BODY = {HAND_LOOP_BODY!r}\n{HYDRA_FLOOR}"
        )
    layers, classes = ",".join(LAYERS), ",".join(map(str, CLASSES))
    return [
        sys.executable,
        str(script),
        "-m",
        "hydra/sweeper=basic",
        f"cam.layer={layers}",
        f"cam.target_class={classes}",
        f"hydra.sweep.dir={base / f'floor{r}'}",
    ]


def separate(folder: Path, env: dict[str, str]) -> float:
    """12 separate run.py processes, one per job."""
    total = 0.0
    for layer in LAYERS:
        for c in CLASSES:
            cmd = [
                sys.executable,
                "run.py",
                "stages=[cam]",
                f"cam.layer={layer}",
                f"cam.target_class={c}",
                f"hydra.run.dir={folder / f'{layer}_{c}'}",
            ]
            total += timed(cmd, env)
    return total


def index_cost(sweep: Path, jobs: int, job_seconds: float) -> None:
    """Time the index of ``jobs`` copies of one real job, once, against one rebuild per job."""
    from vizpipe.pipeline.report import write_sweep_index

    with tempfile.TemporaryDirectory(dir=sweep.parent) as tmp:
        big = Path(tmp)
        job0 = next(p for p in sweep.iterdir() if p.name.startswith("0_"))
        shutil.copy(sweep / "multirun.yaml", big / "multirun.yaml")
        for i in range(jobs):
            layer, cls = LAYERS[i % 4], i // 4
            name = f"{i}_cam.layer={layer},cam.target_class={cls}"
            shutil.copytree(job0, big / name)
            m = json.loads((big / name / "manifest.json").read_text())
            m["overrides"] = ["stages=[cam]", f"cam.layer={layer}", f"cam.target_class={cls}"]
            (big / name / "manifest.json").write_text(json.dumps(m))
        t = time.perf_counter()
        path = write_sweep_index(big)
        once = time.perf_counter() - t
        size = path.stat().st_size / 1e6
    every = once * (jobs + 1) / 2  # sum over k of an index of k jobs, linear in k
    print(
        f"\nsweep index of {jobs} jobs ({size:.0f} MB): written once {once:.2f} s; "
        f"rewritten after every job (before) ~{every:.0f} s; the jobs themselves ~{jobs * job_seconds:.0f} s "
        f"({job_seconds:.3f} s per job: the 12-job sweep's time / 12)"
    )
    print(
        f"  index / jobs: once {once / (jobs * job_seconds):.3f}x, "
        f"after every job {every / (jobs * job_seconds):.1f}x"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--index-jobs", type=int, default=0, help="also time the index of a sweep this big")
    parser.add_argument("--no-separate", action="store_true", help="skip the 12 separate processes")
    parser.add_argument("--hydra-floor", action="store_true", help="also the hand loop as a Hydra sweep")
    parser.add_argument("--hand-loop", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hand_loop is not None:  # the baseline itself, in its own process
        exec(
            HAND_LOOP, {"LAYERS": LAYERS, "CLASSES": CLASSES, "OUT": str(args.hand_loop), "__name__": "hand"}
        )
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    precompile()
    times: dict[str, list[float]] = {"sweep": [], "hand": [], "separate": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="vizpipe-sweep-") as tmp:
        base = Path(tmp)
        hand = [sys.executable, "-m", "benchmarks.sweep", "--hand-loop"]
        timed([*hand, str(base / "warm-hand")], env)  # warm the page cache of both sides
        timed(sweep_cmd(base / "warm-sweep"), env)
        for r in range(args.repeats):
            times["hand"].append(timed([*hand, str(base / f"hand{r}")], env))
            times["sweep"].append(timed(sweep_cmd(base / f"sweep{r}"), env))
            if not args.no_separate:
                times["separate"].append(separate(base / f"sep{r}", env))
            if args.hydra_floor:
                times["floor"].append(timed(floor_cmd(base, r), env))
            print(
                f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v),
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in times.items() if v}
        pairs = [s / h for s, h in zip(times["sweep"], times["hand"], strict=True)]
        print(
            f"\n12-job sweep (resnet18, GradCAM, the photo), OMP_NUM_THREADS={args.threads}, "
            f"median of {args.repeats}:"
        )
        print(f"  run.py -m          {med['sweep']:7.2f} s")
        print(
            f"  hand loop          {med['hand']:7.2f} s   "
            f"sweep / hand loop = {statistics.median(pairs):.2f}x "
            f"(paired median; target <= 1.0x)"
        )
        if "floor" in med:
            floor = statistics.median(f / h for f, h in zip(times["floor"], times["hand"], strict=True))
            print(
                f"  hand loop in Hydra {med['floor']:7.2f} s   {floor:.2f}x the hand loop: Hydra's own floor "
                f"(basic sweeper and launcher); run.py -m is {med['sweep'] / med['floor']:.2f}x that"
            )
        if "separate" in med:
            print(
                f"  12 run.py          {med['separate']:7.2f} s   12 processes / sweep = "
                f"{med['separate'] / med['sweep']:.1f}x faster as a sweep (target >= 4x)"
            )
        if args.index_jobs:
            sys.path.insert(0, str(ROOT))
            index_cost(base / "sweep0", args.index_jobs, med["sweep"] / len(LAYERS) / len(CLASSES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
