"""``Run``: what ``vizpipe.inspect`` returns, a run folder as Python objects.

A ``Run`` holds the folder's paths, its status and every stage's typed record
(``vizpipe.StageResult``; the stage's own document in ``.data`` when the run happened in this
process, e.g. the CAM stage's ``CamDoc``). In Jupyter it shows the report inline
(``_repr_html_``). ``Run.load(folder)`` reads any run folder back (records from ``manifest.json``,
without ``.data``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vizpipe.pipeline.errors import VizpipeError

__all__ = ["Run", "RunFailed"]

#: height of the inline report in Jupyter, in CSS pixels (the report scrolls inside it)
INLINE_HEIGHT = 720


@dataclass
class Run:
    """One run folder: paths, status and the stages' records (see the module docstring)."""

    output_dir: Path
    status: str  # ok | failed | interrupted
    manifest_path: Path
    report_path: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)  # stage name -> its StageResult
    error: str | None = None  # the first failure's one-line message

    @property
    def ok(self) -> bool:
        """True when every requested stage succeeded."""
        return self.status == "ok"

    @property
    def stages(self) -> list[str]:
        """The stages that returned a record, in run order."""
        return list(self.results)

    def __getitem__(self, stage: str) -> Any:
        """The record of ``stage`` (``run["cam"]``); a missing one names those there are."""
        if stage not in self.results:
            from vizpipe.pipeline.errors import unknown_choice

            raise KeyError(str(unknown_choice("stage record", stage, self.results)))
        return self.results[stage]

    def files(self, stage: str | None = None) -> list[Path]:
        """Every artifact the manifest lists (of one stage, or all), as absolute paths."""
        from vizpipe.pipeline.manifest import load

        doc = load(self.output_dir)
        recs = [doc.get("setup") or {}, *doc.get("stages", []), doc.get("report") or {}]
        chosen = [r for r in recs if stage is None or r.get("name") == stage]
        return [self.output_dir / a["path"] for r in chosen for a in r.get("artifacts", [])]

    @classmethod
    def load(cls, folder: Path | str) -> Run:
        """Read a run folder written by ``run.py`` or ``vizpipe.inspect``."""
        from vizpipe.pipeline.manifest import MANIFEST, load
        from vizpipe.pipeline.report.common import REPORT_HTML, REPORT_MD
        from vizpipe.pipeline.stage import StageResult

        out = Path(folder)
        doc = load(out)
        results = {
            r["name"]: StageResult.from_dict(r["result"]) for r in doc.get("stages", []) if r.get("result")
        }
        errors = [r.get("error") for r in [doc.get("setup") or {}, *doc.get("stages", [])] if r.get("error")]
        report = next((out / n for n in (REPORT_HTML, REPORT_MD) if (out / n).is_file()), None)
        return cls(
            out, str(doc.get("status", "")), out / MANIFEST, report, results, errors[0] if errors else None
        )

    def __repr__(self) -> str:
        where = self.report_path or self.output_dir
        return f"<vizpipe.Run {self.status}: {', '.join(self.stages) or 'no stage'} -> {where}>"

    def _repr_html_(self) -> str:
        """The report inline in Jupyter (an iframe holding the self-contained ``report.html``)."""
        path = self.report_path
        if path is None or path.suffix != ".html" or not path.is_file():
            return f"<pre>{html.escape(repr(self))}</pre>"
        doc = html.escape(path.read_text(encoding="utf-8"), quote=True)
        return (
            f'<iframe srcdoc="{doc}" title="vizpipe report {html.escape(str(path))}" '
            f'style="width:100%;height:{INLINE_HEIGHT}px;border:1px solid #ddd"></iframe>'
        )


class RunFailed(VizpipeError):
    """A ``vizpipe.inspect`` run whose stage (or setup) failed; ``.run`` holds what was written."""

    def __init__(self, message: str, run: Run) -> None:
        super().__init__(message)
        self.run = run
