"""Config files vizpipe did not ship are code it will not run unasked: ``--trust-config``.

A config names Python to run: ``_target_`` keys (the model factory, the optimizer), Hydra's
callbacks, the ``()``/``class`` factories and ``ext://`` objects of its logging configs, the
launcher's settings (a Slurm ``setup`` line is a shell command) and ``hydra.job.env_set`` (the
environment of every program the run starts, ``git`` included). What vizpipe ships in ``conf/``
and what the user types on the command line is the user's; a folder of configs is not: a run
folder someone sent (``--config-path <run>/.hydra``, what ``python -m vizpipe.reproduce`` runs),
``--config-dir`` or a ``hydra.searchpath`` entry. Hydra acts on some of these before any vizpipe
code runs (logging is configured, callbacks built, a ``pkg://`` search path imported), so the
command line checks them first (``vizpipe.pipeline.precheck``), from the config Hydra will
compose, and refuses in one line naming the key and the target:

* the ``_target_`` of every key vizpipe builds (``vizpipe.pipeline.registry.built_keys``)
  is vizpipe's own or torch's (``targets.trusted``), or typed on the command line;
* ``hydra.callbacks``: vizpipe's own classes, nothing nested in them;
* ``hydra.job_logging``/``hydra.hydra_logging``: the standard library's stream and file
  handlers, formatters and filters and vizpipe's own; streams ``ext://sys.stdout|stderr`` only; log
  files inside the run folder;
* ``hydra.launcher`` and ``hydra.job.env_set`` as vizpipe's (or Hydra's) own config of the
  chosen option gives them; nothing nested in ``hydra.sweeper``; ``hydra.output_subdir`` inside the
  run folder;
* the primary config file sets no ``hydra.searchpath`` (read as YAML before Hydra composes);
* ``--experimental-rerun`` (Hydra's: it unpickles a file) is refused.

``--trust-config`` on the command line skips these checks: the user vouches for the folder. It is
read by the command line only and never stored in a config, so a config (or a run folder made
with it) cannot trust itself. Nested ``_target_`` keys are refused with or without it
(``targets.check_targets``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vizpipe.pipeline import CONF_DIR
from vizpipe.pipeline.errors import ConfigError

__all__ = ["TRUST_FLAG", "ConfigSources"]

#: the command-line flag by which the user vouches for the config files (run.py and reproduce)
TRUST_FLAG = "--trust-config"
#: Hydra's flag that re-runs a job from a pickle (loading a pickle runs code)
RERUN_FLAG = "--experimental-rerun"
#: modules whose classes ``hydra.callbacks`` may name from any config (the callbacks vizpipe ships)
CALLBACK_MODULES = ("vizpipe.pipeline.callbacks",)
#: modules whose classes a logging config's ``()`` may name from any config
LOG_MODULES = ("vizpipe.pipeline.logs",)
#: what a logging config's ``()``/``class`` may name from any config: nothing that reaches the network
LOG_CLASSES = frozenset(
    {
        "logging.Formatter",
        "logging.Filter",
        "logging.StreamHandler",
        "logging.FileHandler",
        "logging.NullHandler",
        "logging.handlers.RotatingFileHandler",
        "logging.handlers.TimedRotatingFileHandler",
        "logging.handlers.WatchedFileHandler",
        "colorlog.ColoredFormatter",  # hydra-colorlog's formatter
    }
)
LOG_STREAMS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
#: where a log file from any config may go: the run folder
RUN_FOLDER = "${hydra.runtime.output_dir}/"


class ConfigSources:
    """Where a command line's config comes from, and the check of what it would run.

    ``primary``/``name``: the primary config's folder and name (``--config-path``/``--config-name``);
    ``overrides``: the command line's overrides (the user's: trusted); ``flags``: its ``-`` flags.
    The constructor refuses what Hydra would act on before any composition (``--experimental-rerun``,
    a primary config that adds a search path); ``vet`` checks the composed jobs.
    """

    def __init__(self, primary: Path, name: str, overrides: Sequence[str], flags: dict[str, str]) -> None:
        self.overrides = list(overrides)
        self.trusted = TRUST_FLAG in flags
        self.untrusted = _folders(primary, flags, self.overrides)
        if self.trusted:
            return
        if RERUN_FLAG in flags:
            raise ConfigError(
                f"{RERUN_FLAG} loads a pickle, which runs code; vizpipe refuses it unless you trust the "
                f"file: add {TRUST_FLAG} (or re-run a run folder with python -m vizpipe.reproduce)"
            )
        if self.untrusted:
            self._primary_file(primary / (name if name.endswith(".yaml") else f"{name}.yaml"))

    def where(self) -> str:
        """The untrusted folders, for messages."""
        return ", ".join(self.untrusted)

    def refuse(self, key: str, value: Any, why: str) -> ConfigError:
        """The one line for a setting from an untrusted folder that would run code."""
        return ConfigError(
            f"{key}={value!r} comes from a config in {self.where()}, which vizpipe did not ship, and {why}; "
            f"a config is code: add {TRUST_FLAG} if you trust it, or remove it (README: Security)"
        )

    def _primary_file(self, path: Path) -> None:
        """A primary config that adds a search path (a ``pkg://`` one is imported as Hydra composes)."""
        from omegaconf import OmegaConf

        if not path.is_file() or any(_key(o) == "hydra.searchpath" for o in self.overrides):
            return  # Hydra reports a missing file; a searchpath typed on the command line replaces it
        try:
            doc = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception:  # noqa: BLE001 - Hydra reports an unreadable file itself
            return
        search = (doc.get("hydra") or {}).get("searchpath") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and isinstance(doc.get("hydra"), dict) and search:
            raise self.refuse(
                "hydra.searchpath", search, "adds config sources Hydra reads (a pkg:// one imports Python)"
            )

    # ------------------------------------------------------------------ the composed jobs

    def vet(self, composer: Any, batch: Sequence[Sequence[str]]) -> None:
        """Check every job's composed config (``composer``: a ``vizpipe.pipeline.composer.Composer``)."""
        from vizpipe.pipeline.sweeps import is_hydra_own

        if self.trusted or not self.untrusted:
            return
        typed = _typed(self.overrides)
        references: dict[tuple[str, ...], Any] = {}
        for job in batch:
            cfg = composer.compose(list(job), hydra=True)
            self._targets(cfg, typed)
            self._hydra(cfg, typed)
            choice = str(cfg.hydra.runtime.choices.get("hydra/launcher"))
            key = (
                choice,
                *(o for o in self.overrides if is_hydra_own(o) and "searchpath" not in o),
            )
            if key not in references:
                references[key] = self._reference(key)
            self._same(cfg, references[key], choice)

    def _targets(self, cfg: Any, typed: set[tuple[str, str]]) -> None:
        """The ``_target_`` of every key vizpipe builds: its own, torch's, or typed."""
        from omegaconf import OmegaConf
        from vizpipe.pipeline.factory.targets import trusted
        from vizpipe.pipeline.registry import built_keys

        for key, modules in built_keys().items():
            node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            if not OmegaConf.is_dict(node) or node.get("_target_") is None:
                continue
            target = str(node.get("_target_"))
            if not trusted(target, modules) and (f"{key}._target_", target) not in typed:
                raise self.refuse(f"{key}._target_", target, "names code outside vizpipe's own factories")

    def _hydra(self, cfg: Any, typed: set[tuple[str, str]]) -> None:
        """Callbacks, logging, the sweeper's nested targets, the output subfolder."""
        from omegaconf import OmegaConf
        from vizpipe.pipeline.factory.targets import target_nodes, trusted

        hydra = cfg.hydra
        for name, node in (OmegaConf.to_container(hydra.callbacks, resolve=False) or {}).items():
            for where, target in target_nodes(node, f"hydra.callbacks.{name}"):
                own = where == f"hydra.callbacks.{name}" and trusted(target, CALLBACK_MODULES)
                if not own and (f"{where}._target_", target) not in typed:
                    raise self.refuse(f"{where}._target_", target, "is built by Hydra before the run starts")
        for which in ("job_logging", "hydra_logging"):
            doc = OmegaConf.to_container(hydra[which], resolve=False) if hydra.get(which) else {}
            for key, value, why in _logging(doc, f"hydra.{which}"):
                raise self.refuse(key, value, why)
        sweeper = OmegaConf.to_container(hydra.sweeper, resolve=False) or {}
        for where, target in target_nodes(sweeper, "hydra.sweeper"):
            if where != "hydra.sweeper":
                raise self.refuse(f"{where}._target_", target, "is built by Hydra with its sweeper")
        sub = hydra.get("output_subdir")
        if sub is not None and (Path(str(sub)).is_absolute() or ".." in Path(str(sub)).parts):
            raise self.refuse("hydra.output_subdir", str(sub), "writes Hydra's record outside the run folder")

    def _reference(self, key: tuple[str, ...]) -> Any:
        """vizpipe's own config (``conf/``, Hydra's defaults) with the typed ``hydra`` overrides and
        the same launcher option: what the launcher and ``env_set`` are when no folder is read."""
        choice, *typed = key
        overrides = [*typed] + ([f"hydra/launcher={choice}"] if choice != "None" else [])
        try:
            return _compose_own(overrides)
        except Exception as exc:  # noqa: BLE001 - the option exists only in the untrusted folder
            raise self.refuse(
                "hydra/launcher", choice, "is not a launcher config vizpipe or Hydra ships"
            ) from exc

    def _same(self, cfg: Any, ref: Any, choice: str) -> None:
        """The launcher and ``hydra.job.env_set`` as vizpipe's own config gives them."""
        from omegaconf import OmegaConf

        for key in ("launcher", "job.env_set"):
            got = OmegaConf.to_container(OmegaConf.select(cfg.hydra, key), resolve=False) or {}
            own = OmegaConf.to_container(OmegaConf.select(ref.hydra, key), resolve=False) or {}
            for k in dict.fromkeys([*got, *own]):
                if got.get(k) != own.get(k):
                    why = (
                        f"differs from hydra/launcher={choice} as vizpipe ships it (launchers run commands)"
                        if key == "launcher"
                        else "sets the environment of every program the run starts"
                    )
                    raise self.refuse(f"hydra.{key}.{k}", got.get(k), why)


# =========================================================================== helpers


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _folders(primary: Path, flags: dict[str, str], overrides: list[str]) -> list[str]:
    """The config folders on the search path that vizpipe did not ship."""
    own = {str(CONF_DIR.resolve()), f"file://{CONF_DIR.resolve()}", "pkg://vizpipe.conf"}
    out = [] if str(primary.resolve()) in own else [str(primary)]
    cdir = flags.get("--config-dir") or flags.get("-cd")
    if cdir:
        out.append(str(Path(cdir).expanduser().resolve()))
    for o in overrides:
        if _key(o) == "hydra.searchpath":
            from vizpipe.pipeline.sweeps import parse

            try:
                (parsed,) = parse([o])
                entries = parsed.value()
            except Exception:  # noqa: BLE001 - the precheck reports a bad override
                entries = [o.partition("=")[2]]
            entries = entries if isinstance(entries, list) else [entries]
            out += [str(e) for e in entries if str(e) not in own]
    return out


def _typed(overrides: Sequence[str]) -> set[tuple[str, str]]:
    """(dotted key, value) of every value the command line sets, dict values flattened, sweeps expanded."""
    from vizpipe.pipeline.sweeps import parse

    out: set[tuple[str, str]] = set()
    for o in overrides:
        try:
            (parsed,) = parse([o])
        except Exception:  # noqa: BLE001 - the precheck reports a bad override
            continue
        key = parsed.get_key_element()
        values = list(parsed.sweep_string_iterator()) if parsed.is_sweep_override() else [parsed.value()]
        for value in values:
            out.update(_flat(key, value))
    return out


def _flat(key: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f"{key}.{k}", v)
    else:
        yield key, str(value)


def _logging(doc: Any, path: str) -> Iterator[tuple[str, Any, str]]:
    """(key, value, why) for every part of a logging config that would run or reach beyond the run."""
    from vizpipe.pipeline.factory.targets import trusted

    if isinstance(doc, dict):
        for k, v in doc.items():
            where = f"{path}.{k}"
            if k in ("()", "class") and not (
                isinstance(v, str) and (v in LOG_CLASSES or trusted(v, LOG_MODULES))
            ):
                yield where, v, "is built by Python's logging as Hydra starts"
            elif k == "filename" and not (isinstance(v, str) and v.startswith(RUN_FOLDER) and ".." not in v):
                yield where, v, "writes a log file outside the run folder"
            else:
                yield from _logging(v, where)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _logging(v, f"{path}[{i}]")
    elif isinstance(doc, str) and doc.startswith("ext://") and doc not in LOG_STREAMS:
        yield path, doc, "imports a Python object for Python's logging"


def _compose_own(overrides: list[str]) -> Any:
    """vizpipe's config with its ``hydra`` node, from ``conf/`` only; the caller's Hydra state kept."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    finally:
        restore_gh_from_backup(backup)
