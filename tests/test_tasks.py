"""model.task: inferred from the output, the tutorials' wrappers, targets per task and their errors."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.tasks import check_task, detections, infer_task, scores
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.record import CamDoc

SEG = ["model=deeplabv3_mobilenet_v3_large", "input=photo", "input.resize=96", "input.crop=96", "device=cpu"]
DET = [
    "model=fasterrcnn_mobilenet_v3_large_320_fpn",
    "input=photo",
    "+model.kwargs.min_size=128",
    "+model.kwargs.max_size=128",
    "device=cpu",
]
SCENES = ["input=shapes", "input.objects=3", "input.limit=4", "device=cpu"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``built(overrides)``: one run context per override list for the module (its checks write nothing)."""
    from conftest import compose_config
    from vizpipe.pipeline.factory import build_context

    cache: dict[tuple[str, ...], object] = {}

    def get(overrides: list[str]):
        key = tuple(overrides)
        if key not in cache:
            cache[key] = build_context(compose_config(overrides), tmp_path_factory.mktemp("ctx"))
        return cache[key]

    return get


def run_cam(ctx, **settings) -> tuple[CamDoc, CamStage]:
    stage, cfg = CamStage(), CamConfig(**settings)
    stage.check_model(ctx, cfg)
    stage.run(ctx, cfg)
    return CamDoc.load(ctx.output_dir / "cam" / "cam.json"), stage


# --------------------------------------------------------------------------- inference


def test_the_task_is_inferred_from_the_output():
    seg = {"out": torch.zeros(2, 3, 8, 8), "aux": torch.zeros(2, 3, 8, 8)}
    det = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}]
    assert infer_task(seg, "Conv2d") == "segmentation"
    assert infer_task(det, "RoIHeads") == "detection"
    assert infer_task(torch.zeros(2, 512), "Identity") == "embedding"  # a ResNet without its fc
    assert infer_task(torch.zeros(2, 512), "AdaptiveAvgPool2d") == "embedding"
    assert infer_task(torch.zeros(2, 10), "Linear") == "classification"  # a head's scores
    assert infer_task(torch.zeros(2, 1), "Sigmoid") == "classification"
    with pytest.raises(
        ConfigError, match=r"model.task=segmentation needs a dict with 'out'.*inferred: classification"
    ):
        check_task("segmentation", torch.zeros(2, 10), "Net")


def test_scores_turn_every_output_into_per_class_numbers():
    logits = torch.full((1, 3, 2, 2), -5.0)
    logits[0, 2, 0, :] = 5.0  # class 2 on the top row, class 0 below
    shares = scores({"out": logits}, "segmentation")
    assert shares.tolist() == [[0.5, 0.0, 0.5]]
    det = [
        {
            "boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]),
            "labels": torch.tensor([2, 2]),
            "scores": torch.tensor([0.3, 0.9]),
        }
    ]
    best = scores(det, "detection")
    assert best.shape == (1, 3) and float(best[0, 2]) == pytest.approx(0.9)
    (d,) = detections(det)
    assert len(d) == 2 and not d.scores.requires_grad


def test_fpn_reshape_is_the_tutorials_reshape():
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform
    from vizpipe.pipeline.tasks.wrappers import fpn_reshape

    g = torch.Generator().manual_seed(0)
    levels = OrderedDict(
        (k, torch.randn(1, 4, s, s, generator=g)) for k, s in (("0", 16), ("1", 8), ("2", 4), ("pool", 2))
    )
    assert torch.equal(fpn_reshape(levels), fasterrcnn_reshape_transform(levels))
    assert fpn_reshape(levels).shape == (1, 16, 2, 2)


def test_segmentation_and_detection_contexts_know_their_task_and_blocks(make_ctx):
    seg = make_ctx(SEG)
    assert seg.task == "segmentation" and seg.outputs_are_probabilities
    assert seg.num_classes == 21 and seg.blocks()[-1] == "backbone.16"
    assert abs(float(seg.probe().logits.sum()) - 1.0) < 1e-5  # each image's pixel shares
    det = make_ctx(DET)
    assert det.task == "detection" and det.num_classes == 91
    assert det.inputs.first().tensor.shape[-1] == 128  # the detector's min_size, pixels in [0, 1]
    assert det.inputs.mean == [0.0, 0.0, 0.0] and det.blocks()[-1] == "backbone.body.16"
    assert det.probe().levels["backbone"].keys() == {"0", "1", "pool"}


def test_model_task_set_by_hand_must_fit_the_output(make_ctx):
    with pytest.raises(ConfigError, match="model.task=detection needs a list of dicts"):
        make_ctx(
            ["model=resnet18", "model.task=detection", "input=random", "input.shape=[1,3,64,64]"]
        ).probe()


# --------------------------------------------------------------------------- the shapes scenes


