"""The typed config in-process: schema defaults, root schema, settings_of; its ConfigStore entries."""

from __future__ import annotations

import dataclasses

import pytest
import vizpipe.pipeline.schema as s
from omegaconf import OmegaConf
from vizpipe.pipeline import config_store, registry
from vizpipe.pipeline.errors import ConfigError


def test_core_defaults():
    """The core groups' documented defaults."""
    m, d, i, r = s.ModelConfig(), s.DeviceConfig(), s.InputConfig(), s.ReportConfig()
    assert (m._target_, m.name, m.weights, m.checkpoint, m.num_classes) == (
        "vizpipe.pipeline.models.torchvision_model",
        "???",
        None,
        None,
        None,
    )
    assert (m.categories, m.blocks, m.output, m.kwargs) == (None, None, s.ModelOutput.auto, {})
    assert d.type == "auto"
    assert (i.kind, i.path, i.shape, i.resize, i.crop, i.mean, i.std, i.interpolation) == (
        s.InputKind.photo,
        None,
        [1, 3, 224, 224],
        None,
        None,
        None,
        None,
        None,
    )
    assert (i.normalized, i.limit, i.batch_size, i.workers, i.shard, i.split) == (
        True,
        32,
        32,
        None,  # auto: pipeline.inputs.auto_workers
        None,
        s.Split.test,
    )
    assert (i.root, i.download, i.size, i.train_count, i.val_count, i.test_count) == (
        None,
        False,
        64,
        3000,
        500,
        500,
    )
    assert (i.val_fraction, i.test_fraction) == (0.1, 0.1)
    assert (r.enabled, r.html, r.markdown, r.max_images) == (True, True, True, 64)
    assert s.CORE_GROUPS == {
        "model": s.ModelConfig,
        "device": s.DeviceConfig,
        "input": s.InputConfig,
        "report": s.ReportConfig,
    }


def test_enums():
    """Enum members and values (OmegaConf matches by name)."""
    assert [e.name for e in s.OnError] == ["stop", "continue"]
    assert s.OnError["continue"].value == "continue"
    assert [e.value for e in s.InputKind] == [
        "photo",
        "image",
        "tensor",
        "random",
        "shapes",
        "imagefolder",
        "cifar10",
        "objects",
    ]
    assert [e.value for e in s.Split] == ["train", "val", "test"]
    assert [e.value for e in s.ModelOutput] == ["auto", "logits", "probabilities"]
    assert [e.value for e in s.Interpolation] == [
        "bilinear",
        "bicubic",
        "nearest",
        "nearest_exact",
        "box",
        "hamming",
        "lanczos",
    ]


def test_core_fields():
    """The root's core keys, types and defaults."""
    plain = {
        name: (tp, default)
        for name, tp, default in s.CORE_FIELDS
        if not isinstance(default, dataclasses.Field)
    }
    assert plain == {
        "seed": (int, 0),
        "on_error": (s.OnError, s.OnError.stop),
        "deterministic": (bool, False),
        "verbose": (bool, False),
        "writers": (int | None, None),
        "notes": (str | None, None),
    }
    assert [n for n, _, _ in s.CORE_FIELDS] == [
        "seed",
        "on_error",
        "deterministic",
        "verbose",
        "writers",
        "model",
        "device",
        "input",
        "report",
        "notes",
    ]


def test_root_schema_fields_and_defaults():
    """Root: defaults (_self_, then one per stage with settings), stages, core keys, stage fields."""
    root = s.root_schema()
    assert root.__name__ == "Config"
    fields = {f.name: f for f in dataclasses.fields(root)}
    names = list(fields)
    assert names[:2] == ["defaults", "stages"]
    assert names[2 : 2 + len(s.CORE_FIELDS)] == [n for n, _, _ in s.CORE_FIELDS]
    inst = root()
    assert inst.defaults[0] == "_self_"
    with_config = [n for n, c in registry.stage_classes().items() if c.config is not None]
    assert [next(iter(d)) for d in inst.defaults[1:]] == with_config
    assert all(d[n] == "default" for d, n in zip(inst.defaults[1:], with_config, strict=True))
    assert inst.stages == registry.default_stages()
    assert inst.stages is not root().stages  # a fresh list each time
    for n in with_config:
        assert isinstance(getattr(inst, n), registry.stage_classes()[n].config)
    plain = s.root_schema(with_defaults=False)
    assert [f.name for f in dataclasses.fields(plain)][0] == "stages"
    assert s.root_schema() is root


