"""vizpipe's maps for segmentation, detection and embedding models equal grad-cam's tutorials' to 1e-5.

Each test runs the library the way its tutorial does, with the tutorial's own code (its wrapper
classes, targets, reshape and calls: "Class Activation Maps for Semantic Segmentation", "Class
Activation Maps for Object Detection With Faster RCNN", "Pixel Attribution for embeddings"), on
the same seeded random-init model and image as vizpipe's CAM stage, and compares the maps. Every
model config of issue 23 is covered; inputs are small (the detectors' ``min_size`` too), the
ResNet-50 detectors are slow-marked (3-10 s each on one CPU thread).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.record import CamDoc
from vizpipe.stages.cam.task_rows import MAX_DETECTIONS

SEGMENTATION = [
    pytest.param("fcn_resnet50", marks=pytest.mark.slow),  # a ResNet-50: ~5-10 s
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
]
FAST_DETECTORS = ["fasterrcnn_mobilenet_v3_large_320_fpn"]
SLOW_DETECTORS = [
    "fasterrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
]
TOL = 1e-5


def vizpipe_maps(ctx, **settings) -> tuple[CamDoc, list[np.ndarray]]:
    """The CAM stage on ``ctx`` with ``settings``: its record and every map (in record order)."""
    stage, cfg = CamStage(), CamConfig(**settings)
    stage.check_model(ctx, cfg)
    stage.run(ctx, cfg)
    doc = CamDoc.load(ctx.output_dir / "cam" / "cam.json")
    return doc, [np.load(ctx.output_dir / m.npy) for img in doc.images for m in img.maps]


# --------------------------------------------------------------------------- segmentation


class SegmentationModelOutputWrapper(torch.nn.Module):
    """The segmentation tutorial's wrapper, as it writes it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class SemanticSegmentationTarget:
    """The segmentation tutorial's target, as it writes it (the library ships the same class)."""

    def __init__(self, category, mask):
        self.category = category
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output):
        return (model_output[self.category, :, :] * self.mask).sum()


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_maps_equal_the_segmentation_tutorial(make_ctx, name):
    from pytorch_grad_cam import GradCAM

    ctx = make_ctx([f"model={name}", "input=photo", "input.resize=96", "input.crop=96", "device=cpu"])
    assert ctx.task == "segmentation"
    doc, (ours,) = vizpipe_maps(ctx)  # each image's most-predicted class over its predicted mask
    (m,) = doc.images[0].maps
    layer = ctx.blocks()[-1]  # cam.layer=auto: the backbone's last block
    assert m.layer == layer and layer.startswith("backbone.")

    # ---- the tutorial, on a copy of the same weights
    model = SegmentationModelOutputWrapper(copy.deepcopy(ctx.model).eval())
    input_tensor = ctx.inputs.first().tensor
    output = model(input_tensor)
    normalized_masks = torch.nn.functional.softmax(output, dim=1).detach().cpu()
    category = m.target
    mask = normalized_masks[0, :, :, :].argmax(axis=0).detach().cpu().numpy()
    mask_float = np.float32(mask == category)
    target_layers = [model.model.get_submodule(layer)]
    targets = [SemanticSegmentationTarget(category, mask_float)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)[0, :]

    assert m.valid and float(ours.max()) > 0
    np.testing.assert_allclose(ours, grayscale_cam, atol=TOL)
    assert m.score == pytest.approx(
        float(normalized_masks[0, category][torch.from_numpy(mask == category)].mean())
    )


# --------------------------------------------------------------------------- detection


def predict(input_tensor, model, detection_threshold):
    """The detection tutorial's ``predict`` (class names dropped: random init has none)."""
    outputs = model(input_tensor)
    pred_labels = outputs[0]["labels"].cpu().numpy()
    pred_scores = outputs[0]["scores"].detach().cpu().numpy()
    pred_bboxes = outputs[0]["boxes"].detach().cpu().numpy()
    boxes, labels, indices = [], [], []
    for index in range(len(pred_scores)):
        if pred_scores[index] >= detection_threshold:
            boxes.append(pred_bboxes[index].astype(np.int32))
            labels.append(pred_labels[index])
            indices.append(index)
    boxes = np.int32(boxes)
    return boxes, labels, indices


def reshape_transform(x):
    """The tutorial's ``fasterrcnn_reshape_transform``; RetinaNet's and FCOS's levels end with p6/p7,
    not ``pool``, so the last level is renamed ``pool`` for it (its size is the one it resizes to)."""
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    keys = list(x)
    return fasterrcnn_reshape_transform(dict(zip([*keys[:-1], "pool"], x.values(), strict=True)))


def detection_ctx(make_ctx, name):
    """The detector at a small size: 128 px, 320 for RetinaNet and FCOS (their last FPN level, P7, is
    1/128 of the input: the reshape sizes every level to it, one pixel at 128)."""
    side = 320 if name.startswith(("retinanet", "fcos")) else 128
    return make_ctx(
        [
            f"model={name}",
            "input=photo",
            f"+model.kwargs.min_size={side}",
            f"+model.kwargs.max_size={side}",
            "device=cpu",
        ]
    )


