"""Timing whole processes, shared by the benchmarks that compare commands (sweep, data set, cold start)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process run from the project root; a failure ends the benchmark."""
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def precompile() -> None:
    """Byte-compile the project once, so no measured process pays for it."""
    cmd = [sys.executable, "-m", "compileall", "-q", "pipeline", "stages", "run.py", "benchmarks"]
    subprocess.run(cmd, cwd=ROOT, check=True)
