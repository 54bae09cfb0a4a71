"""The console's short voice: one line per stage, warnings and errors; details go to ``run.log``.

``conf/hydra/job_logging/vizpipe.yaml`` sends everything (DEBUG and up) to ``<run>/run.log`` and
uses these classes for the console: ``ConsoleFormatter`` prefixes lines with ``vizpipe:`` and
``ConsoleFilter`` lets DEBUG details through only in verbose mode (``verbose=true``, or Hydra's
``hydra.verbose=true``), so a default run prints a handful of lines.
"""

from __future__ import annotations

import logging

__all__ = ["ConsoleFilter", "ConsoleFormatter", "set_verbose"]

_verbose = False


def set_verbose(on: bool) -> None:
    """Show DEBUG details on the console too (they always go to run.log)."""
    global _verbose
    _verbose = bool(on)


class ConsoleFilter(logging.Filter):
    """INFO and up always; DEBUG only in verbose mode (or when Hydra made the root logger DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the console shows ``record``."""
        if record.levelno >= logging.INFO:
            return True
        return _verbose or logging.getLogger().level <= logging.DEBUG


class ConsoleFormatter(logging.Formatter):
    """``vizpipe: message``; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (a traceback, when attached, follows)."""
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            text = f"vizpipe: error: {text}"
        elif record.levelno >= logging.WARNING:
            text = f"vizpipe: warning: {text}"
        elif record.levelno < logging.INFO:
            text = f"vizpipe: [{record.name}] {text}"
        else:
            text = f"vizpipe: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
