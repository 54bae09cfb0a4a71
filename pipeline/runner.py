"""The runner: build device/model/inputs once, run the named stages in order, keep a true manifest."""

from __future__ import annotations

import logging
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError, VizpipeError, unknown_choice

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunResult:
    """What ``run_pipeline`` returns (and ``run.py`` prints)."""

    output_dir: Path
    status: str  # ok | failed | interrupted
    manifest_path: Path
    report_path: Path | None = None
    error: str | None = None  # the first failure's one-line message

    @property
    def ok(self) -> bool:
        """True when every requested stage succeeded."""
        return self.status == "ok"


def validate_config(cfg: DictConfig) -> list[str]:
    """Checks that need no model: stage names, on_error. Returns the stage list."""
    from stages import STAGES

    raw = cfg.stages
    if isinstance(raw, str):  # only possible without the schema (plain dicts in tests)
        raise ConfigError(f"stages must be a list, got the string '{raw}'; write 'stages=[{raw}]'")
    names = [str(s) for s in raw]
    if not names:
        raise ConfigError(f"stages is empty; choose from: {', '.join(STAGES)}")
    for name in names:
        if name not in STAGES:
            raise unknown_choice("stage", name, STAGES, hint="Set e.g. 'stages=[summary,cam]'")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]} is required for this config (it is ??? in conf/); set {missing[0]}=..."
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"stages lists {', '.join(dupes)} more than once: {names}")
    _check_union_types(cfg)
    return names


def _check_union_types(cfg: DictConfig) -> None:
    """Types OmegaConf cannot express (int | str | list | None); meaning is checked by the stage."""
    from omegaconf import ListConfig

    cam = cfg.get("cam")
    if cam is None:
        return
    target = cam.get("target_class")
    values = list(target) if isinstance(target, ListConfig | list) else [target]
    # Class names (strings) are resolved by the cam stage against the weights' categories; with
    # random init and no model.categories there are none, so a string is a type error right here.
    named = cfg.model.get("weights") is not None or cfg.model.get("categories") is not None
    for v in values:
        if target is None or isinstance(v, bool):
            ok = target is None
        else:
            ok = isinstance(v, int) or (named and isinstance(v, str) and not v.lstrip("-").isdigit())
        if not ok:
            names = " (or a class name, since this model's weights carry names)" if named else ""
            raise ConfigError(
                f"Invalid value '{v}' for cam.target_class: expected null (top-1), an int or a list "
                f"of ints{names}, e.g. cam.target_class=207 or 'cam.target_class=[1,207]'"
            )
    layer = cam.get("layer")
    layers = list(layer) if isinstance(layer, ListConfig | list) else [layer]
    for v in layers:
        if not isinstance(v, str) or not v:
            raise ConfigError(
                f"Invalid value '{v}' for cam.layer: expected auto, a dotted layer name or a list "
                "of names, e.g. cam.layer=layer4 or 'cam.layer=[layer3,layer4]'"
            )


