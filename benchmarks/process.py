"""Helpers shared by the benchmarks: timing whole processes (sweep, data set, cold start) and
composing vizpipe's config in-process (CAM, GPU, train)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process run from the project root; a failure ends the benchmark."""
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def compose(overrides: list[str]) -> Any:
    """The config ``python run.py <overrides>`` would run with (Hydra's Compose API, vizpipe's schema)."""
    import vizpipe.pipeline.config_store  # noqa: F401 - registers the schema
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def precompile() -> None:
    """Byte-compile the project once, so no measured process pays for it."""
    cmd = [sys.executable, "-m", "compileall", "-q", "pipeline", "stages", "run.py", "benchmarks"]
    subprocess.run(cmd, cwd=ROOT, check=True)


class KeepMaps:
    """Stands in for the CAM stage's ``MapWriter`` in ``stages.cam.compute.collect``: keeps the
    maps in memory (``arrays``) instead of writing files, so a benchmark times the maps alone."""

    def __init__(self) -> None:
        self.arrays: list[Any] = []

    def __call__(self, part: Any, maps: Any, rows: Any, marks: Any = None) -> Any:
        self.arrays.extend(maps)
        return rows

    def after(self, callback: Any) -> None:
        """A batch's progress record: nothing is pending, so at once."""
        callback()
