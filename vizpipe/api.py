"""``vizpipe.inspect``: the command line's run on a model object, from Python or a notebook.

``inspect(model, inputs, stages=["cam"], cam={"layer": "layer3"})`` composes the same config
``run.py`` composes (Hydra's Compose API on vizpipe's ``conf/``), with the model object and the
inputs lent to the build (``vizpipe.pipeline.lent``: ``model._target_`` names the lent model,
``input.kind=objects`` the lent inputs; a path is ``input=image`` as on the command line), runs
every config rule the command line runs (one line on failure, ``ConfigError``), then
``run_pipeline`` into a new run folder: the same stages, manifest, report and ``run.log``.

The caller's process is left as it was: the model's modes, ``requires_grad``, grads, buffers
and hooks (``vizpipe.pipeline.hooks.preserved``), the random generators, the deterministic
flag, cuDNN flags and thread count (``vizpipe._guard``); nothing is cached (a lent model never
enters the build cache), and no allocator or collector setting is touched (those belong to the
command line, ``vizpipe.pipeline.process``). With ``stages=[train, ...]`` a copy of the model is
trained, never the caller's object.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError
from vizpipe.runs import Run, RunFailed

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

    from vizpipe.pipeline.ownership import Claim

__all__ = ["compose", "inspect"]

#: ConfigStore options (``_``: hidden from the choices a message lists) for lent objects
LENT_MODEL, LENT_INPUT = "_lent", "_objects"
#: ``preprocess=`` keys, each an ``input.*`` key
PREPROCESS_KEYS = ("resize", "crop", "mean", "std", "interpolation", "normalized")
#: root keys that are not settings a caller passes as keywords
NOT_SETTINGS = ("defaults", "model", "stages")


def _register() -> None:
    """Store vizpipe's schemas, the lent model and input options in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from vizpipe.pipeline.config_store import register
    from vizpipe.pipeline.lent import LENT_TARGET
    from vizpipe.pipeline.schema import InputConfig, InputKind, ModelConfig

    register()
    cs = ConfigStore.instance()
    cs.store(group="model", name=LENT_MODEL, node=ModelConfig(_target_=LENT_TARGET, name="model"))
    cs.store(group="input", name=LENT_INPUT, node=InputConfig(kind=InputKind.objects))


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """vizpipe's config composed as ``run.py`` composes it (Compose API, ``conf/``), errors in one line.

    The caller's own Hydra state (a ``@hydra.main`` app, another ``initialize``) is put back after.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    from vizpipe.pipeline import CONF_DIR
    from vizpipe.pipeline.config_errors import translate

    _register()
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except Exception as exc:  # noqa: BLE001 - Hydra's and OmegaConf's errors, one line
        raise translate(exc, list(overrides)) from exc
    finally:
        restore_gh_from_backup(backup)


def inspect(
    model: nn.Module,
    inputs: Any = None,
    stages: Sequence[str] | str | None = None,
    out: str | Path | None = None,
    *,
    categories: Sequence[str] | str | None = None,
    preprocess: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> Run:
    """Run vizpipe's stages on ``model`` and ``inputs``; return the ``Run`` (see the module docstring).

    Args:
        model: any ``torch.nn.Module`` (a class defined in a notebook too), used where it is
            (its device, unless ``device=...`` names the same one).
        inputs: a tensor (N×C×H×W, used as it is), a list of PIL images or image paths, an image
            file, folder or glob, or a ``Dataset``/``DataLoader`` yielding ``(image, label)``;
            None: the config's input (the bundled photo, or ``overrides=["input=shapes"]``).
        stages: stage names in order (``["cam"]``); None: the default list (``run.py``'s).
        out: the run folder, which must be new; None: ``outputs/<date>/<time>`` in the current
            folder, as ``run.py`` names it (a suffix when that exists already).
        categories: class names (a list, or a text file with one per line): ``model.categories``.
        preprocess: ``input.*`` preprocessing for images: ``resize``, ``crop``, ``mean``, ``std``,
            ``interpolation``, ``normalized`` (tensors: whether to un-normalise them for drawing).
        overrides: dotted overrides as on the command line (``["cam.method=layercam"]``).
        **settings: any other top-level key: a stage's settings as a dict (``cam={"layer":
            "layer3"}``), or ``seed=1``, ``device="cpu"``, ``input={"limit": 8}``, ``verbose=True``.

    Raises:
        ConfigError: a bad value, in one line naming it and the valid choices (nothing written).
        RunFailed: a stage failed; ``.run`` holds the folder, manifest and every record written.
    """
    from vizpipe._guard import caller_state, run_log
    from vizpipe.pipeline.hooks import preserved
    from vizpipe.pipeline.lent import lend
    from vizpipe.pipeline.runner import check_config, ensure_typed, run_pipeline

    _check_model(model)
    lines = _overrides(model, inputs, stages, list(overrides), settings)
    cfg = _configure(model, inputs, lines, categories, preprocess, settings)
    names = check_config(ensure_typed(cfg))
    held = _new_folder(out)
    folder = held.folder
    worked = copy.deepcopy(model) if "train" in names else model  # the train stage changes weights
    try:
        with caller_state(), preserved(model), run_log(folder, verbose=bool(cfg.verbose)):
            _write_hydra_record(folder, cfg, lines)
            with lend(worked, _plain_inputs(inputs)) as holder:
                result = run_pipeline(cfg, folder, overrides=lines)
                records = dict(holder.context.results) if holder.context is not None else {}
    finally:
        held.release()
    run = Run(
        result.output_dir, result.status, result.manifest_path, result.report_path, records, result.error
    )
    if not records:
        run.results = Run.load(folder).results
    if not result.ok:
        raise RunFailed(f"{result.error or result.status} (details: {folder / 'run.log'})", run)
    return run


def _check_model(model: Any) -> None:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"vizpipe.inspect needs a torch.nn.Module, got {type(model).__name__}; for a model from a "
            "config use run.py (or vizpipe.pipeline.runner.run_pipeline)"
        )


def _is_path(inputs: Any) -> bool:
    return isinstance(inputs, str | Path)


def _plain_inputs(inputs: Any) -> Any:
    """The objects ``input.kind=objects`` reads (a path is read by ``input=image`` instead)."""
    return None if inputs is None or _is_path(inputs) else inputs


def _overrides(
    model: nn.Module, inputs: Any, stages: Sequence[str] | str | None, user: list[str], settings: dict
) -> list[str]:
    """The override lines of this call: lent model and input options, stages, then the caller's."""
    keys = [o.lstrip("+~").partition("=")[0] for o in user]
    lines = [f"model={LENT_MODEL}", f"model.name={_model_name(model)}"]
    if "model" in keys:
        raise ConfigError("overrides cannot choose model=...: vizpipe.inspect inspects the model you give it")
    if inputs is not None:
        taken = [k for k in keys if k in ("input", "input.path")]
        if taken:
            raise ConfigError(
                f"inputs were given and overrides set {taken[0]}=...; give one of them "
                "(inputs=None uses the config's input)"
            )
        lines.append("input=image" if _is_path(inputs) else f"input={LENT_INPUT}")
    if stages is not None:
        chosen = [stages] if isinstance(stages, str) else [str(s) for s in stages]
        lines.append(f"stages=[{','.join(chosen)}]")
    return lines + user


