"""The runner: build device/model/inputs once, run the named stages in order, keep a true manifest.

``run_pipeline(cfg, output_dir)`` never raises for a stage or user error: failures are recorded
in ``manifest.json`` (and ``run.log``) and the returned ``RunResult`` says what happened. Each
stage's ``StageResult`` goes into the manifest beside its status and artifacts, which is all the
report and the sweep index read.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from vizpipe.pipeline.errors import ConfigError, VizpipeError, unknown_choice
from vizpipe.pipeline.stage import SharedConfig

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: what Hydra itself puts in a fresh run folder before the job starts
HYDRA_FILES = (".hydra", "run.log")

__all__ = [
    "RunResult",
    "check_config",
    "check_required_keys",
    "check_stage_list",
    "ensure_typed",
    "run_pipeline",
    "shared_config",
]


@dataclass
class RunResult:
    """What ``run_pipeline`` returns (and the command line prints: ``vizpipe.pipeline.cli.finish``)."""

    output_dir: Path
    status: str  # ok | failed | interrupted
    manifest_path: Path
    report_path: Path | None = None
    error: str | None = None  # every failure, one line: 'stage a failed: ...; stage b failed: ...'

    @property
    def ok(self) -> bool:
        """True when every requested stage succeeded."""
        return self.status == "ok"


def check_stage_list(cfg: DictConfig) -> list[str]:
    """The ``stages`` list: known names, not empty, none twice, a stage that reads the others'
    records after them (no model, no stage code). Returns it."""
    from vizpipe.pipeline.registry import stage_classes

    known = stage_classes()
    raw = cfg.stages
    if isinstance(raw, str):  # only possible without the schema (plain dicts in tests)
        raise ConfigError(f"stages must be a list, got the string '{raw}'; write 'stages=[{raw}]'")
    names = [str(s) for s in raw]
    if not names:
        raise ConfigError(f"stages is empty; choose from: {', '.join(known)}")
    for name in names:
        if name not in known:
            raise unknown_choice("stage", name, known, hint="Set e.g. 'stages=[summary,cam]'")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"stages lists {', '.join(dupes)} more than once: {names}")
    readers = [n for n in names if known[n].reads_records]
    others = [n for n in names if not known[n].reads_records]
    if readers and names != others + readers:
        late = [n for n in others if names.index(n) > names.index(readers[0])]
        raise ConfigError(
            f"stages lists {', '.join(late)} after {readers[0]}, which reads the records of the stages "
            f"before it; write 'stages=[{','.join(others + readers)}]'"
        )
    return names


def check_required_keys(cfg: DictConfig) -> None:
    """Every key is one the schema knows (``schema.check_known_keys``: ``+cam.methd=...`` is refused)
    and every key the chosen config groups leave ``???`` (e.g. ``input.path``) is set."""
    from vizpipe.pipeline.schema import check_known_keys

    check_known_keys(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (an image file, a folder or a glob)" if missing[0] == "input.path" else ""
        raise ConfigError(f"{missing[0]} is required for this choice{hint}; set {missing[0]}=...")


def shared_config(cfg: DictConfig) -> SharedConfig:
    """What a stage's ``check_settings`` may read beyond its own settings (``SharedConfig``)."""
    kind = cfg.input.kind
    return SharedConfig(input_kind=str(getattr(kind, "value", kind)))


def check_config(cfg: DictConfig) -> list[str]:
    """Every config-only rule: the stage list, required keys, ``_target_`` only where vizpipe builds
    one, the input's and each stage's ``check_settings``. Returns the stage names."""
    from vizpipe.pipeline.factory.targets import check_targets
    from vizpipe.pipeline.inputs import check_input
    from vizpipe.pipeline.registry import built_keys, get_stage
    from vizpipe.pipeline.schema import settings_of

    names = check_stage_list(cfg)
    check_required_keys(cfg)
    check_targets(cfg, built_keys())
    check_input(cfg.input)
    writers = cfg.get("writers")
    if writers is not None and int(writers) < 0:
        raise ConfigError(f"writers must be >= 0 or null (auto), got {writers}")
    shared = shared_config(cfg)
    for name in names:
        get_stage(name).check_settings(settings_of(cfg, name), shared)
    return names


