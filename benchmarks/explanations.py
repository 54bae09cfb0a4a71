"""Explanations: batched deletion/insertion curves vs the paper's loop; the whole explanations sweep.

    .venv/bin/python -m benchmarks.explanations [--images 32] [--repeats 3] [--sweep full|small|none]

1. **Curves.** RISE's deletion and insertion curves (Petsiuk et al. 2018) of ``--images`` maps on
   the shapes demo's network (``shapes_net``, 64 px, random init: the cost does not depend on the
   weights), step = the image's width as in the paper (65 states per curve):
   ``vizpipe.pipeline.metrics.perturbation.causal_curves`` (every state of an image made at once,
   run in chunks: all steps of an image in one forward pass) vs a hand loop that runs the
   paper's ``CausalMetric.single_run`` (one forward pass per step, pixels replaced in place),
   image by image; and the deletion curves vs Quantus's ``PixelFlipping`` (baseline 0, softmax),
   which computes the same curve without its first point, on 48-px images (its step counts
   channel values and must divide H×W: 48 whole RGB pixels per step). Both sides' curves are
   compared (max |difference|). Ratio = vizpipe / the other side; the issue asks for <= 0.5.
2. **The sweep.** ``run.py -m experiment=shapes_demo sweep=explanations`` in a subprocess (``full``:
   as configured; ``small``: 3 methods × 2 layers, 16 images, 1 epoch), then every job's manifest:
   wall time, jobs, trainings, and each part's share of the time: training, the CAM maps, each
   metric, the sanity checks (the CAM stage's "Time per metric" table) and the rest (Hydra,
   builds, reports, the index).

``torch.set_num_threads(1)``; timings are medians of ``--repeats`` runs after a warm-up and vary
with the machine's load (the final figures are measured on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMALL = [
    "cam.method=gradcam,saliency,integrated_gradients",
    "cam.layer=conv2,conv3",
    "input.limit=16",
    "train.epochs=1",
]


def loop_curves(model, x, maps, classes, mode: str, step: int):
    """The paper's single_run, image by image: one forward pass per step."""
    import numpy as np
    import torch
    from vizpipe.pipeline.metrics.perturbation import blur

    b, c, h, w = x.shape
    hw = h * w
    n_steps = (hw + step - 1) // step
    out = np.empty((b, n_steps + 1))
    for i in range(b):
        img = x[i : i + 1]
        start, finish = (
            (img.clone(), torch.zeros_like(img)) if mode == "deletion" else (blur(img), img.clone())
        )
        order = np.flip(np.argsort(maps[i].reshape(-1, hw), axis=1), axis=-1)
        for k in range(n_steps + 1):
            with torch.no_grad():
                out[i, k] = float(torch.softmax(model(start), dim=1)[0, classes[i]])
            if k < n_steps:
                coords = order[:, step * k : step * (k + 1)]
                start.numpy().reshape(1, c, hw)[0, :, coords] = finish.numpy().reshape(1, c, hw)[0, :, coords]
    return out


