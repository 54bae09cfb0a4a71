"""Small real stages used by the runner tests (registered temporarily with ``vizpipe.pipeline.registry``)."""

from __future__ import annotations

import os
import signal
from typing import Any

from vizpipe.pipeline.context import RunContext
from vizpipe.pipeline.stage import Stage, StageResult

ORDER: list[str] = []


class RecordStage(Stage):
    """Writes one file and records that it ran."""

    name = "record"

    def run(self, ctx: RunContext, settings: Any) -> StageResult:
        ORDER.append(self.name)
        (ctx.stage_dir(self.name) / "ran.txt").write_text(self.name)
        return StageResult(self.name, summary="ran")


class BoomStage(Stage):
    """Writes a partial artifact, then fails like a real bug would."""

    name = "boom"

    def run(self, ctx: RunContext, settings: Any) -> StageResult:
        ORDER.append(self.name)
        (ctx.stage_dir(self.name) / "partial.txt").write_text("written before the failure")
        raise RuntimeError("deliberate failure in boom")


class InterruptStage(Stage):
    """Writes a partial artifact, then is interrupted as by Ctrl-C (SIGINT's default handler)."""

    name = "interrupt"

    def run(self, ctx: RunContext, settings: Any) -> StageResult:
        ORDER.append(self.name)
        (ctx.stage_dir(self.name) / "partial.txt").write_text("written before Ctrl-C")
        signal.default_int_handler(signal.SIGINT, None)  # what Ctrl-C does, whatever the parent ignores
        raise AssertionError("SIGINT should have interrupted this stage")


HELPERS = (RecordStage, BoomStage, InterruptStage)
__all__ = ["HELPERS", "ORDER", "os"]
