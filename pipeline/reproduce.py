"""Re-run a run folder into a new folder, then compare it with the original.

    python -m vizpipe.reproduce <run> [key=value ...] [--from-conf] [--out DIR] [--check]

A run folder alone is enough to re-run it. Two ways, both through the real ``run.py``:

* ``frozen`` (default): the run's resolved config, exactly as it ran,
  ``python run.py --config-path <run>/.hydra --config-name config`` (``conf/`` may have changed
  since; the runner merges the saved config onto the schema). Extra overrides are ``key=value``.
* ``--from-conf``: the run's recorded overrides (``.hydra/overrides.yaml``) applied to today's
  ``conf/``; extra overrides may pick group options (``model=vgg11``).

Extra overrides replace recorded ones with the same key. run.py runs in the folder the original
was started from (``hydra.runtime.cwd``, so relative input paths mean the same files); the new
folder defaults to ``outputs/reproduce/...`` under the current folder. Afterwards the new run is
compared with the original (``vizpipe.pipeline.compare``) and ``reproduce.json`` in the new folder records
where it came from. Exit status: the run's own status; with ``--check``, 1 when the artifacts differ
(a missing or unreadable ``manifest.json`` is refused before anything runs).

A run folder is code someone else wrote (``vizpipe.pipeline.trust``): its config goes through the
command line's checks (a target outside vizpipe's own factories, Hydra callbacks, logging
factories, ... are refused in one line), ``--from-conf`` refuses recorded overrides that set a
``_target_`` or a ``hydra`` key, and run.py starts with Python's safe path (``-P``: the folder it
runs in is not on ``sys.path``, so a ``torch.py`` there is not imported). ``--trust-config`` is the
user vouching for the folder: all of these are skipped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vizpipe.pipeline import CONF_DIR
from vizpipe.pipeline.compare import Comparison, quiet_pipe
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.trust import TRUST_FLAG

GROUPS = ("model", "device", "input", "experiment", "sweep")  # config groups (options, not values)
#: run.py's exit status when its command line is refused before the run (nothing to compare)
PRECHECK_FAILED = 2


def recorded_overrides(run: Path) -> list[str]:
    """The overrides a run was made with (``.hydra/overrides.yaml``, else the manifest's)."""
    from omegaconf import OmegaConf

    path = run / ".hydra" / "overrides.yaml"
    if path.is_file():
        return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path)) or []]
    if (run / "manifest.json").is_file():
        return [str(o) for o in read_manifest(run).get("overrides") or []]
    return []


def read_manifest(run: Path) -> dict[str, Any]:
    """``<run>/manifest.json``, or one ``ConfigError`` line saying why it cannot be read."""
    from vizpipe.pipeline.compare import load_manifest

    try:
        return load_manifest(run)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def check_recorded(run: Path, overrides: list[str]) -> None:
    """Refuse recorded overrides that would run code (``--from-conf`` replays them as if typed)."""
    risky = [o for o in overrides if "_target_" in o or o.startswith("-") or _key(o).startswith("hydra")]
    if risky:
        raise ConfigError(
            f"{run}'s recorded overrides set {risky[0]!r}, which names code to run or changes what Hydra "
            f"runs (a run folder is code); add {TRUST_FLAG} if you trust {run}, or re-run it frozen"
        )