def _model_name(model: nn.Module) -> str:
    """The class name, file-name safe (it names the run in the manifest and report)."""
    from vizpipe.pipeline.names import slug

    return slug(type(model).__name__) or "model"


def _configure(
    model: nn.Module,
    inputs: Any,
    lines: list[str],
    categories: Sequence[str] | str | None,
    preprocess: dict[str, Any] | None,
    settings: dict[str, Any],
) -> DictConfig:
    """Compose ``lines``, then set the values given as Python objects; errors in one line."""
    from omegaconf import OmegaConf

    from vizpipe.pipeline.config_errors import translate

    cfg = compose(lines)
    values: list[tuple[str, Any]] = []
    if _is_path(inputs):
        values.append(("input.path", str(inputs)))
    if categories is not None:
        values.append(("model.categories", categories if isinstance(categories, str) else list(categories)))
    for key, value in (preprocess or {}).items():
        if key not in PREPROCESS_KEYS:
            from vizpipe.pipeline.errors import unknown_choice

            raise unknown_choice("preprocess key", key, PREPROCESS_KEYS)
        values.append((f"input.{key}", value))
    values += _settings(cfg, settings)
    if not any(k.startswith("device") for k, _ in values) and not any(
        o.lstrip("+~").startswith("device") for o in lines
    ):
        values.append(("device.type", str(_device_of(model))))
    try:
        for key, value in values:
            OmegaConf.update(cfg, key, value, merge=True)
    except Exception as exc:  # noqa: BLE001 - omegaconf's errors, translated as the command line's
        raise translate(exc, [f"{k}={v}" for k, v in values]) from exc
    return cfg


def _settings(cfg: DictConfig, settings: dict[str, Any]) -> list[tuple[str, Any]]:
    """Keyword settings as (key, value): a dict is merged into its node, a value set as it is."""
    from vizpipe.pipeline.errors import unknown_choice

    known = [k for k in cfg if k not in NOT_SETTINGS]
    out: list[tuple[str, Any]] = []
    for key, value in settings.items():
        if key not in known:
            raise unknown_choice("vizpipe.inspect setting", key, known, hint="Or pass overrides=[...]")
        if key == "device" and isinstance(value, str):
            value = {"type": value}
        if isinstance(value, dict):
            out += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            out.append((key, value))
    return out


def _device_of(model: nn.Module) -> Any:
    import torch

    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _new_folder(out: str | Path | None) -> Claim:
    """``out``, or a new ``outputs/<date>/<time>`` (``run.py``'s pattern, ``_1``, ``_2`` ... when
    taken), claimed for this call as the command line claims its run folder
    (``vizpipe.pipeline.ownership``: a folder that holds files or another run is refused)."""
    from vizpipe.pipeline.ownership import claim, claim_new

    hint = "out=..., or leave out unset"
    if out is not None:
        folder = Path(out).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"Run folder {folder} is a file; choose a new folder ({hint})")
        return claim(folder, hint=hint)
    return claim_new(Path("outputs", time.strftime("%Y-%m-%d"), time.strftime("%H-%M-%S")), hint=hint)


def _write_hydra_record(folder: Path, cfg: DictConfig, lines: list[str]) -> None:
    """``.hydra/config.yaml`` and ``overrides.yaml``, as Hydra writes them for ``run.py``."""
    from omegaconf import OmegaConf

    from vizpipe.pipeline.files import write_atomic

    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    write_atomic(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(lines))))
