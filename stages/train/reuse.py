"""Train once per sweep: a later job with the same training gets the trained weights, not a new run.

``python run.py -m experiment=shapes_demo sweep=explanations`` runs dozens of jobs that each start
with the train stage and then explain the trained model (methods × layers). Training is a
function of its inputs: the initial weights, the data, the train settings, the seed, the device
and the thread count (on a CPU the same inputs give the same weights, bit for bit: the train
stage's tests). So the first job trains, and the train stage keeps, in this process, the trained
weights and its record under ``training_key`` (a sha256 of all of that); a later job whose key is
the same loads those weights into its model instead of training, copies the first job's train
files (checkpoint, ``history.json``, event files, pictures: byte for byte what it would have
written) and returns the same record, its summary saying where the weights came from. Every job
then explains *the same* model: on a GPU, training again would give slightly different weights.

The key holds (``training_key``): every parameter and buffer of the model before training
(names, dtypes, shapes, bytes), the model's class, the data set's identity (``Inputs.identity``:
the resolved input config and every file it reads), every train setting, the seed, the device,
torch's thread count, deterministic flag and version. Nothing is reused for objects lent by
``vizpipe.inspect`` (their code is not in any key), when the first job's files are gone, or with
``VIZPIPE_CACHE=0`` (the build cache's switch: every cache across jobs off). At most
``KEEP`` trainings are kept (least recently used dropped first). Launchers' worker processes keep
their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.stage import StageResult

log = logging.getLogger(__name__)

__all__ = ["KEEP", "Trained", "forget", "lookup", "remember", "training_key"]

#: trainings kept in this process
KEEP = 2


@dataclass
class Trained:
    """One finished training: its weights, its record and where its files are."""

    state: dict[str, torch.Tensor]  # the trained state_dict (CPU copies)
    variants: dict[str, dict[str, torch.Tensor]]  # RunContext.variants' weights (e.g. random_labels)
    record: StageResult  # the train stage's record (its paths are run-relative)
    run_dir: Path  # the run folder that holds its files


_TRAINED: OrderedDict[str, Trained] = OrderedDict()
_LOCK = threading.Lock()


def enabled(ctx: RunContext) -> bool:
    """Whether trainings may be reused in this run (not for lent objects; ``VIZPIPE_CACHE`` not 0)."""
    from vizpipe.pipeline.cache import get_cache
    from vizpipe.pipeline.lent import lending

    return get_cache().size > 0 and not lending()


def training_key(ctx: RunContext, settings: Any) -> str:
    """A sha256 of everything that defines the trained weights (the module docstring lists it)."""
    import json

    import torch
    from omegaconf import OmegaConf

    h = hashlib.sha256()
    h.update(f"{type(ctx.model).__module__}.{type(ctx.model).__qualname__}".encode())
    for name, t in ctx.model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    def plain(v: Any) -> Any:
        return OmegaConf.to_container(v, resolve=True, enum_to_str=True) if OmegaConf.is_config(v) else v

    doc = {
        "settings": {f.name: plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)},
        "data": ctx.inputs.identity(),
        "seed": int(ctx.seed),
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch": torch.__version__,
    }
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return h.hexdigest()


def lookup(key: str) -> Trained | None:
    """The training kept under ``key`` (None: train)."""
    with _LOCK:
        found = _TRAINED.get(key)
        if found is not None:
            _TRAINED.move_to_end(key)
        return found


def remember(key: str, ctx: RunContext, record: StageResult) -> None:
    """Keep this run's trained weights (and variants) and record for later jobs."""

    def copy(model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    entry = Trained(copy(ctx.model), {k: copy(m) for k, m in ctx.variants.items()}, record, ctx.output_dir)
    with _LOCK:
        _TRAINED[key] = entry
        _TRAINED.move_to_end(key)
        while len(_TRAINED) > KEEP:
            _TRAINED.popitem(last=False)


def forget() -> None:
    """Drop every kept training."""
    with _LOCK:
        _TRAINED.clear()


def files_of(record: StageResult) -> list[str]:
    """Every run-relative file a train record names (its pictures and files)."""
    return list(dict.fromkeys([*(p.path for p in record.pictures), *record.files]))


def reuse(ctx: RunContext, trained: Trained) -> StageResult | None:
    """Load ``trained`` into this run (weights, variants, files); its record (None: its files are gone)."""
    import copy

    from vizpipe.pipeline.files import write_atomic

    paths = files_of(trained.record)
    if not all((trained.run_dir / rel).is_file() for rel in paths):
        log.debug("train: the files of the kept training in %s are gone; training again", trained.run_dir)
        return None
    for rel in paths:  # each through a temp file and a rename, as the stage writes them
        write_atomic(ctx.claim(rel), (trained.run_dir / rel).read_bytes())
    ctx.model.load_state_dict(trained.state)
    for name, state in trained.variants.items():
        twin = copy.deepcopy(ctx.model)
        twin.load_state_dict(state)
        ctx.variants[name] = twin.eval()
    record = dataclasses.replace(
        trained.record,
        summary=(
            f"weights trained by {trained.run_dir.name} (same model, data, settings, seed and threads; "
            f"its files copied, nothing trained here): {trained.record.summary}"
        ),
        pictures=list(trained.record.pictures),
        tables=list(trained.record.tables),
        scalars=list(trained.record.scalars),
        files=list(trained.record.files),
        warnings=[],
    )
    log.info("train: reusing the weights trained by %s (same training); not training again", trained.run_dir)
    return record