def original_cwd(run: Path) -> Path | None:
    """The folder the run was started from (``hydra.runtime.cwd``), if it still exists."""
    from omegaconf import OmegaConf

    path = run / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    try:
        cwd = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.cwd")
    except Exception:  # noqa: BLE001 - an unreadable file means "unknown"
        return None
    return Path(cwd) if cwd and Path(cwd).is_dir() else None


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with every key that ``extra`` sets replaced (extra's order kept at the end)."""
    keys = {_key(o) for o in extra}
    return [o for o in base if _key(o) not in keys] + list(extra)


def default_out(run: Path) -> Path:
    """``outputs/reproduce/<date>/<time>_<run name>`` (never inside a sweep folder)."""
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    from vizpipe.pipeline.names import safe_dirname

    src = run.resolve()
    name = safe_dirname(f"{src.parent.name}_{src.name}")  # e.g. 2024-01-31_12-00-00
    out = Path("outputs") / "reproduce" / f"{stamp}_{name}"
    n = 1
    while out.exists():
        n += 1
        out = Path("outputs") / "reproduce" / f"{stamp}_{name}_{n}"
    return out


def python() -> list[str]:
    """The interpreter that runs ``vizpipe``: with Python's safe path (3.11+), so the folder it runs
    in (the original's, as its run folder says) is not on ``sys.path``."""
    return [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]


def build_command(
    run: Path, out: Path, extra: list[str], *, from_conf: bool = False, trust: bool = False
) -> list[str]:
    """The ``run.py`` command line that re-runs ``run`` into ``out`` (``trust``: ``--trust-config``)."""
    run = run.resolve()
    hydra_dir = run / ".hydra"
    for o in extra:
        if "=" not in o:
            raise ConfigError(f"Override '{o}' is not key=value")
    flag = [TRUST_FLAG] if trust else []
    if from_conf:
        recorded = recorded_overrides(run)
        if not trust:
            check_recorded(run, recorded)
        args = merge_overrides(recorded, extra)
        return [*python(), "-m", "vizpipe", *flag, *args, f"hydra.run.dir={out}"]
    if not (hydra_dir / "config.yaml").is_file():
        raise ConfigError(f"{run} has no .hydra/config.yaml: it is not a run folder (or not made by Hydra)")
    groups = [o for o in extra if _key(o) in GROUPS]
    if groups:
        raise ConfigError(
            f"{', '.join(groups)} picks a config group option, which a frozen config lacks; "
            "use --from-conf to re-compose from conf/, or set values (e.g. model.name=vgg11)"
        )
    return [
        *python(),
        "-m",
        "vizpipe",
        *flag,
        "--config-path",
        str(hydra_dir),
        "--config-name",
        "config",
        f"hydra.run.dir={out}",
        f"hydra.searchpath=[file://{CONF_DIR}]",  # finds vizpipe's logging config
        "hydra/job_logging=vizpipe",
        *extra,
    ]


def reproduce(
    run: Path | str,
    extra: list[str] | None = None,
    *,
    out: Path | str | None = None,
    from_conf: bool = False,
    cwd: Path | str | None = None,
    check: bool = False,
    trust: bool = False,
) -> tuple[int, Path, Comparison | None]:
    """Re-run ``run`` into ``out``; return (run.py's exit status, new folder, comparison).

    ``check``: the original's ``manifest.json`` must be readable (it is compared with), checked
    before anything runs; ``trust``: ``--trust-config`` (see the module docstring).
    """
    from vizpipe.pipeline.compare import compare_runs
    from vizpipe.pipeline.files import write_atomic

    src = Path(run)
    if not src.is_dir():
        raise ConfigError(f"Run folder {src} does not exist")
    original = _original_manifest(src, check)
    dest = Path(out) if out else default_out(src)
    dest = dest.resolve()
    # Run where the original ran, so relative paths in its config (input.path) mean the same files.
    work = Path(cwd) if cwd else (_recorded_cwd(src, trust) or Path.cwd())
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"Output folder {dest} already exists and is not empty; pick another with --out")
    cmd = build_command(src, dest, list(extra or []), from_conf=from_conf, trust=trust)
    print("vizpipe: reproducing with:", shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=work).returncode
    comparison = None
    if (dest / "manifest.json").is_file() and original is not None and rc != PRECHECK_FAILED:
        comparison = compare_runs(src, dest)
    if dest.is_dir():
        record = {
            "source": str(src.resolve()),
            "mode": "from-conf" if from_conf else "frozen",
            "extra_overrides": list(extra or []),
            "command": cmd,
            "cwd": str(work),
            "exit_status": rc,
            "equal": None if comparison is None else comparison.equal,
            "first_difference": None
            if comparison is None or comparison.first is None
            else comparison.first.describe(),
        }
        write_atomic(dest / "reproduce.json", json.dumps(record, indent=2) + "\n")
    return rc, dest, comparison


def _original_manifest(src: Path, check: bool) -> dict[str, Any] | None:
    """The original's manifest (None when absent or unreadable: nothing to compare with); with
    ``check`` it must be there and readable, before any work."""
    if not (src / "manifest.json").is_file():
        if check:
            raise ConfigError(f"{src} has no manifest.json to compare the new run with; --check needs one")
        return None
    try:
        return read_manifest(src)
    except ConfigError as exc:
        if check:
            raise ConfigError(f"{exc}; --check compares the new run with it, so nothing was run") from exc
        print(f"vizpipe: warning: {exc}; the new run will not be compared with it", file=sys.stderr)
        return None


def _recorded_cwd(src: Path, trust: bool) -> Path | None:
    """The original's folder, when run.py can start there safely (Python 3.11's ``-P``) or is trusted."""
    if sys.version_info < (3, 11) and not trust:
        return None  # without -P the folder would be on sys.path: run in the current one instead
    return original_cwd(src)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    from vizpipe.pipeline.compare import format_comparison

    parser = argparse.ArgumentParser(prog="python -m vizpipe.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder to re-run")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides (replace recorded ones)")
    parser.add_argument(
        "--out", type=Path, help="new run folder (default outputs/reproduce/<date>/<time>_<name>)"
    )
    parser.add_argument(
        "--from-conf",
        action="store_true",
        help="re-compose today's conf/ with the recorded overrides",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the new run's artifacts differ")
    parser.add_argument(
        TRUST_FLAG,
        action="store_true",
        help="run the folder's config even where it names code outside vizpipe's own (README: Security)",
    )
    args = parser.parse_args(argv)
    try:
        rc, dest, comparison = reproduce(
            args.run,
            args.overrides,
            out=args.out,
            from_conf=args.from_conf,
            check=args.check,
            trust=args.trust_config,
        )
    except ConfigError as exc:
        print(f"vizpipe: error: {exc}", file=sys.stderr)
        return 2
    if comparison is not None:
        with quiet_pipe():
            print(format_comparison(comparison))
    if rc != 0:
        return rc
    if args.check and (comparison is None or not comparison.equal):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
