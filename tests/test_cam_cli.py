"""CAM through the real CLI: the layer × class sweep and the declarative sweeps in conf/sweep/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

TINY = ["input=random", "input.shape=[1,3,64,64]"]


def jobs(sweep: Path) -> list[Path]:
    """Job folders of a sweep, in job order."""
    return sorted(
        (p for p in sweep.iterdir() if p.is_dir() and (p / "manifest.json").exists()),
        key=lambda p: int(p.name.split("_", 1)[0]),
    )


def job_result(job: Path) -> tuple[dict, dict]:
    manifest = json.loads((job / "manifest.json").read_text())
    cam = json.loads((job / "cam" / "cam.json").read_text())
    return manifest, cam


@pytest.mark.parametrize("name", ["cam_layers", "cam_classes", "cam_methods"])
def test_sweep_configs_declare_params_and_only_the_cam_stage(name):
    import vizpipe.pipeline.config_store  # noqa: F401 - registers the schema
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = Path(__file__).resolve().parent.parent / "conf"
    text = (conf / "sweep" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(
                config_name="config", overrides=[f"sweep={name}", "model=resnet50"], return_hydra_config=True
            )
    finally:
        GlobalHydra.instance().clear()
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert params["stages"] == "[cam]"
    key = {"cam_layers": "cam.layer", "cam_classes": "cam.target_class", "cam_methods": "cam.method"}[name]
    values = str(params[key]).split(",")
    assert len(values) >= 3
    if name == "cam_layers":
        assert values == ["layer1", "layer2", "layer3", "layer4"]  # resnet50's blocks
    if name == "cam_methods":
        from vizpipe.pipeline.gradcam.methods import resolve_method

        assert [resolve_method(v).name for v in values][:2] == ["GradCAM", "GradCAMPlusPlus"]


@pytest.mark.slow
def test_layer_times_class_sweep_runs_six_jobs_with_their_own_maps(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        [
            "-m",
            "model=vgg11",
            "stages=[cam]",
            "cam.layer=features.10,features.15,features.20",
            "cam.target_class=1,207",
            *TINY,
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = jobs(sweep)
    assert len(found) == 6
    seen = set()
    for job in found:
        manifest, cam = job_result(job)
        assert manifest["status"] == "ok" and [s["name"] for s in manifest["stages"]] == ["cam"]
        layer, target = cam["layers"][0], cam["targets"]
        assert f"cam.layer={layer}" in job.name and f"cam.target_class={target}" in job.name
        (m,) = cam["images"][0]["maps"]
        assert (m["layer"], m["target"]) == (layer, target)
        for key in ("overlay", "heatmap", "npy"):
            assert (job / m[key]).is_file()
        artifacts = {a["path"] for s in manifest["stages"] for a in s["artifacts"]}
        assert {m["overlay"], m["heatmap"], m["npy"], "cam/cam.json"} <= artifacts
        seen.add((layer, target))
    assert seen == {(f"features.{n}", c) for n in (10, 15, 20) for c in (1, 207)}


@pytest.mark.slow
def test_sweep_cam_layers_takes_the_models_blocks(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "sweep=cam_layers", "model=resnet50", *TINY, f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = jobs(sweep)
    assert [job_result(j)[1]["layers"] for j in found] == [["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    assert all([s["name"] for s in job_result(j)[0]["stages"]] == ["cam"] for j in found)


@pytest.mark.slow
def test_sweep_cam_layers_finds_the_blocks_of_a_torchvision_model(cli, tmp_path):
    """model=torchvision names no blocks in YAML: the sweep finds them (it was refused before)."""
    sweep = tmp_path / "sweep"
    argv = ["-m", "sweep=cam_layers", "model=torchvision", "model.name=efficientnet_b0", *TINY]
    proc = cli([*argv, f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    layers = [job_result(j)[1]["layers"] for j in jobs(sweep)]
    assert layers == [[f"features.{i}"] for i in (1, 2, 3, 5, 8)]  # the blocks the run finds at 64 px


@pytest.mark.slow
def test_sweep_cam_methods_runs_every_listed_method(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        [
            "-m",
            "sweep=cam_methods",
            "model=resnet18",
            "input=random",
            "input.shape=[1,3,32,32]",
            "cam.layer=layer3",
            "cam.batch_size=256",
            "report.enabled=false",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    methods = [job_result(j)[1]["method"] for j in jobs(sweep)]
    assert (
        methods[:3] == ["GradCAM", "GradCAMPlusPlus", "HiResCAM"]
        and "ScoreCAM" in methods
        and "AblationCAM" in methods
    )
    log = (jobs(sweep)[methods.index("ScoreCAM")] / "run.log").read_text()
    # 1 forward for the activations + 1 image x ceil(256 channels / 256)
    assert "ScoreCAM on layer3: about 2 forward passes to run" in log and "2 forward passes done" in log
