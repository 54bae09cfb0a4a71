"""Hydra's launchers, for real: one sweep under basic, joblib, submitit_local and a local Ray cluster.

Each run is the CLI in a temporary sweep folder. Every launcher must give the basic launcher's
``.npy`` files, a sweep index that lists every job with its status, and, for the job that fails
(an unknown layer), exit status 1 while the other jobs' results are kept. The launchers come with
the cluster extra (``pip install -e '.[cluster]'``; ``./dev.sh test`` installs it); without it
these tests are skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from vizpipe.pipeline.report import collect_sweep

pytestmark = [pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [
    "-m",
    "model=resnet18",
    "device=cpu",
    "input=random",
    "input.shape=[1,3,64,64]",
    "stages=[cam]",
    "cam.layer=layer3,layer4,layer9",  # layer9 does not exist: that job fails, the others run
    "report.markdown=false",
]
JOBS = ["0_cam.layer=layer3", "1_cam.layer=layer4", "2_cam.layer=layer9"]
#: torch threads in every process of these sweeps: what a joblib worker gets with n_jobs=2 (the
#: callback's cores // n_jobs). The maps are compared byte for byte, and a convolution's float
#: sums depend on how many threads split it, so every launcher must run with the same count.
CORES = len(os.sched_getaffinity(0))
THREADS = max(1, CORES // min(2, CORES))
ENV = {"OMP_NUM_THREADS": str(THREADS)}


def needs(module: str, pip: str) -> None:
    """Skip (with the reason) when the launcher's package is not installed."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the cluster extra (pip install -e '.[cluster]'): {pip} is not installed")


