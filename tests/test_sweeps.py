"""Sweeps in-process: what a sweep is (vizpipe.pipeline.sweeps), the deriving config loader and
vizpipe's sweeper, JobChecker, job folder names, and the one adapter to Hydra's private API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import vizpipe.pipeline.config_store  # noqa: F401 - registers the schema and hydra/sweeper=vizpipe
from hydra.types import RunMode
from omegaconf import OmegaConf
from vizpipe.pipeline import CONF_DIR, sweeps
from vizpipe.pipeline.composer import Composer, JobChecker
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.hydra import private
from vizpipe.pipeline.sweeper import DerivingConfigLoader, VizpipeSweeper, VizpipeSweeperConf, _same

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inner():
    """Hydra's config loader on conf/ (public API: the one ``initialize_config_dir`` sets up)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
    GlobalHydra.instance().clear()
    return loader


@pytest.fixture(scope="module")
def master(inner):
    return inner.load_configuration("config", overrides=["cam.target_class=1,2"], run_mode=RunMode.MULTIRUN)


parse = sweeps.parse


# ------------------------------------------------------------------ DerivingConfigLoader


def test_value_jobs_proven_then_derived(inner, master):
    """First job of a key set is composed and proven; later ones are derived, equal to Hydra's."""
    d = DerivingConfigLoader(inner)
    d.values = {"cam.target_class": ["1", "2"], "x": ["a", "b"]}
    a = d.load_sweep_config(master, ["cam.target_class=1"])
    assert (d.composed, d.derived) == (1, 0)
    assert d.kinds == {("cam.target_class",): "proven"}
    assert a.cam.target_class == 1
    assert a.hydra.job.env_set[sweeps.SWEPT_ENV] == "cam.target_class,x"
    b = d.load_sweep_config(master, ["cam.target_class=2"])
    assert (d.composed, d.derived) == (1, 1)
    assert b.cam.target_class == 2
    assert list(b.hydra.overrides.task) == ["cam.target_class=2"]
    assert b.hydra.job.override_dirname == "cam.target_class=2"
    assert b.hydra.job.env_set[sweeps.SWEPT_ENV] == "cam.target_class,x"
    assert json.loads(b.hydra.job.env_set[sweeps.SWEEP_VALUES_ENV]) == d.values
    assert _same(b, sweeps.mark(inner.load_sweep_config(master, ["cam.target_class=2"]), d.values))
    assert master.cam.target_class != 2 or "cam.target_class=2" not in master.hydra.overrides.task


def test_structural_jobs_always_composed(inner, master):
    """Group, +, ~ and hydra.* overrides are composed by Hydra, never derived or proven."""
    d = DerivingConfigLoader(inner)
    for job in (["model=vgg11"], ["model=vgg11"], ["+cam.zz=1"], ["hydra.job.chdir=true"]):
        try:
            d.load_sweep_config(master, job)
        except Exception:  # noqa: BLE001 - composition errors are Hydra's to report
            pass
    assert d.derived == 0
    assert d.kinds == {}
    assert d.composed == 4
    assert d.overrides.groups == {"model": True}


def test_group_lookup_cached(inner):
    """The loader asks Hydra once per key whether it is a group."""
    d = DerivingConfigLoader(inner)
    (o,) = parse(["cam.layer=x"])
    assert d.overrides.structural(o) is False
    assert d.overrides.groups == {"cam.layer": False}
    (o,) = parse(["~cam.layer"])
    assert d.overrides.structural(o) is True
    (o,) = parse(["cam={a:1}"])
    assert d.overrides.structural(o) is True
    (o,) = parse(["++cam.layer=1"])
    assert d.overrides.structural(o) is True
    (o,) = parse(["cam@x=default"])
    assert d.overrides.structural(o) is True
    assert d.overrides.groups == {"cam.layer": False}


