"""The command line's process-wide settings: allocator, MKL's reproducibility, garbage collector,
signals, exit.

These change the whole process, so only the command-line entry (``vizpipe.pipeline.cli``, which
owns its process) uses them; a library call (``vizpipe.inspect``, ``run_pipeline``) never does.

``keep_freed_memory``: keep freed memory for reuse instead of faulting it in again.
PyTorch on the CPU allocates every activation and gradient with ``malloc`` and frees it a
moment later. glibc's ``malloc`` adapts its thresholds to the last large blocks it saw and
gives free memory at the top of its heap back to the system; the next step then touches fresh
pages, and every first touch of a 4 KiB page is a page fault. How many depends on the
allocation history of the whole process: measured on the train stage (shapes_net, batch 32),
one model-graph trace or a few TensorBoard writes between steps took a training step from
~1,400 to ~2,900 page faults and from 10.5 to 13.5 ms, and whole 2-epoch runs varied between
75,000 and 420,000 faults for the same work.

``keep_freed_memory`` fixes the thresholds once per process (``mallopt``, glibc only): blocks up
to 32 MiB come from the heap, and free memory at its top is kept (up to ``TRIM_BYTES``) and
reused rather than returned. Steps then run with next to no page faults, whatever ran before
them. The price: the process's resident memory does not shrink after a peak (up to
``TRIM_BYTES`` stays mapped); the peak itself does not grow. ``VIZPIPE_MALLOC=system`` keeps
glibc's own behaviour. Elsewhere (macOS, Windows, musl) this does nothing.

``reproducible_math``: sets ``MKL_CBWR=AUTO`` (unless the user set ``MKL_CBWR``) before any
math runs, so Intel MKL adds up a reduction split across threads in a fixed order and runs are
byte-identical with any number of threads (``vizpipe.pipeline.reproducible`` has the cause and
what a library call does instead). MKL reads it once, at its first call; launchers' worker
processes inherit it.

``freeze_imports``, ``freeze_startup``: Python's cyclic garbage collector runs a full pass over
every tracked object now and then; with torch, torchvision, pytorch-grad-cam and SciPy imported
that is ~500,000 objects, and a 12-job sweep spent 0.92 s in 8 full passes (a summary run 0.45 s
in 6), most of them while the imports were still growing the heap. ``run.py`` pauses the
collector (``gc.disable()`` before its imports) while it starts, and the command line then:

1. freezes what its imports made (``freeze_imports``: ``gc.freeze``; modules, classes and
   functions are never collected anyway): ~306,000 objects, ~8,900 of them cyclic garbage the
   imports leave, the same every run. Finding those would cost a pass over all of them
   (~0.1 s, a few percent of a summary run), so they stay;
2. checks the command line (the precheck composes the config once per structure and sets each
   job's values on a copy): its cyclic garbage grows with the sweep's jobs (measured: 16,000
   objects for a summary run, 38,000 for the 12-job CAM sweep, 184,000 for 200 jobs), so
   ``freeze_startup`` collects it first, freezes what is left and turns the collector back on
   before any job runs. That pass walks only what was made since step 1: 22,000 objects for a
   summary run, 484,000 for a CAM sweep (its checks import pytorch-grad-cam).
   The jobs' garbage is collected as usual, but a pass no longer walks the libraries.

``stop_on_signals``: SIGTERM (what Slurm, Kubernetes and systemd send) and SIGINT (Ctrl-C) both
raise ``vizpipe.pipeline.errors.Interrupted`` in the main thread, so a run ends the same way for
either: the current batch dropped (files are complete or absent), the manifest ``interrupted``
with the signal and how to resume, one line on the console and exit status 128 + the signal
(130, 143: ``run_then_exit``). The command line holds it for its whole life; a sweep job in a
launcher's worker (joblib, submitit, Ray) holds it while the job runs and puts the worker's own
handlers back after. A SIGINT that the process was started ignoring (``nohup``, ``cmd &``) stays
ignored.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

log = logging.getLogger(__name__)

ENV = "VIZPIPE_MALLOC"  # keep (the default) | system: leave the C library's allocator as it is
CHOICES = ("keep", "system")
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
MMAP_BYTES = 32 * 1024 * 1024  # blocks from this size up are mapped (glibc's largest threshold)
TRIM_BYTES = 1024 * 1024 * 1024  # free memory kept at the heap's top before it is given back
PAD_BYTES = 64 * 1024 * 1024  # the heap grows by at least this much at a time

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep and reuse freed memory (see the module docstring), once.

    Returns whether the process now runs with these settings: False under ``VIZPIPE_MALLOC=system``
    or without glibc. Another value warns once (naming the choices) and keeps freed memory.
    """
    if "kept" in _state:
        return _state["kept"]
    _state["kept"] = False
    choice = os.environ.get(ENV, "").strip().lower()
    if choice and choice not in CHOICES:
        from vizpipe.pipeline.errors import unknown_choice

        log.warning("%s", unknown_choice(f"{ENV} value", choice, CHOICES, hint="Using keep, the default"))
    if choice == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    wanted = ((M_MMAP_THRESHOLD, MMAP_BYTES), (M_TRIM_THRESHOLD, TRIM_BYTES), (M_TOP_PAD, PAD_BYTES))
    done = [mallopt(p, v) for p, v in wanted]
    _state["kept"] = all(r == 1 for r in done)
    log.debug("malloc keeps freed memory: %s (mallopt returned %s)", _state["kept"], done)
    return _state["kept"]


def freeze_imports() -> None:
    """Keep every object alive now (the imports) out of later collections (``gc.freeze``)."""
    gc.freeze()


def reproducible_math() -> bool:
    """Ask Intel MKL for reproducible results (``MKL_CBWR=AUTO``) unless ``MKL_CBWR`` is set.

    Call before any tensor math of the process. Returns whether CNR is requested now.
    """
    from vizpipe.pipeline.reproducible import CNR_ENV, CNR_MODE, cnr_requested

    if CNR_ENV not in os.environ:
        os.environ[CNR_ENV] = CNR_MODE
    return cnr_requested()


def freeze_startup() -> None:
    """Collect the garbage made since ``freeze_imports``, keep the rest out of later collections
    (``gc.freeze``), and turn the collector back on."""
    gc.collect()
    gc.freeze()
    gc.enable()


#: the signals that stop a run cleanly, with their exit statuses (128 + the signal's number)
STOP_SIGNALS = {"SIGINT": 130, "SIGTERM": 143}


def _raise_interrupted(signum: int, frame: Any) -> None:
    from vizpipe.pipeline.errors import Interrupted

    name = signal.Signals(signum).name
    raise Interrupted(name, STOP_SIGNALS.get(name, 128 + signum))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise ``Interrupted`` while inside (see the module docstring); the
    handlers found are put back after. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        signum = getattr(signal, name)
        current = signal.getsignal(signum)
        if signum == signal.SIGINT and current is signal.SIG_IGN:
            continue  # started ignoring Ctrl-C (a background job): keep ignoring it
        saved[signum] = current
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
