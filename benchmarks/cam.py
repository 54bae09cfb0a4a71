"""vizpipe's CAM stage vs pytorch-grad-cam called the usual way, on the same work.

    .venv/bin/python -m benchmarks.cam [--repeats 3] [--models resnet18,vgg11] [--batch 8] [--size 224]

Work: GradCAM maps for a batch of 8 seeded random images (224 px) on the model's default CAM
layer (resnet18 ``layer4``, vgg11 ``features.20``), each image's top-1 class, on the CPU, random
init seeded with 0 (no weights are downloaded). Two comparisons per model:

- **maps**: ``vizpipe.stages.cam.compute.collect`` (the maps in memory) vs the library's README code::

      with GradCAM(model=model, target_layers=[layer]) as cam:
          maps = cam(input_tensor=x, targets=None)   # None = top-1 per image

- **stage**: the whole stage (``check_model`` + ``run``: maps, overlay and heatmap PNGs, ``.npy``
  files, ``cam.json``) vs the README code plus one overlay PNG per image (``show_cam_on_image`` +
  PIL), i.e. what the seed's snippet does for each image. Twice: ``stages=[cam]`` alone, where
  ``check_model`` pays for the run's probe forward (``RunContext.probe``: logits and layer shapes),
  and in a run with other stages, where that probe is already cached (it is computed once per run).

Ratio = vizpipe / library (below 1.0 = vizpipe is faster). Timings are the median of
``--repeats`` runs after one warm-up run of each, alternating sides; they vary with the load.
The maps of both sides are compared (max |difference|) so the speed is not bought with results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(model: str, batch: int, size: int, out: Path):
    """A run context like ``python run.py model=<model> input=random input.shape=[batch,3,size,size]``."""
    from vizpipe.pipeline.factory import build_context

    from benchmarks.process import compose

    cfg = compose(
        [
            f"model={model}",
            "device=cpu",
            "input=random",
            f"input.shape=[{batch},3,{size},{size}]",
            "stages=[cam]",
        ]
    )
    return build_context(cfg, out)


def library_maps(model, layer, x):
    """pytorch-grad-cam's README usage."""
    from pytorch_grad_cam import GradCAM

    with GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=None)


def library_with_overlays(model, layer, x, rgb, out: Path):
    """The README usage plus the seed's overlay per image, written as PNG."""
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    maps = library_maps(model, layer, x)
    for i, m in enumerate(maps):
        Image.fromarray(show_cam_on_image(rgb[i], m, use_rgb=True)).save(out / f"lib_{i}.png")
    return maps


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench(model_name: str, repeats: int, batch: int, size: int) -> list[tuple[str, float, float]]:
    """Time both comparisons for one model; returns rows (what, vizpipe s, library s)."""
    import numpy as np
    import torch
    from vizpipe.stages.cam import CamConfig, CamStage
    from vizpipe.stages.cam.compute import collect
    from vizpipe.stages.cam.plan import make_plan

    from benchmarks.process import KeepMaps

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ctx = build(model_name, batch, size, out / "run")
        model, x = ctx.model, ctx.inputs.tensor
        settings = CamConfig()
        plan = make_plan(ctx, settings)
        layer_name = plan.layers[0].name
        layer = model.get_submodule(layer_name)

        def vizpipe_maps():
            """The maps in memory (the stage's writer swapped for one that keeps the arrays)."""
            keep = KeepMaps()
            collect(ctx, settings, plan, keep)
            return keep.arrays

        def vizpipe_stage(shared_probe: bool = False):
            if not shared_probe:
                ctx._probe = None  # check_model pays for the probe forward, as in stages=[cam]
            ctx._claimed.clear()  # each repeat writes the same files again
            stage = CamStage()
            stage.check_model(ctx, settings)
            return stage.run(ctx, settings)

        ours = np.stack(vizpipe_maps())
        ref = library_maps(model, layer, x)
        diff = float(np.abs(ours - ref).max())
        grads_mib = (
            sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
            / 2**20
        )
        for p in model.parameters():
            p.grad = None
        vizpipe_stage()  # warm-up (imports, allocator)
        rgb = ctx.inputs.first().rgb
        library_with_overlays(model, layer, x, rgb, out)
        times: dict[str, list[float]] = {
            "maps_v": [],
            "maps_l": [],
            "stage_v": [],
            "stage_l": [],
            "shared_v": [],
        }
        for _ in range(repeats):  # alternate, so load changes hit both sides
            times["maps_l"] += timed(lambda: library_maps(model, layer, x), 1)
            times["maps_v"] += timed(vizpipe_maps, 1)
            times["stage_l"] += timed(lambda: library_with_overlays(model, layer, x, rgb, out), 1)
            times["stage_v"] += timed(vizpipe_stage, 1)
            times["shared_v"] += timed(lambda: vizpipe_stage(shared_probe=True), 1)
        for p in model.parameters():
            p.grad = None
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{model_name}: layer {layer_name}, batch {tuple(x.shape)}, "
            f"torch threads {torch.get_num_threads()}; "
            f"max |vizpipe - library| = {diff:.1e}; the library leaves {grads_mib:.0f} MiB of parameter "
            "gradients after a call, vizpipe none"
        )
        return [
            (f"{model_name} maps  (collect vs README call)", med["maps_v"], med["maps_l"]),
            (
                f"{model_name} stage alone (+probe, PNGs, npy, json vs +overlay PNGs)",
                med["stage_v"],
                med["stage_l"],
            ),
            (f"{model_name} stage in a run (probe shared, vs the same)", med["shared_v"], med["stage_l"]),
        ]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument("--models", default="resnet18,vgg11", help="comma-separated conf/model names")
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image edge in pixels")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.INFO)  # the stage's log lines would interleave with the table
    rows = []
    for name in args.models.split(","):
        rows += bench(name.strip(), args.repeats, args.batch, args.size)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'case'.ljust(width)}  vizpipe s  library s  ratio")
    for what, ours, lib in rows:
        print(f"{what.ljust(width)}  {ours:9.3f}  {lib:9.3f}  {ours / lib:5.2f}x")


if __name__ == "__main__":
    main()
