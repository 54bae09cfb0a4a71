"""A sweep's jobs, checked before Hydra starts, at the cost of one composition (not one per job).

``jobs(params, overrides)`` lists the jobs exactly as Hydra's basic sweeper will
(``BasicSweeper.split_arguments``: the cartesian product of ``hydra.sweeper.params`` and the
command line's sweeps). ``JobChecker`` checks each job's config the cheap way: the config is
composed once per distinct set of *structural* overrides (config groups such as ``model=vgg11``,
``+``/``~`` overrides, ``hydra.*`` keys, dict values), and each job's plain values are set on a
copy with ``OmegaConf.update(cfg, key, value, merge=True)``, which is what Hydra does with them
after composing (typed nodes reject a wrong type, struct mode an unknown key). Then every
config-only rule runs (``vizpipe.pipeline.runner.check_config``).

The jobs checked are remembered for this process (``was_checked``): vizpipe's sweeper
(``pipeline/sweeper.py``) skips Hydra's own check of those jobs, which composes every
job once more before the launcher composes it for real. A 12-job sweep composed 32 times before,
15 times now (``benchmarks/sweep.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["JobChecker", "jobs", "mark_checked", "was_checked"]

#: the jobs (their override sets) this process has checked
_CHECKED: set[frozenset[str]] = set()


def jobs(params: Sequence[str], overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job: Hydra's basic sweeper on ``params`` + ``overrides``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in batch]


def mark_checked(batch: Iterable[Sequence[str]]) -> None:
    """Remember that these jobs' configs passed every check."""
    _CHECKED.update(frozenset(job) for job in batch)


def was_checked(job: Sequence[str]) -> bool:
    """True when this process checked this job's config (see ``mark_checked``)."""
    return frozenset(job) in _CHECKED


class JobChecker:
    """Checks job configs: one composition per set of structural overrides, values set on copies.

    ``composer`` is a ``vizpipe.pipeline.cli.Composer`` (its ``compose`` translates errors into one line).
    """

    def __init__(self, composer: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.composer = composer
        self.parser = OverridesParser.create()
        self.bases: dict[tuple[str, ...], Any] = {}
        self.groups: dict[str, bool] = {}  # key -> is it a config group (asking Hydra costs ~10 ms)
        self.compositions = 0  # full compositions done (for tests and the benchmark)

    def _structural(self, override: Any) -> bool:
        """True when an override changes what is composed, not just a value in it."""
        key = override.get_key_element()
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            return True
        if key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/"):
            return True
        if isinstance(override.value(), dict):
            return True  # merged into the node it replaces: compose to get Hydra's exact meaning
        if key not in self.groups:
            self.groups[key] = bool(self.composer.group_options(key.replace(".", "/")))
        return self.groups[key]

    def check(self, job: Sequence[str]) -> None:
        """Compose (or derive) ``job``'s config and run every config-only rule; ``ConfigError`` if bad."""
        from omegaconf import OmegaConf
        from vizpipe.pipeline.config_errors import translate
        from vizpipe.pipeline.runner import check_config, ensure_typed

        parsed = self.parser.parse_overrides(list(job))
        structural = tuple(o.input_line for o in parsed if self._structural(o))
        if structural not in self.bases:
            self.bases[structural] = self.composer.compose(list(structural))
            self.compositions += 1
        cfg = copy.deepcopy(self.bases[structural])
        try:
            for o in parsed:
                if o.input_line not in structural:
                    OmegaConf.update(cfg, o.get_key_element(), o.value(), merge=True)
        except Exception as exc:  # noqa: BLE001 - omegaconf's errors, translated to one line
            raise translate(exc, list(job)) from exc
        check_config(ensure_typed(cfg))