def _median_times(fns: list, repeats: int) -> list[float]:
    """Median wall-clock seconds of each function, after one warm-up call, alternating."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def curves(images: int, repeats: int) -> None:
    """Part 1: vizpipe's batched curves vs the paper's loop (64 px) and vs Quantus (48 px)."""
    import numpy as np
    import torch
    from vizpipe.pipeline.metrics.perturbation import causal_curves
    from vizpipe.pipeline.models import ShapesNet

    torch.manual_seed(0)
    model = ShapesNet().eval()
    rows = []
    x = torch.randn(images, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    maps = np.random.default_rng(2).random((images, 64, 64)).astype(np.float32)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()

    def ours():
        return [causal_curves(model, x, maps, classes, m, step=64) for m in ("deletion", "insertion")]

    def loop():
        return [loop_curves(model, x.clone(), maps, classes, m, 64) for m in ("deletion", "insertion")]

    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours(), loop(), strict=True))
    a, b = _median_times([ours, loop], repeats)
    rows.append(("deletion + insertion, 64 px, 65 states", "the paper's single_run loop", b, a, diff))
    quantus_row = _versus_quantus(model, images, repeats)
    if quantus_row is not None:
        rows.append(quantus_row)
    print(
        f"\nDeletion/insertion curves on shapes_net, {images} images "
        f"(median of {repeats}; ratio = vizpipe / other)"
    )
    print(
        "| curves | other side | other s | vizpipe s | ratio | max abs diff |\n|---|---|---:|---:|---:|---:|"
    )
    for what, other, t_other, t_ours, d in rows:
        print(f"| {what} | {other} | {t_other:.3f} | {t_ours:.3f} | {t_ours / t_other:.2f}x | {d:.1e} |")


def _versus_quantus(model, images: int, repeats: int):
    """Deletion curves vs Quantus's PixelFlipping on 48-px images (48 px steps of whole pixels:
    Quantus's step counts channel values and must divide H*W, so 3 * 48 | 48 * 48)."""
    import warnings

    import numpy as np
    import torch
    from vizpipe.pipeline.metrics.perturbation import causal_curves

    try:
        import quantus
    except ImportError:
        print("(Quantus is not installed: pip install quantus; ./dev.sh test installs it)")
        return None
    x = torch.randn(images, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    rng = np.random.default_rng(4)
    maps = np.stack([rng.permutation(48 * 48).reshape(48, 48) for _ in range(images)]).astype(np.float32)
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    metric = quantus.PixelFlipping(
        features_in_step=3 * 48, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(
                metric(
                    model=model,
                    x_batch=x.numpy(),
                    y_batch=y,
                    a_batch=maps[:, None],
                    device="cpu",
                    softmax=True,
                )
            )

    def ours():
        return causal_curves(model, x, maps, list(y), "deletion", step=48)

    diff = float(np.abs(ours()[:, 1:] - theirs()).max())
    a, b = _median_times([ours, theirs], repeats)
    return ("deletion, 48 px, 49 states", "Quantus PixelFlipping (the same curve)", b, a, diff)


def sweep(kind: str) -> None:
    """Part 2: the explanations sweep, timed, with each part's share from the jobs' manifests."""
    with tempfile.TemporaryDirectory(prefix="vizpipe-explain-") as tmp:
        out = Path(tmp) / "sweep"
        cmd = [sys.executable, str(ROOT / "run.py"), "-m", "experiment=shapes_demo", "sweep=explanations"]
        cmd += [*(SMALL if kind == "small" else []), f"hydra.sweep.dir={out}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the sweep failed (exit {proc.returncode})")
        print_shares(out, wall, kind)


def print_shares(out: Path, wall: float, kind: str) -> None:
    """Each part's seconds and share of the sweep's wall time, from the jobs' manifests."""
    parts: dict[str, float] = {}
    jobs = trained = ranked = 0
    for manifest in sorted(out.glob("*/manifest.json")):
        jobs += 1
        for stage in json.loads(manifest.read_text())["stages"]:
            seconds, result = float(stage.get("seconds") or 0), stage.get("result") or {}
            if stage["name"] == "train":
                trained += not str(result.get("summary", "")).startswith("weights trained by")
                parts["training"] = parts.get("training", 0.0) + seconds
                continue
            measured = 0.0
            for table in result.get("tables") or []:
                if table["title"] == "Time per metric":
                    for name, sec, _ in table["rows"]:
                        parts[name] = parts.get(name, 0.0) + float(sec)
                        measured += float(sec)
            ranked += bool(measured)
            parts["CAM maps and files"] = parts.get("CAM maps and files", 0.0) + seconds - measured
    parts["the rest (Hydra, builds, reports, index)"] = wall - sum(parts.values())
    print(
        f"\nThe explanations sweep ({kind}): {jobs} jobs, {ranked} computed, {trained} training(s), "
        f"{wall:.1f} s"
    )
    print("| part | seconds | share |\n|---|---:|---:|")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.1f}% |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", choices=["full", "small", "none"], default="full")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    curves(args.images, args.repeats)
    if args.sweep != "none":
        sweep(args.sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
