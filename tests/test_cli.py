"""The real command line: run.py in a subprocess, single runs and -m sweeps."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_summary_run_writes_the_numbers(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli(["model=resnet18", "stages=[summary]", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "summary" / "summary.json").read_text())["totals"]["total_params"] == 11689512
    assert f"run folder {run}" in proc.stdout
    m = json.loads((run / "manifest.json").read_text())
    assert m["overrides"] == ["model=resnet18", "stages=[summary]"]
    assert (run / ".hydra" / "config.yaml").exists() and (run / "run.log").exists()


def test_help_and_cfg(cli):
    help_ = cli(["--help"])
    assert help_.returncode == 0 and "model" in help_.stdout and "resnet18" in help_.stdout
    # the groups, each with its public options only (Hydra's own list shows _schema, _base, ...)
    groups = help_.stdout.split("(group=option)")[1].split("== Config ==")[0]
    lines = {ln.split(": ")[0]: ln.split(": ")[1].split(", ") for ln in groups.strip().splitlines()}
    assert lines["input"] == ["cifar10", "image", "imagefolder", "photo", "random", "shapes", "tensor"]
    assert lines["cam"] == ["default"] and "torchvision" in lines["model"] and "sweep" in lines
    assert "_" not in "".join(o[0] for options in lines.values() for o in options)
    job = cli(["--cfg", "job", "model=vgg11"])
    assert job.returncode == 0 and "name: vgg11" in job.stdout and "stages:" in job.stdout


def test_two_job_sweep(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        [
            "-m",
            "model=seed_net",
            "stages=[summary]",
            "input=random",
            "input.shape=[1,3,32,32]",
            "seed=1,2",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_seed=1", "1_seed=2"]
    for job, seed in zip(jobs, (1, 2), strict=True):
        m = json.loads((sweep / job / "manifest.json").read_text())
        assert m["status"] == "ok" and m["seed"] == seed