def test_a_repeated_group_choice_is_derived(inner):
    """``run.py -m model=seed_net cam.target_class=1,2``: every job repeats ``model=seed_net``, the
    sweep's own choice; the jobs are proven and derived, equal to Hydra's; another choice is composed."""
    master = inner.load_configuration(
        "config", overrides=["model=seed_net", "cam.target_class=1,2"], run_mode=RunMode.MULTIRUN
    )
    d = DerivingConfigLoader(inner)
    a = d.load_sweep_config(master, ["model=seed_net", "cam.target_class=1"])
    assert d.kinds == {("model", "cam.target_class"): "proven"}
    b = d.load_sweep_config(master, ["model=seed_net", "cam.target_class=2"])
    assert (d.composed, d.derived) == (1, 1)
    assert (a.cam.target_class, b.cam.target_class) == (1, 2)
    assert b.model == master.model and b.hydra.runtime.choices.model == "seed_net"
    assert list(b.hydra.overrides.task) == ["model=seed_net", "cam.target_class=2"]
    assert _same(b, inner.load_sweep_config(master, ["model=seed_net", "cam.target_class=2"]))
    c = d.load_sweep_config(master, ["model=vgg11", "cam.target_class=2"])
    assert (d.composed, d.derived) == (2, 1)
    assert c.hydra.runtime.choices.model == "vgg11"
    (o,) = parse(["+model=seed_net"])
    assert d.overrides.same_choice(o, master.hydra.runtime.choices) is False
    (o,) = parse(["model=seed_net"])
    assert d.overrides.same_choice(o, master.hydra.runtime.choices) is True


def test_refused_kind_stays_composed(inner):
    """When the derived config differs from Hydra's, the key set is refused and jobs stay composed."""
    master = inner.load_configuration("config", overrides=["model=seed_net"], run_mode=RunMode.MULTIRUN)
    d = DerivingConfigLoader(inner)
    d.load_sweep_config(master, ["cam.target_class=1"])
    assert d.kinds == {("cam.target_class",): "refused"}
    b = d.load_sweep_config(master, ["cam.target_class=2"])
    assert (d.composed, d.derived) == (2, 0)
    assert b.cam.target_class == 2
    assert "VIZPIPE_SWEPT" not in b.hydra.job.env_set


def test_unparsable_job_is_composed(inner, master):
    """An override the parser rejects goes to Hydra (which reports it)."""
    d = DerivingConfigLoader(inner)
    with pytest.raises(Exception):  # noqa: B017 - Hydra's own error
        d.load_sweep_config(master, ["cam.layer=[a"])
    assert d.composed == 1


def test_delegation(inner):
    """The loader's other methods are Hydra's."""
    d = DerivingConfigLoader(inner)
    assert d.get_search_path() is inner.get_search_path()
    assert d.get_group_options("model") == inner.get_group_options("model")
    assert d.list_groups("") == inner.list_groups("")
    assert d.get_sources() == inner.get_sources()
    cfg = d.load_configuration("config", overrides=["model=vgg11"], run_mode=RunMode.RUN)
    assert cfg.model.name == "vgg11"
    dl = d.compute_defaults_list("config", [], RunMode.RUN)
    assert dl is not None


def test_same_compares_content_and_flags():
    """_same: equal YAML and flags; a value or a struct flag differing makes them different."""
    a = OmegaConf.create({"x": 1, "hydra": {"y": 2}})
    b = OmegaConf.create({"x": 1, "hydra": {"y": 2}})
    assert _same(a, b)
    b.x = 3
    assert not _same(a, b)
    b.x = 1
    OmegaConf.set_struct(b, True)
    assert not _same(a, b)
    OmegaConf.set_struct(b, False)
    OmegaConf.set_readonly(b.hydra, True)
    assert not _same(a, b)
    c = OmegaConf.create({"x": 1, "hydra": {"y": 2}})
    OmegaConf.set_readonly(c, True)
    assert not _same(a, c)


# ------------------------------------------------------------------ VizpipeSweeper


def test_sweeper_conf_defaults():
    """hydra/sweeper=vizpipe's settings mirror the basic sweeper's."""
    conf = VizpipeSweeperConf()
    assert conf._target_ == "hydra_plugins.vizpipe_sweeper.VizpipeSweeper"
    assert conf.max_batch_size is None and conf.params is None


def test_split_arguments_keeps_swept_keys(inner):
    """split_arguments: the basic sweeper's batches; keys with several values go to the loader."""
    s = VizpipeSweeper.__new__(VizpipeSweeper)  # (Hydra's plugin scan may reload BasicSweeper's module)
    s.loader = DerivingConfigLoader(inner)
    batches = s.split_arguments(parse(["model=vgg11", "+cam.layer=a,b", "cam.target_class=1,2"]), None)
    assert [list(j) for j in batches[0]] == [
        ["model=vgg11", "+cam.layer=a", "cam.target_class=1"],
        ["model=vgg11", "+cam.layer=a", "cam.target_class=2"],
        ["model=vgg11", "+cam.layer=b", "cam.target_class=1"],
        ["model=vgg11", "+cam.layer=b", "cam.target_class=2"],
    ]
    assert s.loader.values == {"cam.layer": ["a", "b"], "cam.target_class": ["1", "2"]}
    batches = s.split_arguments(parse(["a=1,2,3"]), 2)
    assert [len(b) for b in batches] == [2, 1]
    assert s.loader.values == {"a": ["1", "2", "3"]}


