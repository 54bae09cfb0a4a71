"""Shared test helpers: compose the real config, build a run context, run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from vizpipe.pipeline.stage import SharedConfig

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
#: what a stage's ``check_settings`` sees of the rest of a run's config, for an ``input=random`` run
RANDOM_INPUT = SharedConfig(input_kind="random")


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml with ``overrides`` through Hydra's Compose API."""
    import vizpipe.pipeline.config_store  # noqa: F401 - registers the schema
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides or []))
    finally:
        GlobalHydra.instance().clear()


def group_options(group: str) -> list[str]:
    """The public options of config group ``group`` (YAML files in conf/<group>/, not ``_``-private)."""
    folder = CONF_DIR / group
    return (
        sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []
    )


@pytest.fixture(autouse=True)
def _no_kept_training() -> None:
    """Every test trains for itself: the train stage keeps one training per process for a sweep's
    later jobs (``stages/train/reuse.py``); tests of that reuse run twice inside one test."""
    from vizpipe.stages.train import reuse

    reuse.forget()


@pytest.fixture
def compose() -> Callable[..., DictConfig]:
    """``compose(["model=vgg11", ...])`` -> the composed config."""
    return compose_config


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable:
    """``make_ctx(["model=vgg11", ...])`` -> a RunContext built from the composed config."""
    from vizpipe.pipeline.factory import build_context

    def _make(overrides: list[str] | None = None, out: Path | None = None):
        cfg = compose_config(overrides)
        return build_context(cfg, out or tmp_path / "run")

    return _make


def run_cli(
    args: list[str], *, cwd: Path = ROOT, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python run.py ARGS`` in a subprocess (the real CLI), capturing text output."""
    e = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """The ``run_cli`` helper as a fixture."""
    return run_cli


def hand_context(model, out: Path, shape: tuple[int, ...], *, batch_size: int = 32):
    """A RunContext around any module, without a config: a seeded random batch of ``shape``."""
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Inputs
    from vizpipe.pipeline.inputs.sources import TensorItems

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    n, _, h, w = shape
    cpu = torch.device("cpu")
    inputs = Inputs(
        dataset=TensorItems(x, torch.zeros(n, 3, h, w)),
        names=[f"img{i}" for i in range(n)],
        sources=["randn"] * n,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        device=cpu,
        batch_size=batch_size,
    )
    return RunContext(model=model.eval(), model_name="tiny", inputs=inputs, device=cpu, output_dir=out)
