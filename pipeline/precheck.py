"""The precheck: ``python run.py``'s command line checked before Hydra starts, one line on failure.

Hydra reports composition errors with a traceback hint as its last line; vizpipe's promise is one
line that names the bad value and the valid choices. ``precheck`` composes the same config Hydra
will (``vizpipe.pipeline.composer``: same search path, ``conf/``, ``--config-dir``,
``--config-path``/``--config-name``), lists the jobs Hydra will run (``vizpipe.pipeline.sweeps``),
checks every one (one composition per structure, each job's values set on a copy) with every
config-only rule (``vizpipe.pipeline.runner.check_config``: the stage list, the input's and each
stage's ``check_settings``) and turns any failure into that line
(``vizpipe.pipeline.config_errors.translate``). The jobs checked are remembered
(``sweeps.remember``): vizpipe's sweeper does not check them again. A failed precheck still
leaves ``manifest.json`` and ``run.log`` in the run folder Hydra would have used.

Then it claims the run (or sweep) folder before Hydra writes anything there
(``vizpipe.pipeline.run_folder``: one owner per folder, a new timestamped folder per run,
``resume=<folder>`` checked) and returns the command line Hydra gets, with that folder named.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from vizpipe.pipeline import CONF_DIR, sweeps
from vizpipe.pipeline.argv import split_args
from vizpipe.pipeline.composer import Composer, JobChecker, SweepProblems
from vizpipe.pipeline.config_errors import as_config_error, check_hydra_values, hydra_overrides
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.trust import ConfigSources

__all__ = ["fail", "precheck", "record_failure"]

_SKIP = {
    "--help",
    "-h",
    "--hydra-help",
    "--version",
    "--shell-completion",
    "-sc",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--resolve",
}
#: keys whose values are file-system paths (a comma or '=' in them needs quoting)
PATH_KEYS = ("path", "checkpoint", "categories", "dir", "root")


def fail(message: str, code: int = 2, details: Sequence[str] = ()) -> NoReturn:
    """Print one line to stderr and exit non-zero (no traceback); ``details`` (one line per bad
    job of a sweep) follow it, indented."""
    print(f"vizpipe: error: {' '.join(str(message).split())}", file=sys.stderr)
    for line in details:
        print(f"  {' '.join(str(line).split())}", file=sys.stderr)
    sys.exit(code)


def _search(flags: dict[str, str]) -> tuple[Path, str, list[str]]:
    """(primary config folder, config name, extra search path overrides) as Hydra will use them."""
    path = flags.get("--config-path") or flags.get("-cp")
    name = flags.get("--config-name") or flags.get("-cn") or "config"
    primary = CONF_DIR
    extra: list[str] = []
    if path:
        p = Path(path).expanduser()
        primary = p.resolve()  # relative to the launch folder (cli.absolute_config_path)
        extra.append(f"file://{CONF_DIR}")  # vizpipe's groups stay reachable (reproduce does this too)
    cdir = flags.get("--config-dir") or flags.get("-cd")
    if cdir:
        extra.insert(0, f"file://{Path(cdir).expanduser().resolve()}")
    return primary, name, extra


def shell_completion(flags: dict[str, str]) -> None:
    """Make Hydra's bash completion work however the interpreter is spelled (``.venv/bin/python``).

    Hydra's script only completes a command line starting with the word ``python`` and strips
    ``python run.py`` from it with a pattern that misses paths such as ``.venv/bin/python``. For
    ``-sc install=bash`` this prints Hydra's script with that test widened (any ``*/python*``); for
    ``-sc query=bash`` it rewrites the interpreter in ``COMP_LINE`` to ``python`` before Hydra reads it.
    """
    import contextlib
    import io
    import os
    import re

    value = flags.get("-sc", flags.get("--shell-completion", ""))
    if value == "query=bash" and "COMP_LINE" in os.environ:
        os.environ["COMP_LINE"] = re.sub(r"^\s*\S*python[\d.]*", "python", os.environ["COMP_LINE"])
    if value != "install=bash":
        return
    from hydra.core.plugins import Plugins
    from hydra.plugins.completion_plugin import CompletionPlugin

    bash = next(p for p in Plugins.instance().discover(CompletionPlugin) if p.provides() == "bash")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bash(None).install()  # type: ignore[arg-type] - install() needs no config loader
    script = out.getvalue().replace(
        'if [ "${words[0]}" == "python" ]; then', 'if [[ "${words[0]##*/}" == python* ]]; then'
    )
    print(script.rstrip())
    for exe in ("python3", os.path.basename(sys.executable)):
        if exe != "python":
            print(f"complete -o nospace -o default -F hydra_bash_completion {exe}")
    sys.exit(0)


def precheck(argv: list[str]) -> list[str]:
    """Validate the command line like Hydra would, but fail with one readable line; then claim
    the run (or sweep) folder. Returns the command line Hydra gets (``run_folder.claim_for_hydra``);
    ``--help``, ``--cfg`` and the like return ``argv`` (without ``resume=``) unchecked."""
    from vizpipe.pipeline import run_folder

    try:
        argv, resume = run_folder.take_resume(argv)
    except ConfigError as exc:
        fail(str(exc))
    overrides, flags, multirun = split_args(argv)
    shell_completion(flags)
    primary, name, extra = _search(flags)
    groups = [o for o in overrides if o.lstrip("+~").startswith("hydra/")]
    if set(flags) & _SKIP:  # Hydra still composes (--help configures logging): a folder's config is vetted
        try:
            sources = ConfigSources(primary, name, overrides, flags)
            if sources.untrusted and not sources.trusted and primary.is_dir():
                with Composer(primary, name, extra, groups) as composer:
                    sources.vet(composer, _jobs(composer, overrides, multirun))
        except ConfigError as exc:
            fail(str(exc))
        return argv
    try:
        if not primary.is_dir():
            raise ConfigError(f"--config-path '{primary}' is not a folder")
        sources = ConfigSources(primary, name, overrides, flags)  # config files are code (trust.py)
        groups = hydra_overrides(overrides)  # hydra/launcher=..., hydra.x.y=...: checked with every compose
        with Composer(primary, name, extra, groups) as composer:
            batch = _jobs(composer, overrides, multirun)
            sources.vet(composer, batch)
            configs = JobChecker(composer).check_all(batch)  # every job; every problem named
            check_hydra_values(composer.compose, groups)
            folder, timestamped = run_folder.place(composer, multirun, batch[0])
        if resume is not None:
            run_folder.check_resume(resume, overrides, multirun, batch, configs)
        else:
            _check_writable(folder)
        sweeps.remember(batch)
    except Exception as exc:  # noqa: BLE001 - Hydra's and OmegaConf's errors get the one line too
        error = as_config_error(exc, overrides)
        if error is None:
            raise
        where = record_failure(argv, str(error)) if resume is None else None
        head, details = (error.head, error.details) if isinstance(error, SweepProblems) else (str(error), [])
        fail(head + (f" (manifest: {where})" if where else ""), details=details)
    try:
        return run_folder.claim_for_hydra(argv, folder, timestamped, multirun, resume)
    except ConfigError as exc:
        fail(str(exc))


def _is_path_key(key: str) -> bool:
    return key.split(".")[-1].lower() in PATH_KEYS


def _quote_hint(key: str, value: str) -> str:
    return f"quote it: \"{key}='{value}'\" (commas, '=', spaces and brackets in a value need quotes)"


def _jobs(composer: Composer, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job Hydra will run (one for a single run).

    Command-line sweeps and the ``hydra.sweeper.params`` of a ``sweep=...`` config both count,
    combined as Hydra's basic sweeper combines them (``vizpipe.pipeline.sweeps.jobs``).
    """
    user = [o for o in overrides if not sweeps.is_hydra_own(o)]
    parsed = [_parse(o) for o in user]
    base = [_first_value(o, multirun) for o in parsed]
    chosen = [o for o in base if o.partition("=")[0].lstrip("+~") == "sweep"]
    if any(o.partition("=")[2] not in ("", "null") for o in chosen):
        if not multirun:
            raise ConfigError(
                f"'{chosen[0]}' is a declarative sweep: add -m to run its jobs (python run.py -m {chosen[0]})"
            )
        return sweeps.jobs(_sweeper_params(composer, base), user)
    return sweeps.jobs([], user) if multirun else [[o.input_line for o in parsed]]


