"""No silent wrong results, no lost outputs: each case reproduced the way a user met it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, run_cli
from PIL import Image
from vizpipe.pipeline.runner import run_pipeline, shared_config
from vizpipe.stages.cam.record import CamDoc

SMALL = ["model=seed_net", "input=random", "input.shape=[2,3,32,32]", "report.enabled=false"]


def run(overrides: list[str], out: Path):
    result = run_pipeline(compose_config(overrides), out)
    return result, json.loads((out / "manifest.json").read_text())


def _image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- names


def test_colliding_image_names_get_unique_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    files = [
        _image(folder / "a.jpg", 1),
        _image(folder / "a.png", 2),
        _image(folder / "a_1.jpg", 3),
        _image(folder / "x" / "b.png", 4),
        _image(folder / "y" / "b.png", 5),
        _image(folder / "C.png", 6),
        _image(folder / "c.png", 7),
        _image(folder / "a,b=c ü 写.png", 8),
        _image(folder / "a_b_c.png", 9),
    ]
    out = tmp_path / "run"
    result, m = run(
        [
            "model=seed_net",
            "input=image",
            f"input.path={folder}",
            "input.resize=32",
            "input.crop=32",
            "stages=[features,cam]",
            "report.enabled=false",
        ],
        out,
    )
    assert result.ok, result.error
    doc = CamDoc.load(out / "cam" / "cam.json")
    assert sorted(Path(im.source) for im in doc.images) == sorted(files)  # the original path beside it
    names = [im.name for im in doc.images]
    assert len({n.casefold() for n in names}) == len(files), names  # case-insensitive file systems too
    paths = [a["path"] for s in m["stages"] for a in s["artifacts"]]
    assert len(paths) == len(set(paths))
    for im in doc.images:  # every image's maps are its own: the overlay shows its pixels
        assert all(mp.npy.startswith(f"cam/{im.name}/") for mp in im.maps)
    feats = json.loads((out / "features" / "stats.json").read_text())
    assert set(feats["sources"]) == set(names) and sorted(map(Path, feats["sources"].values())) == sorted(
        files
    )
    # readable names where nothing collides
    assert "a_1" in names and any(n.startswith("a_b_c_") for n in names)


# --------------------------------------------------------------------------- models and layouts


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("swin_t", "features.5"),
        pytest.param("vit_b_16", "encoder.layers.encoder_layer_5", marks=pytest.mark.slow),
    ],
)
def test_channels_last_and_token_layers_are_drawn_as_maps(tmp_path: Path, name: str, layer: str) -> None:
    size = 224
    out = tmp_path / "run"
    result, _ = run(
        [
            "model=torchvision",
            f"model.name={name}",
            "input=random",
            f"input.shape=[1,3,{size},{size}]",
            "stages=[features]",
            f"features.layers=[{layer}]",
            "features.max_channels=16",
            "report.enabled=false",
        ],
        out,
    )
    assert result.ok, result.error
    entry = json.loads((out / "features" / "stats.json").read_text())["layers"][layer]
    n, c, h, w = entry["maps"]
    assert (h, w) == (14, 14) and c in (384, 768)  # channels, not rows of the image, are the tiles
    assert entry["layout"] == ("nhwc" if name == "swin_t" else "tokens")
    assert len(entry["channels"]) == c
    raw = np.load(out / entry["npy"])  # the layer's own output, as it is
    assert list(raw.shape) == entry["shape"]
    with Image.open(out / entry["grids"]["random_0"]) as im:
        assert im.size[0] == im.size[1]  # 4×4 tiles of 14×14 maps: a square grid, not a strip


@pytest.mark.slow
def test_the_default_run_works_for_vit_and_swin(tmp_path: Path) -> None:
    for name in ("vit_b_16", "swin_t"):
        out = tmp_path / name
        result, m = run(
            [
                "model=torchvision",
                f"model.name={name}",
                "input=random",
                "input.shape=[1,3,224,224]",
                "stages=[summary,kernels,features,cam]",
            ],
            out,
        )
        assert result.ok, (name, result.error)
        html = (out / "report.html").read_text()
        assert ("tokens:" if name == "vit_b_16" else "channels-last") in html  # the report says the reshape


@pytest.mark.slow
def test_vit_at_random_init_draws_flat_maps_marked_invalid_and_breaks_ties_alike(tmp_path: Path) -> None:
    """torchvision zero-inits vit_b_16's head: every output is 0, so the map is all zero. It is marked
    invalid with the reason, warned, badged in the report and left out of the means; the top-5 list
    and the "top-1 prediction" map agree on the tie (class 0 first, as torch.argmax breaks it)."""
    out = tmp_path / "vit"
    result, manifest = run(
        ["model=vit_b_16", "input=random", "input.shape=[1,3,224,224]", "stages=[cam]"], out
    )
    assert result.ok, result.error
    doc = CamDoc.load(out / "cam" / "cam.json")
    (image,) = doc.images
    assert [p.class_index for p in image.top5] == [0, 1, 2, 3, 4]
    (m,) = image.maps
    assert m.target == 0 and m.valid is False
    assert m.invalid_reason == "flat map (every pixel 0): no spatial evidence for the class at this layer"
    assert doc.means["score"] is None
    assert any("1 of 1 map(s) are invalid (1 × flat map" in w for w in manifest["warnings"])
    assert "invalid: flat map" in (out / "report.html").read_text()


def test_torchvision_without_a_name_is_an_error(tmp_path: Path) -> None:
    proc = run_cli(["model=torchvision", "stages=[summary]", f"hydra.run.dir={tmp_path / 'r'}"])
    assert proc.returncode != 0
    assert "model.name is required" in proc.stderr.strip().splitlines()[-1]


def test_a_detection_model_by_name_builds_offline_and_says_its_task(tmp_path: Path) -> None:
    """model=torchvision with a detector's name: random init, backbone weights off (no download)."""
    overrides = ["model=torchvision", "model.name=fasterrcnn_mobilenet_v3_large_320_fpn", "stages=[summary]"]
    result, _ = run([*overrides, "+model.kwargs.min_size=64", "+model.kwargs.max_size=64"], tmp_path)
    assert result.ok, result.error
    assert (tmp_path / "summary" / "summary.txt").read_text().startswith("=====")


