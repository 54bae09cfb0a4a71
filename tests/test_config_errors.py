"""Composition errors translated into one line (vizpipe.pipeline.config_errors), messages pinned exactly."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from vizpipe.pipeline import CONF_DIR
from vizpipe.pipeline.composer import Composer
from vizpipe.pipeline.config_errors import LAUNCHERS_HINT, _chain, _node_type, _value_of, translate
from vizpipe.pipeline.errors import ConfigError

KEYS_HINT = "Keys are listed in conf/ with comments; python run.py --cfg job shows them all"


@pytest.fixture
def composer():
    with Composer(CONF_DIR, "config", [], []) as c:
        yield c


def error(composer, overrides):
    with pytest.raises(ConfigError) as info:
        composer.compose(overrides)
    return str(info.value)


def test_unknown_group_option(composer):
    """An unknown option names the group, the closest option, all public options and the hint."""
    msg = error(composer, ["device=qq"])
    assert msg == (
        "Unknown device option 'qq'. Valid choices (closest first): auto, cpu, cuda. "
        "Set device=<one of these>"
    )
    msg = error(composer, ["model=vgg1"])
    assert msg.startswith(
        "Unknown model option 'vgg1'; did you mean 'vgg16'? Valid choices (closest first): vgg16,"
    )
    assert msg.endswith(". Set model=<one of these>")
    assert "_torchvision" not in msg


def test_unknown_launcher_names_cluster_extra(composer):
    """hydra/launcher: the hint also says where the cluster launchers come from."""
    composer.hydra_groups = ["hydra/launcher=nolaunch"]
    msg = error(composer, [])
    assert msg.startswith("Unknown hydra/launcher option 'nolaunch'")
    assert msg.endswith(f"Set hydra/launcher=<one of these>; {LAUNCHERS_HINT}")
    assert LAUNCHERS_HINT == (
        "the joblib, submitit_local, submitit_slurm, slurm and ray launchers come with the cluster extra: "
        "pip install -e '.[cluster]'"
    )


def test_unknown_primary_config():
    """An unknown config name (no group) is 'Unknown config', without a Set hint."""
    with Composer(CONF_DIR, "nope", []) as c, pytest.raises(ConfigError) as info:
        c.compose([])
    assert str(info.value).startswith("Unknown config 'nope'")
    assert "Set " not in str(info.value)


def test_unknown_key_top_and_nested(composer):
    """An unknown key: closest key first, prefixed keys of its parent, no 'defaults', the hint."""
    msg = error(composer, ["cam.target_clas=1"])
    assert msg.startswith(
        "Unknown config key 'cam.target_clas'; did you mean 'cam.target_class'? "
        "Valid choices (closest first): cam.target_class, "
    )
    assert msg.endswith(f". {KEYS_HINT}")
    assert "cam.defaults" not in msg
    msg = error(composer, ["nosuch=1"])
    assert msg.startswith(
        "Unknown config key 'nosuch'; did you mean 'notes'? Valid choices (closest first): notes,"
    )
    assert " stages," in msg and " model," in msg
    assert "defaults" not in msg
    assert "hydra" in msg


def test_enum_value(composer):
    """A bad enum value lists the enum's members."""
    assert error(composer, ["on_error=bad"]) == (
        "Unknown value for on_error 'bad'. Valid choices (closest first): stop, continue"
    )
    assert error(composer, ["input.split=zz"]) == (
        "Unknown value for input.split 'zz'. Valid choices (closest first): train, val, test"
    )


def test_enum_list_element(composer):
    """A bad element of a list of enums lists the enum's members."""
    msg = error(composer, ["summary.col_names=[bogus]"])
    assert msg.startswith("Unknown value in summary.col_names 'bogus'. Valid choices (closest first): ")
    assert "num_params" in msg and "kernel_size" in msg


def test_scalar_types(composer):
    """A wrong scalar names the expected type."""
    tail = " (see the comments in conf/)"
    assert error(composer, ["seed=abc"]) == f"Invalid value 'abc' for seed: expected an integer{tail}"
    assert error(composer, ["cam.image_weight=abc"]) == (
        f"Invalid value 'abc' for cam.image_weight: expected a number{tail}"
    )
    assert error(composer, ["cam.aug_smooth=maybe"]) == (
        f"Invalid value 'maybe' for cam.aug_smooth: expected true or false{tail}"
    )
    assert error(composer, ["notes=[1]"]) == f"Invalid value '[1]' for notes: expected a string{tail}"