def _parse(line: str) -> Any:
    """One override, parsed; a line Hydra cannot read is one line naming it (and how to quote it)."""
    try:
        (override,) = sweeps.parse([line])
    except Exception as exc:  # noqa: BLE001 - hydra's OverrideParseException
        key, _, value = line.partition("=")
        if _is_path_key(key):
            raise ConfigError(f"Cannot read the override {line!r}: {_quote_hint(key, value)}") from exc
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"Cannot read the override {line!r} ({first}); check its quoting and brackets"
        ) from exc
    return override


def _first_value(o: Any, multirun: bool) -> str:
    """``o`` as a line with one value (a sweep's first); a sweep without ``-m``, or a path with a
    comma that reads as a sweep, is one line saying how to write it."""
    if not o.is_sweep_override():
        return o.input_line
    key = o.get_key_element()
    values = [str(v) for v in o.sweep_string_iterator()]
    if _is_path_key(key):
        joined = o.input_line.partition("=")[2]
        if Path(joined).expanduser().exists() or not all(Path(v).expanduser().exists() for v in values):
            raise ConfigError(
                f"'{o.input_line}' holds a comma, which makes it a sweep over {values}; "
                f"for one path {_quote_hint(key, joined)}"
            )
    if not multirun:
        raise ConfigError(
            f"'{o.input_line}' is a sweep (several values); add -m to run one job per value, "
            "or wrap a list value in brackets: key=[a,b]"
        )
    return f"{key}={values[0]}"


