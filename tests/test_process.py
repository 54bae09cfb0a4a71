"""pipeline/process.py: the allocator keeps freed memory (fewer page faults), once per process, opt-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vizpipe.pipeline import process
from vizpipe.pipeline import runner as r

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")

# Two 12 MiB blocks allocated, written and freed per step: glibc's own thresholds give the 24 MiB
# back to the system after each step (so every step faults its pages in again); kept, they are reused.
PROBE = """
import ctypes, json, resource
from vizpipe.pipeline.process import keep_freed_memory

kept = keep_freed_memory()
again = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 12 * 1024 * 1024

def step():
    blocks = [libc.malloc(SIZE) for _ in range(2)]
    for b in blocks:
        ctypes.memset(b, 1, SIZE)
    for b in blocks:
        libc.free(b)

for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"kept": kept, "again": again,
                  "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20}))
"""


def probe(env_value: str | None) -> dict:
    """Run PROBE in a fresh interpreter (the setting is per process and cannot be undone)."""
    env = {k: v for k, v in os.environ.items() if k != process.ENV}
    if env_value is not None:
        env[process.ENV] = env_value
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's (Linux)")
def test_kept_memory_is_reused_not_faulted_in_again():
    """Kept: a step reuses its freed blocks (under 1/5 of the page faults glibc's defaults cost)."""
    kept, system = probe(None), probe("system")
    assert (kept["kept"], kept["again"]) == (True, True)
    assert (system["kept"], system["again"]) == (False, False)
    assert system["faults"] > 2000  # 24 MiB = 6,144 pages a step, most faulted in again
    assert kept["faults"] < system["faults"] / 5


@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's (Linux)")
def test_system_value_any_case(monkeypatch):
    """``VIZPIPE_MALLOC= System `` is read trimmed and case-blind: the allocator is left alone."""
    monkeypatch.setattr(process, "_state", {})
    monkeypatch.setenv(process.ENV, " System ")
    assert process.keep_freed_memory() is False
    assert process._state == {"kept": False}


def test_run_pipeline_leaves_the_allocator_alone(compose, tmp_path, monkeypatch):
    """A library call never changes the process's allocator: only the command line's ``main`` does."""
    monkeypatch.setattr(process, "_state", {})
    monkeypatch.delenv(process.ENV, raising=False)
    cfg = compose(
        [
            "model=seed_net",
            "input=random",
            "input.shape=[1,3,32,32]",
            "report.enabled=false",
            "stages=[summary]",
        ]
    )
    result = r.run_pipeline(cfg, tmp_path / "run")
    assert result.status == "ok"
    assert process._state == {}


def test_freeze_startup_turns_the_collector_back_on():
    """After start-up the collector runs again and what existed is frozen out of its passes."""
    import gc

    gc.disable()
    try:
        process.freeze_startup()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
        gc.enable()


class Node:
    """An object that can hold a reference cycle."""


def test_freeze_startup_collects_the_precheck_garbage_before_freezing():
    """Cyclic garbage made after ``freeze_imports`` (the precheck's) is collected, not frozen for the
    life of the process; what is still alive is frozen."""
    import gc
    import weakref

    gc.disable()
    try:
        process.freeze_imports()
        before = gc.get_freeze_count()
        cycles = [Node() for _ in range(2000)]
        for node in cycles:
            node.me = node
        gone = weakref.ref(cycles[0])
        del cycles, node
        alive = Node()
        alive.me = alive
        process.freeze_startup()
        assert gone() is None  # collected, not frozen
        assert gc.get_freeze_count() - before < 2000  # 4,000 objects made (nodes and their dicts)
        assert gc.isenabled() and gc.get_freeze_count() > before  # the survivors are frozen
    finally:
        gc.unfreeze()
        gc.enable()


EXIT = """
import logging, sys, threading, time
from vizpipe.pipeline.process import run_then_exit

logging.basicConfig(filename=sys.argv[1], level=logging.INFO)

def cli():
    def late():
        time.sleep(0.3)
        open(sys.argv[1] + ".thread", "w").write("joined")
    threading.Thread(target=late).start()
    logging.getLogger("x").info("logged line")
    print("no newline at the end", end="")
    sys.exit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])

run_then_exit(cli)
"""


@pytest.mark.parametrize(("status", "code"), [("0", 0), ("3", 3), ("a message", 1)])
def test_run_then_exit_keeps_what_an_exit_must_do(tmp_path, status, code):
    """Status as sys.exit gives it; threads joined, logs flushed, stdout flushed (then os._exit)."""
    log = tmp_path / "x.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", EXIT, str(log), status], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == code
    assert proc.stdout == "no newline at the end"
    assert proc.stderr == ("a message\n" if code == 1 else "")
    assert "logged line" in log.read_text()
    assert (tmp_path / "x.log.thread").read_text() == "joined"


def test_exit_status_mapping():
    """None -> 0, an int as is, anything else printed and 1 (as Python does)."""
    from vizpipe.pipeline.process import exit_status

    assert (exit_status(None), exit_status(0), exit_status(5), exit_status(True)) == (0, 0, 5, True)


def test_unknown_value_warns_with_the_choices(monkeypatch, caplog):
    """VIZPIPE_MALLOC=sytem: one warning naming the value and the choices; freed memory kept."""
    import logging

    monkeypatch.setattr(process, "_state", {})
    monkeypatch.setenv(process.ENV, "sytem")
    with caplog.at_level(logging.WARNING, logger="vizpipe.pipeline.process"):
        kept = process.keep_freed_memory()
    assert [r.getMessage() for r in caplog.records] == [
        "Unknown VIZPIPE_MALLOC value 'sytem'; did you mean 'system'? Valid choices (closest first): "
        "system, keep. Using keep, the default"
    ]
    assert kept is LINUX