def test_list_expected(composer):
    """A scalar where a list belongs: the message shows the bracketed form."""
    assert error(composer, ["stages=abc"]) == (
        "stages must be a list, got 'abc'; write 'stages=[abc]' (quoted in a shell)"
    )
    assert error(composer, ["input.mean=abc"]) == (
        "input.mean must be a list, got 'abc'; write 'input.mean=[abc]' (quoted in a shell)"
    )


def test_bad_element_of_typed_list(composer):
    """A non-enum list element: the generic message with the element's key."""
    assert (
        error(composer, ["input.mean=[a]"])
        == "Invalid value 'a' for input.mean[0] (see the comments in conf/)"
    )


def test_untyped_node(composer):
    """A node of no scalar type: the generic message."""
    assert (
        error(composer, ["cam.kwargs=abc"])
        == "Invalid value 'abc' for cam.kwargs (see the comments in conf/)"
    )


def test_missing_mandatory_value():
    """A ??? value read: the key is named, with how to set it."""
    cfg = OmegaConf.create({"model": {"name": "???"}})
    with pytest.raises(Exception) as info:
        cfg.model.name  # noqa: B018 - raises
    assert str(translate(info.value, [])) == (
        "model.name is required for this choice (it is ??? in conf/); set model.name=..."
    )


def test_fallback_first_line():
    """Any other error: 'Invalid config: ' and its first line (or its type name when empty)."""
    assert str(translate(ValueError("first line\nsecond"), [])) == "Invalid config: first line"
    assert str(translate(ValueError("  \n "), [])) == "Invalid config: ValueError"
    assert isinstance(translate(KeyError("k"), []), ConfigError)


def test_chain_follows_cause_and_context_once():
    """_chain: the exception, then its cause (or context), without looping."""
    a, b, c = ValueError("a"), KeyError("b"), TypeError("c")
    a.__cause__ = b
    b.__context__ = c
    c.__context__ = a  # a cycle
    assert _chain(a) == [a, b, c]
    d = ValueError("d")
    assert _chain(d) == [d]
    e = ValueError("e")
    e.__cause__ = b
    e.__context__ = c
    assert _chain(e)[:2] == [e, b]


def test_translate_finds_cause_in_chain(composer):
    """A Hydra error wrapped in another exception is still translated from its attributes."""
    try:
        composer.compose(["device=qq"])
    except ConfigError as exc:
        inner = exc.__cause__
    wrapper = RuntimeError("wrapped")
    wrapper.__cause__ = inner
    assert str(translate(wrapper, [])).startswith("Unknown device option 'qq'.")


def test_value_of():
    """_value_of: the value of key in the overrides (+/~ prefixes ignored), '?' when absent."""
    ov = ["a=1", "+b.c=x=y", "~d=2"]
    assert _value_of("a", ov) == "1"
    assert _value_of("b.c", ov) == "x=y"
    assert _value_of("d", ov) == "2"
    assert _value_of("e", ov) == "?"
    assert _value_of("b", ov) == "?"
    assert _value_of("Xk", ["Xk=5"]) == "5"
    assert _value_of("k", ["Xk=5"]) == "?"


def test_node_type_of_missing_node():
    """_node_type: no parent node -> (None, None)."""

    class Exc:
        parent_node = None
        full_key = "a.b"

    assert _node_type(Exc()) == (None, None)


def test_null_values_named_as_typed(composer):
    """A null where a value is required: the value shown is the override's own text."""
    tail = " (see the comments in conf/)"
    assert error(composer, ["seed=null"]) == f"Invalid value 'null' for seed: expected an integer{tail}"
    assert error(composer, ["cam.aug_smooth=null"]) == (
        f"Invalid value 'null' for cam.aug_smooth: expected true or false{tail}"
    )
    msg = error(composer, ["summary.col_names=[null]"])
    assert msg.startswith("Unknown value in summary.col_names '[null]'. Valid choices (closest first): ")
    assert error(composer, ["input.kind=null"]).startswith(
        "Unknown value for input.kind 'null'. Valid choices"
    )


def test_other_composition_errors_fall_back(composer):
    """Errors without a key: 'Invalid config: ' and the first line of Hydra's message."""
    assert error(composer, ["features=5"]) == (
        "Invalid config: Config group override must be a string or a list. Got int"
    )
    assert (
        error(composer, ["+seed=1"])
        == "Invalid config: Could not append to config. An item is already at 'seed'."
    )
    assert error(composer, ["cam.metrics=abc"]) == (
        "cam.metrics must be a list, got 'abc'; write 'cam.metrics=[abc]' (quoted in a shell)"
    )
