"""Hydra callbacks: the sweep index, written once when the sweep ends; torch threads per worker.

``index.html`` is read from the job folders on disk, so it is written once, at the end:
``on_multirun_end`` runs in the process that launched the sweep after every job finished. A
1,000-job sweep thus pays for one index, not 1,000 (``benchmarks/sweep.py`` measures both).

Hydra skips ``on_multirun_end`` when a job raised: a job of a launcher's worker process (joblib,
submitit, ray) raises ``vizpipe.pipeline.cli.PipelineFailed`` when it fails, so the launcher reports it.
For that case ``on_job_end`` (in the worker) rewrites the index after a *failed* job, and the
process that launched the sweep rewrites it once more when it exits (``atexit``), so jobs that
finished after the failure are in it too. Under the basic launcher failed jobs do not raise
(``vizpipe.pipeline.cli.finish``) and ``on_multirun_end`` always runs. ``python -m vizpipe.report
<sweep_dir>`` rebuilds the index at any time.

``TorchThreadsCallback`` splits the machine's cores between the joblib launcher's workers: several
torch processes that each use every core slow each other down (on a 2-core machine two such
processes ran ~10x slower than with one thread each).
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    """Writes ``<sweep_dir>/index.html`` at the end of a sweep (and after a job that raised)."""

    def __init__(self) -> None:
        self._pending: Path | None = None  # sweep folder whose index is still to be written (atexit)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the launching process: make sure the index gets written even if Hydra skips the end."""
        self._pending = Path(str(config.hydra.sweep.dir))
        atexit.register(self._at_exit)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """After a multirun job that raised (Hydra will skip ``on_multirun_end``): write the index."""
        from hydra.core.utils import JobStatus

        if getattr(job_return, "status", None) != JobStatus.FAILED:
            return
        try:
            from hydra.core.hydra_config import HydraConfig

            if str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
                self._rebuild(Path(HydraConfig.get().sweep.dir))
        except Exception as exc:  # noqa: BLE001 - a summary must never fail a job
            log.warning("Sweep index not updated: %s", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After the whole sweep (Hydra skips this when a job raised)."""
        self._pending = None
        try:
            self._rebuild(Path(config.hydra.sweep.dir))
        except Exception as exc:  # noqa: BLE001
            log.warning("Sweep index not written: %s", exc)

    def _at_exit(self) -> None:
        """The sweep ended without ``on_multirun_end`` (a job raised): write the index now."""
        if self._pending is None:
            return
        sweep, self._pending = self._pending, None
        try:
            if sweep.is_dir():
                print(f"vizpipe: sweep index {self._rebuild(sweep)}")
        except Exception as exc:  # noqa: BLE001
            print(f"vizpipe: warning: sweep index not written: {exc}")

    @staticmethod
    def _rebuild(sweep_dir: Path) -> Path:
        from vizpipe.pipeline.report import write_sweep_index

        path = write_sweep_index(sweep_dir)
        log.info("Sweep index %s", path)
        return path


def cores() -> int:
    """The processors this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class TorchThreadsCallback(Callback):
    """In a joblib launcher's worker: ``torch.set_num_threads(max(1, cores // n_jobs))`` per job.

    ``n_jobs`` is ``hydra.launcher.n_jobs`` (-1: one worker per core; -2: all but one, as joblib
    counts). Other launchers are left alone: the basic launcher runs one job at a time, and
    submitit/ray give each job its own CPUs (``cpus_per_task``, ``num_cpus``).
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before each job: set torch's intra-op threads when a joblib worker runs it."""
        from hydra.core.hydra_config import HydraConfig

        try:
            launcher = HydraConfig.get().launcher
        except ValueError:
            return
        if "joblib" not in str(launcher.get("_target_", "")):
            return
        threads = joblib_threads(int(launcher.get("n_jobs") or -1), cores())
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        log.debug("joblib worker %d: torch uses %d thread(s)", os.getpid(), threads)


def joblib_threads(n_jobs: int, available: int) -> int:
    """Torch threads per joblib worker: the cores split between the workers (at least 1)."""
    workers = n_jobs if n_jobs > 0 else max(1, available + 1 + n_jobs)  # joblib: -1 = all, -2 = all but one
    return max(1, available // min(workers, available))