def test_validate_batch_skips_checked_jobs(monkeypatch):
    """Only jobs this process has not checked are handed to Hydra's check."""
    seen = []
    base = VizpipeSweeper.__bases__[0]  # Hydra's BasicSweeper, as this process defined it
    assert base.__name__ == "BasicSweeper"
    monkeypatch.setattr(base, "validate_batch_is_legal", lambda self, batch: seen.append(batch))
    s = VizpipeSweeper.__new__(VizpipeSweeper)
    sweeps.remember([["front.a=1"]])
    s.validate_batch_is_legal([["front.a=1"]])
    assert seen == []
    s.validate_batch_is_legal([["front.a=1"], ["front.a=2"]])
    assert seen == [[["front.a=2"]]]


# ------------------------------------------------------------------ vizpipe.pipeline.sweeps


def test_jobs_product_order():
    """jobs: the basic sweeper's cartesian product, params first, then the command line."""
    assert sweeps.jobs(["a=1,2"], ["b=x,y"]) == [
        ["a=1", "b=x"],
        ["a=1", "b=y"],
        ["a=2", "b=x"],
        ["a=2", "b=y"],
    ]
    assert sweeps.jobs([], ["c=3"]) == [["c=3"]]


def test_remember_and_was_checked_ignore_order():
    """was_checked: a job remembered in any order; others are not."""
    sweeps.remember([["front.p=1", "front.q=2"]])
    assert sweeps.was_checked(["front.q=2", "front.p=1"])
    assert not sweeps.was_checked(["front.q=2"])
    assert not sweeps.was_checked(["front.q=3", "front.p=1"])


def test_job_checker_composes_once_per_structure():
    """Value-only jobs share one composition; a group override composes again; bad values fail."""
    with Composer(CONF_DIR, "config", []) as c:
        checker = JobChecker(c)
        for t in (1, 2, 3):
            checker.check(["model=seed_net", "input=random", "stages=[summary]", f"cam.target_class={t}"])
        assert checker.compositions == 1
        assert checker.overrides.groups == {
            "model": True,
            "input": True,
            "stages": False,
            "cam.target_class": False,
        }
        checker.check(["model=vgg11", "input=random", "stages=[summary]"])
        assert checker.compositions == 2
        with pytest.raises(ConfigError) as info:
            checker.check(["model=seed_net", "input=random", "stages=[summary]", "seed=abc"])
        assert (
            str(info.value) == "Invalid value 'abc' for seed: expected an integer (see the comments in conf/)"
        )
        with pytest.raises(ConfigError, match=r"^Unknown config key 'cam.nope'"):
            checker.check(["model=seed_net", "input=random", "stages=[summary]", "cam.nope=1"])
        with pytest.raises(ConfigError, match=r"^Unknown stage 'zz'"):
            checker.check(["model=seed_net", "input=random", "stages=[zz]"])
        assert checker.compositions == 2


def test_job_checker_and_loader_share_one_rule(inner):
    """+, ~, packages, hydra keys (a bare ``hydra`` too), dict values and groups are structural, for
    the precheck's JobChecker and the sweeper's loader alike; plain values are not."""
    lines = ["+a.b=1", "++a.b=1", "~a.b", "cam@x=default", "hydra.job.chdir=true", "hydra/launcher=basic"]
    lines += ["hydra=null", "cam={a:1}", "model=vgg11"]
    with Composer(CONF_DIR, "config", []) as c:
        for kinds in (JobChecker(c).overrides, DerivingConfigLoader(inner).overrides):
            for line in lines:
                assert kinds.structural(*parse([line])) is True, line
            for line in ("cam.layer=x", "hydrax=1", "seed=3", "stages=[cam]"):
                assert kinds.structural(*parse([line])) is False, line


# ------------------------------------------------------------------ swept values, values set, marks


