"""vizpipe's Hydra plugin (the sweeper, ``vizpipe.pipeline.sweeper``), made visible to Hydra, and
the one adapter to Hydra's private API (``private``: pinned versions, one-line error on another).

Hydra loads plugins only from its ``hydra_plugins`` namespace package, scanning every
``hydra_plugins`` folder on ``sys.path``. ``register()`` adds this folder (which holds
``hydra_plugins/vizpipe_sweeper/``, a shim re-exporting ``vizpipe.pipeline.sweeper.VizpipeSweeper``)
to the path before Hydra starts; ``vizpipe.pipeline.config_store`` calls it. Importing this
package imports nothing of Hydra.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)


def register() -> None:
    """Put the plugin folder on ``sys.path`` (idempotent)."""
    if HERE not in sys.path:
        sys.path.append(HERE)
