"""Command-line helpers for ``run.py``: friendly config errors before Hydra starts, and the exit.

Hydra reports composition errors with a traceback hint as its last line; vizpipe's promise is one
line that names the bad value and the valid choices. ``precheck`` composes the same config with
the Compose API first (one compose per swept value) and turns any failure into that line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from pipeline.errors import ConfigError, closest_first, unknown_choice

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = (
    "model",
    "device",
    "input",
    "summary",
    "kernels",
    "features",
    "cam",
    "tensorboard",
    "report",
    "experiment",
    "sweep",
    "local",
)
_FLAGS_WITH_VALUE = {
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
}
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


class PipelineFailed(RuntimeError):
    """Raised inside a multirun job so Hydra marks it failed and the other jobs go on."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero (no traceback)."""
    print(f"vizpipe: error: {message}", file=sys.stderr)
    sys.exit(code)


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Option names of a config group (YAML files in ``conf/<group>/``)."""
    folder = conf_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _split(argv: list[str]) -> tuple[list[str], dict[str, str], bool]:
    overrides: list[str] = []
    flags: dict[str, str] = {}
    multirun = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            key, _, val = a.partition("=")
            if key in _FLAGS_WITH_VALUE and not val and key not in ("--cfg", "-c", "--info", "-i"):
                val = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            elif (
                key in ("--cfg", "-c", "--info", "-i")
                and i + 1 < len(argv)
                and not argv[i + 1].startswith("-")
                and "=" not in argv[i + 1]
            ):
                val = argv[i + 1]
                i += 1
            flags[key] = val
        else:
            overrides.append(a)
        i += 1
    return overrides, flags, multirun


def precheck(argv: list[str]) -> None:
    """Validate command-line overrides like Hydra would, but fail with one readable line."""
    overrides, flags, multirun = _split(argv)
    if set(flags) & _SKIP or {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"} & set(
        flags
    ):
        return
    try:
        for variant in _variants(overrides, multirun):
            _compose(variant)
        _check_writable(_output_dir(overrides, multirun))
    except ConfigError as exc:
        where = record_failure(argv, str(exc))
        fail(str(exc) + (f" (manifest: {where})" if where else ""))


def _variants(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists to compose: each swept value once (others at their first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = parser.parse_overrides(user)
    except Exception as exc:  # hydra's OverrideParseException
        raise ConfigError(f"Could not parse overrides {user}: {str(exc).splitlines()[0]}") from exc
    base: list[str] = []
    sweeps: list[tuple[int, list[str]]] = []
    for o in parsed:
        if o.is_sweep_override():
            if not multirun:
                raise ConfigError(
                    f"'{o.input_line}' is a sweep (several values); add -m to run one job per value, "
                    "or wrap a list value in brackets: key=[a,b]"
                )
            values = [str(v) for v in o.sweep_string_iterator()]
            key = o.get_key_element()
            sweeps.append((len(base), [f"{key}={v}" for v in values]))
            base.append(f"{key}={values[0]}")
        else:
            base.append(o.input_line)
    variants = [base]
    for idx, options in sweeps:
        for opt in options[1:]:
            v = list(base)
            v[idx] = opt
            variants.append(v)
    return variants


def _compose(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import pipeline.schema  # noqa: F401

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - translated below
        raise translate(exc, overrides) from exc
    finally:
        GlobalHydra.instance().clear()
    from omegaconf import OmegaConf

    from pipeline.runner import validate_config

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (an image file, a folder or a glob)" if missing[0] == "input.path" else ""
        raise ConfigError(f"{missing[0]} is required for this choice{hint}; set {missing[0]}=...")
    validate_config(cfg)


def _output_dir(overrides: list[str], multirun: bool) -> Path:
    """The run (or sweep) folder Hydra will create for these overrides."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for o in overrides:
        k, _, v = o.lstrip("+").partition("=")
        if k == key:
            return Path(v)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    try:
        setup_globals()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            hc = compose(config_name="config", return_hydra_config=True).hydra
            return Path(str(hc.sweep.dir if multirun else hc.run.dir))
    except Exception:  # noqa: BLE001 - fall back to the documented pattern
        import time

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

    Returns the manifest's path, or None when the run folder itself cannot be written.
    """
    import time

    from pipeline.manifest import Manifest, command_line, versions

    overrides, _, multirun = _split(argv)
    folder = _output_dir(overrides, multirun)
    names: list[str] = []
    for o in overrides:
        k, _, v = o.partition("=")
        if k == "stages" and v.startswith("["):
            names = [x.strip() for x in v.strip("[]").split(",") if x.strip()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
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
            log_file.write(f"[{stamp}][pipeline.cli][ERROR] - {message}\n")
        return m.write()
    except OSError:
        return None


def translate(exc: BaseException, overrides: list[str]) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into one line with the bad value and choices."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    ctext = " ".join(str(cause).split()) if cause else ""
    # Unknown group option: "Could not find 'model/resnet19'"
    m = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if m:
        group, option = m.group(1), m.group(2)
        return unknown_choice(
            f"{group} option", option, group_options(group), hint=f"Set {group}=<one of these>"
        )
    m = re.search(r"Could not load '([^']+)/([^']+)'", text)
    if m:
        group, option = m.group(1), m.group(2)
        return unknown_choice(f"{group} option", option, group_options(group))
    # Unknown key: "Key 'target_clas' not in 'CamConfig'" / "Could not override 'cam.target_clas'"
    m = re.search(r"Could not override '([^']+)'", text)
    key = m.group(1) if m else None
    both = text + " " + ctext
    if key and ("not in" in both or "Missing key" in both or "Key '" in both and "not in" in both):
        return _unknown_key(key)
    if re.search(r"Key '([^']+)' (is )?not in", both) and key is None:
        m2 = re.search(r"full_key: (\S+)", both)
        if m2:
            return _unknown_key(m2.group(1))
    m = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", both)
    if (
        m
        or "Invalid value" in both
        or "Unsupported value type" in both
        or "is not a ListConfig" in both
        or "Cannot assign" in both
    ):
        fk = re.search(r"full_key: (\S+)", both)
        fkey = fk.group(1) if fk else (key or "?")
        val = _value_of(fkey, overrides)
        if (
            fkey == "stages"
            or (fkey or "").endswith(".layers")
            or fkey in ("summary.col_names", "summary.row_settings", "cam.metrics")
        ):
            return ConfigError(
                f"{fkey} must be a list, got '{val}'; write '{fkey}=[{val}]' (quoted in a shell)"
            )
        enum = re.search(r"expected one of \[([^\]]*)\]", both)
        if enum:
            choices = [c.strip().strip("'\"") for c in enum.group(1).split(",")]
            return unknown_choice(f"value for {fkey}", val, choices)
        expected = m.group(2) if m else "the schema's type"
        return ConfigError(
            f"Invalid value '{val}' for {fkey}: expected {expected.lower()} (see conf/ comments)"
        )
    if "Missing mandatory value" in both:
        fk = re.search(r"full_key: (\S+)", both) or re.search(r"Missing mandatory value: ?(\S+)", both)
        k = fk.group(1) if fk else "?"
        return ConfigError(f"{k} is required for this choice (it is ??? in conf/); set {k}=...")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"Invalid config: {first}")


def _value_of(key: str, overrides: list[str]) -> str:
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k == key:
            return v
    return "?"


def _unknown_key(key: str) -> ConfigError:
    """ "Unknown config key 'cam.target_clas'; did you mean 'cam.target_class'? ..."""
    from dataclasses import fields, is_dataclass

    from pipeline import schema

    parts = key.lstrip("+~").split(".")
    node: Any = schema.Config
    prefix: list[str] = []
    for p in parts[:-1]:
        names = {f.name: f for f in fields(node)} if is_dataclass(node) else {}
        if p not in names:
            break
        typ = schema.Config.__annotations__.get(p) if node is schema.Config else None
        sub = getattr(schema, str(typ), None) if typ else None
        if sub is None or not is_dataclass(sub):
            break
        node = sub
        prefix.append(p)
    choices = [".".join([*prefix, f.name]) for f in fields(node)] if is_dataclass(node) else []
    if node is schema.Config:
        choices = [f.name for f in fields(node)]
        top = [f"{g}" for g in GROUPS]
        choices = list(dict.fromkeys(choices + top))
    return unknown_choice(
        "config key",
        key.lstrip("+~"),
        choices,
        hint="Keys are listed in conf/ with comments; python run.py --cfg job shows them all",
    )


#: Failed multirun jobs of this process, for the exit code after the sweep (basic launcher: the
#: jobs run here, one after another). Deliberately process-wide; read once by ``sweep_exit``.
_FAILED_JOBS: list[str] = []


def finish(result: Any, *, multirun: bool) -> None:
    """Print the run folder (and report); on failure exit non-zero, or inside a sweep remember it.

    A failed sweep job does not raise (Hydra would print a traceback and skip the sweep's end
    callbacks): the other jobs go on, and ``sweep_exit`` ends the process with status 1. In a
    launcher's worker process the job raises ``PipelineFailed`` so that launcher sees the failure.
    """
    import multiprocessing

    print(f"vizpipe: run folder {result.output_dir}")
    if result.report_path is not None:
        print(f"vizpipe: report {result.report_path}")
    if result.ok:
        return
    details = f"details: {result.output_dir / 'run.log'}, manifest: {result.manifest_path}"
    message = f"{result.error or result.status} ({details})"
    if multirun:
        if multiprocessing.parent_process() is not None:
            raise PipelineFailed(message)
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


__all__ = ["PipelineFailed", "closest_first", "fail", "finish", "precheck", "sweep_exit", "translate"]