def test_shapes_scenes_have_true_masks_and_boxes(make_ctx):
    from vizpipe.pipeline.inputs.shapes import SCENE_CLASSES, render_scene

    ctx = make_ctx(["model=shapes_seg_net", *SCENES])
    batch = ctx.inputs.first()
    assert ctx.inputs.classes == list(SCENE_CLASSES) and ctx.categories == list(SCENE_CLASSES)
    assert batch.masks is not None and batch.masks.shape == (4, 64, 64) and batch.labels == [None] * 4
    for mask, objects in zip(batch.masks, batch.objects, strict=True):
        classes = [c for c, _ in objects]
        assert len(classes) == len(set(classes)) >= 2 and set(classes) <= set(range(1, 7))
        for c, (x0, y0, x1, y1) in objects:  # each box: the pixel edges around its class's pixels
            ys, xs = np.nonzero(mask == c)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert set(np.unique(mask)) == {0, *classes}
    again = render_scene(0, "test", 0, 64, 3)
    assert np.array_equal(again.mask, batch.masks[0])  # a function of (seed, split, index) alone


def test_one_object_shapes_are_unchanged_and_objects_is_checked(make_ctx, compose):
    from vizpipe.pipeline.inputs import check_input

    ctx = make_ctx(["model=shapes_net", "input=shapes", "input.limit=2", "device=cpu"])
    batch = ctx.inputs.first()
    assert batch.masks is None and batch.objects is None and batch.labels == [0, 1]
    with pytest.raises(ConfigError, match="input.objects must be 1 .* or 2..6"):
        check_input(compose(["input=shapes", "input.objects=7"]).input)


# --------------------------------------------------------------------------- targets and their errors


@pytest.mark.parametrize(
    ("overrides", "settings", "match"),
    [
        (
            SEG,
            {"box": 0},
            "cam.box is for detection models, but deeplabv3_mobilenet_v3_large is a segmentation",
        ),
        (SEG, {"mask": "truth"}, "cam.mask=truth needs a data set with true masks, but input=photo has none"),
        (SEG, {"metrics": ["confidence_change"]}, "cam.metrics score a classifier's class probability"),
        (SEG, {"target_class": 21}, r"cam.target_class 21 is out of range .* \(21 classes\)"),
        (
            DET,
            {"method": "gradcam", "layer": "backbone"},
            "returns a dict of FPN levels, for which grad-cam records no gradient",
        ),
        (DET, {"aug_smooth": True}, "cam.aug_smooth=true flips the image"),
        (
            ["model=embedding", "model.name=resnet18", "input=random", "input.shape=[1,3,64,64]"],
            {},
            "set cam.concept=",
        ),
        (
            ["model=resnet18", "input=random", "input.shape=[1,3,64,64]"],
            {"concept": "x.png"},
            "cam.concept is for embedding",
        ),
        (
            ["model=shapes_seg_net", *SCENES, "model.categories=[bg,circle,square,triangle,cross,star,ring]"],
            {"target_class": "cirle"},
            "did you mean 'circle'",
        ),
    ],
)
def test_bad_targets_fail_before_any_work_in_one_line(built, overrides, settings, match):
    ctx = built(overrides)
    with pytest.raises(ConfigError, match=match) as info:
        CamStage().check_model(ctx, CamConfig(**settings))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"score_threshold": 2.0}, r"cam.score_threshold must be in \[0, 1\]"),
        ({"box": [1, 2]}, r"cam.box as a box needs four numbers"),
        ({"box": [5, 5, 1, 1]}, "is empty"),
        ({"box": -1}, "detection index >= 0"),
        ({"mask": ""}, "Invalid value '' for cam.mask"),
    ],
)
def test_target_settings_are_checked_from_the_config_alone(settings, match):
    from conftest import RANDOM_INPUT

    with pytest.raises(ConfigError, match=match):
        CamStage().check_settings(CamConfig(**settings), RANDOM_INPUT)


def test_a_mask_file_of_the_wrong_size_is_refused(built, tmp_path):
    np.save(tmp_path / "m.npy", np.ones((10, 10)))
    with pytest.raises(ConfigError, match=r"is 10×10 but the model's input is 96×96"):
        CamStage().check_model(built(SEG), CamConfig(mask=str(tmp_path / "m.npy")))


def test_a_mask_file_and_true_masks_are_the_summed_regions(make_ctx, tmp_path):
    mask = np.zeros((96, 96), dtype=np.uint8)
    mask[20:60, 30:70] = 255
    from PIL import Image

    Image.fromarray(mask).save(tmp_path / "m.png")
    doc, _ = run_cam(make_ctx(SEG), mask=str(tmp_path / "m.png"), target_class=[3, 7])
    maps = doc.images[0].maps
    assert [m.key for m in maps] == ["3", "7"] and doc.task == "segmentation"
    assert all("summed over its file" in (m.detail or "") and "1600 px" in (m.detail or "") for m in maps)


