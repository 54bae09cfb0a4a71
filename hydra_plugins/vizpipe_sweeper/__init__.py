"""vizpipe's Hydra sweeper plugin (``hydra/sweeper=vizpipe``, the default in ``conf/config.yaml``)."""
