"""Reports: ``report.html``/``report.md`` for a run folder, ``index.html`` for a sweep folder.

Everything is read from disk (``manifest.json`` with each stage's ``StageResult`` record,
``.hydra/``), so a report can be rebuilt at any time by any process:
``python -m vizpipe.report <run_or_sweep_dir>``.

Collect, then render: ``collect_run``/``collect_sweep`` read the files into plain data,
``report.run``/``report.sweep`` turn it into a template context, and the jinja2
templates in ``templates/`` turn that into text (HTML autoescaped; Markdown through escaping
filters). ``report.html`` and ``index.html`` embed their pictures as base64 data URIs (one file
that opens offline and survives copying); ``report.md`` links them relatively. No module here
knows a stage: sections are built from the records, or from a stage's own template fragment.

Modules (no circles): ``common`` (reading, formatting, pictures) <- ``templating`` (jinja2) <-
``sections`` (one stage's section) <- ``run``; ``common`` <- ``jobs`` (a sweep's job folders) <-
``merge`` (a data set's shards merged) <- ``sweep``; ``run``, ``sweep`` <- this package <-
``__main__`` (the CLI).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vizpipe.pipeline.files import write_atomic
from vizpipe.pipeline.manifest import MANIFEST
from vizpipe.pipeline.report.common import REPORT_HTML, REPORT_MD, SWEEP_INDEX
from vizpipe.pipeline.report.jobs import SweepData, collect_sweep, is_job_dir
from vizpipe.pipeline.report.run import RunData, collect_run, run_context, settings_from_config
from vizpipe.pipeline.report.sweep import sweep_context
from vizpipe.pipeline.report.templating import render

__all__ = [
    "REPORT_HTML",
    "REPORT_MD",
    "SWEEP_INDEX",
    "RunData",
    "SweepData",
    "collect_run",
    "collect_sweep",
    "is_job_dir",
    "is_run_dir",
    "is_sweep_dir",
    "write_run_report",
    "write_sweep_index",
]

log = logging.getLogger(__name__)


def write_run_report(run_dir: Path | str, settings: Any = None) -> Path:
    """Write ``report.html`` and/or ``report.md`` into ``run_dir`` from its files; return the first.

    ``settings`` is a ``vizpipe.pipeline.schema.ReportConfig`` (None = the run's recorded ``report``
    config, else defaults). Returns the Markdown path when HTML is disabled.
    """
    run = Path(run_dir)
    data = collect_run(run)
    if settings is None:
        settings = settings_from_config(data.config)
    if not (settings.html or settings.markdown):
        from vizpipe.pipeline.errors import ConfigError

        raise ConfigError(
            "report.html and report.markdown are both false: nothing to write "
            "(set report.enabled=false instead)"
        )
    max_images = int(settings.max_images)
    written: list[Path] = []
    if settings.html:
        text = render("run.html.j2", run_context(data, max_images, html=True))
        written.append(write_atomic(run / REPORT_HTML, text))
    if settings.markdown:
        text = render("run.md.j2", run_context(data, max_images, html=False))
        written.append(write_atomic(run / REPORT_MD, text))
    log.debug("Report %s", written[0])
    return written[0]


def write_sweep_index(sweep_dir: Path | str) -> Path:
    """Write ``<sweep_dir>/index.html`` from the job folders on disk; return its path.

    Safe to call at any time and from several processes (atomic replace); it never runs a job.
    """
    sweep = Path(sweep_dir)
    text = render("sweep.html.j2", sweep_context(collect_sweep(sweep)))
    return write_atomic(sweep / SWEEP_INDEX, text)


def is_sweep_dir(folder: Path) -> bool:
    """True for a sweep folder: a ``multirun.yaml`` or at least one job folder."""
    folder = Path(folder)
    return (folder / "multirun.yaml").is_file() or any(is_job_dir(p) for p in folder.iterdir())


def is_run_dir(folder: Path) -> bool:
    """True for a run folder: a manifest, or (when it is no sweep) Hydra's ``.hydra`` folder."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or ((folder / ".hydra").is_dir() and not is_sweep_dir(folder))
