"""What a sweep is: its jobs, the values its swept keys take, which overrides are structural.

Everything else about sweeps asks this module: the precheck (``vizpipe.pipeline.precheck`` checks
every job before Hydra starts), vizpipe's sweeper (``vizpipe.pipeline.sweeper``), the command line
(``RunContext.sweep``) and the job folder names (the ``vizpipe_jobdir`` resolver).

* **Jobs**: ``jobs(params, overrides)``, exactly as Hydra's basic sweeper lists them (the
  cartesian product of ``hydra.sweeper.params`` and the command line's sweeps).
* **Swept values**: ``swept_values(jobs)``, the keys whose values differ between the jobs, with
  their values in sweep order (``-m cam.layer=layer3,layer4 model=vgg11``: ``cam.layer``).
  vizpipe's sweeper writes them into every job's ``hydra.job.env_set`` (``mark``), which reaches
  every launcher's workers; the job reads them back (``values_of``, ``swept_keys``).
* **Structural overrides** (``Overrides.structural``): config groups (``model=vgg11``),
  ``+``/``++``/``~`` overrides, packages, ``hydra`` keys and dict values change *what* Hydra
  composes; any other override only sets a value in it. A job's config is then its structure's
  composition with the values set on a copy (``with_values``), as Hydra sets them after
  composing: the precheck checks every job with one composition per structure, and the sweeper
  derives value-only jobs' configs instead of composing each.
* **Job folders of a sweep folder** (``job_folders``): each job's folder, found by the overrides
  of its job (``.hydra/overrides.yaml``, else its manifest's), so a resumed sweep (``resume=``)
  runs each unfinished job in its own folder again and leaves the finished ones alone.
* **Jobs this process checked** (``remember``, ``was_checked``): the precheck remembers them, and
  the sweeper skips Hydra's own check of those jobs (which composes every job once more before
  the launcher composes it for real). A 12-job sweep composed 32 times before, 15 times now
  (``benchmarks/sweep.py``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf, open_dict
from vizpipe.pipeline.names import safe_dirname

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

__all__ = [
    "SWEEP_VALUES_ENV",
    "SWEPT_ENV",
    "Overrides",
    "is_hydra_own",
    "job_dirname",
    "job_folders",
    "jobs",
    "mark",
    "parse",
    "remember",
    "swept_keys",
    "swept_values",
    "values_of",
    "was_checked",
    "with_values",
]

#: set by vizpipe's sweeper in every job's ``hydra.job.env_set``: the keys the sweep varies
SWEPT_ENV = "VIZPIPE_SWEPT"
#: ... and, as JSON, the values each of them takes ({"cam.layer": ["layer1", "layer2"]}): the
#: command line hands them to the run (``RunContext.sweep``)
SWEEP_VALUES_ENV = "VIZPIPE_SWEEP_VALUES"

#: the jobs (their override sets) this process has checked, and the values swept among them
_CHECKED: set[frozenset[str]] = set()
_SWEPT: dict[frozenset[str], list[str]] = {}

# --------------------------------------------------------------------------- jobs and their values


def parse(lines: Sequence[str]) -> list[Override]:
    """Hydra's parse of override lines (``OverrideParseException`` when one cannot be read)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(lines))


def is_hydra_own(line: str) -> bool:
    """True for an override of Hydra's own settings (``hydra.*``, ``hydra/*``), which Hydra keeps
    out of the jobs' overrides (``Override.is_hydra_override``)."""
    return line.lstrip("+~").startswith(("hydra.", "hydra/"))


