"""The command line's run (or sweep) folder: decided and claimed before Hydra starts.

Hydra creates the run folder, writes ``.hydra/`` and opens ``run.log`` in it before vizpipe's
code runs, so vizpipe decides the folder first, in the precheck (``vizpipe.pipeline.precheck``):

* ``place``: the folder Hydra would use for this command line (``hydra.run.dir``, or
  ``hydra.sweep.dir`` with ``-m``), and whether it is timestamped (``${now:...}``);
* ``claim_for_hydra``: claims it (``vizpipe.pipeline.ownership``; a timestamped folder that is
  taken becomes ``<time>_1``, ``_2``, ...; any other taken folder is refused in one line before
  anything is written there) and returns the command line with the claimed folder spelled out,
  so Hydra writes into that folder and no other;
* ``resume=<folder>`` (``take_resume``, ``check_resume``): the folder must hold an interrupted
  run (or sweep) of the same config, checked before Hydra touches it; the command line then runs
  in that folder with ``hydra.job.env_set.VIZPIPE_RESUME=1`` (read by every job, whichever
  launcher runs it) and, for a single run, ``hydra.output_subdir=null`` (the run's ``.hydra/``
  stays the original's).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vizpipe.pipeline.errors import ConfigError

__all__ = [
    "RESUME_ENV",
    "check_resume",
    "claim_for_hydra",
    "place",
    "quote_value",
    "resuming",
    "take_resume",
]

#: set in a resumed run's (or sweep's) ``hydra.job.env_set``: the job finishes what its folder holds
RESUME_ENV = "VIZPIPE_RESUME"
RESUME_KEY = "resume"


def take_resume(argv: list[str]) -> tuple[list[str], Path | None]:
    """``argv`` without ``resume=<folder>`` (read by the command line, never in a config), and the folder."""
    rest: list[str] = []
    folder: Path | None = None
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == RESUME_KEY:
            if not value.strip():
                raise ConfigError(
                    "resume= needs the folder of the run (or sweep) to finish: resume=outputs/..."
                )
            folder = Path(value).expanduser()
        else:
            rest.append(arg)
    return rest, folder


def resuming(env_set: Any) -> bool:
    """Whether a job's ``hydra.job.env_set`` says it resumes its folder's run."""
    return str((env_set or {}).get(RESUME_ENV, "")) == "1"


def quote_value(value: str) -> str:
    """``value`` as a quoted Hydra override value (any path: spaces, commas, '=', quotes)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(multirun: bool) -> str:
    return "hydra.sweep.dir" if multirun else "hydra.run.dir"


def place(composer: Any, multirun: bool, job: list[str]) -> tuple[Path, bool]:
    """(folder, timestamped): where Hydra would put this run (or sweep), composed as Hydra will
    (the composer applies the command line's ``hydra`` overrides to every composition)."""
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    cfg = composer.compose(list(job), hydra=True)
    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    raw = str(OmegaConf.to_container(node, resolve=False).get("dir"))
    setup_globals()  # Hydra's ${now:...} resolver
    try:
        return Path(str(node.dir)), "${now:" in raw
    except Exception as exc:  # noqa: BLE001 - an interpolation only Hydra's run can resolve
        raise ConfigError(
            f"{_key(multirun)}={raw} cannot be resolved before the run ({' '.join(str(exc).split())}); "
            f"give a plain folder: {_key(multirun)}=outputs/..."
        ) from exc


def claim_for_hydra(
    argv: list[str], folder: Path, timestamped: bool, multirun: bool, resume: Path | None
) -> list[str]:
    """Claim the run (or sweep) folder; returns the command line Hydra gets (that folder named)."""
    from vizpipe.pipeline.ownership import claim, claim_new

    key = _key(multirun)
    kind, hint = ("sweep" if multirun else "run"), f"{key}=..."
    if resume is not None:
        held = claim(resume, kind=kind, resume=True, hint=hint)
    elif timestamped:
        held = claim_new(folder, kind=kind, hint=hint)
    else:
        held = claim(folder, kind=kind, hint=hint)
    from vizpipe.pipeline.argv import after_overrides

    rest = [a for a in argv if a.lstrip("+~").partition("=")[0] != key]
    extra = [f"{key}={quote_value(str(held.folder))}"]
    if resume is not None:
        extra.append(f"++hydra.job.env_set.{RESUME_ENV}='1'")
        if not multirun:
            extra.append("hydra.output_subdir=null")  # the run's .hydra/ stays the original's
    at = after_overrides(rest)  # Hydra reads the overrides as one run of words
    return [*rest[:at], *extra, *rest[at:]]