def ensure_typed(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` onto the schema when it is untyped (e.g. a run's saved ``.hydra/config.yaml``).

    Re-running from ``--config-path <run>/.hydra --config-name config`` composes without the
    schema; merging restores types, enums and defaults, and still rejects unknown keys.
    """
    import dataclasses

    from vizpipe.pipeline.schema import root_schema

    root = OmegaConf.get_type(cfg)
    if root.__name__ == "Config" and dataclasses.is_dataclass(root) and dataclasses.fields(root):
        return cfg
    if dataclasses.is_dataclass(root):  # the schema made in another process (a submitit or Ray job
        # unpickles the config with a copy of the class that lost its fields): typed again here
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    try:
        return OmegaConf.merge(OmegaConf.structured(root_schema(with_defaults=False)), cfg)
    except Exception as exc:  # omegaconf ValidationError / ConfigKeyError: one line, closest key
        from vizpipe.pipeline.config_errors import translate

        raise translate(exc, []) from exc


def _fail(rec: Any, exc: BaseException) -> str:
    rec.status = "failed"
    rec.error_type = type(exc).__name__
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, VizpipeError):
        msg = f"{type(exc).__name__}: {msg}"
    rec.error = msg
    log.debug("Traceback of %s:\n%s", rec.name, "".join(traceback.format_exception(exc)))
    return msg


def _new_manifest(
    cfg: DictConfig, out: Path, names: list[str], overrides: list[str] | None, owner: Any = None
) -> Any:
    from vizpipe.pipeline import manifest as mf
    from vizpipe.pipeline.registry import stage_classes

    versions = mf.versions()
    classes = stage_classes()
    titles = {n: (classes[n].title or n) for n in names if n in classes}
    config, hidden = mf.config_record(cfg, show_env=bool(OmegaConf.select(cfg, "report.show_env")))
    return mf.Manifest(
        out,
        {
            "vizpipe": versions.get("vizpipe"),
            "run_dir": str(out.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "owner": None
            if owner is None
            else {
                "pid": owner.pid,
                "host": owner.host,
                "started": owner.started,
                "pid_start": owner.pid_start,
            },
            "command": mf.command_line(),
            "overrides": list(overrides or []),
            "seed": int(cfg.seed),
            "model": str(config["model"].get("name")),
            "weights": config["model"].get("weights"),
            "input": {"kind": str(config["input"]["kind"]), "path": config["input"].get("path")},
            "device": None,
            "versions": versions,
            "git": mf.git_commit(PROJECT_ROOT),
            "config": config,
            "warnings": [],
            "provenance": {},
        },
        names,
        titles,
        hidden,
    )


def run_pipeline(
    cfg: DictConfig,
    output_dir: Path | str,
    *,
    overrides: list[str] | None = None,
    sweep: dict[str, list[str]] | None = None,
    resume: bool = False,
) -> RunResult:
    """Run the configured stages into ``output_dir``; never raises for a stage or user error.

    ``sweep``: the values each key of this job's sweep takes (``RunContext.sweep``; the command
    line reads them from the job's Hydra config, ``vizpipe.pipeline.sweeps.values_of``), so a stage
    can do its sibling jobs' work in the same pass.

    The run claims its folder first (``vizpipe.pipeline.ownership``): a folder another run owns
    or has written in is refused, nothing in it touched. ``resume``: the folder may hold an
    interrupted run of the same config, which is finished (``vizpipe.pipeline.resume``: finished
    stages and batches kept); an empty folder starts afresh.

    Failures are recorded in the manifest (and the run's log); the returned ``RunResult`` says
    whether everything succeeded. ``KeyboardInterrupt`` (Ctrl-C, and SIGTERM on the command line:
    ``vizpipe.pipeline.errors.Interrupted``) is recorded as ``interrupted``, with the signal and
    how to resume, and re-raised.
    """
    from vizpipe.pipeline import manifest as mf
    from vizpipe.pipeline.ownership import claim

    cfg = ensure_typed(cfg)
    out = Path(output_dir)
    try:
        held = claim(out, allow=HYDRA_FILES, resume=resume)
    except ConfigError as exc:
        log.error("%s", exc)
        return RunResult(out, "failed", out / mf.MANIFEST, None, str(exc))
    try:
        return _run(cfg, out, held, overrides, sweep, resume)
    finally:
        held.release()


def _run(
    cfg: DictConfig,
    out: Path,
    held: Any,
    overrides: list[str] | None,
    sweep: dict[str, list[str]] | None,
    resume: bool,
) -> RunResult:
    """``run_pipeline`` in its claimed folder."""
    from vizpipe.pipeline import manifest as mf
    from vizpipe.pipeline.logs import set_verbose
    from vizpipe.pipeline.resume import previous_run
    from vizpipe.pipeline.schema import settings_of

    set_verbose(bool(cfg.get("verbose", False)))
    previous = None
    if resume:
        try:
            show = bool(OmegaConf.select(cfg, "report.show_env"))
            previous = previous_run(out, mf.config_record(cfg, show_env=show)[0])  # as the manifest has it
        except VizpipeError as exc:
            log.error("%s", exc)
            return RunResult(out, "failed", out / mf.MANIFEST, None, str(exc))
    try:
        names = check_stage_list(cfg)
        check_required_keys(cfg)
        config_error: VizpipeError | None = None
    except VizpipeError as exc:
        names = [str(s) for s in (cfg.stages if not isinstance(cfg.stages, str) else [cfg.stages])]
        config_error = exc
    manifest = _new_manifest(cfg, out, names, overrides, held.owner)
    if previous is not None:
        previous.adopt(manifest)
    manifest.setup.status = "running"
    manifest.write()
    setup = _Setup()
    try:
        setup = _setup(cfg, out, manifest, names, config_error)
        ctx, errors = setup.ctx, setup.errors
        if ctx is not None:
            ctx.sweep = {k: list(v) for k, v in (sweep or {}).items()}
        continue_on_error = str(getattr(cfg.on_error, "value", cfg.on_error)) == "continue"
        stop = bool(errors) and not continue_on_error
        for rec in manifest.stages:
            if rec.status == "failed":
                continue  # failed its model check (on_error=continue)
            if stop or ctx is None:
                rec.status = "skipped"
                continue
            kept = previous.kept.get(rec.name) if previous is not None else None
            if kept is not None:
                previous.restore(ctx, setup.stages[rec.name], settings_of(cfg, rec.name), rec, manifest)
                continue
            warned = setup.warned.get(rec.name, [])
            err = _run_stage(cfg, ctx, setup.stages[rec.name], rec, manifest, warned, resume)
            if err is not None:
                errors.append(f"stage {rec.name} failed: {err}")
                stop = not continue_on_error
    except KeyboardInterrupt as exc:
        manifest.interrupted(getattr(exc, "signal_name", "SIGINT"))
        manifest.close()
        raise
    _release(setup.ctx)
    report_path = _write_report(cfg, out, manifest)
    manifest.write()
    manifest.close()
    error = "; ".join(setup.errors) or None
    return RunResult(out, manifest.status, out / mf.MANIFEST, report_path, error)


@dataclass
class _Setup:
    """What ``_setup`` hands to the stage loop."""

    ctx: Any = None  # the RunContext; None when the setup failed
    stages: dict[str, Any] = field(default_factory=dict)  # stage name -> its instance
    errors: list[str] = field(default_factory=list)  # one line per failure, in order
    warned: dict[str, list[str]] = field(default_factory=dict)  # stage name -> its check_model warnings


def _setup(
    cfg: DictConfig, out: Path, manifest: Any, names: list[str], config_error: VizpipeError | None
) -> _Setup:
    """Check the config, build the context, check each stage against the model; record failures
    in the manifest."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.registry import get_stage
    from vizpipe.pipeline.schema import settings_of

    t0 = time.perf_counter()
    setup = _Setup()
    try:
        if config_error is not None:
            raise config_error
        check_config(cfg)
        setup.stages = {n: get_stage(n) for n in names}
        ctx = setup.ctx = build_context(cfg, out)
        manifest.data["device"] = str(ctx.device)
        manifest.data["provenance"] = _provenance(ctx, cfg)
        continue_on_error = str(getattr(cfg.on_error, "value", cfg.on_error)) == "continue"
        for rec in manifest.stages:
            start = len(ctx.warnings)
            try:
                setup.stages[rec.name].check_model(ctx, settings_of(cfg, rec.name))
            except VizpipeError as exc:
                if not continue_on_error:
                    raise
                msg = _fail(rec, exc)
                log.error("Stage <%s> cannot run: %s", rec.name, msg)
                setup.errors.append(f"stage {rec.name} failed: {msg}")
            finally:
                setup.warned[rec.name] = ctx.warnings[start:]
        manifest.setup.status = "ok"
    except KeyboardInterrupt:
        manifest.setup.status = "interrupted"
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, logged, reported
        setup.errors = [_fail(manifest.setup, exc)]
        log.error("%s", setup.errors[0])
        _release(setup.ctx)
        setup.ctx = None
        for rec in manifest.stages:
            rec.status = "skipped"
    finally:
        manifest.setup.seconds = round(time.perf_counter() - t0, 3)
        if setup.ctx is not None:
            manifest.data["warnings"] = setup.ctx.warnings
        manifest.write()
    return setup


def _run_stage(
    cfg: DictConfig, ctx: Any, stage: Any, rec: Any, manifest: Any, warned: list[str], resume: bool = False
) -> str | None:
    """Run one stage; keep its record in the context and the manifest. Returns its error, if any.

    The record's ``warnings`` are ``warned`` (its ``check_model``'s) and every ``ctx.warn`` made
    while it ran; those the stage listed there itself are warned (logged, kept run-wide) here.
    ``resume``: the stage continues its progress record (``ctx.progress``); the files of its
    finished batches count as its artifacts, as if it had written them now.
    """
    from vizpipe.pipeline.progress import Progress
    from vizpipe.pipeline.reproducible import reproducible
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.pipeline.stage import StageResult

    rec.status = "running"
    rec.error = rec.error_type = None
    manifest.write()
    ctx.progress = Progress(manifest.run_dir, rec.name, resume=resume)
    before = manifest.snapshot()
    if resume:
        kept = ctx.progress.kept_files()
        before = {k: v for k, v in before.items() if k not in kept}
    t = time.perf_counter()
    start = len(ctx.warnings)
    error = None
    try:
        with reproducible(ctx):  # the same bytes on every run, whatever this process's threads
            result = stage.run(ctx, settings_of(cfg, rec.name))
        if not isinstance(result, StageResult):
            raise TypeError(f"stage {rec.name} returned {type(result).__name__}, not a StageResult")
        for message in result.warnings:
            ctx.warn(message)
        result.warnings = [*warned, *ctx.warnings[start:]]
        ctx.results[rec.name] = result
        rec.result = result.to_dict()
        rec.status = "ok"
    except KeyboardInterrupt:
        rec.status = "interrupted"
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, logged, reported
        error = _fail(rec, exc)
    finally:
        rec.seconds = round(time.perf_counter() - t, 3)
        manifest.collect(rec, before)
        manifest.data["warnings"] = ctx.warnings
        manifest.write()
        ctx.progress.close()
    if rec.status == "ok":
        ctx.progress.clear()
    files = f"{rec.name}/ ({len(rec.artifacts)} files)"
    if error is None:
        log.info("%-11s ok %7.2f s  %-24s %s", rec.name, rec.seconds, files, ctx.results[rec.name].summary)
    else:
        log.error("%-11s failed %.2f s: %s", rec.name, rec.seconds, error)
    return error


def _release(ctx: Any) -> None:
    """Hand the built model back to ``vizpipe.pipeline.cache`` (kept for the next job only if unchanged)."""
    if ctx is not None:
        from vizpipe.pipeline.cache import get_cache

        get_cache().release(ctx)


def _provenance(ctx: Any, cfg: DictConfig) -> dict[str, Any]:
    """sha256 of the input files and the checkpoint."""
    from vizpipe.pipeline.files import sha256_file

    prov: dict[str, Any] = {"inputs": [], "checkpoint": None}
    skipped = getattr(ctx.inputs, "skipped", None)  # files under input.path / root not used (inputs/scan.py)
    if skipped:
        prov["skipped"] = [{"path": s.path, "why": s.why} for s in skipped]
    for f in ctx.inputs.files:
        prov["inputs"].append(
            {"path": str(f), "sha256": sha256_file(Path(f)), "bytes": Path(f).stat().st_size}
        )
    if cfg.model.checkpoint:
        p = Path(str(cfg.model.checkpoint)).expanduser()
        prov["checkpoint"] = {"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size}
    return prov


def _write_report(cfg: DictConfig, out: Path, manifest: Any) -> Path | None:
    """Write the report (if enabled); a report failure is recorded, never fatal."""
    from vizpipe.pipeline.schema import settings_of

    settings = settings_of(cfg, "report")
    rec = manifest.report
    if settings is None or not getattr(settings, "enabled", True):
        rec.status = "skipped"
        return None
    t = time.perf_counter()
    before = manifest.snapshot()
    try:
        from vizpipe.pipeline.report import write_run_report

        manifest.write()
        path = write_run_report(out, settings)
        rec.status = "ok"
        return path
    except Exception as exc:  # noqa: BLE001
        log.error("Report failed: %s", _fail(rec, exc))
        return None
    finally:
        rec.seconds = round(time.perf_counter() - t, 3)
        manifest.collect(rec, before)
