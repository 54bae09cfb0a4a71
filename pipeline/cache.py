"""The build cache: the jobs of a sweep that share a process share one built model and its inputs.

Under Hydra's basic launcher every job of ``python run.py -m ...`` runs in this process, one after
another, and most jobs of a sweep (``cam.layer=...``, ``cam.target_class=...``) differ only in a
stage's settings. Building the model (weights, checkpoint), checking its parameters, reading and
preprocessing the first batch and the probe forward pass are then the same work every time, so
``vizpipe.pipeline.factory.build_context`` asks this cache first. It is the only state vizpipe keeps across
jobs, and it hands every job the model exactly as a fresh build would:

* **Key**: everything that defines the value: the resolved ``model`` config (name, weights,
  checkpoint path, kwargs, ...) with the checkpoint's and class-name file's size and mtime, the
  resolved ``input`` config with the identity of every file it reads (path, size, mtime_ns and
  inode: ``vizpipe.pipeline.inputs.input_files``, so an image edited, added or replaced between
  two jobs is read again), ``device.type``, ``seed`` and ``deterministic``.
* **Value** (``Entry``): the model, weights, inputs (with their first batch), class names, the
  build's warnings, the random number generators' states right after the build (restored on a
  hit, so a job sees the same random numbers as after a fresh build), and, once a job computed
  them, the probe (``RunContext.probe``) and the blocks; ``shared``: what stages computed on
  this build for later jobs (``RunContext.shared``, e.g. the maps of a sweep's other layers),
  dropped with the entry.
* **Proof that nothing changed** (``Fingerprint``): every parameter and buffer (identity, autograd
  version counter ``vizpipe.pipeline.hooks.versions``, data pointer, dtype, device), every module (identity
  and train/eval mode), the number of hooks (``vizpipe.pipeline.hooks.hook_count``), each parameter's
  ``requires_grad``, ``.grad`` None, and the inputs' tensors (version counters). It is taken after
  the build and compared when a job ends (``release``, called by the runner) and again before
  each reuse (``checkout``): any difference (a train stage ran, a stage left a hook or a gradient)
  drops the entry and the next job builds afresh.
* **Size**: at most ``VIZPIPE_CACHE`` entries (environment variable, default 2; 0 turns the cache
  off), least recently used dropped first. An entry is lent to one run at a time: a second
  ``build_context`` while the first run's context is alive (tests, benchmarks) builds afresh.

Launchers that run jobs in other processes (joblib, submitit, ray) get one cache per worker
process; nothing here crosses processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from torch import nn
    from vizpipe.pipeline.context import RunContext

log = logging.getLogger(__name__)

__all__ = ["BuildCache", "Entry", "Fingerprint", "cache_key", "get_cache"]

#: environment variable: how many builds to keep (0 = no cache)
SIZE_ENV = "VIZPIPE_CACHE"
DEFAULT_SIZE = 2


def _file_stat(value: Any) -> list[int] | None:
    """(size, mtime_ns) of a file named by a config value, None when it names no file."""
    if not isinstance(value, str) or not value:
        return None
    p = Path(value).expanduser()
    try:
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if p.is_file() else None


def cache_key(cfg: DictConfig) -> str:
    """The key of what ``build_context`` builds from ``cfg`` (model, input, device, seed)."""

    def plain(node: Any) -> Any:
        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        return node

    from vizpipe.pipeline.inputs import file_identity, input_files

    model = plain(cfg.model)
    doc = {
        "model": model,
        "checkpoint_file": _file_stat(model.get("checkpoint")),
        "categories_file": _file_stat(model.get("categories")),
        "input": plain(cfg.input),
        "input_files": file_identity(input_files(cfg.input)),
        "device": str(cfg.device.type),
        "seed": int(cfg.seed),
        "deterministic": bool(cfg.get("deterministic", False)),
    }
    return json.dumps(doc, sort_keys=True, default=str)


@dataclass(frozen=True)
class Fingerprint:
    """What must be as built for a model (and its inputs) to be handed to another job."""

    tensors: tuple[tuple[int, int, int, str, str], ...]  # (id, version, data_ptr, dtype, device)
    modules: tuple[tuple[str, int, bool], ...]  # (name, id, training)
    hooks: int
    requires_grad: tuple[bool, ...]
    grads: bool  # True when any parameter holds a .grad
    inputs: tuple[tuple[int, int], ...]  # (id, version) of the inputs' and the probe's tensors

    @classmethod
    def of(cls, model: nn.Module, input_tensors: list[Any]) -> Fingerprint:
        """Fingerprint ``model`` and the given input tensors now."""
        from vizpipe.pipeline.hooks import hook_count, versions

        params = list(model.parameters())
        tensors = [*params, *(b for b in model.buffers() if b is not None)]
        return cls(
            tensors=tuple(
                (ident, version, t.data_ptr(), str(t.dtype), str(t.device))
                for (ident, version), t in zip(versions(model), tensors, strict=True)
            ),
            modules=tuple((name, id(m), m.training) for name, m in model.named_modules()),
            hooks=hook_count(model),
            requires_grad=tuple(p.requires_grad for p in params),
            grads=any(p.grad is not None for p in params),
            inputs=tuple((id(t), int(t._version)) for t in input_tensors),
        )

    def differences(self, other: Fingerprint) -> list[str]:
        """What changed from ``self`` to ``other``, in words (empty: nothing)."""
        out = []
        if self.tensors != other.tensors:
            out.append("parameters or buffers changed")
        if [(n, i) for n, i, _ in self.modules] != [(n, i) for n, i, _ in other.modules]:
            out.append("modules were replaced")
        elif self.modules != other.modules:
            out.append("a module's train/eval mode changed")
        if self.hooks != other.hooks:
            out.append(f"hooks: {other.hooks} instead of {self.hooks}")
        if self.requires_grad != other.requires_grad:
            out.append("requires_grad changed")
        if other.grads and not self.grads:
            out.append("parameters hold gradients")
        now = dict(other.inputs)  # tensors made since (a first batch read later) are new, not changed
        if any(now.get(ident) != version for ident, version in self.inputs):
            out.append("the inputs' tensors changed")
        return out


def _input_tensors(inputs: Any, probe: Any = None) -> list[Any]:
    """Tensors a stage could modify in place: the first batch, in-memory items, the probe's outputs."""
    import torch

    found = [probe.logits] if probe is not None else []
    first = getattr(inputs, "_first", None)
    if first is not None:
        found.append(first.tensor)
    for name in ("x", "rgb"):
        t = getattr(inputs.dataset, name, None)
        if isinstance(t, torch.Tensor):
            found.append(t)
    return found


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Entry:
    """One build: the objects a ``RunContext`` is made of, and the proof they are unchanged."""

    key: str
    model: Any
    inputs: Any
    fields: dict[str, Any]  # the other RunContext fields the build set (device, names, categories, ...)
    warnings: list[str]  # what the build warned about (repeated for every job)
    rng: dict[str, Any]  # random number generators right after the build
    fingerprint: Fingerprint
    probe: Any = None  # RunContext.probe(), once a job computed it
    blocks: list[str] | None = None
    shared: dict[Any, Any] = field(default_factory=dict)  # RunContext.shared of every job on this build
    lent: bool = field(default=False)  # a live run context uses it now
    hits: int = 0


