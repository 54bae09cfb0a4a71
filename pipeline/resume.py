"""``resume=<run folder>``: finish an interrupted run in its own folder, doing no work twice.

What a resumed run keeps, and what it does again:

* **the config must be the same**: ``check_same_config`` compares the new config with the one the
  run recorded and names every key that differs, in one line (a resumed run that mixed two
  configs would be neither);
* **finished stages are kept**: a stage recorded ``ok`` whose every artifact is still as recorded
  (size and sha256 read back) is not run again; its record comes back from the manifest and
  ``Stage.restore`` puts back what later stages need of it (the train stage: the trained weights);
* **a stage that was cut short is run again from where it stopped**: its progress record
  (``vizpipe.pipeline.progress``) says which batches finished with intact files; those are
  skipped, a partly written batch is written again (files are complete or absent under their
  final names: ``vizpipe.pipeline.files``), and the train stage goes on from its last epoch's
  checkpoint with its optimizer, scheduler, step and random generators;
* hidden temporary files a killed writer left are removed, and the report is written again.

``previous_run`` reads all that from the folder; the runner applies it (``run_pipeline(...,
resume=True)``). The command line checks the config before Hydra starts
(``vizpipe.pipeline.precheck``), so a mismatch is refused before anything in the folder changes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vizpipe.pipeline.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Previous", "check_same_config", "differing_keys", "previous_run", "remove_temporaries"]

#: root keys that may differ between a run and its resumption (they change nothing it computes)
IGNORED = ("verbose",)


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain (container) configs, in order."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in [*a, *(k for k in b if k not in a)]:
            where = f"{prefix}.{key}" if prefix else str(key)
            if prefix == "" and key in IGNORED:
                continue
            if key not in a or key not in b:
                out.append(where)
            else:
                out += differing_keys(a[key], b[key], where)
        return out
    return [] if a == b else [prefix or "(the whole config)"]


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _at(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return "(unset)"
        doc = doc[part]
    return doc


def check_same_config(recorded: Any, new: Any, folder: Path | str) -> None:
    """``ConfigError`` naming the keys where ``new`` differs from the run's ``recorded`` config."""
    keys = differing_keys(recorded, new)
    if not keys:
        return
    shown = ", ".join(f"{k} ({_show(_at(recorded, k))} there, {_show(_at(new, k))} here)" for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    raise ConfigError(
        f"resume={folder}: the config differs from the run's in {shown}{more}; resume finishes a run with "
        "its own config: give the same overrides (the run's are in its .hydra/overrides.yaml), or start a "
        "new run"
    )


@dataclass
class Previous:
    """What a resumed run takes over from the interrupted one."""

    doc: dict[str, Any]  # its manifest
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its ok record, files intact
    redo: list[str] = field(default_factory=list)  # ok stages with a missing or changed file

    def adopt(self, manifest: Any) -> None:
        """The resumed run's manifest: the interrupted run's start and command, when it was
        resumed, and its finished stages' records (those are not run again)."""
        import time

        from vizpipe.pipeline.manifest import Artifact

        for key in ("created", "command", "overrides"):
            if key in self.doc:
                manifest.data[key] = self.doc[key]
        manifest.data["resumed"] = [*(self.doc.get("resumed") or []), time.strftime("%Y-%m-%dT%H:%M:%S%z")]
        for rec in manifest.stages:
            kept = self.kept.get(rec.name)
            if kept is not None:
                rec.artifacts = [
                    Artifact(a["path"], int(a["bytes"]), a["sha256"]) for a in kept.get("artifacts") or []
                ]
                rec.seconds = kept.get("seconds")

    def restore(self, ctx: Any, stage: Any, settings: Any, rec: Any, manifest: Any) -> None:
        """A stage the interrupted run finished: its record back (in ``ctx.results`` too, for the
        stages that read records), and what later stages need of it (``Stage.restore``)."""
        from vizpipe.pipeline.stage import StageResult

        kept = self.kept[rec.name]
        result = StageResult.from_dict(kept["result"])
        stage.restore(ctx, settings, result)
        ctx.results[rec.name] = result
        ctx.warnings.extend(w for w in result.warnings if w not in ctx.warnings)
        rec.result, rec.status = kept["result"], "ok"
        manifest.data["warnings"] = ctx.warnings
        manifest.write()
        log.info("%-11s kept from the interrupted run (%d files)", rec.name, len(rec.artifacts))


def remove_temporaries(folder: Path) -> int:
    """Remove the hidden temporary files killed writers left (``.<name>.<pid>-<n>.tmp``); returns how many."""
    count = 0
    for p in folder.rglob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            count += 1
    return count


def _intact(folder: Path, artifact: dict[str, Any]) -> bool:
    from vizpipe.pipeline.files import sha256_file

    path = folder / str(artifact.get("path", ""))
    try:
        return path.stat().st_size == int(artifact["bytes"]) and sha256_file(path) == artifact["sha256"]
    except (OSError, KeyError, TypeError, ValueError):
        return False


def previous_run(folder: Path, config: dict[str, Any] | None) -> Previous | None:
    """The interrupted run in ``folder``: None when there is none (a fresh start there).

    ``config``: the new run's resolved config, compared with the recorded one (None: not checked).
    A manifest that cannot be read means nothing is known to be kept: the run starts afresh in
    the folder (its files are written again).
    """
    from vizpipe.pipeline.manifest import MANIFEST

    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        log.warning("resume: %s cannot be read (%s); every stage runs again", path, exc)
        return None
    if config is not None and doc.get("config") is not None:
        check_same_config(doc["config"], config, folder)
    found = Previous(doc)
    for rec in doc.get("stages") or []:
        if not isinstance(rec, dict) or rec.get("status") != "ok" or rec.get("result") is None:
            continue
        if all(_intact(folder, a) for a in rec.get("artifacts") or []):
            found.kept[str(rec["name"])] = rec
        else:
            found.redo.append(str(rec["name"]))
    gone = remove_temporaries(folder)
    log.info(
        "resume: %s; kept stage(s): %s%s%s",
        folder,
        ", ".join(found.kept) or "none",
        f"; changed files, run again: {', '.join(found.redo)}" if found.redo else "",
        f"; {gone} temporary file(s) of the killed run removed" if gone else "",
    )
    return found