def jobs(params: Sequence[str], overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job: Hydra's basic sweeper on ``params`` + ``overrides``."""
    from vizpipe.pipeline.hydra import private

    (batch,) = private.BasicSweeper.split_arguments(parse([*params, *overrides]), None)
    return [list(job) for job in batch]


def swept_values(batch: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    """The keys whose values differ between the jobs, each with its values in sweep order."""
    values: dict[str, list[str]] = {}
    for job in batch:
        for line in job:
            key, _, value = line.partition("=")
            seen = values.setdefault(key.lstrip("+~"), [])
            if value not in seen:
                seen.append(value)
    return {k: v for k, v in values.items() if len(v) > 1}


def job_folders(sweep_dir: Any) -> dict[frozenset[str], Any]:
    """The job folders in ``sweep_dir``, by their job's override set (folders without a record: left out)."""
    from pathlib import Path

    out: dict[frozenset[str], Path] = {}
    folder = Path(sweep_dir)
    if not folder.is_dir():
        return out
    for job in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        lines = _recorded_overrides(job)
        if lines is not None:
            out.setdefault(frozenset(lines), job)
    return out


def _recorded_overrides(job: Any) -> list[str] | None:
    saved = job / ".hydra" / "overrides.yaml"
    try:
        if saved.is_file():
            return [str(o) for o in OmegaConf.to_container(OmegaConf.load(saved)) or []]
        manifest = job / "manifest.json"
        if manifest.is_file():
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            return [str(o) for o in doc.get("overrides") or []] if isinstance(doc, dict) else None
    except (OSError, ValueError, TypeError):
        return None
    return None


def remember(batch: Iterable[Sequence[str]]) -> None:
    """Remember that these jobs' configs passed every check (and what the sweep varies)."""
    batch = [list(job) for job in batch]
    swept = list(swept_values(batch))
    for job in batch:
        _CHECKED.add(frozenset(job))
        _SWEPT[frozenset(job)] = swept


def was_checked(job: Sequence[str]) -> bool:
    """True when this process checked this job's config (see ``remember``)."""
    return frozenset(job) in _CHECKED


# --------------------------------------------------------------------------- structure and values


class Overrides:
    """Tells structural overrides from value overrides; ``group_options`` is Hydra's config
    loader's ``get_group_options`` (asked once per key: ~10 ms each)."""

    def __init__(self, group_options: Callable[[str], Sequence[str]]) -> None:
        self._group_options = group_options
        self.groups: dict[str, bool] = {}  # key -> is it a config group

    def is_group(self, key: str) -> bool:
        """True when ``key`` names a config group (``model``, ``cam``, ...)."""
        if key not in self.groups:
            self.groups[key] = bool(self._group_options(key.replace(".", "/")))
        return self.groups[key]

    def structural(self, override: Override) -> bool:
        """True when ``override`` changes what is composed, not just a value in it."""
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            return True
        key = override.get_key_element()
        if key == "hydra" or is_hydra_own(key):
            return True
        if isinstance(override.value(), dict):
            return True  # merged into the node it replaces: compose to get Hydra's exact meaning
        return self.is_group(key)

    def same_choice(self, override: Override, choices: Any) -> bool:
        """A plain group override choosing what ``choices`` (``hydra.runtime.choices`` of a
        composed config) already chose: it changes nothing in that config.

        Hydra repeats every command-line override in every job (``run.py -m model=resnet18
        cam.layer=...`` gives each job ``model=resnet18``).
        """
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            return False
        key, value = override.get_key_element(), override.value()
        return isinstance(value, str) and choices.get(key) == value and self.is_group(key)


def with_values(base: DictConfig, overrides: Iterable[Override]) -> DictConfig:
    """A copy of ``base`` with each value override set as Hydra sets it after composing
    (``OmegaConf.update(..., merge=True)``: typed nodes reject a wrong type, struct mode an unknown key)."""
    cfg = copy.deepcopy(base)
    for o in overrides:
        OmegaConf.update(cfg, o.get_key_element(), o.value(), merge=True)
    return cfg


# --------------------------------------------------------------------------- what a job is told


def mark(cfg: DictConfig, values: dict[str, list[str]]) -> DictConfig:
    """Tell the job which keys its sweep varies (job folder names) and their values
    (``RunContext.sweep``; left out when a value holds ``$`` or a backslash, which OmegaConf
    would read as an interpolation or an escape)."""
    if values:
        text = json.dumps(values, separators=(",", ":"))
        with open_dict(cfg.hydra):
            cfg.hydra.job.env_set[SWEPT_ENV] = ",".join(values)
            if "$" not in text and "\\" not in text:
                cfg.hydra.job.env_set[SWEEP_VALUES_ENV] = text
    return cfg


def values_of(env_set: Any) -> dict[str, list[str]]:
    """The values each swept key takes, from the job's ``hydra.job.env_set`` (``mark``); {} for a
    single run or another sweeper."""
    text = (env_set or {}).get(SWEEP_VALUES_ENV)
    try:
        values = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(values, dict):
        return {}
    return {str(k): [str(v) for v in vs] for k, vs in values.items() if isinstance(vs, list)}


def swept_keys(root: Any) -> set[str]:
    """The keys this job's sweep varies: vizpipe's sweeper's mark; under another sweeper the
    sweep this process checked (``remember``), else the sweep of ``hydra.sweeper.params``."""
    env_set = OmegaConf.select(root, "hydra.job.env_set") or {}
    if SWEPT_ENV in env_set:
        return {k for k in str(env_set[SWEPT_ENV]).split(",") if k}
    task = OmegaConf.select(root, "hydra.overrides.task") or []
    known = _SWEPT.get(frozenset(str(o) for o in task))
    if known is not None:
        return set(known)
    try:
        params = OmegaConf.select(root, "hydra.sweeper.params") or {}
        return set(swept_values(jobs([f"{k}={v}" for k, v in params.items()], [])))
    except Exception:  # noqa: BLE001 - params that cannot be read name no sweep
        return set()


def job_dirname(*, _root_: Any) -> str:
    """A multirun job's folder name from the overrides that were swept (all of them as fallback).

    ``-m model=resnet18 cam.layer=layer3,layer4 cam.target_class=1,207`` gives
    ``cam.layer=layer4,cam.target_class=207``; made file-system safe by ``safe_dirname``.
    """
    task = [str(o) for o in _root_.hydra.overrides.task]
    exclude = set(_root_.hydra.job.config.override_dirname.exclude_keys or [])
    pairs = [o.split("=", 1) for o in task if "=" in o]
    pairs = [(k.lstrip("+~"), v) for k, v in pairs if k.lstrip("+~") not in exclude]
    swept = swept_keys(_root_)
    chosen = [(k, v) for k, v in pairs if k in swept] or pairs
    return safe_dirname(",".join(f"{k}={v}" for k, v in sorted(chosen)))
