"""Every use of Hydra's private API (``hydra._internal``), pinned to the Hydra versions tested.

vizpipe uses Hydra's public API everywhere else. Two things have no public form:

* ``BasicSweeper``: vizpipe's sweeper (``vizpipe.pipeline.sweeper``) is Hydra's basic sweeper
  with two methods changed, and ``vizpipe.pipeline.sweeps.jobs`` lists a sweep's jobs with its
  ``split_arguments``, so that they are exactly the jobs Hydra will run;
* ``get_overrides_dirname``: how Hydra computes ``hydra.job.override_dirname`` (the deriving
  config loader sets it as Hydra would, and proves the result equal to Hydra's own).

Importing this module checks the installed ``hydra-core``: a version outside ``TESTED`` fails
with one line naming it and the versions tested (``HydraVersionError``); the command line prints
it and exits 2 before anything else runs.

Hydra's plugin scan re-executes the modules of its core plugins in place, which makes a new
``BasicSweeper`` class each time; ``BasicSweeper`` here is therefore read from Hydra's module
when asked for (vizpipe's sweeper module is imported by that scan, after Hydra's own plugins).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import hydra
from vizpipe.pipeline.errors import VizpipeError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

__all__ = ["TESTED", "HydraVersionError", "check_version", "overrides_dirname"]  # and BasicSweeper

#: the hydra-core versions this module accepts: the 1.3 series from 1.3.2, as pyproject.toml pins it
#: (tested with 1.3.8; the private names used here are the same throughout 1.3)
TESTED = ">=1.3.2,<1.4"
_LOWEST, _BELOW = (1, 3, 2), (1, 4)


class HydraVersionError(VizpipeError, ImportError):
    """The installed hydra-core is not a version this module was tested with."""


def check_version(version: str = hydra.__version__) -> None:
    """Raise ``HydraVersionError`` unless ``version`` is in ``TESTED``."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    if not (_LOWEST <= parts and parts[:2] < _BELOW):
        raise HydraVersionError(
            f"hydra-core {version} is not a version vizpipe was tested with (hydra-core{TESTED}: "
            f"vizpipe.pipeline.hydra.private uses its private API); install one: "
            f"pip install 'hydra-core{TESTED}'"
        )


check_version()


def __getattr__(name: str) -> Any:
    if name == "BasicSweeper":  # Hydra's current class (see the module docstring)
        return importlib.import_module("hydra._internal.core_plugins.basic_sweeper").BasicSweeper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def overrides_dirname(
    overrides: Sequence[Override], *, kv_sep: str, item_sep: str, exclude_keys: Sequence[str]
) -> str:
    """``hydra.job.override_dirname`` for these parsed overrides, as Hydra computes it."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(
        overrides=list(overrides), kv_sep=kv_sep, item_sep=item_sep, exclude_keys=list(exclude_keys)
    )