def npys(sweep: Path, job: str) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted((sweep / job).rglob("*.npy"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The sweep under Hydra's basic launcher (every job in this process, one after another)."""
    from conftest import run_cli

    sweep = tmp_path_factory.mktemp("basic") / "sweep"
    out = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}"], env=ENV)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "1 sweep job(s) failed: 2_cam.layer=layer9" in out.stderr
    return sweep


def check(sweep: Path, reference: Path, out: subprocess.CompletedProcess) -> None:
    """Exit 1 naming the failed job; same folders and .npy as the basic launcher; a complete index."""
    assert out.returncode == 1, (out.stdout[-2000:], out.stderr[-2000:])
    assert "job 2_cam.layer=layer9 failed" in out.stderr + out.stdout
    assert sorted(p.name for p in sweep.iterdir() if p.name[0].isdigit()) == JOBS
    for job in JOBS[:2]:
        ours, theirs = npys(sweep, job), npys(reference, job)
        assert ours and ours.keys() == theirs.keys(), job
        for name in ours:
            assert np.array_equal(ours[name], theirs[name]), (job, name)
    status = {j.name: j.status for j in collect_sweep(sweep).jobs}
    assert status == {JOBS[0]: "ok", JOBS[1]: "ok", JOBS[2]: "failed"}
    index = (sweep / "index.html").read_text()
    assert all(job in index for job in JOBS)
    last = max((sweep / job / "manifest.json").stat().st_mtime_ns for job in JOBS)
    assert (sweep / "index.html").stat().st_mtime_ns >= last  # written after the last job


@pytest.mark.slow
def test_basic_launcher_reference(reference):
    status = {j.name: j.status for j in collect_sweep(reference).jobs}
    assert status == {JOBS[0]: "ok", JOBS[1]: "ok", JOBS[2]: "failed"}
    assert (reference / "index.html").is_file()


@pytest.mark.slow
def test_joblib(cli, tmp_path, reference):
    """Two local worker processes; each worker's torch gets cores // n_jobs threads."""
    needs("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
    sweep = tmp_path / "sweep"
    out = cli(
        [*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"], env=ENV
    )
    check(sweep, reference, out)
    logs = "".join((sweep / job / "run.log").read_text() for job in JOBS)
    assert f"torch uses {THREADS} thread(s)" in logs


@pytest.mark.slow
def test_submitit_local(cli, tmp_path, reference):
    """submitit's local executor: one process per job, as on a Slurm node."""
    needs("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
    sweep = tmp_path / "sweep"
    out = cli(
        [
            *SWEEP,
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            f"hydra.sweep.dir={sweep}",
        ],
        env=ENV,
    )
    check(sweep, reference, out)


def test_slurm_config_is_ready():
    """conf/hydra/launcher/slurm.yaml: the submitit_slurm launcher with the documented keys."""
    needs("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
    import vizpipe.pipeline.config_store  # noqa: F401 - registers the schema
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            overrides=overrides,
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 2, 60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_cluster():
    """A local Ray cluster (``ray start --head --block``) for the test; stopped by its process group."""
    needs("ray", "ray")
    needs("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="vzray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, **ENV, "RAY_AUTH_MODE": "disabled"}  # a throwaway cluster on this machine only
    exe = Path(sys.executable).parent / "ray"  # the venv's ray script, beside its python
    cmd = [str(exe), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    cmd += ["--disable-usage-stats", "--block", f"--temp-dir={temp}"]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"ray start exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("the local Ray cluster did not start within 120 s")
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what SIGTERM left of the cluster's processes
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_cluster(cli, tmp_path, reference, ray_cluster):
    """hydra/launcher=ray_cluster against a running Ray cluster (as on a remote one)."""
    address, env = ray_cluster
    sweep = tmp_path / "sweep"
    args = [*SWEEP, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}"]
    out = cli([*args, f"hydra.sweep.dir={sweep}"], env={**ENV, "RAY_AUTH_MODE": env["RAY_AUTH_MODE"]})
    check(sweep, reference, out)


# =========================================================================== a worker killed

KILL_SWEEP = [
    "-m",
    "model=resnet18",
    "device=cpu",
    "input=random",
    "input.shape=[96,3,64,64]",
    "input.limit=null",
    "input.batch_size=8",
    "stages=[cam]",
    "cam.layer=layer2,layer3,layer4",
    "report.markdown=false",
]
KILL_JOBS = ["0_cam.layer=layer2", "1_cam.layer=layer3", "2_cam.layer=layer4"]


def kill_a_worker(
    tmp_path: Path, launcher: list[str], env: dict[str, str]
) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the sweep, ``kill -9`` the process running job 0 once its CAM stage has finished a
    batch, and let the sweep end."""
    import json

    sweep = tmp_path / "sweep"
    e = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    e.update(env)
    cmd = [sys.executable, str(ROOT / "run.py"), *KILL_SWEEP, *launcher, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    job = sweep / KILL_JOBS[0]
    progress = job / ".vizpipe" / "progress" / "cam.jsonl"
    deadline = time.time() + 600
    while not (progress.is_file() and progress.read_text().count("\n") >= 1):
        assert time.time() < deadline and proc.poll() is None, "job 0 never finished a CAM batch"
        time.sleep(0.05)
    os.kill(json.loads((job / ".vizpipe" / "owner.json").read_text())["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=900)
    return sweep, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def check_killed(sweep: Path, out: subprocess.CompletedProcess, signal_known: bool = True) -> None:
    """The killed job failed with its signal, the others finished, the index lists all; exit 1;
    resume= runs the killed job only and the sweep ends ok."""
    from vizpipe.pipeline.manifest import load

    assert out.returncode == 1, (out.stdout[-2000:], out.stderr[-2000:])
    assert f"job {KILL_JOBS[0]} failed: the worker process running this job was killed" in out.stderr, (
        out.stderr
    )
    assert {j.name: j.status for j in collect_sweep(sweep).jobs} == {
        KILL_JOBS[0]: "failed",
        KILL_JOBS[1]: "ok",
        KILL_JOBS[2]: "ok",
    }
    killed = load(sweep / KILL_JOBS[0])
    if signal_known:
        assert killed["interrupted"]["signal"] == "SIGKILL"
    assert killed["interrupted"]["resume"].endswith(f"resume={sweep}")
    index = (sweep / "index.html").read_text()
    assert all(job in index for job in KILL_JOBS)
    done = {job: (sweep / job / "manifest.json").stat().st_mtime_ns for job in KILL_JOBS[1:]}
    from conftest import run_cli

    again = run_cli([*KILL_SWEEP, f"resume={sweep}"], env=ENV)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {j.name: j.status for j in collect_sweep(sweep).jobs} == dict.fromkeys(KILL_JOBS, "ok")
    assert {job: (sweep / job / "manifest.json").stat().st_mtime_ns for job in KILL_JOBS[1:]} == done


@pytest.mark.slow
def test_joblib_worker_killed(tmp_path):
    """joblib's pool stops every worker when one dies: the job whose worker was killed fails
    with SIGKILL, the job stopped with it resumes in a new pool, the third runs."""
    needs("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
    sweep, out = kill_a_worker(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ENV)
    check_killed(sweep, out)


@pytest.mark.slow
def test_submitit_local_worker_killed(tmp_path):
    """submitit's other jobs go on: the killed one fails, the sweep ends with every job recorded."""
    needs("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    sweep, out = kill_a_worker(tmp_path, launcher, ENV)
    check_killed(sweep, out, signal_known=False)  # read from /proc while a zombie: a race with submitit


@pytest.mark.slow
def test_ray_worker_killed(tmp_path, ray_cluster):
    """A Ray worker killed, with Ray's task retries off: its task fails, the others finish."""
    address, env = ray_cluster
    launcher = [
        "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={address}",
        "+hydra.launcher.ray.remote.max_retries=0",
    ]
    sweep, out = kill_a_worker(tmp_path, launcher, {**ENV, "RAY_AUTH_MODE": env["RAY_AUTH_MODE"]})
    check_killed(sweep, out, signal_known=False)


@pytest.mark.slow
def test_ray_retries_a_killed_worker_by_resuming(tmp_path, ray_cluster):
    """Ray's own retry of a task whose worker died (max_retries): the job resumes in its folder
    from its finished batches and the sweep ends ok."""
    from vizpipe.pipeline.manifest import load

    address, env = ray_cluster
    launcher = ["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}"]
    sweep, out = kill_a_worker(tmp_path, launcher, {**ENV, "RAY_AUTH_MODE": env["RAY_AUTH_MODE"]})
    assert out.returncode == 0, out.stderr[-2000:]
    assert {j.name: j.status for j in collect_sweep(sweep).jobs} == dict.fromkeys(KILL_JOBS, "ok")
    assert load(sweep / KILL_JOBS[0])["resumed"]
