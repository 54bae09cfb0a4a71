"""Hydra's own errors from the command line in vizpipe's one-line form (issue 26).

Struct errors on ``hydra.*`` keys, interpolations that cannot be resolved and overrides Hydra's
grammar cannot read: the precheck (``vizpipe.pipeline.precheck``) turns each into one line with
the fix, through ``vizpipe.pipeline.config_errors``. Messages are pinned exactly.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import vizpipe.pipeline.precheck as p
from omegaconf import OmegaConf
from vizpipe.pipeline.config_errors import as_config_error, hydra_overrides, translate
from vizpipe.pipeline.errors import ConfigError

KEYS_HINT = "Keys are listed in conf/ with comments; python run.py --cfg job shows them all"


def one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The precheck's message for ``argv`` (it must exit 2 with exactly one line)."""
    with pytest.raises(SystemExit) as info:
        p.precheck(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vizpipe: error: "), err
    return err.removeprefix("vizpipe: error: ").rstrip("\n")


def needs_ray_launcher() -> None:
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("needs the cluster extra (pip install -e '.[cluster]'): hydra-ray-launcher")


def test_struct_error_on_a_free_form_hydra_key_offers_append(tmp_path, capsys):
    """The README's old launcher example: ray.init holds only address, so the fix is +key=value."""
    needs_ray_launcher()
    run = tmp_path / "s"
    argv = ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2", f"hydra.sweep.dir={run}"]
    msg = one_line(argv, capsys)
    assert msg == (
        "Unknown config key 'hydra.launcher.ray.init.num_cpus' (hydra.launcher.ray.init has address); "
        f"to add it, write +hydra.launcher.ray.init.num_cpus=2 (manifest: {run / 'manifest.json'})"
    )
    assert json.loads((run / "manifest.json").read_text())["setup"]["status"] == "failed"


def test_the_appended_form_passes(tmp_path):
    needs_ray_launcher()
    argv = ["-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "stages=[summary]"]
    # passes: the command line Hydra gets comes back
    assert p.precheck([*argv, f"hydra.sweep.dir={tmp_path / 's'}"]) is not None


def test_close_match_under_a_free_form_node_names_both_fixes(tmp_path, capsys):
    needs_ray_launcher()
    argv = ["hydra/launcher=ray", "hydra.launcher.ray.init.adress=x", f"hydra.run.dir={tmp_path / 'r'}"]
    assert one_line(argv, capsys).startswith(
        "Unknown config key 'hydra.launcher.ray.init.adress'; "
        "did you mean 'hydra.launcher.ray.init.address'? "
        "Valid choices (closest first): hydra.launcher.ray.init.address. "
        "hydra.launcher.ray.init takes new keys: to add one, write +hydra.launcher.ray.init.adress=x"
    )


def test_empty_free_form_node_of_vizpipe(tmp_path, capsys):
    """cam.kwargs (Dict[str, Any]) is empty: the value-only path (no composition) says +key too."""
    msg = one_line(["cam.kwargs.foo=1", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert msg.startswith(
        "Unknown config key 'cam.kwargs.foo' (cam.kwargs is empty); to add it, write +cam.kwargs.foo=1"
    )


def test_typo_in_a_typed_node_offers_no_append(tmp_path, capsys):
    """A dataclass node takes no new keys (+ would fail too): did you mean, no '+'."""
    msg = one_line(["cam.layr=layer4", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert msg.startswith("Unknown config key 'cam.layr'; did you mean 'cam.layer'?")
    assert "+cam" not in msg and KEYS_HINT in msg


def test_launcher_key_of_another_launcher(tmp_path, capsys):
    """hydra.launcher.n_jobs under the basic launcher: say that the launcher picks the keys."""
    msg = one_line(["hydra.launcher.n_jobs=2", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert msg.startswith("Unknown config key 'hydra.launcher.n_jobs'")
    assert msg.endswith(
        "hydra.launcher holds the keys of the launcher picked with hydra/launcher=NAME "
        "(python run.py hydra/launcher=NAME --cfg hydra -p hydra.launcher shows them) "
        f"(manifest: {tmp_path / 'r' / 'manifest.json'})"
    )


def test_unset_environment_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VIZPIPE_NOPE", raising=False)
    msg = one_line(["notes=${oc.env:VIZPIPE_NOPE}", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert msg == (
        "Cannot resolve notes='${oc.env:VIZPIPE_NOPE}': the environment variable VIZPIPE_NOPE is not set; "
        "set it (export VIZPIPE_NOPE=...) or give a default: ${oc.env:VIZPIPE_NOPE,<default>} "
        f"(manifest: {tmp_path / 'r' / 'manifest.json'})"
    )
    assert p.precheck(["notes=${oc.env:VIZPIPE_NOPE,x}", f"hydra.run.dir={tmp_path / 'r3'}"]) is not None


def test_unknown_key_in_an_interpolation(tmp_path, capsys):
    msg = one_line(["notes=${model.nme}", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert msg.startswith(
        "Cannot resolve notes='${model.nme}': Unknown config key 'model.nme'; did you mean 'model.name'?"
    )


def test_unknown_resolver_and_bad_interpolation(tmp_path, capsys):
    msg = one_line(["notes=${foo:1}", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert msg.startswith(
        "Cannot resolve notes='${foo:1}': Unknown resolver 'foo'. Valid choices (closest first): "
    )
    assert "oc.env" in msg and "now" in msg
    msg = one_line(["notes='${oc.env:X'", f"hydra.run.dir={tmp_path / 'r2'}"], capsys)
    assert ": not a valid interpolation (write ${key} or ${resolver:args}" in msg


def test_interpolation_to_a_missing_value():
    cfg = OmegaConf.create({"a": "???", "b": "${a}"})
    with pytest.raises(Exception) as info:
        cfg.b  # noqa: B018 - raises
    assert (
        str(translate(info.value, []))
        == "Cannot resolve b='${a}': a is not set (it is ??? in conf/); set a=..."
    )


def test_interpolation_in_a_hydra_value(tmp_path, capsys, monkeypatch):
    """hydra.run.dir=${oc.env:NOPE}: one line before Hydra starts (Hydra printed a traceback)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIZPIPE_NOPE", raising=False)
    msg = one_line(["stages=[summary]", "hydra.run.dir=${oc.env:VIZPIPE_NOPE}"], capsys)
    assert msg.startswith(
        "Cannot resolve hydra.run.dir='${oc.env:VIZPIPE_NOPE}': "
        "the environment variable VIZPIPE_NOPE is not set"
    )
    assert not list(tmp_path.glob("$*")), "a folder named after the unresolved value"
    assert p.precheck(["stages=[summary]", f"hydra.run.dir={tmp_path}/" + "${now:%Y}"]) is not None


def test_unreadable_hydra_override(tmp_path, capsys, monkeypatch):
    """Hydra's grammar refuses it: one line, and no folder named '[x' for the manifest."""
    monkeypatch.chdir(tmp_path)
    msg = one_line(["hydra.run.dir=[x"], capsys)
    assert msg.startswith("Cannot read the override 'hydra.run.dir=[x' (")
    assert "); check its quoting and brackets" in msg
    assert not (tmp_path / "[x").exists()


def test_hydra_overrides_keeps_hydra_values_and_groups_without_sweeps():
    given = ["model=vgg11", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1,2", "+hydra.job.env_set.A=1"]
    assert hydra_overrides([*given, "hydra.run.dir=/x"]) == [
        "hydra/launcher=joblib",
        "+hydra.job.env_set.A=1",
        "hydra.run.dir=/x",
    ]
    with pytest.raises(ConfigError, match=r"^Cannot read the override 'hydra.run.dir=\[x' "):
        hydra_overrides(["hydra.run.dir=[x"])


def test_as_config_error_leaves_bugs_alone():
    err = ConfigError("x")
    assert as_config_error(err, []) is err
    assert as_config_error(ValueError("a bug"), []) is None
    cfg = OmegaConf.create({"a": 1})
    OmegaConf.set_struct(cfg, True)
    with pytest.raises(Exception) as info:
        cfg.b  # noqa: B018 - raises
    assert str(as_config_error(info.value, [])).startswith("Unknown config key 'b'")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["model=vgg11", "--cfg", "job"], ["model=vgg11", "hydra.job.name=run", "--cfg", "job"]),
        (["--cfg", "job", "a=1"], ["--cfg", "job", "a=1", "hydra.job.name=run"]),
        (["-sc", "install=bash"], ["-sc", "install=bash", "hydra.job.name=run"]),
        (["-m", "a=1,2", "-p", "x"], ["-m", "a=1,2", "hydra.job.name=run", "-p", "x"]),
    ],
)
def test_job_name_joins_the_other_overrides(argv, expected):
    """Hydra reads the overrides as one run of words: the job name goes right after the last one."""
    from vizpipe.pipeline.cli import command_line_args

    assert command_line_args(argv) == expected