def test_swept_values_are_the_keys_whose_values_differ():
    """Keys with one value in every job are not swept; '+'/'~' are stripped; values in sweep order."""
    batch = sweeps.jobs([], ["model=vgg11", "+cam.layer=a,b", "cam.target_class=2,1", "seed=3,3"])
    assert sweeps.swept_values(batch) == {"cam.layer": ["a", "b"], "cam.target_class": ["2", "1"]}
    assert sweeps.swept_values([["a=1"]]) == {}
    assert sweeps.swept_values([]) == {}


def test_is_hydra_own_is_hydras_rule():
    """hydra.* and hydra/* are Hydra's own settings (Override.is_hydra_override); others are a job's."""
    for line in ("hydra.run.dir=x", "hydra/launcher=joblib", "+hydra.job.a=1", "hydra=null", "hydrax=1"):
        (o,) = parse([line])
        assert sweeps.is_hydra_own(line) is o.is_hydra_override(), line


def test_with_values_sets_values_on_a_copy_as_hydra_does():
    """Typed nodes convert and reject, struct mode rejects unknown keys; the base is left alone."""
    base = OmegaConf.create({"a": 1, "b": {"c": "x"}})
    OmegaConf.set_struct(base, True)
    cfg = sweeps.with_values(base, parse(["a=2", "b.c=y"]))
    assert (cfg.a, cfg.b.c, base.a, base.b.c) == (2, "y", 1, "x")
    with pytest.raises(Exception, match="nope"):  # noqa: B017 - omegaconf's own error
        sweeps.with_values(base, parse(["b.nope=1"]))


def test_mark_and_values_of_round_trip():
    """mark writes the keys and their values into env_set; values_of reads them back; '$' is left out."""
    cfg = OmegaConf.create({"hydra": {"job": {"env_set": {}}}})
    values = {"cam.layer": ["layer1", "layer2"], "seed": ["1", "2"]}
    sweeps.mark(cfg, values)
    assert cfg.hydra.job.env_set[sweeps.SWEPT_ENV] == "cam.layer,seed"
    assert sweeps.values_of(cfg.hydra.job.env_set) == values
    odd = OmegaConf.create({"hydra": {"job": {"env_set": {}}}})
    sweeps.mark(odd, {"a": ["$x", "y"]})
    assert odd.hydra.job.env_set[sweeps.SWEPT_ENV] == "a" and sweeps.values_of(odd.hydra.job.env_set) == {}
    empty = OmegaConf.create({"hydra": {"job": {"env_set": {}}}})
    assert sweeps.mark(empty, {}).hydra.job.env_set == {}


def test_values_of_anything_else_is_empty():
    """The sweeper's JSON in hydra.job.env_set; anything else gives {}."""
    text = '{"cam.layer":["layer1","layer2"],"seed":[1,2]}'
    assert sweeps.values_of({sweeps.SWEEP_VALUES_ENV: text}) == {
        "cam.layer": ["layer1", "layer2"],
        "seed": ["1", "2"],
    }
    assert sweeps.values_of({}) == {} and sweeps.values_of(None) == {}
    for bad in ("not json", "[1]", '{"a": "x"}'):
        assert sweeps.values_of({sweeps.SWEEP_VALUES_ENV: bad}) == {}, bad


# ------------------------------------------------------------------ job folder names


def job_root(task, swept=None, exclude=(), params=None):
    env = {sweeps.SWEPT_ENV: swept} if swept is not None else {}
    return OmegaConf.create(
        {
            "hydra": {
                "overrides": {"task": task},
                "job": {"env_set": env, "config": {"override_dirname": {"exclude_keys": list(exclude)}}},
                "sweeper": {"params": params},
            }
        }
    )


def test_job_dirname_from_swept_keys():
    """The folder name holds the swept keys, sorted; without them all overrides; excluded keys never."""
    root = job_root(
        ["model=vgg11", "+cam.layer=l4", "cam.target_class=7"], swept="cam.target_class,cam.layer"
    )
    assert sweeps.job_dirname(_root_=root) == "cam.layer=l4,cam.target_class=7"
    root = job_root(["model=vgg11", "cam.layer=l4"], swept="")
    assert sweeps.job_dirname(_root_=root) == "cam.layer=l4,model=vgg11"
    root = job_root(["model=vgg11", "cam.layer=l4", "seed=1"], swept="", exclude=["seed"])
    assert sweeps.job_dirname(_root_=root) == "cam.layer=l4,model=vgg11"


