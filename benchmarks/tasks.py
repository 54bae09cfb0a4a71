"""vizpipe's CAM stage on a detector and a segmentation model vs grad-cam's tutorial code, side by side.

    .venv/bin/python -m benchmarks.tasks [--repeats 5] [--det-size 320] [--seg-size 256]

Work, one image (the bundled photo), CPU, one thread, random init seeded with 0 (nothing downloaded):

- **detection**: EigenCAM on ``fasterrcnn_mobilenet_v3_large_320_fpn`` at 320×320, every FPN level
  (``cam.layer=backbone``), targets = the detections above the threshold. The tutorial ("Class
  Activation Maps for Object Detection With Faster RCNN"): its ``predict`` (one forward), then
  ``EigenCAM(model, [model.backbone], reshape_transform=fasterrcnn_reshape_transform)`` called with
  ``FasterRCNNBoxScoreTarget`` (a second forward);
- **segmentation**: GradCAM on ``deeplabv3_mobilenet_v3_large`` at 256×256, the backbone's last block,
  the top class over its predicted mask. The tutorial ("Class Activation Maps for Semantic
  Segmentation"): ``SegmentationModelOutputWrapper``, a forward for the mask, then ``GradCAM`` with
  ``SemanticSegmentationTarget`` (forward and backward).

Two comparisons each: **maps** (``vizpipe.stages.cam.compute.collect``, maps in memory, vs the tutorial's
code up to the map) and **stage** (the whole stage: maps, overlay, heatmap and prediction PNGs, ``.npy``,
``cam.json``; vs the tutorial's code plus one overlay PNG with the boxes drawn, as the tutorial shows it).
Ratio = vizpipe / tutorial (below 1.0 = vizpipe is faster): the median of ``--repeats`` runs after a
warm-up, alternating sides. The maps of both sides are compared (max |difference|).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SEGMENTER = "deeplabv3_mobilenet_v3_large"


def build(overrides: list[str], out: Path):
    """A run context like ``python run.py <overrides> 'stages=[cam]'`` on the CPU."""
    from vizpipe.pipeline.factory import build_context

    from benchmarks.process import compose

    return build_context(compose([*overrides, "device=cpu", "input=photo", "stages=[cam]"]), out)


def detection_tutorial(model, input_tensor, threshold: float):
    """The detection tutorial's code: ``predict``, then EigenCAM on the backbone's FPN levels."""
    import numpy as np
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    outputs = model(input_tensor)
    scores = outputs[0]["scores"].detach().cpu().numpy()
    keep = [i for i in range(len(scores)) if scores[i] >= threshold]
    boxes = np.int32([outputs[0]["boxes"][i].detach().cpu().numpy().astype(np.int32) for i in keep])
    labels = [outputs[0]["labels"][i].cpu().numpy() for i in keep]
    targets = [FasterRCNNBoxScoreTarget(labels=labels, bounding_boxes=boxes)]
    cam = EigenCAM(model, [model.backbone], reshape_transform=fasterrcnn_reshape_transform)
    grayscale_cam = cam(input_tensor, targets=targets)[0, :]
    cam.activations_and_grads.release()
    return grayscale_cam, boxes, labels


def segmentation_tutorial(model, input_tensor, layer: str):
    """The segmentation tutorial's code: the wrapper, the top class's predicted mask, GradCAM."""
    import numpy as np
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    class SegmentationModelOutputWrapper(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["out"]

    wrapped = SegmentationModelOutputWrapper(model)
    output = wrapped(input_tensor)
    mask = torch.nn.functional.softmax(output, dim=1)[0].argmax(axis=0).detach().cpu().numpy()
    counts = np.bincount(mask.ravel(), minlength=output.shape[1])
    if counts[1:].sum():
        counts[0] = 0
    category = int(np.argmax(counts))  # the most-predicted class but the background, as vizpipe's default
    targets = [SemanticSegmentationTarget(category, np.float32(mask == category))]
    with GradCAM(model=wrapped, target_layers=[model.get_submodule(layer)]) as cam:
        return cam(input_tensor=input_tensor, targets=targets)[0, :], mask


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(task: str, size: int, repeats: int) -> list[tuple[str, float, float, float]]:
    """Rows (what, vizpipe s, tutorial s, max |map difference|) for one task."""
    import numpy as np
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from vizpipe.pipeline.tasks.draw import draw_boxes
    from vizpipe.stages.cam import CamConfig, CamStage
    from vizpipe.stages.cam.compute import collect
    from vizpipe.stages.cam.plan import make_plan

    from benchmarks.process import KeepMaps

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if task == "detection":
            ctx = build([f"model={DETECTOR}", f"input.resize={size}", f"input.crop={size}"], out / "run")
            settings = CamConfig(method="eigencam", layer="backbone", score_threshold=0.0)
        else:
            ctx = build([f"model={SEGMENTER}", f"input.resize={size}", f"input.crop={size}"], out / "run")
            settings = CamConfig()
        plan = make_plan(ctx, settings)
        model = copy.deepcopy(ctx.model).eval()  # the tutorial's own copy of the same weights
        batch = ctx.inputs.first()
        x, rgb = batch.tensor, batch.rgb[0]

        def tutorial_maps():
            if task == "detection":
                return detection_tutorial(model, x, settings.score_threshold)[0]
            return segmentation_tutorial(model, x, plan.layers[0].name)[0]

        def tutorial_stage():
            if task == "detection":
                cam, boxes, labels = detection_tutorial(model, x, settings.score_threshold)
                image = show_cam_on_image(rgb, cam, use_rgb=True)
                image = draw_boxes(
                    image, boxes.tolist(), [int(v) for v in labels], [str(int(v)) for v in labels]
                )
            else:
                cam, _ = segmentation_tutorial(model, x, plan.layers[0].name)
                image = show_cam_on_image(rgb, cam, use_rgb=True)
            Image.fromarray(image).save(out / "tutorial.png")

        def vizpipe_maps():
            keep = KeepMaps()
            ctx._claimed.clear()  # the prediction picture is written with the rows, each repeat
            collect(ctx, settings, plan, keep)
            return keep.arrays

        def vizpipe_stage():
            ctx._claimed.clear()  # each repeat writes the same files again
            stage = CamStage()
            stage.check_model(ctx, settings)
            stage.run(ctx, settings)

        diff = float(np.abs(vizpipe_maps()[0] - tutorial_maps()).max())
        vizpipe_stage(), tutorial_stage()  # warm-up
        t = {"mv": [], "mt": [], "sv": [], "st": []}
        for _ in range(repeats):  # alternating, so load changes hit both sides
            t["mt"].append(timed(tutorial_maps))
            t["mv"].append(timed(vizpipe_maps))
            t["st"].append(timed(tutorial_stage))
            t["sv"].append(timed(vizpipe_stage))
        med = {k: statistics.median(v) for k, v in t.items()}
    return [(f"{task} maps", med["mv"], med["mt"], diff), (f"{task} stage", med["sv"], med["st"], diff)]


def main(argv: list[str] | None = None) -> None:
    """Print the table (vizpipe, tutorial, ratio, max |difference|)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--det-size", type=int, default=320)
    parser.add_argument("--seg-size", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = bench("detection", args.det_size, args.repeats) + bench(
        "segmentation", args.seg_size, args.repeats
    )
    print(
        f"| work (CPU, 1 thread, median of {args.repeats}) | vizpipe s | tutorial s | ratio | max abs diff |"
    )
    print("|---|---:|---:|---:|---:|")
    for what, ours, theirs, diff in rows:
        print(f"| {what} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
