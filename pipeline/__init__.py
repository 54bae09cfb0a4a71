"""vizpipe's runner and what the stages share (``vizpipe.pipeline``; the folder ``pipeline/``)."""

from pathlib import Path

#: vizpipe's Hydra configs: ``conf/`` beside this folder, in a checkout and in an installed wheel
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