# =========================================================================== resume checks


def _container(cfg: Any, resolve: bool = False) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True)


def _same_config(folder: Path, cfg: Any) -> None:
    """The job's composed config equals the one recorded in ``folder`` (names the keys if not)."""
    import json

    from omegaconf import OmegaConf
    from vizpipe.pipeline.manifest import MANIFEST
    from vizpipe.pipeline.resume import check_same_config

    saved = folder / ".hydra" / "config.yaml"
    if saved.is_file():
        check_same_config(_container(OmegaConf.load(saved)), _container(cfg), folder)
        return
    try:
        recorded = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is None:
        raise ConfigError(
            f"resume={folder}: its config is not recorded (no .hydra/config.yaml, no manifest config)"
        )
    try:
        check_same_config(recorded, _container(cfg, resolve=True), folder)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - an interpolation the precheck cannot resolve
        raise ConfigError(f"resume={folder}: its config cannot be compared here ({exc})") from exc


def _status(folder: Path) -> str | None:
    import json

    from vizpipe.pipeline.manifest import MANIFEST, settled

    try:
        return str(settled(json.loads((folder / MANIFEST).read_text(encoding="utf-8")), folder).get("status"))
    except (OSError, ValueError, AttributeError):
        return None


def check_resume(
    folder: Path, overrides: list[str], multirun: bool, batch: list[list[str]], configs: list[Any]
) -> None:
    """``resume=<folder>``: an interrupted run (or sweep) of this same config; exits 0 when done already."""
    from vizpipe.pipeline import sweeps

    key = _key(multirun)
    given = [o.partition("=")[2] for o in overrides if o.lstrip("+~").partition("=")[0] == key]
    if given and Path(given[-1]).expanduser().resolve() != folder.resolve():
        raise ConfigError(f"resume={folder} and {key}={given[-1]} name two folders; give only resume=")
    if not folder.is_dir():
        raise ConfigError(f"resume={folder}: no such run folder")
    jobs = sweeps.job_folders(folder)
    if multirun:
        if not jobs and not (folder / "multirun.yaml").is_file():
            raise ConfigError(
                f"resume={folder} is not a sweep folder (no job folders); for a single run drop -m"
            )
        _check_sweep(folder, jobs, batch, configs)
        return
    if jobs and not (folder / "manifest.json").is_file():
        raise ConfigError(f"resume={folder} is a sweep folder: add -m (and the sweep's overrides)")
    if not (folder / "manifest.json").is_file() and not (folder / ".hydra").is_dir():
        raise ConfigError(f"resume={folder} is not a run folder (no manifest.json, no .hydra/)")
    _same_config(folder, configs[0])
    if _status(folder) == "ok":
        print(f"vizpipe: run folder {folder} finished ok; nothing to resume")
        sys.exit(0)


def _check_sweep(
    folder: Path, jobs: dict[frozenset[str], Path], batch: list[list[str]], configs: list[Any]
) -> None:
    """Every job folder belongs to a job of this command, with the same config; not all are done."""
    by_job = {frozenset(job): cfg for job, cfg in zip(batch, configs, strict=True)}
    foreign = [p.name for job, p in jobs.items() if job not in by_job]
    if foreign:
        raise ConfigError(
            f"resume={folder}: job folder {foreign[0]} ran a job this command does not list; resume a sweep "
            "with the command that started it"
        )
    unfinished = 0
    for job, cfg in by_job.items():
        path = jobs.get(job)
        if path is not None and _status(path) == "ok":
            continue
        unfinished += 1
        if path is not None and (path / ".hydra" / "config.yaml").is_file():
            _same_config(path, cfg)
    if not unfinished:
        print(f"vizpipe: sweep folder {folder}: all {len(batch)} job(s) finished ok; nothing to resume")
        sys.exit(0)
