"""Job configs composed as Hydra will compose them, and checked, before Hydra starts.

``Composer`` is Hydra's Compose API on the search path Hydra will use (``conf/``,
``--config-dir``, ``--config-path``/``--config-name``); a composition error becomes one line
(``vizpipe.pipeline.config_errors.translate``). ``JobChecker`` checks every job of a sweep at the
cost of one composition per structure (``vizpipe.pipeline.sweeps``: structural overrides are
composed, value overrides set on a copy), then runs every config-only rule
(``vizpipe.pipeline.runner.check_config``: the stage list, the input's and each stage's
``check_settings``). An internal option (``model=_torchvision``) on the command line is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vizpipe.pipeline import sweeps
from vizpipe.pipeline.config_errors import translate
from vizpipe.pipeline.errors import ConfigError

__all__ = ["Composer", "JobChecker", "SweepProblems"]


class SweepProblems(ConfigError):
    """Several problems among a sweep's jobs: ``head`` counts them, ``details`` has one line each."""

    def __init__(self, head: str, details: list[str]) -> None:
        super().__init__("\n".join([head, *details]))
        self.head, self.details = head, details


class Composer:
    """Hydra's Compose API on the search path Hydra will use (a context manager)."""

    def __init__(
        self, primary: Path, name: str, extra: list[str], hydra_groups: list[str] | None = None
    ) -> None:
        self.primary, self.name, self.extra = primary, name, extra
        # hydra/launcher=joblib, hydra.launcher.n_jobs=2: checked with every compose
        self.hydra_groups = list(hydra_groups or [])
        self._ctx: Any = None

    def __enter__(self) -> Composer:
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from vizpipe.pipeline.config_store import register

        register()
        GlobalHydra.instance().clear()
        self._ctx = initialize_config_dir(config_dir=str(self.primary), version_base="1.3")
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self._ctx.__exit__(*exc)
        GlobalHydra.instance().clear()

    def _search_path(self) -> list[str]:
        return [f"hydra.searchpath=[{','.join(self.extra)}]"] if self.extra else []

    def _hydra_overrides(self) -> list[str]:
        return self._search_path() + self.hydra_groups

    def compose(self, overrides: list[str], *, hydra: bool = False) -> Any:
        """The composed config (``hydra``: with the ``hydra`` node); errors translated."""
        from hydra import compose

        try:
            return compose(
                config_name=self.name,
                overrides=self._hydra_overrides() + overrides,
                return_hydra_config=hydra,
            )
        except Exception as exc:  # noqa: BLE001 - translated below
            raise translate(exc, self._hydra_overrides() + overrides, self.all_group_options) from exc

    def all_group_options(self, group: str) -> list[str]:
        """Every option of a config group, ``_``-private ones included (``[]``: not a group), on the
        whole search path (``--config-dir`` too)."""
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        return list(loader.get_group_options(group, overrides=self._search_path()))

    def group_options(self, group: str) -> list[str]:
        """The options of a config group (internal ones hidden: ``config_store.public_options``)."""
        from vizpipe.pipeline.config_store import public_options

        return public_options(self.all_group_options(group))


class JobChecker:
    """Checks job configs: one composition per set of structural overrides, values set on copies."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer
        self.overrides = sweeps.Overrides(composer.all_group_options)
        self.bases: dict[tuple[str, ...], Any] = {}  # structure -> its composition, or why it failed
        self.compositions = 0  # full compositions done (for tests and the benchmark)

    def check_all(self, batch: Sequence[Sequence[str]]) -> list[Any]:
        """Check every job and return their configs; ``ConfigError`` naming every problem, not only
        the first one met.

        A problem every job has is its one line, as for a single run; a problem of some jobs is
        prefixed with them (Hydra's job numbers and the swept values they share:
        ``sweep job 1 (cam.method=foo): Unknown value ...``); several problems are a first line
        counting the bad jobs and one line per problem. A structure that fails to compose is
        composed once, not once per job.
        """
        problems: dict[str, list[int]] = {}
        first: ConfigError | None = None
        configs: list[Any] = []
        for i, job in enumerate(batch):
            try:
                configs.append(self.check(job))
            except ConfigError as exc:
                problems.setdefault(str(exc), []).append(i)
                first = first or exc
        if first is None:
            return configs
        if len(problems) == 1 and len(problems[str(first)]) == len(batch):
            raise first
        swept = sweeps.swept_values(batch)
        lines = [f"{_jobs_label(jobs, batch, swept)}: {message}" for message, jobs in problems.items()]
        if len(lines) == 1:
            raise ConfigError(lines[0]) from first
        bad = sum(len(jobs) for jobs in problems.values())
        head = f"{bad} of {len(batch)} sweep jobs are invalid ({len(problems)} problems, below); none ran"
        raise SweepProblems(head, lines) from first

    def check(self, job: Sequence[str]) -> Any:
        """Compose (or derive) ``job``'s config and run every config-only rule; ``ConfigError`` if
        bad. Returns the job's config (without the ``hydra`` node)."""
        from vizpipe.pipeline.runner import check_config, ensure_typed

        parsed = sweeps.parse(job)
        self._refuse_internal(parsed)
        structural = tuple(o.input_line for o in parsed if self.overrides.structural(o))
        if structural not in self.bases:
            self.compositions += 1
            try:
                self.bases[structural] = self.composer.compose(list(structural))
            except Exception as exc:  # noqa: BLE001 - a ConfigError, kept for the other jobs
                self.bases[structural] = exc
        if isinstance(self.bases[structural], Exception):
            raise self.bases[structural]
        try:
            values = [o for o in parsed if o.input_line not in structural]
            cfg = sweeps.with_values(self.bases[structural], values)
        except Exception as exc:  # noqa: BLE001 - omegaconf's errors, translated to one line
            raise translate(exc, list(job)) from exc
        check_config(ensure_typed(cfg))
        return cfg

    def _refuse_internal(self, parsed: Sequence[Any]) -> None:
        """An internal option (``input=_base``, ``model=_torchvision``, ``cam=_schema``) chosen on the
        command line is refused with the group's public options (``config_store.is_internal``)."""
        from vizpipe.pipeline.config_store import is_internal
        from vizpipe.pipeline.errors import unknown_choice

        for o in parsed:
            key, value = o.key_or_group, o.value()  # the key without its +, ++ or ~
            if o.is_delete() or not isinstance(value, str) or not is_internal(value):
                continue
            group = key.replace(".", "/")
            if sweeps.is_hydra_own(key) or not self.overrides.is_group(key):
                continue
            raise unknown_choice(
                f"{group} option",
                value,
                self.composer.group_options(group),
                context="(options starting with _ are internal: the bases other options build on)",
                hint=f"Set {group}=<one of these>",
            )


def _jobs_label(jobs: list[int], batch: Sequence[Sequence[str]], swept: dict[str, list[str]]) -> str:
    """``sweep job 1 (model=nope)`` / ``sweep jobs 0, 3 (cam.method=foo)``: Hydra's job numbers and
    the swept values every one of them has."""
    values = [dict(line.lstrip("+~").split("=", 1) for line in batch[i] if "=" in line) for i in jobs]
    shared = [f"{k}={values[0][k]}" for k in swept if k in values[0] and len({v.get(k) for v in values}) == 1]
    numbers = ", ".join(str(i) for i in jobs[:8]) + (f", ... ({len(jobs)} jobs)" if len(jobs) > 8 else "")
    label = f"sweep job{'s' if len(jobs) > 1 else ''} {numbers}"
    return label + (f" ({', '.join(shared)})" if shared else "")
