"""A library call leaves the caller's process as it found it (``vizpipe.inspect``, ``vizpipe.Watch``).

The runner seeds the global random generators, may switch ``torch.use_deterministic_algorithms``
and cuDNN's flags, and logs to the ``vizpipe`` logger; the command line owns its process and does
not mind. ``caller_state`` snapshots what a run may change and puts it back on exit, also after an
error: the python, numpy, torch and every initialised CUDA generator's states, the deterministic
flag (and its warn-only mode), cuDNN's ``benchmark``/``deterministic``, torch's thread count,
vizpipe's console verbosity and torchinfo's module-level forward-pass dict (it keeps the model).
``run_log`` sends the ``vizpipe`` logger to ``<run>/run.log`` (as the command line's logging
config does) and warnings to stderr for the length of the call, then restores the logger. The
model's own state is ``vizpipe.pipeline.hooks.preserved``'s job.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["caller_state", "run_log"]

#: run.log's line format (conf/hydra/job_logging/vizpipe.yaml)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def _snapshot() -> dict[str, Any]:
    import numpy as np
    import torch

    from vizpipe.pipeline import logs

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "initial_seed": torch.initial_seed(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        "threads": torch.get_num_threads(),
        "verbose": logs._verbose,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torchinfo = sys.modules.get("torchinfo.torchinfo")
    if torchinfo is not None:
        state["torchinfo"] = dict(torchinfo._cached_forward_pass)
    return state


def _restore_torchinfo(saved: dict[str, Any] | None) -> None:
    """torchinfo keeps every summary's layers (and so the model) in a module-level dict, whatever
    ``cache_forward_pass`` says; put the dict back as it was so no run's model stays alive."""
    torchinfo = sys.modules.get("torchinfo.torchinfo")
    if torchinfo is None:
        return
    cache = torchinfo._cached_forward_pass
    cache.clear()
    cache.update(saved or {})


def _restore(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    from vizpipe.pipeline import logs

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        # CUDA started during the call: its generators get the seed they would have started from
        torch.cuda.manual_seed_all(state["initial_seed"])
    if (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    ) != (
        state["deterministic"],
        state["warn_only"],
    ):
        torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["warn_only"])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = state["cudnn"]
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    logs._verbose = state["verbose"]
    _restore_torchinfo(state.get("torchinfo"))


@contextlib.contextmanager
def caller_state() -> Iterator[None]:
    """Put the process-wide state a run may change back as it was (see the module docstring)."""
    state = _snapshot()
    try:
        yield
    finally:
        _restore(state)


@contextlib.contextmanager
def run_log(out: Path, *, verbose: bool = False) -> Iterator[None]:
    """``<out>/run.log`` gets every ``vizpipe`` record (DEBUG and up); stderr gets warnings and errors
    (everything with ``verbose``). The logger's level, handlers and propagation are restored on exit."""
    from vizpipe.pipeline.logs import ConsoleFilter, ConsoleFormatter

    logger = logging.getLogger("vizpipe")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    out.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(out / "run.log", encoding="utf-8")
    file.setFormatter(logging.Formatter(LOG_FORMAT))
    file.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleFormatter())
    console.addFilter(ConsoleFilter())
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.handlers = [file, console]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # DEBUG details stay in run.log, not in the caller's own handlers
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.handlers = saved[1]
        logger.propagate = saved[2]
        file.close()
