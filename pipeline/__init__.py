"""vizpipe's runner: config schema, builders, the run context, manifest and reports."""

__version__ = "0.1.0"
