"""vizpipe's built-in stages: one module (or package) per stage, found by ``vizpipe.pipeline.registry``.

A stage is a ``vizpipe.pipeline.stage.Stage`` subclass with its settings dataclass beside it, plus one
YAML ``conf/<name>/default.yaml``; nothing else in the project names it (docs/architecture.md).
"""