def check_detection_eigencam(make_ctx, name, threshold=0.0):
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    ctx = detection_ctx(make_ctx, name)
    assert ctx.task == "detection"
    doc, (ours,) = vizpipe_maps(ctx, method="eigencam", layer="backbone", score_threshold=threshold)

    # ---- the tutorial: predict, then EigenCAM on model.backbone with the FPN reshape
    model = copy.deepcopy(ctx.model).eval()
    input_tensor = ctx.inputs.first().tensor
    boxes, labels, _ = predict(input_tensor, model, threshold)
    target_layers = [model.backbone]
    targets = [FasterRCNNBoxScoreTarget(labels=labels, bounding_boxes=boxes)]
    cam = EigenCAM(model, target_layers, reshape_transform=reshape_transform)
    grayscale_cam = cam(input_tensor, targets=targets)[0, :]
    cam.activations_and_grads.release()

    (m,) = doc.images[0].maps
    assert m.layer == "backbone" and float(ours.max()) > 0
    np.testing.assert_allclose(ours, grayscale_cam, atol=TOL)
    dets = doc.images[0].detections or []  # cam.json lists the first MAX_DETECTIONS
    shown = min(len(labels), MAX_DETECTIONS)
    assert len(dets) == shown and [d.label for d in dets] == [int(v) for v in labels[:shown]]
    listed = np.asarray([d.box for d in dets], dtype=np.float32).reshape(-1, 4)  # rounded to 0.01 px
    assert np.abs(listed - np.asarray(boxes, dtype=np.float32)[:shown].reshape(-1, 4)).max() <= 1.01
    return ctx


@pytest.mark.parametrize("name", FAST_DETECTORS)
def test_detection_eigencam_equals_the_faster_rcnn_tutorial(make_ctx, name):
    check_detection_eigencam(make_ctx, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_DETECTORS)
def test_detection_eigencam_equals_the_tutorial_for_every_resnet50_detector(make_ctx, name):
    check_detection_eigencam(make_ctx, name)


@pytest.mark.parametrize(("box", "key"), [(None, "all"), pytest.param(0, "det0", marks=pytest.mark.slow)])
def test_detection_gradcam_equals_the_library_with_the_tutorials_targets(make_ctx, box, key):
    """GradCAM on the backbone's last block (cam.layer=auto) with the tutorial's FasterRCNNBoxScoreTarget
    over every detection above the threshold, or over the best one."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    ctx = detection_ctx(make_ctx, FAST_DETECTORS[0])
    threshold = 0.0105  # random init scores ~1/91: a few detections pass
    doc, (ours,) = vizpipe_maps(ctx, score_threshold=threshold, box=box)
    (m,) = doc.images[0].maps
    model = copy.deepcopy(ctx.model).eval()
    input_tensor = ctx.inputs.first().tensor
    boxes, labels, _ = predict(input_tensor, model, threshold if box is None else 0.0)
    if box is not None:
        boxes, labels = boxes[:1], labels[:1]
    assert len(labels) >= 1
    targets = [FasterRCNNBoxScoreTarget(labels=labels, bounding_boxes=boxes)]
    with GradCAM(model=model, target_layers=[model.get_submodule(m.layer)]) as cam:
        grayscale_cam = cam(input_tensor, targets=targets)[0, :]
    assert m.key == key and m.layer == ctx.blocks()[-1] and m.valid
    np.testing.assert_allclose(ours, grayscale_cam, atol=TOL)


# --------------------------------------------------------------------------- embedding


class ResnetFeatureExtractor(torch.nn.Module):
    """The embeddings tutorial's feature extractor, as it writes it."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.feature_extractor = torch.nn.Sequential(*list(self.model.children())[:-1])

    def __call__(self, x):
        return self.feature_extractor(x)[:, :, 0, 0]


class SimilarityToConceptTarget:
    """The embeddings tutorial's target, as it writes it."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        cos = torch.nn.CosineSimilarity(dim=0)
        return cos(model_output, self.features)


def test_embedding_maps_equal_the_embeddings_tutorial(make_ctx, tmp_path):
    import torchvision
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from vizpipe.pipeline.inputs.images import bundled_photo

    photo = Image.open(bundled_photo()).convert("RGB")
    concept = tmp_path / "flag.png"
    photo.crop((0, 0, 200, 200)).save(concept)  # the flag's stars: the concept
    ctx = make_ctx(
        [
            "model=embedding",
            "model.name=resnet18",
            "input=photo",
            "input.resize=128",
            "input.crop=112",
            "device=cpu",
        ]
    )
    assert ctx.task == "embedding"
    doc, (ours,) = vizpipe_maps(ctx, layer="layer4.1", concept=str(concept))

    # ---- the tutorial, on a resnet18 with the same weights (its fc kept, as the tutorial keeps it)
    resnet = torchvision.models.resnet18()
    missing = resnet.load_state_dict(ctx.model.state_dict(), strict=False)
    assert set(missing.missing_keys) == {"fc.weight", "fc.bias"} and not missing.unexpected_keys
    resnet.eval()
    model = ResnetFeatureExtractor(resnet)
    from vizpipe.pipeline.inputs import build_like

    concept_tensor = build_like(ctx.inputs, kind="image", path=str(concept)).first().tensor
    concept_features = model(concept_tensor)[0, :]
    input_tensor = ctx.inputs.first().tensor
    target_layers = [resnet.layer4[-1]]
    targets = [SimilarityToConceptTarget(concept_features)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)[0, :]

    (m,) = doc.images[0].maps
    assert (m.key, m.valid) == ("concept_flag", True) and float(ours.max()) > 0
    np.testing.assert_allclose(ours, grayscale_cam, atol=TOL)
    with torch.no_grad():
        similarity = torch.nn.functional.cosine_similarity(model(input_tensor)[0], concept_features, dim=0)
    assert m.score == pytest.approx(float(similarity), abs=1e-6)
