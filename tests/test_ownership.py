"""One owner per run folder (``vizpipe.pipeline.ownership``), and killed runs read ``interrupted``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from vizpipe.pipeline import ownership as own
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.manifest import settled

#: a process that claims FOLDER once GO exists and prints ok or the refusal
CLAIMER = """
import sys, time
from pathlib import Path
from vizpipe.pipeline import ownership
folder, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
try:
    held = ownership.claim(folder)
    (folder / "winner.txt").write_text(str(held.owner.pid))
    print("ok", flush=True)
    time.sleep(0.5)
except ownership.FolderTaken as exc:
    print("refused", exc, flush=True)
"""


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow  # 40 processes started (~8 s)
def test_concurrent_claims_have_one_winner(tmp_path):
    """Four processes claim one folder at the same instant, ten times: each time one wins, the
    others are refused in one line, and nothing but the winner's file is written."""
    for round_ in range(10):
        folder, go = tmp_path / f"run{round_}", tmp_path / f"go{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLAIMER, str(folder), str(go)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        time.sleep(0.3)  # every process waits at the barrier
        go.touch()
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert sorted(o.split()[0] for o in outs) == ["ok", "refused", "refused", "refused"], outs
        refusals = [o for o in outs if o.startswith("refused")]
        shown = "\n".join(refusals)
        assert all("\n" not in o and "vizpipe never mixes two runs" in o for o in refusals), shown
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
            ".vizpipe",
            own.OWNER,
            "winner.txt",
        ]
        winner = json.loads((folder / own.OWNER).read_text())["pid"]
        assert str(winner) == (folder / "winner.txt").read_text()  # the claim is the winner's


def test_claim_refuses_a_used_folder_and_touches_nothing(tmp_path):
    (tmp_path / "manifest.json").write_text('{"status": "interrupted"}')
    (tmp_path / "a.npy").write_bytes(b"x")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*")}
    with pytest.raises(own.FolderTaken) as err:
        own.claim(tmp_path)
    assert "already holds another run's files (a.npy, manifest.json)" in str(err.value)
    assert f"add resume={tmp_path}" in str(err.value)  # an unfinished run: how to finish it
    assert {p: p.read_bytes() for p in tmp_path.rglob("*")} == before


def test_claim_is_held_until_released(tmp_path):
    held = own.claim(tmp_path / "r")
    try:
        assert own.claim(tmp_path / "r") is held  # this process: its own claim
        doc = json.loads((tmp_path / "r" / own.OWNER).read_text())
        assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()
        assert own.alive(doc)
    finally:
        held.release()
    assert list((tmp_path / "r").iterdir()) == []
    assert own.held(tmp_path / "r") is None


def test_claim_new_suffixes_a_taken_timestamp(tmp_path):
    base = tmp_path / "12-00-00"
    claims = [own.claim_new(base) for _ in range(3)]
    try:
        assert [c.folder.name for c in claims] == ["12-00-00", "12-00-00_1", "12-00-00_2"]
    finally:
        for c in claims:
            c.release()
    (base / "report.html").write_text("")  # a finished run there: the next one goes beside it
    again = own.claim_new(base)
    again.release()
    assert again.folder.name == "12-00-00_1"


def test_a_dead_owner_is_interrupted_and_resume_takes_it_over(tmp_path):
    folder = tmp_path / "r"
    (folder / own.HIDDEN).mkdir(parents=True)
    owner = own.Owner(dead_pid(), socket.gethostname(), "2024-01-01T00:00:00+0000", None, "t0")
    (folder / own.OWNER).write_text(json.dumps(owner.__dict__))
    assert not own.alive(owner)
    with pytest.raises(own.FolderTaken, match=rf"was interrupted .*finish it with resume={folder}"):
        own.claim(folder)
    held = own.claim(folder, resume=True)
    try:
        assert json.loads((folder / own.OWNER).read_text())["pid"] == os.getpid()
    finally:
        held.release()


def test_alive_tells_a_reused_pid_and_a_silent_host(tmp_path):
    me = own.Owner.me()
    assert own.alive(me)
    if me.pid_start is not None:  # Linux: the same id, another process
        assert not own.alive(own.Owner(me.pid, me.host, "", me.pid_start + 1, "t"))
    beat = tmp_path / "owner.json"
    beat.write_text("{}")
    elsewhere = own.Owner(1, "another-host", "", None, "t")
    assert own.alive(elsewhere, beat)
    old = time.time() - own.STALE_S - 5
    os.utime(beat, (old, old))
    assert not own.alive(elsewhere, beat)


def test_settled_reads_a_killed_run_as_interrupted(tmp_path):
    doc = {
        "status": "running",
        "overrides": ["model=seed_net"],
        "owner": {"pid": dead_pid(), "host": socket.gethostname(), "started": "x"},
        "setup": {"name": "setup", "status": "ok"},
        "stages": [{"name": "summary", "status": "ok"}, {"name": "cam", "status": "running"}],
    }
    got = settled(doc, tmp_path)
    assert got["status"] == "interrupted"
    assert [s["status"] for s in got["stages"]] == ["ok", "interrupted"]
    assert got["interrupted"]["resume"] == f"python run.py model=seed_net resume={tmp_path}"
    live = {**doc, "owner": {"pid": os.getpid(), "host": socket.gethostname(), "started": "x"}}
    assert settled(live, tmp_path)["status"] == "running"
    assert settled({"status": "running"}, tmp_path)["status"] == "running"  # no owner recorded: as it is


def test_readers_see_interrupted(tmp_path):
    """The report, the sweep index, compare and vizpipe.Run read a killed run as interrupted."""
    from vizpipe.pipeline.compare import load_manifest
    from vizpipe.pipeline.report import collect_sweep
    from vizpipe.pipeline.report.run import collect_run

    from vizpipe.runs import Run

    job = tmp_path / "sweep" / "0_seed=1"
    job.mkdir(parents=True)
    doc = {
        "status": "running",
        "overrides": ["seed=1"],
        "owner": {"pid": dead_pid(), "host": socket.gethostname(), "started": "x"},
        "setup": {"name": "setup", "status": "ok", "artifacts": []},
        "stages": [{"name": "cam", "status": "running", "artifacts": []}],
        "report": {"name": "report", "status": "pending", "artifacts": []},
    }
    (job / "manifest.json").write_text(json.dumps(doc))
    assert load_manifest(job)["status"] == "interrupted"
    assert Run.load(job).status == "interrupted"
    assert collect_run(job).manifest["status"] == "interrupted"
    assert [j.status for j in collect_sweep(tmp_path / "sweep").jobs] == ["interrupted"]


def test_a_refused_folder_is_one_config_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="cannot be written"):
        own.claim(tmp_path / "f" / "run")