@pytest.mark.parametrize(
    ("task", "swept", "want"),
    [
        (["b=2", "a=1"], "a,b", "a=1,b=2"),
        (["b=2", "a=1"], "b", "b=2"),
        (["~b", "a=1"], "zz", "a=1"),
        (["+c=x/y"], "c", "c=x_y"),
    ],
)
def test_job_dirname_cases(task, swept, want):
    """job_dirname: swept pairs sorted by key, else all; '+'/'~' stripped; unsafe characters replaced."""
    assert sweeps.job_dirname(_root_=job_root(task, swept)) == want


def test_swept_keys_without_the_sweepers_mark(monkeypatch):
    """Another sweeper: the sweep this process checked, else hydra.sweeper.params; never sys.argv."""
    monkeypatch.setattr("sys.argv", ["run.py", "-m", "front.argv=1,2"])
    assert sweeps.swept_keys(job_root(["front.k=1"], swept="x,,y")) == {"x", "y"}
    assert sweeps.swept_keys(job_root(["front.k=1"])) == set()
    sweeps.remember([["front.k=1", "front.v=a"], ["front.k=1", "front.v=b"]])
    assert sweeps.swept_keys(job_root(["front.v=b", "front.k=1"])) == {"front.v"}
    params = {"e": "1,2", "f": "3"}
    assert sweeps.swept_keys(job_root(["front.other=1"], params=params)) == {"e"}
    assert sweeps.swept_keys(job_root(["front.other=1"], params={"bad": "[x"})) == set()


def test_basic_sweepers_jobs_are_named_as_vizpipes(monkeypatch):
    """Under hydra/sweeper=basic the jobs the precheck checked get the same folder names."""
    batch = sweeps.jobs([], ["model=vgg11", "cam.layer=front1,front2"])
    sweeps.remember(batch)
    named = [sweeps.job_dirname(_root_=job_root(job)) for job in batch]
    marked = [sweeps.job_dirname(_root_=job_root(job, swept="cam.layer")) for job in batch]
    assert named == marked == ["cam.layer=front1", "cam.layer=front2"]


# ------------------------------------------------------------------ Hydra's private API: one adapter


def test_adapter_accepts_the_tested_versions_only():
    """Hydra 1.3.2 and later 1.3 releases pass; others fail with one line naming both versions."""
    import hydra

    private.check_version(hydra.__version__)
    for ok in ("1.3.2", "1.3.8", "1.3.10"):
        private.check_version(ok)
    for bad in ("1.3.1", "1.4.0", "1.4.0.dev1", "2.0.0", "1.2.0"):
        with pytest.raises(private.HydraVersionError) as info:
            private.check_version(bad)
        message = str(info.value)
        assert "\n" not in message and bad in message and private.TESTED in message, message
        assert isinstance(info.value, VizpipeError) and isinstance(info.value, ImportError)


def test_only_the_adapter_imports_hydras_private_api():
    """No module, test or benchmark but pipeline/hydra/private.py names ``hydra._internal``."""
    adapter = ROOT / "pipeline" / "hydra" / "private.py"
    pattern = re.compile(r"hydra\._internal")
    users = [
        p.relative_to(ROOT).as_posix()
        for folder in ("pipeline", "stages", "tests", "benchmarks", "vizpipe")
        for p in (ROOT / folder).rglob("*.py")
        if p not in (adapter, Path(__file__).resolve()) and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert users == []
    assert pattern.search(adapter.read_text(encoding="utf-8"))


@pytest.mark.slow  # a fresh interpreter importing vizpipe's command line (torch included): ~3-4 s
def test_command_line_refuses_an_untested_hydra(tmp_path):
    """``run.py`` with another hydra-core: one line naming it, exit 2, before any work."""
    import os
    import subprocess
    import sys

    code = (
        "import hydra, sys; hydra.__version__ = '1.4.0'; sys.argv = ['run.py', 'stages=[summary]']; "
        "from vizpipe.pipeline.cli import command_line; command_line()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.splitlines() == [
        "vizpipe: error: hydra-core 1.4.0 is not a version vizpipe was tested with "
        "(hydra-core>=1.3.2,<1.4: vizpipe.pipeline.hydra.private uses its private API); "
        "install one: pip install 'hydra-core>=1.3.2,<1.4'"
    ]
    assert list(tmp_path.iterdir()) == []  # no run folder
