"""Faults: a failing sweep job, Ctrl-C during a stage, and many CAM runs in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
SMALL = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]"]


def test_sweep_with_one_failing_job(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", *SMALL, "stages=[summary,cam]", "cam.target_class=5,0", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "1 sweep job(s) failed: 0_cam.target_class=5" in last and "out of range" in last
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0_cam.target_class=5", "1_cam.target_class=0"]
    manifests = [json.loads((j / "manifest.json").read_text()) for j in jobs]
    assert [m["status"] for m in manifests] == ["failed", "ok"]
    assert "5" in manifests[0]["setup"]["error"]
    arts = [a["path"] for s in manifests[1]["stages"] for a in s["artifacts"]]
    assert any(a.endswith(".npy") for a in arts) and all((jobs[1] / a).is_file() for a in arts)
    index = (sweep / "index.html").read_text()
    assert "failed" in index and jobs[0].name in index and jobs[1].name in index


def default_sigint() -> None:
    """In the child before exec: SIGINT's default action, whatever the parent does with it.

    A shell starts background jobs (``cmd &``, nohup, CI runners) with SIGINT ignored, children
    inherit SIG_IGN, and Python then installs no KeyboardInterrupt handler: the signal this test
    sends would be lost and the test would fail for a reason that is not vizpipe's.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_a_stage_keeps_completed_work(tmp_path):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "model=vgg11",
            "stages=[summary,cam]",
            "cam.method=scorecam",
            "cam.batch_size=2",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                m = json.loads((run / "manifest.json").read_text())
                if any(s["name"] == "cam" and s["status"] == "running" for s in m["stages"]):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail("cam stage never started")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    m = json.loads((run / "manifest.json").read_text())
    status = {s["name"]: s for s in m["stages"]}
    assert m["status"] == "interrupted"
    assert status["summary"]["status"] == "ok" and status["cam"]["status"] == "interrupted"
    for a in status["summary"]["artifacts"]:
        assert (run / a["path"]).is_file()
