"""The console's short voice: one line per stage, warnings and errors; details go to ``run.log``.

``conf/hydra/job_logging/vizpipe.yaml`` sends everything (DEBUG and up) to ``<run>/run.log`` and
uses these classes for the console: ``ConsoleFormatter`` prefixes lines with ``vizpipe:`` and
``ConsoleFilter`` lets DEBUG details through only in verbose mode (``verbose=true``, or Hydra's
``hydra.verbose=true``), so a default run prints a handful of lines. ``RunLogHandler`` writes
``run.log``; when the file cannot be written (a full disk) it says so once, in one line, and
the log goes on on the console only (``logging``'s own handler prints a traceback per record).
"""

from __future__ import annotations

import logging
import sys

__all__ = ["ConsoleFilter", "ConsoleFormatter", "RunLogHandler", "set_verbose"]

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


class RunLogHandler(logging.FileHandler):
    """``<run>/run.log``: a ``FileHandler`` that stops, with one line, when the file cannot be written."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` unless the file already failed."""
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """The first failure: one line on stderr naming the file and the error; then silence."""
        if self.failed:
            return
        self.failed = True
        exc = sys.exc_info()[1]
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        sys.stderr.write(
            f"vizpipe: warning: {self.baseFilename} cannot be written ({why}); logging to the console only\n"
        )

    def flush(self) -> None:
        """Flush, quietly once the file failed (a full disk)."""
        try:
            super().flush()
        except OSError:
            self.failed = True

    def close(self) -> None:
        """Close, quietly when the last data cannot be written."""
        try:
            super().close()
        except OSError:
            self.failed = True
