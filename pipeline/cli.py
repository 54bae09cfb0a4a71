"""``run.py``'s helpers: the precheck before Hydra starts, and how a run or sweep ends.

``precheck`` (``pipeline.precheck``) turns a bad command line into one line and exit 2;
``finish`` prints where a run went and exits 1 on failure; in a sweep, failed jobs are counted
and ``sweep_exit`` ends the process with 1 after the others ran; ``run_then_exit`` ends the process
without Python's teardown.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

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


def sweep_values(env_set: Any) -> dict[str, list[str]]:
    """The values each swept key takes, from the job's ``hydra.job.env_set`` (vizpipe's sweeper
    writes them, ``pipeline.schema.SWEEP_VALUES_ENV``); {} for a single run or another sweeper."""
    import json

    from pipeline.schema import SWEEP_VALUES_ENV

    text = (env_set or {}).get(SWEEP_VALUES_ENV)
    try:
        values = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(values, dict):
        return {}
    return {str(k): [str(v) for v in vs] for k, vs in values.items() if isinstance(vs, list)}


def exit_status(code: object) -> int:
    """The process status for ``SystemExit(code)``, as Python maps it (a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_then_exit(cli: Callable[[], None]) -> NoReturn:
    """Run the command line ``cli``, then end the process without Python's teardown.

    With torch, torchvision and pytorch-grad-cam loaded, Python's own exit spends ~0.9 s freeing
    every module (measured on 2 cores: ``import torch, torchvision, pytorch_grad_cam`` takes 3.6 s
    with the normal exit, 2.7 s without), a quarter of a summary run. Everything an exit must do
    still happens, in Python's order: ``threading``'s exit hooks run (executors such as joblib's
    stop their manager threads) and the other non-daemon threads are joined, the ``atexit``
    functions run (logging's flush and close, multiprocessing's and Ray's shutdowns), stdout
    and stderr are flushed; then ``os._exit`` with ``cli``'s status (``sys.exit`` inside it
    included). An exception other than ``SystemExit`` propagates: traceback and normal exit.
    """
    try:
        cli()
        code = 0
    except SystemExit as exc:
        code = exit_status(exc.code)
    threading._shutdown()  # what Python's exit does first: threading's exit hooks, then the joins
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can reach it
            pass
    os._exit(code)


__all__ = [
    "PipelineFailed",
    "exit_status",
    "finish",
    "jobs_run_here",
    "precheck",
    "run_then_exit",
    "sweep_exit",
    "sweep_values",
]
