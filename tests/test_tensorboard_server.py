"""The real ``tensorboard`` server reads what the stage wrote, checked through its HTTP data API.

The server listens on 127.0.0.1 only, on a free port; every wait is bounded and the server
started here is stopped here (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_tensorboard import SMALL, fake_results, run_stage, write_manifest

STARTUP_S = 60  # bound on the server coming up and loading the event files
KINDS = ("scalars", "images", "histograms", "text")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running ``tensorboard`` process and its data API."""

    def __init__(self, proc: subprocess.Popen, base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log

    def get(self, path: str, **query: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with OPENER.open(url, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if resp.headers.get_content_type() == "application/json" else body

    def post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
        )
        with OPENER.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_for(self, what: str, fetch: Callable[[], Any], ok: Callable[[Any], bool]) -> Any:
        """Poll ``fetch`` until ``ok`` (the server loads event files in the background)."""
        deadline, last = time.monotonic() + STARTUP_S, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tensorboard exited ({self.proc.returncode}): {self.log.read_text()}")
            with contextlib.suppress(OSError, ValueError):
                last = fetch()
                if ok(last):
                    return last
            time.sleep(0.25)
        pytest.fail(f"tensorboard: no {what} after {STARTUP_S}s; last answer {last!r}")


@contextlib.contextmanager
def tensorboard(logdir: Path, tmp_path: Path) -> Iterator[Server]:
    """Start ``tensorboard --logdir LOGDIR`` on 127.0.0.1:<free port>; stop it on exit."""
    exe = Path(sys.executable).with_name("tensorboard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorboard.main"]
    port = free_port()
    cmd += [
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load_fast=false",
        "--reload_interval=2",
    ]
    log = tmp_path / f"tensorboard-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield Server(proc, f"http://127.0.0.1:{port}", log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def assert_clean_log(server: Server) -> None:
    """The server's own console output (it names its address) holds no traceback: it read every
    file without an error. The first check makes the second one read the real output."""
    text = server.log.read_text()
    assert server.base.removeprefix("http://") in text, text
    assert "Traceback" not in text, text


def tags_of(server: Server, kind: str, run: str) -> set[str]:
    return set(server.get(f"/data/plugin/{kind}/tags").get(run, []))


def session_groups(server: Server) -> list[dict[str, Any]]:
    return server.post(
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "startIndex": 0,
            "sliceSize": 100,
            "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        },
    )["sessionGroups"]


@pytest.mark.slow
def test_server_shows_every_kind_for_a_run_folder(make_ctx, compose, tmp_path: Path) -> None:
    """Scalars, images, histograms, text, the graph and the hparams row, with the stage's tags."""
    overrides = ["model=resnet18", *SMALL]
    run = tmp_path / "run"
    ctx = make_ctx(overrides, out=run)
    write_manifest(compose, run, overrides, "tensorboardX")
    ctx.results, pngs = fake_results(ctx)
    res = run_stage(ctx)  # the default backend

    with tensorboard(run, tmp_path) as server:
        expected = {k: set(res.data["tags"][k]) for k in KINDS}
        server.wait_for(
            "text tags", lambda: tags_of(server, "text", "tensorboard"), lambda got: got == expected["text"]
        )
        assert server.get("/data/runs") == ["tensorboard"]  # the run is named by its folder
        listing = server.get("/data/plugins_listing")
        for plugin in ("scalars", "images", "histograms", "text", "graphs", "hparams"):
            assert listing[plugin]["enabled"], plugin
        for kind in KINDS:
            assert tags_of(server, kind, "tensorboard") == expected[kind], kind
        assert {"input/batch", "input/grid", *pngs} == expected["images"]
        assert {"weights/conv1", "biases/fc", "activations/layer1/channel_mean"} <= expected["histograms"]
        assert {"activations/layer1/mean", "hparams/cam_score", "cam/score"} <= expected["scalars"]
        assert server.get("/data/plugin/graphs/info")["tensorboard"]["run_graph"] is True

        # values come through too, not just tag names
        ((_, step, value),) = server.get(
            "/data/plugin/scalars/scalars", run="tensorboard", tag="activations/layer1/mean"
        )
        assert (step, value) == (0, pytest.approx(0.5))
        texts = server.get("/data/plugin/text/text", run="tensorboard", tag="predictions/top5/text_summary")
        assert all(name in texts[0]["text"] for name in ctx.inputs.names)
        (image,) = server.get("/data/plugin/images/images", run="tensorboard", tag="kernels/conv1")
        png = server.get("/data/plugin/images/individualImage?" + image["query"])
        with Image.open(io.BytesIO(png)) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), pngs["kernels/conv1"])
        (group,) = session_groups(server)
        assert group["hparams"] == {
            "model": "resnet18",
            "layer": "layer4",
            "class": "top1",
            "method": "gradcam",
        }
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert metrics["hparams/cam_score"] == pytest.approx(0.4)
        assert set(metrics) == {"hparams/top1_prob", "hparams/cam_score", "hparams/cam_confidence_change"}
    assert_clean_log(server)


@pytest.mark.slow
def test_server_shows_each_sweep_job_as_its_own_run(cli, tmp_path: Path) -> None:
    """``run.py -m`` over both backends: one run per job folder, the same tags in each."""
    sweep = tmp_path / "sweep"
    proc = cli(
        [
            "-m",
            "stages=[summary,tensorboard]",
            "model=seed_net",
            "input=random",
            "input.shape=[1,3,32,32]",
            "tensorboard.backend=tensorboardX,torch",
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/manifest.json"))
    assert len(jobs) == 2 and any("tensorboard.backend=torch" in j for j in jobs), jobs
    runs = {f"{job}/tensorboard" for job in jobs}

    with tensorboard(sweep, tmp_path) as server:
        server.wait_for(
            "both runs' text",
            lambda: server.get("/data/plugin/text/tags"),
            lambda got: set(got) == runs and all(len(got[r]) == 3 for r in runs),
        )
        assert set(server.get("/data/runs")) == runs
        for kind in KINDS:
            per_run = [tags_of(server, kind, r) for r in sorted(runs)]
            assert per_run[0] and per_run[0] == per_run[1], kind  # same tags, both backends
        info = server.get("/data/plugin/graphs/info")
        assert all(info[r]["run_graph"] and info[r]["tags"] == {} for r in runs), info
        groups = session_groups(server)
        assert {g["name"] for g in groups} == runs
        assert all(g["hparams"]["model"] == "seed_net" for g in groups)
    assert_clean_log(server)
