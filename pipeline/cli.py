"""``run.py``'s helpers: the precheck before Hydra starts, and how a run or sweep ends.

``precheck`` (``pipeline.precheck``) turns a bad command line into one line and exit 2;
``finish`` prints where a run went and exits 1 on failure; in a sweep, failed jobs are counted
and ``sweep_exit`` ends the process with 1 after the others ran.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.errors import CompactHydraException

from pipeline.precheck import precheck


class PipelineFailed(CompactHydraException):
    """Raised inside a multirun job of a launcher's worker process so the launcher marks it failed.

    A ``CompactHydraException``: when Hydra ends the sweep with it, it prints the one line, no traceback.
    """


# =========================================================================== the command line


# =========================================================================== the exit

#: Failed multirun jobs of this process, for the exit code after the sweep (basic launcher: the
#: jobs run here, one after another). Deliberately process-wide; read once by ``sweep_exit``.
_FAILED_JOBS: list[str] = []
#: the launcher that runs every job in the process that started the sweep
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def jobs_run_here() -> bool:
    """True when this multirun's jobs run in the process that started it (Hydra's basic launcher).

    Other launchers (joblib, submitit, ray) run jobs in worker processes, which need not be
    children of this one (submitit, ray): the launcher's config says which, not the process tree.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().launcher.get("_target_")) == BASIC_LAUNCHER
    except ValueError:  # HydraConfig is not set: called outside a Hydra job
        import multiprocessing

        return multiprocessing.parent_process() is None


def finish(result: Any, *, multirun: bool) -> None:
    """Print the run folder (and report); on failure exit non-zero, or inside a sweep remember it.

    A failed sweep job does not raise (Hydra would print a traceback and skip the sweep's end
    callbacks): the other jobs go on, and ``sweep_exit`` ends the process with status 1. In a
    launcher's worker process (``jobs_run_here`` is False) the job raises ``PipelineFailed`` so
    that launcher sees the failure; Hydra then exits 1 once the batch of jobs has finished.
    """
    print(f"vizpipe: run folder {result.output_dir}")
    if result.report_path is not None:
        print(f"vizpipe: report {result.report_path}")
    if result.ok:
        return
    details = f"details: {result.output_dir / 'run.log'}, manifest: {result.manifest_path}"
    message = f"{result.error or result.status} ({details})"
    if multirun:
        if not jobs_run_here():
            raise PipelineFailed(f"vizpipe: error: job {result.output_dir.name} failed: {message}")
        print(f"vizpipe: error: job {result.output_dir.name} failed: {message}", file=sys.stderr)
        _FAILED_JOBS.append(f"{result.output_dir.name}: {result.error or result.status}")
        return
    print(f"vizpipe: error: {message}", file=sys.stderr)
    sys.exit(1)


def sweep_exit() -> None:
    """After ``-m``: exit 1 with one summary line when any job of this process failed."""
    if _FAILED_JOBS:
        first = _FAILED_JOBS[0]
        more = f" (and {len(_FAILED_JOBS) - 1} more)" if len(_FAILED_JOBS) > 1 else ""
        print(f"vizpipe: error: {len(_FAILED_JOBS)} sweep job(s) failed: {first}{more}", file=sys.stderr)
        sys.exit(1)


__all__ = ["PipelineFailed", "finish", "jobs_run_here", "precheck", "sweep_exit"]
