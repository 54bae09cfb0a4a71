"""vizpipe.pipeline.factory.targets and vizpipe.pipeline.trust: what a config may build, and from where."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import compose_config
from vizpipe.pipeline import registry
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.factory import targets
from vizpipe.pipeline.trust import ConfigSources


def test_built_keys_are_the_model_and_what_stages_name() -> None:
    keys = registry.built_keys()
    assert keys["model"] == targets.MODEL_MODULES
    assert keys["train.optimizer"] == ("torch.optim",)
    assert keys["train.scheduler"] == ("torch.optim.lr_scheduler",)


@pytest.mark.parametrize(
    ("target", "modules", "ok"),
    [
        ("torch.optim.Adam", ("torch.optim",), True),
        ("torch.optim.lr_scheduler.OneCycleLR", ("torch.optim.lr_scheduler",), True),
        ("torch.optim.lr_scheduler.OneCycleLR", ("torch.optim",), False),  # another module
        ("torch.optim.lr_scheduler.partial", ("torch.optim.lr_scheduler",), False),  # imported there
        ("torch.optim._functional", ("torch.optim",), False),
        ("torch.optim.__builtins__", ("torch.optim",), False),
        ("vizpipe.pipeline.models.SeedNet", targets.MODEL_MODULES, True),
        ("vizpipe.pipeline.models.torchvision_model", targets.MODEL_MODULES, True),
        ("vizpipe.pipeline.lent.lent_model", targets.MODEL_MODULES, True),
        ("vizpipe.pipeline.models.NoSuch", targets.MODEL_MODULES, False),
        ("torch.load", targets.MODEL_MODULES, False),
        ("vizpipe_untrusted_module.X", targets.MODEL_MODULES, False),
    ],
)
def test_trusted_names_a_callable_defined_in_the_module(target: str, modules: tuple, ok: bool) -> None:
    assert targets.trusted(target, modules) is ok
    assert "vizpipe_untrusted_module" not in sys.modules  # judged by its name: never imported


def test_a_nested_target_is_refused_anywhere_and_never_built(tmp_path: Path) -> None:
    cfg = compose_config(["model=seed_net", "+model.kwargs.x._target_=builtins.print"])
    with pytest.raises(ConfigError, match=r"^model\.kwargs\.x\._target_='builtins\.print' is refused"):
        targets.check_targets(cfg, registry.built_keys())
    cfg = compose_config(["+cam.kwargs.y._target_=builtins.print"])
    with pytest.raises(ConfigError, match=r"^cam\.kwargs\.y\._target_="):
        targets.check_targets(cfg, registry.built_keys())
    targets.check_targets(
        compose_config(["experiment=shapes_demo"]), registry.built_keys()
    )  # optimizer and scheduler: fine
    node = {"_target_": "builtins.dict", "a": {"_target_": "builtins.print"}, "b": [1]}
    with pytest.raises(ConfigError, match=r"^x\.a\._target_='builtins\.print' is refused: vizpipe builds x"):
        targets.instantiate(node, "x")
    assert targets.instantiate({"_target_": "builtins.dict", "a": {"k": 1}, "b": [1]}, "x") == {
        "a": {"k": 1},
        "b": [1],
    }


def test_config_sources_know_vizpipes_folder_from_others(tmp_path: Path) -> None:
    from vizpipe.pipeline import CONF_DIR

    assert ConfigSources(CONF_DIR, "config", ["seed=1"], {}).untrusted == []
    assert ConfigSources(tmp_path, "config", [], {}).untrusted == [str(tmp_path)]
    assert ConfigSources(CONF_DIR, "config", [], {"--config-dir": str(tmp_path)}).untrusted == [str(tmp_path)]
    typed = ConfigSources(CONF_DIR, "config", [f"hydra.searchpath=[file://{tmp_path},file://{CONF_DIR}]"], {})
    assert typed.untrusted == [f"file://{tmp_path}"]
    trusting = ConfigSources(tmp_path, "config", [], {"--trust-config": ""})
    assert trusting.trusted and trusting.untrusted == [str(tmp_path)]
    with pytest.raises(ConfigError, match="^--experimental-rerun loads a pickle"):
        ConfigSources(CONF_DIR, "config", [], {"--experimental-rerun": "x.pickle"})