def test_has_default_option(tmp_path):
    """A stage has a default option when conf/<name>/default.yaml exists (or a plugin YAML)."""
    assert s._has_default_option("summary")
    assert not s._has_default_option("front_nothing_here")


def test_settings_of():
    """settings_of: the typed object of a node, the value itself when not a config, None when absent."""
    cfg = OmegaConf.structured(s.root_schema(with_defaults=False))
    rep = s.settings_of(cfg, "report")
    assert isinstance(rep, s.ReportConfig) and rep.enabled is True
    assert s.settings_of(cfg, "nope") is None
    assert s.settings_of({"a": 3}, "a") == 3
    assert s.settings_of(object(), "a") is None
    assert s.settings_of(OmegaConf.create({"x": None}), "x") is None


def test_register_is_idempotent():
    """register twice: the resolvers exist; the schema nodes are in the ConfigStore."""
    from hydra.core.config_store import ConfigStore

    config_store.register()
    config_store.register()
    assert OmegaConf.has_resolver("vizpipe_safe") and OmegaConf.has_resolver("vizpipe_jobdir")
    repo = ConfigStore.instance().repo
    assert "vizpipe_schema.yaml" in repo
    for group in ("model", "device", "input", "report"):
        assert "_schema.yaml" in repo[group], group
    assert OmegaConf.create({"a": "${vizpipe_safe:x y}"}).a == "x_y"


# ------------------------------------------------------------------ known keys (+, ++, ~ overrides)


def test_free_form_keys_are_the_dict_fields():
    """The keys that take any sub-key are exactly the schema's Dict fields (README lists them)."""
    assert s.free_form_keys() == ["model.kwargs", "train.optimizer", "cam.kwargs"]


@pytest.mark.parametrize(
    ("override", "key", "closest"),
    [
        ("++cam.targt_class=207", "cam.targt_class", "cam.target_class"),
        ("+cam.methd=scorecam", "cam.methd", "cam.method"),
        ("+sed=5", "sed", "seed"),
        ("+input.foo.bar=1", "input.foo", None),
        ("++model.dropout=0.1", "model.dropout", None),
    ],
)
def test_added_unknown_keys_are_refused(compose, override, key, closest):
    """A key added with + or ++ (Hydra's force-add lifts struct mode) fails with the closest known key."""
    cfg = compose([override])  # Hydra composes it
    with pytest.raises(ConfigError) as info:
        s.check_known_keys(cfg)
    message = str(info.value)
    assert message.startswith(f"Unknown config key '{key}'")
    if closest:
        assert f"did you mean '{closest}'?" in message
    assert "\n" not in message
    if key.startswith("model."):
        assert "Free-form (any sub-key, e.g. +model.kwargs.NAME=...): model.kwargs" in message


def test_removed_key_is_refused(compose):
    """~seed (open_dict on the root lets Hydra delete it) is one line naming the key."""
    with pytest.raises(ConfigError) as info:
        s.check_known_keys(compose(["~seed"]))
    assert str(info.value).startswith("Config key 'seed' is missing (removed with ~seed?)")


def test_free_form_keys_take_new_keys(compose):
    """model.kwargs, cam.kwargs and train.optimizer take any sub-key; notes any text."""
    cfg = compose(
        ["+model.kwargs.dropout=0.0", "+cam.kwargs.foo=1", "+train.optimizer.momentum=0.9", "notes='a b'"]
    )
    s.check_known_keys(cfg)
    assert cfg.model.kwargs.dropout == 0.0 and cfg.train.optimizer.momentum == 0.9


def test_every_entry_runs_the_key_check(compose, tmp_path):
    """check_config (the precheck, vizpipe.inspect) and run_pipeline refuse an added key."""
    from vizpipe.pipeline.runner import check_config, run_pipeline

    cfg = compose(["+cam.methd=scorecam", "stages=[summary]", "input=random"])
    with pytest.raises(ConfigError, match="did you mean 'cam.method'"):
        check_config(cfg)
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.status == "failed" and "Unknown config key 'cam.methd'" in result.error