def ensure_typed(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` onto the schema when it is untyped (e.g. a run's saved ``.hydra/config.yaml``).

    Re-running from ``--config-path <run>/.hydra --config-name config`` composes without the
    schema; merging restores types, enums and defaults, and still rejects unknown keys.
    """
    from pipeline.schema import Config

    if OmegaConf.get_type(cfg) is Config:
        return cfg
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except Exception as exc:  # omegaconf ValidationError / ConfigKeyError
        raise ConfigError(f"Invalid config: {' '.join(str(exc).split())}") from exc


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally force deterministic algorithms."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def build_context(cfg: DictConfig, output_dir: Path) -> Any:
    """Build device, model and inputs from a composed config: the ``RunContext`` stages receive."""
    from pipeline.build import (
        build_device,
        build_inputs,
        build_model,
        load_categories,
        nonfinite_parameters,
    )
    from pipeline.context import RunContext

    seed_everything(int(cfg.seed), bool(cfg.get("deterministic", False)))
    device = build_device(cfg.device.type)
    log.info("Device <%s>", device)
    model, weights = build_model(cfg.model)
    model = model.to(device)
    inputs = build_inputs(cfg.input, weights, device, int(cfg.seed), model)
    log.info("Input batch %s from %s", tuple(inputs.tensor.shape), cfg.input.kind)
    categories = load_categories(cfg.model.get("categories"))
    if categories is None and weights is not None:
        categories = list(weights.meta.get("categories") or []) or None
    ctx = RunContext(
        model=model,
        model_name=str(cfg.model.name),
        inputs=inputs,
        device=device,
        output_dir=Path(output_dir),
        seed=int(cfg.seed),
        categories=categories,
        weights=str(weights) if weights is not None else None,
    )
    if cfg.model.get("categories") is not None and len(categories or []) != ctx.num_classes:
        raise ConfigError(
            f"model.categories has {len(categories or [])} names but the model has "
            f"{ctx.num_classes} outputs; give exactly one name per class"
        )
    bad = nonfinite_parameters(model)
    if bad:
        ctx.nonfinite_params = bad
        ctx.warn(
            f"Model has non-finite (NaN/inf) values in {len(bad)} tensor(s): {', '.join(bad[:5])}; "
            "results are invalid"
        )
    return ctx


def stage_settings(cfg: DictConfig, name: str) -> Any:
    """The typed settings object of stage ``name`` (its schema dataclass)."""
    node = cfg.get(name)
    if node is None:
        return None
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


def _fail(rec: Any, exc: BaseException) -> str:
    rec.status = "failed"
    rec.error_type = type(exc).__name__
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, VizpipeError):
        msg = f"{type(exc).__name__}: {msg}"
    rec.error = msg
    log.debug("Traceback of %s:\n%s", rec.name, "".join(traceback.format_exception(exc)))
    return msg


def run_pipeline(
    cfg: DictConfig,
    output_dir: Path | str,
    *,
    overrides: list[str] | None = None,
) -> RunResult:
    """Run the configured stages into ``output_dir``; never raises for a stage or user error.

    Failures are recorded in the manifest (and the run's log); the returned ``RunResult`` says
    whether everything succeeded. ``KeyboardInterrupt`` is recorded as ``interrupted`` and re-raised.
    """
    from pipeline import manifest as mf

    cfg = ensure_typed(cfg)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        names = validate_config(cfg)
        config_error: VizpipeError | None = None
    except VizpipeError as exc:
        names, config_error = (
            [str(s) for s in (cfg.stages if not isinstance(cfg.stages, str) else [cfg.stages])],
            exc,
        )
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    versions = mf.versions()
    manifest = mf.Manifest(
        out,
        {
            "vizpipe": versions.get("vizpipe"),
            "run_dir": str(out.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": mf.command_line(),
            "overrides": list(overrides or []),
            "seed": int(cfg.seed),
            "model": str(cfg.model.name),
            "weights": cfg.model.weights,
            "input": {"kind": str(cfg.input.kind), "path": cfg.input.path},
            "device": None,
            "versions": versions,
            "git": mf.git_commit(PROJECT_ROOT),
            "config": resolved,
            "warnings": [],
            "provenance": {},
        },
        names,
    )
    first_error: str | None = None
    ctx = None
    manifest.setup.status = "running"
    manifest.write()
    t0 = time.perf_counter()
    stage_objs: dict[str, Any] = {}
    try:
        try:
            if config_error is not None:
                raise config_error
            from stages import get_stage

            stage_objs = {n: get_stage(n) for n in names}
            ctx = build_context(cfg, out)
            manifest.data["device"] = str(ctx.device)
            manifest.data["provenance"] = _provenance(ctx, cfg)
            for n, stage in stage_objs.items():
                stage.validate(ctx, stage_settings(cfg, n))
            manifest.setup.status = "ok"
        except KeyboardInterrupt:
            manifest.setup.status = "interrupted"
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, logged, reported
            first_error = _fail(manifest.setup, exc)
            log.error("%s", first_error)
            for rec in manifest.stages:
                rec.status = "skipped"
        finally:
            manifest.setup.seconds = round(time.perf_counter() - t0, 3)
            if ctx is not None:
                manifest.data["warnings"] = ctx.warnings
            manifest.write()

        stop = first_error is not None
        for rec in manifest.stages:
            if stop:
                rec.status = "skipped"
                continue
            rec.status = "running"
            manifest.write()
            log.info("Stage <%s> starting", rec.name)
            t = time.perf_counter()
            try:
                ctx.results[rec.name] = stage_objs[rec.name].run(ctx, stage_settings(cfg, rec.name)) or {}
                rec.status = "ok"
                log.info("Stage <%s> done in %.2fs", rec.name, time.perf_counter() - t)
            except KeyboardInterrupt:
                rec.status = "interrupted"
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, logged, reported
                msg = _fail(rec, exc)
                log.error("Stage <%s> failed: %s", rec.name, msg)
                first_error = first_error or f"stage {rec.name} failed: {msg}"
                stop = str(cfg.on_error.value if hasattr(cfg.on_error, "value") else cfg.on_error) == "stop"
            finally:
                rec.seconds = round(time.perf_counter() - t, 3)
                manifest.collect(rec, rec.name)
                if ctx is not None:
                    manifest.data["warnings"] = ctx.warnings
                manifest.write()
    except KeyboardInterrupt:
        for rec in manifest.stages:
            if rec.status in ("pending", "running"):
                rec.status = "skipped" if rec.status == "pending" else "interrupted"
        manifest.write()
        log.error("Interrupted; the manifest and every artifact written so far are kept in %s", out)
        raise
    report_path = _write_report(cfg, out, manifest)
    manifest.write()
    status = manifest.status
    return RunResult(out, status, out / mf.MANIFEST, report_path, first_error)


def _provenance(ctx: Any, cfg: DictConfig) -> dict[str, Any]:
    """sha256 of the input files and the checkpoint."""
    from pipeline.manifest import sha256_file

    prov: dict[str, Any] = {"inputs": [], "checkpoint": None}
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
    settings = stage_settings(cfg, "report")
    if settings is None or not getattr(settings, "enabled", True):
        manifest.report.status = "skipped"
        return None
    rec = manifest.report
    t = time.perf_counter()
    try:
        from pipeline.report import write_run_report
    except ImportError:
        rec.status = "skipped"
        return None
    try:
        manifest.write()
        path = write_run_report(out, settings)
        rec.status = "ok"
        return path
    except Exception as exc:  # noqa: BLE001
        log.error("Report failed: %s", _fail(rec, exc))
        return None
    finally:
        rec.seconds = round(time.perf_counter() - t, 3)
        manifest.collect(rec, None, ["report.html", "report.md"])