def test_scenes_with_true_masks_score_each_objects_map(make_ctx):
    ctx = make_ctx(["model=shapes_seg_net", *SCENES])
    doc, _ = run_cam(ctx, mask="truth")
    first = doc.images[0]
    assert len(first.maps) == 3  # one per true object
    assert {m.target_name for m in first.maps} <= {"circle", "square", "triangle", "cross", "star", "ring"}
    for m in first.maps:
        assert set(m.metrics) == {"mask_iou", "energy_in_mask", "centre_mask_iou"}
    assert first.prediction == f"cam/{first.name}/prediction.png"
    assert (ctx.output_dir / first.prediction).is_file()
    assert {"mask_iou", "energy_in_mask", "centre_mask_iou"} <= set(doc.means)


def test_detection_targets_by_index_and_by_box(make_ctx):
    from vizpipe.pipeline.hooks import hook_count, versions

    ctx = make_ctx(DET)
    before = (versions(ctx.model), hook_count(ctx.model), ctx.model.training)
    doc, _ = run_cam(ctx, box=0, score_threshold=0.0)
    (m,) = doc.images[0].maps
    best = doc.images[0].detections[0]
    assert m.key == "det0" and m.target == best.label and m.score == pytest.approx(best.score)
    assert m.detail.startswith("detection 0:")
    assert (versions(ctx.model), hook_count(ctx.model), ctx.model.training) == before  # left as found

    ctx.output_dir = ctx.output_dir.parent / "box"
    ctx._claimed.clear()
    doc, _ = run_cam(ctx, box=[int(v) for v in best.box], score_threshold=0.0)
    (m,) = doc.images[0].maps
    assert m.key.startswith("box_") and m.target == best.label and "your box" in m.detail

    ctx.output_dir = ctx.output_dir.parent / "none"
    ctx._claimed.clear()
    doc, _ = run_cam(ctx, box=10_000)
    (m,) = doc.images[0].maps
    assert not m.valid and "there is no detection 10000" in m.invalid_reason


def test_an_embedding_concept_folder_is_averaged(make_ctx, tmp_path):
    from PIL import Image
    from vizpipe.pipeline.inputs import build_like
    from vizpipe.pipeline.inputs.images import bundled_photo

    photo = Image.open(bundled_photo()).convert("RGB")
    folder = tmp_path / "flags"
    folder.mkdir()
    photo.crop((0, 0, 200, 200)).save(folder / "a.png")
    photo.crop((10, 10, 210, 210)).save(folder / "b.png")
    ctx = make_ctx(
        ["model=embedding", "model.name=resnet18", "input=photo", "input.resize=96", "input.crop=96"]
    )
    doc, stage = run_cam(ctx, concept=str(folder))
    (spec,) = stage.plan.targets.specs
    assert spec.concept_images == 2 and spec.key == "concept_flags"
    with torch.no_grad():
        feats = ctx.model(build_like(ctx.inputs, kind="image", path=str(folder)).first().tensor)
        mine = ctx.model(ctx.inputs.first().tensor)[0]
    assert torch.allclose(spec.concept, feats.mean(dim=0), atol=1e-5)
    (m,) = doc.images[0].maps
    assert m.score == pytest.approx(
        float(nn.functional.cosine_similarity(mine, feats.mean(dim=0), dim=0)), abs=1e-5
    )
    assert doc.images[0].top5 == [] and m.valid


def test_a_detector_object_in_train_mode_is_inspected_and_handed_back_as_found(tmp_path):
    """vizpipe.inspect of a torchvision detector left in train mode (where it wants targets): the
    run keeps it in eval mode, reads its pixels raw (it normalises inside) and puts its mode back."""
    import torchvision

    import vizpipe

    torch.manual_seed(0)
    model = torchvision.models.get_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        weights=None,
        weights_backbone=None,
        min_size=96,
        max_size=96,
        box_score_thresh=0.0,
    ).train()
    images = torch.rand(1, 3, 96, 96)
    run = vizpipe.inspect(model, images, stages=["cam"], out=tmp_path / "run", cam={"score_threshold": 0.0})
    doc = CamDoc.load(tmp_path / "run" / "cam" / "cam.json")
    assert doc.task == "detection" and doc.images[0].detections and run["cam"].summary
    assert model.training and all(m.training for m in model.modules())  # as the caller left it


def test_per_layer_maps_of_a_segmentation_model(make_ctx):
    doc, _ = run_cam(make_ctx(SEG), layer=["backbone.12", "backbone.16"], per_layer=True)
    layers = [m.layer for m in doc.images[0].maps]
    assert layers == ["backbone.12+backbone.16", "backbone.12", "backbone.16"]
    assert len({m.key for m in doc.images[0].maps}) == 1  # the same target on every layer