def _sweeper_params(composer: Composer, base: list[str]) -> list[str]:
    """``hydra.sweeper.params`` (from ``sweep=...``), resolved, as the sweeper reads them: key=value."""
    import re

    from omegaconf import OmegaConf

    cfg = composer.compose(base, hydra=True)
    params = cfg.hydra.sweeper.get("params") or {}
    out: list[str] = []
    sweep = next(o.partition("=")[2] for o in base if o.partition("=")[0].lstrip("+~") == "sweep")
    for key in params:
        node = params._get_node(key)
        raw = node._value() if node is not None else None
        plain = re.fullmatch(r"\$\{([\w.]+)\}", raw.strip()) if isinstance(raw, str) else None
        try:
            # ${model.blocks}: read the key itself (params are strings: None would fail their type)
            value = OmegaConf.select(cfg, plain.group(1)) if plain else params[key]
        except Exception as exc:  # noqa: BLE001 - an interpolation that cannot resolve
            own = next((x for x in _chain(exc) if isinstance(x, ConfigError)), None)
            if own is not None:  # a vizpipe resolver's own line (vizpipe_blocks: set model.blocks)
                raise ConfigError(f"sweep={sweep}: {own}") from exc
            first = " ".join(str(exc).split())
            raise ConfigError(
                f"sweep={sweep} sets {key} from {raw}, which cannot be resolved here: {first}"
            ) from exc
        if value is None or str(value).strip() in ("", "None"):
            source = str(raw).strip("${}") if isinstance(raw, str) else str(raw)
            raise ConfigError(
                f"sweep={sweep} sweeps {key} over {source}, which is not set for this config; set it, e.g. "
                f"{source}='\"a,b,c\"' (a quoted comma-separated string), or sweep {key} on the command line"
            )
        out.append(f"{key}={value}")
    return out


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    x: BaseException | None = exc
    while x is not None and x not in out:
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


# =========================================================================== run folder


def _output_dir(overrides: list[str], multirun: bool) -> Path:
    """The run (or sweep) folder Hydra will create for these overrides."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for o in overrides:
        k, _, v = o.lstrip("+").partition("=")
        if k == key and not set(v) & set("${}[](),'\"\\"):  # else Hydra reads it below
            return Path(v)
    import time

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    try:
        setup_globals()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            given = [o for o in overrides if o.lstrip("+").partition("=")[0] == key]  # ${...} in it
            hc = compose(config_name="config", overrides=given, return_hydra_config=True).hydra
            return Path(str(hc.sweep.dir if multirun else hc.run.dir))
    except Exception:  # noqa: BLE001 - fall back to the documented pattern
        parts = ["multirun"] if multirun else []
        return Path("outputs", *parts, time.strftime("%Y-%m-%d"), time.strftime("%H-%M-%S"))
    finally:
        GlobalHydra.instance().clear()


def _check_writable(folder: Path) -> None:
    """Fail early, in one line, when the run folder cannot be created or written."""
    import os
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"'{probe}' is a file, not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
        if probe == folder and not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError("no write permission")
    except OSError as exc:
        raise ConfigError(
            f"Run folder '{folder}' cannot be written ({exc}); choose a writable place with "
            "hydra.run.dir=... (or hydra.sweep.dir=... with -m)"
        ) from exc


def record_failure(argv: list[str], message: str) -> Path | None:
    """Write ``manifest.json`` and ``run.log`` for a run that failed before Hydra started it.

    Returns the manifest's path, or None when the run folder cannot be written or belongs to
    another run (nothing of it is touched). The folder is claimed while it is written
    (``vizpipe.pipeline.ownership``; a timestamped one that is taken gets a suffix).
    """
    import time

    from vizpipe.pipeline.manifest import Manifest, command_line, versions
    from vizpipe.pipeline.ownership import claim, claim_new

    overrides, _, multirun = split_args(argv)
    folder = _output_dir(overrides, multirun)
    names: list[str] = []
    for o in overrides:
        k, _, v = o.partition("=")
        if k == "stages" and v.startswith("["):
            names = [x.strip() for x in v.strip("[]").split(",") if x.strip()]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = any(o.lstrip("+").partition("=")[0] == key for o in overrides)
    try:
        held = claim(folder, allow=("run.log",)) if given else claim_new(folder)
    except (ConfigError, OSError):
        return None
    folder = held.folder
    try:
        data = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run_dir": str(folder.resolve()),
            "command": command_line(),
            "overrides": overrides,
            "versions": versions(),
            "config": None,
        }
        m = Manifest(folder, data, names)
        m.setup.status, m.setup.error, m.setup.error_type = "failed", message, "ConfigError"
        for rec in m.stages:
            rec.status = "skipped"
        m.report.status = "skipped"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(folder / "run.log", "a", encoding="utf-8") as log_file:
            log_file.write(f"[{stamp}][vizpipe.pipeline.cli][ERROR] - {message}\n")
        return m.write()
    except OSError:
        return None
    finally:
        held.release()