# --------------------------------------------------------------------------- inputs


def test_nan_input_warns_marks_top5_invalid_and_the_report_renders(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[1, 0, 3, 3] = float("nan")
    path = tmp_path / "batch.pt"
    torch.save(x, path)
    out = tmp_path / "run"
    result, m = run(["model=seed_net", "input=tensor", f"input.path={path}", "stages=[cam]"], out)
    assert result.ok, result.error
    warnings = [w for w in m["warnings"] if "batch_1" in w and "NaN" in w]
    assert len(warnings) == 1, m["warnings"]
    doc = CamDoc.load(out / "cam" / "cam.json")
    good, bad = doc.images
    assert good.valid and all(p.prob is not None for p in good.top5)
    assert not bad.valid and all(p.prob is None for p in bad.top5) and not bad.maps[0].valid
    html = (out / "report.html").read_text()
    assert 'data-section="cam"' in html and "invalid" in html


def test_a_raw_tensor_is_drawn_as_it_is(tmp_path: Path) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # [0, 1] pixels
    path = tmp_path / "raw.pt"
    torch.save(x, path)
    out = tmp_path / "run"
    result, _ = run(
        [
            "model=seed_net",
            "input=tensor",
            f"input.path={path}",
            "input.normalized=false",
            "stages=[cam]",
            "cam.image_weight=1.0",
        ],
        out,
    )
    assert result.ok, result.error
    doc = CamDoc.load(out / "cam" / "cam.json")
    overlay = np.asarray(Image.open(out / doc.images[0].maps[0].overlay)).astype(int)
    want = np.uint8(255 * x[0].permute(1, 2, 0).numpy()).astype(int)  # image_weight=1: the image itself
    assert np.abs(overlay - want).max() <= 1


def test_a_folder_larger_than_the_limit_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "imgs"
    for i in range(5):
        _image(folder / f"{i}.png", i)
    out = tmp_path / "run"
    result, _ = run(
        [
            "model=seed_net",
            "input=image",
            f"input.path={folder}",
            "input.limit=3",
            "input.batch_size=2",
            "input.resize=32",
            "input.crop=32",
            "stages=[cam]",
        ],
        out,
    )
    assert result.ok, result.error
    said = [r.message for r in caplog.records if "input.limit" in r.message]
    assert len(said) == 1 and "first 3 of 5" in said[0] and "input.limit=null" in said[0]
    assert [im.name for im in CamDoc.load(out / "cam" / "cam.json").images] == ["0", "1", "2"]


# --------------------------------------------------------------------------- numbers


def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in [*model.state_dict().items()]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize(
    "stage",
    [
        ["summary", "summary.mode=train"],
        ["kernels"],
        ["features"],
        ["cam"],
        ["cam", "cam.method=scorecam"],
        ["cam", "cam.method=ablationcam"],
        ["tensorboard"],
    ],
)
def test_every_stage_leaves_parameters_and_buffers_bit_identical(make_ctx, stage: list[str]) -> None:
    from vizpipe.pipeline.registry import get_stage
    from vizpipe.pipeline.schema import settings_of

    overrides = ["model=resnet18", "input=random", "input.shape=[2,3,32,32]", *stage[1:]]
    cfg = compose_config(overrides)
    ctx = make_ctx(overrides)
    before = _fingerprint(ctx.model)
    s = get_stage(stage[0])
    settings = settings_of(cfg, stage[0])
    s.check_settings(settings, shared_config(cfg))
    s.check_model(ctx, settings)
    s.run(ctx, settings)
    assert _fingerprint(ctx.model) == before  # BatchNorm statistics too (summary.mode=train)


def test_summary_in_train_mode_does_not_change_later_stages(tmp_path: Path) -> None:
    base = [
        "model=resnet18",
        "input=random",
        "input.shape=[2,3,32,32]",
        "features.layers=[layer1]",
        "report.enabled=false",
    ]
    run([*base, "stages=[features]"], tmp_path / "a")
    run([*base, "stages=[summary,features]", "summary.mode=train"], tmp_path / "b")
    assert np.array_equal(
        np.load(tmp_path / "a/features/layer1.npy"), np.load(tmp_path / "b/features/layer1.npy")
    )


def test_probabilities_come_from_what_the_model_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result, _ = run([*SMALL, "stages=[cam]"], out)  # seed_net ends in a sigmoid: outputs are probabilities
    assert result.ok, result.error
    from vizpipe.pipeline.factory import build_context

    ctx = build_context(compose_config(SMALL), tmp_path / "ctx")
    with torch.no_grad():
        out_probs = ctx.model(ctx.inputs.tensor)[:, 0].tolist()
    doc = CamDoc.load(out / "cam" / "cam.json")
    assert [im.top5[0].prob for im in doc.images] == pytest.approx(out_probs)  # not sigmoid(sigmoid(x))
    assert [im.maps[0].score for im in doc.images] == pytest.approx(out_probs)


def test_method_arguments_are_checked_against_the_signature(tmp_path: Path) -> None:
    ok, _ = run(
        [
            *SMALL,
            "stages=[cam]",
            "cam.method=refinecam",
            "+cam.kwargs.base_method=gradcam",
            "cam.layer=[conv1,conv2]",
        ],
        tmp_path / "a",
    )
    assert ok.ok, ok.error
    bad, _ = run(
        [*SMALL, "stages=[cam]", "cam.method=refinecam", "+cam.kwargs.base_methd=gradcam"], tmp_path / "b"
    )
    assert (
        not bad.ok
        and "Unknown cam.kwargs key for RefineCAM 'base_methd'; did you mean 'base_method'" in bad.error
    )


def test_each_metric_says_what_it_scores(tmp_path: Path) -> None:
    from vizpipe.pipeline.metrics.registry import METRICS

    assert METRICS["arcc"].target == METRICS["coherency"].target == "raw"  # the library's convention
    assert METRICS["road_combined"].target == METRICS["confidence_change"].target == "softmax"
    out = tmp_path / "run"
    result, _ = run(
        [
            "model=resnet18",
            "input=random",
            "input.shape=[1,3,32,32]",
            "stages=[cam]",
            "cam.layer=layer3",
            "cam.metrics=[complexity,confidence_change]",
            "report.enabled=false",
        ],
        out,
    )
    assert result.ok, result.error
    doc = CamDoc.load(out / "cam" / "cam.json")
    assert (
        "softmax" in doc.metric_targets["confidence_change"]
        and doc.metric_targets["complexity"] == "the map alone"
    )


def test_features_capture_inputs_outputs_or_both(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result, _ = run([*SMALL, "stages=[features]", "features.layers=[conv2]", "features.capture=both"], out)
    assert result.ok, result.error
    layers = json.loads((out / "features" / "stats.json").read_text())["layers"]
    assert set(layers) == {"conv2", "conv2 (input)"}
    assert layers["conv2"]["shape"] == [2, 64, 11, 11] and layers["conv2 (input)"]["shape"] == [2, 32, 15, 15]
    assert layers["conv2 (input)"]["npy"] == "features/conv2_input.npy"


# --------------------------------------------------------------------------- the run folder


def test_a_used_run_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first, _ = run([*SMALL, "stages=[summary]"], out)
    assert first.ok
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = run_pipeline(compose_config([*SMALL, "stages=[kernels]"]), out)
    assert not again.ok and "already holds another run" in again.error and "hydra.run.dir" in again.error
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_on_error_continue_skips_only_the_stage_that_failed_validation(tmp_path: Path) -> None:
    result, m = run(
        [*SMALL, "stages=[summary,cam,kernels]", "cam.layer=linear1", "on_error=continue"], tmp_path
    )
    assert not result.ok
    status = {s["name"]: s["status"] for s in m["stages"]}
    assert status == {"summary": "ok", "cam": "failed", "kernels": "ok"}
    assert "linear1" in next(s for s in m["stages"] if s["name"] == "cam")["error"]


def test_torchinfo_failure_shows_its_root_cause(tmp_path: Path) -> None:
    result, _ = run(
        [
            "model=resnet18",
            "input=random",
            "input.shape=[1,3,32,32]",
            "stages=[summary]",
            "summary.mode=train",
            "report.enabled=false",
        ],
        tmp_path,
    )
    assert not result.ok
    assert "torchinfo could not run resnet18 in train mode" in result.error
    assert "Expected more than 1 value per channel when training" in result.error
