"""``hydra/sweeper=vizpipe``. Hydra instantiates plugins only from classes defined in its
``hydra_plugins`` namespace, so the class is declared here; its code is ``vizpipe.pipeline.sweeper``."""

from vizpipe.pipeline import sweeper


class VizpipeSweeper(sweeper.VizpipeSweeper):
    """``vizpipe.pipeline.sweeper.VizpipeSweeper``, under the name Hydra accepts for a plugin."""


__all__ = ["VizpipeSweeper"]
