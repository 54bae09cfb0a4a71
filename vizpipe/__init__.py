"""vizpipe: look inside PyTorch models, from a config (``vizpipe``/``python run.py``) or from Python.

The package's parts keep the design card's folders: ``vizpipe.pipeline`` is ``pipeline/`` (the
runner and what stages share), ``vizpipe.stages`` is ``stages/`` and the Hydra configs are
``conf/``. In a wheel they are installed inside ``vizpipe/``; in a checkout they stay at the top
level and this package's ``__path__`` reaches them, so ``vizpipe.pipeline.runner`` is the same
module either way and nothing vizpipe installs takes a generic top-level name.

Public API (imported on first use, so ``import vizpipe`` stays cheap):

* the library: ``inspect`` (a model object and its inputs -> a run folder and a ``Run``),
  ``Run`` (``Run.load(folder)``), ``Watch`` (your own training loop), ``compose`` (vizpipe's config
  as ``run.py`` composes it), the errors ``VizpipeError``, ``ConfigError``, ``RunFailed``;
  ``vizpipe.integrations.lightning.VizpipeCallback`` for a Lightning ``Trainer``;
* the command line's entry ``run_pipeline(cfg, output_dir)``;
* the stage contract for plugin authors (``Stage``, ``SharedConfig``, ``StageResult``, ``Picture``,
  ``Table``, ``Text``, ``Scalar``, ``Histogram``, ``Merge``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

_here = Path(__file__).resolve().parent
if not (_here / "pipeline").is_dir() and (_here.parent / "pipeline" / "__init__.py").is_file():
    # a checkout: pipeline/, stages/ and conf/ sit beside this folder
    __path__.append(str(_here.parent))  # noqa: F821 - a package's __path__

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "ConfigError": "vizpipe.pipeline.errors",
    "Run": "vizpipe.runs",
    "RunFailed": "vizpipe.runs",
    "VizpipeError": "vizpipe.pipeline.errors",
    "Watch": "vizpipe.watch",
    "compose": "vizpipe.api",
    "inspect": "vizpipe.api",
    "Histogram": "vizpipe.pipeline.stage",
    "Merge": "vizpipe.pipeline.stage",
    "Picture": "vizpipe.pipeline.stage",
    "Scalar": "vizpipe.pipeline.stage",
    "SharedConfig": "vizpipe.pipeline.stage",
    "Stage": "vizpipe.pipeline.stage",
    "StageResult": "vizpipe.pipeline.stage",
    "Table": "vizpipe.pipeline.stage",
    "Text": "vizpipe.pipeline.stage",
    "run_pipeline": "vizpipe.pipeline.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vizpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