class BuildCache:
    """Least-recently-used builds, keyed by ``cache_key``; see the module docstring."""

    def __init__(self, size: int | None = None) -> None:
        self._size = size
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.RLock()  # joblib's thread backend runs jobs in threads of one process

    @property
    def size(self) -> int:
        """How many builds are kept (``VIZPIPE_CACHE``, default 2; 0 = off)."""
        if self._size is not None:
            return self._size
        text = os.environ.get(SIZE_ENV, "").strip()
        try:
            return max(0, int(text)) if text else DEFAULT_SIZE
        except ValueError:
            log.warning("%s=%r is not a number; using %d", SIZE_ENV, text, DEFAULT_SIZE)
            return DEFAULT_SIZE

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every build."""
        self._entries.clear()

    def checkout(self, key: str, output_dir: Path) -> RunContext | None:
        """A new ``RunContext`` around the build stored under ``key``, or None (build afresh).

        The entry is verified first (dropped when anything changed) and lent to this context until
        ``release``; the random number generators are put where the build left them.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.lent or self.size == 0:
                return None
            now = Fingerprint.of(entry.model, _input_tensors(entry.inputs, entry.probe))
            changed = entry.fingerprint.differences(now)
            if changed:
                name = entry.fields["model_name"]
                log.debug("Build cache: the %s model changed (%s); built afresh", name, "; ".join(changed))
                del self._entries[key]
                return None
            from vizpipe.pipeline.context import RunContext

            self._entries.move_to_end(key)
            entry.lent = True
            entry.hits += 1
            _set_rng_state(entry.rng)
            out = Path(output_dir)
            ctx = RunContext(
                model=entry.model, inputs=entry.inputs, output_dir=out, shared=entry.shared, **entry.fields
            )
            ctx._probe, ctx._blocks = entry.probe, entry.blocks
            log.debug("Reusing model <%s> and inputs built for an earlier job (cache)", ctx.model_name)
            for message in entry.warnings:
                ctx.warn(message)
            return ctx

    def store(self, key: str, ctx: RunContext) -> None:
        """Keep the fresh build behind ``ctx`` (lent to it), evicting the least recently used."""
        with self._lock:
            if self.size == 0:
                return
            fields = {
                "model_name": ctx.model_name,
                "device": ctx.device,
                "seed": ctx.seed,
                "categories": ctx.categories,
                "weights": ctx.weights,
                "blocks_config": ctx.blocks_config,
                "output_kind": ctx.output_kind,
                "nonfinite_params": list(ctx.nonfinite_params),
            }
            self._entries.pop(key, None)
            self._entries[key] = Entry(
                key=key,
                model=ctx.model,
                inputs=ctx.inputs,
                fields=fields,
                warnings=list(ctx.warnings),
                rng=_rng_state(),
                fingerprint=Fingerprint.of(ctx.model, _input_tensors(ctx.inputs, ctx._probe)),
                probe=ctx._probe,
                blocks=ctx._blocks,
                shared=ctx.shared,
                lent=True,
            )
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def release(self, ctx: RunContext | None) -> bool:
        """After a run: keep what it measured (probe, blocks) when its model is as built, else drop it.

        Returns True when the build stays cached. Contexts not made by this cache are ignored.
        """
        with self._lock:
            if ctx is None:
                return False
            entry = next((e for e in self._entries.values() if e.model is ctx.model), None)
            if entry is None:
                return False
            entry.lent = False
            changed = entry.fingerprint.differences(
                Fingerprint.of(entry.model, _input_tensors(entry.inputs, entry.probe))
            )
            if changed:
                log.debug(
                    "The %s model was changed by this run (%s); the next job builds it afresh",
                    entry.fields["model_name"],
                    "; ".join(changed),
                )
                del self._entries[entry.key]
                return False
            if ctx._probe is not None and entry.probe is None:
                entry.probe = ctx._probe
            if ctx._blocks is not None and entry.blocks is None:
                entry.blocks = ctx._blocks
            # from now on the first batch (if this run read it) and the probe are checked too
            entry.fingerprint = Fingerprint.of(entry.model, _input_tensors(entry.inputs, entry.probe))
            return True


_CACHE = BuildCache()


def get_cache() -> BuildCache:
    """The process's build cache (one per process; launchers' workers have their own)."""
    return _CACHE
