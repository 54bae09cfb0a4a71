"""Job configs composed as Hydra will compose them, and checked, before Hydra starts.

``Composer`` is Hydra's Compose API on the search path Hydra will use (``conf/``,
``--config-dir``, ``--config-path``/``--config-name``); a composition error becomes one line
(``vizpipe.pipeline.config_errors.translate``). ``JobChecker`` checks every job of a sweep at the
cost of one composition per structure (``vizpipe.pipeline.sweeps``: structural overrides are
composed, value overrides set on a copy), then runs every config-only rule
(``vizpipe.pipeline.runner.check_config``: the stage list, the input's and each stage's
``check_settings``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vizpipe.pipeline import sweeps
from vizpipe.pipeline.config_errors import translate

__all__ = ["Composer", "JobChecker"]


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

    def _hydra_overrides(self) -> list[str]:
        path = [f"hydra.searchpath=[{','.join(self.extra)}]"] if self.extra else []
        return path + self.hydra_groups

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
            raise translate(exc, self._hydra_overrides() + overrides) from exc

    def all_group_options(self, group: str) -> list[str]:
        """Every option of a config group, ``_``-private ones included (``[]``: not a group)."""
        from hydra.core.global_hydra import GlobalHydra

        return list(GlobalHydra.instance().config_loader().get_group_options(group))

    def group_options(self, group: str) -> list[str]:
        """The options of a config group (``_``-private ones hidden)."""
        return [o for o in self.all_group_options(group) if not o.startswith("_")]


class JobChecker:
    """Checks job configs: one composition per set of structural overrides, values set on copies."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer
        self.overrides = sweeps.Overrides(composer.all_group_options)
        self.bases: dict[tuple[str, ...], Any] = {}
        self.compositions = 0  # full compositions done (for tests and the benchmark)

    def check(self, job: Sequence[str]) -> Any:
        """Compose (or derive) ``job``'s config and run every config-only rule; ``ConfigError`` if
        bad. Returns the job's config (without the ``hydra`` node)."""
        from vizpipe.pipeline.runner import check_config, ensure_typed

        parsed = sweeps.parse(job)
        structural = tuple(o.input_line for o in parsed if self.overrides.structural(o))
        if structural not in self.bases:
            self.bases[structural] = self.composer.compose(list(structural))
            self.compositions += 1
        try:
            values = [o for o in parsed if o.input_line not in structural]
            cfg = sweeps.with_values(self.bases[structural], values)
        except Exception as exc:  # noqa: BLE001 - omegaconf's errors, translated to one line
            raise translate(exc, list(job)) from exc
        check_config(ensure_typed(cfg))
        return cfg
