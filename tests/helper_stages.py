"""Small real stages used by the runner tests (registered temporarily in ``stages.STAGES``)."""

from __future__ import annotations

import os
import signal
from typing import Any

from pipeline.context import RunContext
from stages import Stage

ORDER: list[str] = []


class RecordStage(Stage):
    """Writes one file and records that it ran."""

    name = "record"

    def run(self, ctx: RunContext, settings: Any) -> dict[str, Any]:
        ORDER.append(self.name)
        (ctx.stage_dir(self.name) / "ran.txt").write_text(self.name)
        return {"ran": True}


class BoomStage(Stage):
    """Writes a partial artifact, then fails like a real bug would."""

    name = "boom"

    def run(self, ctx: RunContext, settings: Any) -> dict[str, Any]:
        ORDER.append(self.name)
        (ctx.stage_dir(self.name) / "partial.txt").write_text("written before the failure")
        raise RuntimeError("deliberate failure in boom")


class InterruptStage(Stage):
    """Writes a partial artifact, then receives SIGINT (as from Ctrl-C)."""

    name = "interrupt"

    def run(self, ctx: RunContext, settings: Any) -> dict[str, Any]:
        ORDER.append(self.name)
        (ctx.stage_dir(self.name) / "partial.txt").write_text("written before Ctrl-C")
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("SIGINT should have interrupted this stage")
