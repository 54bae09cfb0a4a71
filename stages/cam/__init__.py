"""CAM stage: class activation maps with pytorch-grad-cam (seed §2.3), any method, layer and class;
captum's pixel attributions beside them; their metrics and sanity checks.

Seed::

    cam = GradCAM(model=model, target_layers=[model.features[-1]])
    grayscale_cam = cam(input_tensor=img_tensor, targets=[ClassifierOutputTarget(200)])
    cam_img = show_cam_on_image(rgb_img, grayscale_cam[0], use_rgb=True)

Here: ``cam.method`` names any CAM class the installed library exports
(``pipeline/gradcam/methods.py``), ``cam.layer`` is ``auto``, a name or a list
(``pipeline/gradcam/layers.py``; ViT/Swin reshapes inferred), ``cam.target_class`` is null (each
image's top-1), an index, a name or a list. The data set is streamed; per batch one forward pass
serves every class (``pipeline/gradcam/adapter.py``), and each map's overlay, heatmap and raw
``.npy`` (``cam.save``) are handed to the background writer at once (``compute.py``, ``rows.py``,
``render.py``, ``draw.py``; ``vizpipe.pipeline.writer``), which encodes and writes them while the
next batch is computed; ``cam/cam.json``
(``record.py``) holds top-5 predictions, targets, scores, metrics, per-class aggregates and each
map's validity.

``cam.method`` may also name a pixel attribution (``integrated_gradients``, ``saliency``, ...,
``sobel``: ``pipeline/attribution``), written, drawn and recorded like a CAM map (layer
``input``). ``cam.metrics`` are ``pipeline/metrics``' (faithfulness, localisation, complexity;
``explain.py`` explains them in the report); ``cam.sanity`` runs Adebayo et al.'s randomisation
checks on the method (``sanity.py``). In a sweep over ``cam.layer``, a method that attributes to the
input computes its maps once, in the job with the sweep's first layer (``duplicate.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Dict, List

from vizpipe.pipeline.stage import SharedConfig, Stage, StageResult

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.cam.plan import CamPlan


class CamFile(str, Enum):
    """A file written per map (``cam.save``)."""

    npy = "npy"  # the raw map, float32 H×W (the library's output)
    overlay = "overlay"  # the map over the image (show_cam_on_image), PNG
    heatmap = "heatmap"  # the map through the JET colormap, PNG


@dataclass
class CamConfig:
    """``cam.*``: class activation maps via pytorch-grad-cam (seed §2.3)."""

    # CAM method, case-insensitive, with aliases: gradcam, gradcam++, scorecam, eigencam, ...
    method: str = "gradcam"
    # auto | a dotted layer name (or a glob, type:X, blocks) | a list of names (one averaged map).
    layer: Any = "auto"
    # null (each image's top-1 prediction) | an int | a list of ints (one map each) | a class name.
    target_class: Any = None
    # With several layers, also write one map per layer.
    per_layer: bool = False
    # Test-time augmentation smoothing (library option; 6× slower).
    aug_smooth: bool = False
    # First principal component smoothing (library option).
    eigen_smooth: bool = False
    # Batch size of the perturbation passes of ScoreCAM / AblationCAM / SESS (>= 1).
    batch_size: int = 32
    # The method's own constructor arguments, checked against its signature
    # (e.g. {base_method: gradcam} for RefineCAM/FinerCAM, {k: 2} for FEM).
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # Metrics recorded per map, e.g. [deletion_auc, insertion_auc, road_combined] (pipeline/metrics).
    metrics: List[str] = field(default_factory=list)
    # Each metric's arguments, e.g. {deletion_auc: {step: 128}, road_combined: {percentiles: [20, 80]}};
    # null = the defaults (typed Any: a typed dict cannot be set from the command line).
    metric_args: Any = None
    # Sanity checks of the method (Adebayo et al. 2018): [] | [parameters] | [parameters, data].
    sanity: List[str] = field(default_factory=list)
    # Images the sanity checks explain (the data set's first ones), >= 1.
    sanity_images: int = 8
    # A method passes a check when the Spearman correlation of its maps on the trained and the
    # randomised models, averaged over images and steps, is below this.
    sanity_threshold: float = 0.5
    # Pointing game tolerance: the box grows by this fraction of the image side (0..0.5).
    pointing_tolerance: float = 0.03
    # Weight of the image in the overlay (show_cam_on_image's image_weight), 0..1.
    image_weight: float = 0.5
    # Freeze parameter gradients during CAM (faster, identical maps; see pipeline/gradcam/adapter.py).
    freeze_params: bool = True
    # Files written per map: any of npy, overlay, heatmap; [] = none (cam.json and the record only).
    save: List[CamFile] = field(default_factory=lambda: [CamFile.npy, CamFile.overlay, CamFile.heatmap])
    # zlib level of the overlay and heatmap PNGs: 0 (none, fastest) .. 9 (smallest); 1 measured best.
    png_compress_level: int = 1
    # Targets of segmentation, detection and embedding models (stages/cam/targets.py):
    # detection: the detections a map explains score at least this (0..1).
    score_threshold: float = 0.5
    # detection: null (every detection above score_threshold, one map) | an index (that detection,
    # 0 = the best) | [x0, y0, x1, y1] (a box you give, in input pixels).
    box: Any = None
    # segmentation: where the class's scores are summed: null (its predicted mask) | truth (the data
    # set's true mask, input=shapes input.objects>1) | a mask file (.png/.npy; nonzero = inside).
    mask: Any = None
    # embedding: a concept image or folder (its images' features averaged), or a list (one map each).
    concept: Any = None


class CamStage(Stage):
    """Class activation maps for the configured method, layers and classes."""

    name = "cam"
    title = "Class activation maps"
    config = CamConfig
    order = 40
    default = True

    def __init__(self) -> None:
        self.plan: CamPlan | None = None

    def check_settings(self, settings: CamConfig, shared: SharedConfig) -> None:
        """Method, metrics, kwargs, numbers and value types, before the model is built."""
        from vizpipe.stages.cam.plan import check_settings

        check_settings(settings)

    def check_model(self, ctx: RunContext, settings: CamConfig) -> None:
        """Resolve the layers and classes against the model before any stage runs."""
        from vizpipe.stages.cam.plan import make_plan

        self.plan = make_plan(ctx, settings)

    def run(self, ctx: RunContext, settings: CamConfig) -> StageResult:
        """Stream the data set: compute and write every map, then cam.json; metrics' and sanity
        checks' records."""
        from vizpipe.stages.cam import duplicate, explain, sanity
        from vizpipe.stages.cam.compute import collect
        from vizpipe.stages.cam.plan import make_plan
        from vizpipe.stages.cam.render import MapWriter, document, result, warn_invalid

        plan = self.plan or make_plan(ctx, settings)
        first = duplicate.computed_by(ctx, settings, plan)
        if first is not None:
            return duplicate.result(ctx, plan, first)
        display = None
        if plan.attribution:
            from vizpipe.pipeline.attribution.runner import display_scale as display
        per_batch = ctx.inputs.batch_size * max(1, len(settings.save)) * len(plan.groups)
        with ctx.writer(limit=2 * per_batch) as writer:  # two batches' files pending at most
            run = collect(ctx, settings, plan, MapWriter(ctx, settings, writer, display))
        warn_invalid(ctx, run.images_in_order)
        if plan.targets is not None:
            from vizpipe.stages.cam.targets import warn_targets

            warn_targets(ctx, plan.targets, run.images_in_order)
        record = result(ctx, document(ctx, settings, plan, run.images_in_order, run.passes))
        if plan.sanity:
            t0 = time.perf_counter()
            sanity.add(ctx, settings, plan, record)
            run.seconds["sanity checks"] = time.perf_counter() - t0
        explain.add(ctx, plan, run, record)
        return record
