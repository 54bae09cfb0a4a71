"""Build what a run needs once: seeds, device, model and inputs -> the ``RunContext``.

``device.py``, ``model.py`` and ``pipeline/inputs`` do the work; ``targets.py`` holds the only
``instantiate`` call. ``build_context`` is what the runner (and tests) call; it reuses an earlier
job's build through ``vizpipe.pipeline.cache`` when model, input, device and seed are the same.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from vizpipe.pipeline.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["build_context", "seed_everything"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally force deterministic algorithms."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic or torch.are_deterministic_algorithms_enabled():  # the call alone costs ~1 s of imports
        torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def build_context(cfg: DictConfig, output_dir: Path | str) -> Any:
    """Build device, model and inputs from a composed config: the ``RunContext`` stages receive.

    An earlier job's build with the same model, input (and input files), device and seed is
    reused when it is unchanged (``vizpipe.pipeline.cache``); the runner hands the context back
    with ``release``. Objects lent by ``vizpipe.inspect`` (``vizpipe.pipeline.lent``) are built
    around as they are and never cached: the cache would keep the caller's model alive.
    """
    from vizpipe.pipeline.cache import cache_key, get_cache
    from vizpipe.pipeline.lent import is_lent, lent

    if is_lent(cfg.model):  # objects handed to vizpipe.inspect: nothing to rebuild, never cached
        seed_everything(int(cfg.seed), bool(cfg.get("deterministic", False)))
        ctx = _build(cfg, output_dir)
        lent().context = ctx
    else:
        cache = get_cache()
        key = cache_key(cfg)
        seed_everything(int(cfg.seed), bool(cfg.get("deterministic", False)))
        ctx = cache.checkout(key, Path(output_dir))
        if ctx is None:
            ctx = _build(cfg, output_dir)
            cache.store(key, ctx)
    writers = cfg.get("writers")  # this job's, not part of the build
    ctx.writers = None if writers is None else int(writers)
    return ctx


def _build(cfg: DictConfig, output_dir: Path | str) -> Any:
    """A fresh build (seeded by the caller)."""
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.factory.device import build_device
    from vizpipe.pipeline.factory.model import build_model, load_categories, nonfinite_parameters
    from vizpipe.pipeline.inputs import build_inputs
    from vizpipe.pipeline.lent import is_lent
    from vizpipe.pipeline.models import EMBEDDING_TARGET

    device = build_device(cfg.device.type)
    log.debug("Device <%s>", device)
    model, weights = build_model(cfg.model)
    model = model.to(device) if not is_lent(cfg.model) else _on_device(model, device)
    inputs = build_inputs(cfg.input, weights, device, int(cfg.seed), model)
    categories = load_categories(cfg.model.get("categories"))
    if categories is None and weights is not None and cfg.model.get("_target_") != EMBEDDING_TARGET:
        categories = list(weights.meta.get("categories") or []) or None  # an embedding has no classes
    output = cfg.model.get("output", "auto")
    task = cfg.model.get("task", "auto")
    ctx = RunContext(
        model=model,
        model_name=str(cfg.model.name),
        inputs=inputs,
        device=device,
        output_dir=Path(output_dir),
        seed=int(cfg.seed),
        categories=categories,
        weights=str(weights) if weights is not None else None,
        blocks_config=cfg.model.get("blocks"),
        output_kind=str(getattr(output, "value", output)),
        task_config=str(getattr(task, "value", task)),
    )
    if inputs.classes:
        _check_outputs_cover_classes(ctx, inputs.classes)
        if categories is None:
            _data_set_categories(ctx, inputs.classes)
    if inputs.skipped:
        from vizpipe.pipeline.inputs.scan import describe

        key = "root" if inputs.classes else "path"
        where = f"input.{key} '{cfg.input.get(key)}'"
        ctx.warn(f"{where}: {describe(inputs.skipped)} (all listed in manifest.json: provenance.skipped)")
    for i, why in inputs.invalid.items():
        ctx.warn(
            f"Input {inputs.names[i]} ({inputs.sources[i]}) has {why}: its predictions and maps are invalid"
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


def _on_device(model: Any, device: Any) -> Any:
    """A lent model stays where its owner put it: ``device`` must be where its parameters are."""
    first = next(iter(model.parameters()), None)
    where = first.device if first is not None else device
    if where.type != device.type or (device.index is not None and where.index != device.index):
        raise ConfigError(
            f"device '{device}' is not where the model's parameters are ({where}); move the model "
            f"first (model.to('{device}')) or leave device unset (vizpipe.inspect uses the model's device)"
        )
    return model


def _check_outputs_cover_classes(ctx: Any, classes: list[str]) -> None:
    """A labelled data set needs an output for each of its classes, whatever the stages.

    With fewer outputs, the labels from ``num_classes`` up could never be predicted, the class
    names could not be used, and an accuracy would count those images as wrong: refused (even for
    stages that read no label, so that the rule has one home; to look at the images without
    their labels, use ``input=image``).
    """
    if ctx.num_classes >= len(classes):
        return
    shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
    raise ConfigError(
        f"{ctx.model_name} has {ctx.num_classes} outputs but input={ctx.inputs.kind} has {len(classes)} "
        f"classes ({shown}): labels {ctx.num_classes}..{len(classes) - 1} could never be predicted; "
        f"set model.num_classes={len(classes)} (or use input=image to look at the images without labels)"
    )


def _data_set_categories(ctx: Any, classes: list[str]) -> None:
    """Name the model's outputs after the data set's classes (input=shapes, imagefolder, cifar10)
    when the model has no names of its own and exactly one output per class."""
    if ctx.num_classes == len(classes):
        ctx.categories = list(classes)
        log.debug("Class names from the data set: %s", ", ".join(classes))
    else:
        log.debug(
            "The data set's %d class names are not used: the model has %d outputs",
            len(classes),
            ctx.num_classes,
        )
