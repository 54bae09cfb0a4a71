"""Hydra callbacks: the sweep index, rebuilt from the job folders on disk.

Hydra runs ``on_job_end`` after every job (failed ones too) but skips ``on_multirun_end`` when a
job failed, and under the joblib launcher ``on_job_end`` runs in worker processes. So the index
is rebuilt from what is on disk after every job *and* at the end; any process may write it, and
``python -m pipeline.report <sweep_dir>`` rebuilds it at any time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    """Writes ``<sweep_dir>/index.html`` after each multirun job and at the end of the sweep."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """After a multirun job (ok or failed): rebuild the sweep index from disk."""
        try:
            from hydra.core.hydra_config import HydraConfig

            if str(HydraConfig.get().mode) != "RunMode.MULTIRUN":
                return
            self._rebuild(Path(HydraConfig.get().sweep.dir))
        except Exception as exc:  # noqa: BLE001 - a summary must never fail a job
            log.warning("Sweep index not updated: %s", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After the whole sweep (Hydra skips this when a job failed)."""
        try:
            self._rebuild(Path(config.hydra.sweep.dir))
        except Exception as exc:  # noqa: BLE001
            log.warning("Sweep index not written: %s", exc)

    @staticmethod
    def _rebuild(sweep_dir: Path) -> None:
        from pipeline.report import write_sweep_index

        path = write_sweep_index(sweep_dir)
        log.info("Sweep index %s", path)
