"""The fault matrix (issue 20): each fault, bad input or hostile input tried, and what must come of it.

``CASES`` is the table: one ``Case`` per row, each trying one thing in a fresh ``tmp_path`` and
returning an ``Outcome``; ``test_case`` checks what every row promises (exit status, one line on
stderr naming the value, no traceback, no marker file: every hostile payload here would write
``<tmp>/marker`` if it ran) and each row's ``check`` its own facts. The README's *Reliability*
section lists the same rows. Add a row for a new case; mark it ``slow`` when it runs the CLI.

Hostile payloads: a pickle whose loading writes the marker (``torch.load(weights_only=False)``
reached through a nested ``_target_``), a module ``evilmod`` on ``PYTHONPATH`` whose callables and
classes write it, a package ``evilpkg`` whose import writes it, and a folder with an ``omegaconf.py``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, compose_config
from omegaconf import OmegaConf
from vizpipe.pipeline.errors import ConfigError

SMALL = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]", "stages=[summary]"]
NESTED = [
    "+model.kwargs.x._target_=torch.load",
    "+model.kwargs.x.f=PAYLOAD",
    "+model.kwargs.x.weights_only=false",
]


# =========================================================================== payloads and helpers


class _Pickle:
    """Unpickling it runs ``touch <marker>`` (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.marker}'",))


def plant(tmp: Path) -> dict[str, str]:
    """The payloads in ``tmp``; returns the environment that puts ``evilmod`` on the path."""
    marker = tmp / "marker"
    (tmp / "payload.pkl").write_bytes(pickle.dumps(_Pickle(marker)))
    mods = tmp / "mods"
    (mods / "evilpkg").mkdir(parents=True, exist_ok=True)
    (mods / "evilmod.py").write_text(
        "import logging\nfrom pathlib import Path\n"
        f"MARK = Path({str(marker)!r})\n"
        "def touch(*a, **k):\n    MARK.touch()\n    return logging.Formatter()\n"
        "class Evil:\n    def __init__(self, *a, **k):\n        MARK.touch()\n"
    )
    (mods / "evilpkg" / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    )
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(mods)) if p)
    return {"PYTHONPATH": path}


def nested(tmp: Path) -> list[str]:
    return [o.replace("PAYLOAD", str(tmp / "payload.pkl")) for o in NESTED]


@dataclass
class Outcome:
    """What a case left: exit status and output (in-process cases: the exception's line)."""

    rc: int
    out: str = ""
    err: str = ""


def run(tmp: Path, args: list[str], *, module: str | None = None, trust_env: bool = True) -> Outcome:
    """``python run.py ARGS`` (or ``python -m MODULE ARGS``) with the payloads on the path."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(plant(tmp) if trust_env else {})
    head = [sys.executable, "-m", module] if module else [sys.executable, str(ROOT / "run.py")]
    proc = subprocess.run([*head, *args], cwd=tmp, capture_output=True, text=True, timeout=600, env=env)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def frozen(tmp: Path, edit: Callable[[dict], None] | None = None, extra: str = "") -> Path:
    """A run folder's ``.hydra/`` as Hydra writes it (the unresolved task config), edited by ``edit``."""
    cfg = OmegaConf.to_container(compose_config(SMALL), resolve=False)
    if edit:
        edit(cfg)
    folder = tmp / "sent" / ".hydra"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)) + extra)
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(SMALL)))
    return folder


def config_path(
    tmp: Path, edit: Callable[[dict], None] | None = None, extra: str = "", *args: str
) -> Outcome:
    """``run.py --config-path <sent>/.hydra --config-name config`` on a planted folder."""
    plant(tmp)
    folder = frozen(tmp, edit, extra)
    return run(
        tmp, ["--config-path", str(folder), "--config-name", "config", f"hydra.run.dir={tmp}/out", *args]
    )


def set_in(key: str, value: object) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        node = cfg
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value

    return edit


def in_process(fn: Callable[[], object]) -> Outcome:
    """A library call: its one-line ``ConfigError`` as the outcome's ``err``, status 2."""
    try:
        fn()
    except ConfigError as exc:
        return Outcome(2, "", f"vizpipe: error: {exc}")
    return Outcome(0)


# =========================================================================== the cases


def case_override(tmp: Path) -> Outcome:
    plant(tmp)
    return run(tmp, [*SMALL, *nested(tmp), f"hydra.run.dir={tmp}/out"])


def case_inspect(tmp: Path) -> Outcome:
    import torch
    from torch import nn

    import vizpipe

    plant(tmp)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    images = torch.zeros(1, 3, 16, 16)
    return in_process(lambda: vizpipe.inspect(model, images, ["summary"], tmp / "out", overrides=nested(tmp)))


def case_inspect_settings(tmp: Path) -> Outcome:
    import torch
    from torch import nn

    import vizpipe

    plant(tmp)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    payload = [o.replace("model.", "cam.") for o in nested(tmp)]  # a value vizpipe never builds
    return in_process(lambda: vizpipe.inspect(model, torch.zeros(1, 3, 16, 16), ["cam"], overrides=payload))


def case_folder_nested(tmp: Path) -> Outcome:
    payload = {"_target_": "torch.load", "f": str(tmp / "payload.pkl"), "weights_only": False}
    return config_path(tmp, set_in("model.kwargs", {"x": payload}))


def case_folder_model(tmp: Path, *args: str) -> Outcome:
    return config_path(tmp, set_in("model._target_", "evilmod.Evil"), "", *args)


def case_folder_model_trusted(tmp: Path) -> Outcome:
    return case_folder_model(tmp, "--trust-config")


def case_folder_model_typed(tmp: Path) -> Outcome:
    """The user names the target on the command line: theirs to trust (it runs)."""
    return config_path(tmp, None, "", "model._target_=evilmod.Evil")


def case_folder_callbacks(tmp: Path) -> Outcome:
    return config_path(tmp, None, "hydra:\n  callbacks:\n    evil:\n      _target_: evilmod.Evil\n")


def case_folder_logging(tmp: Path) -> Outcome:
    text = "hydra:\n  job_logging:\n    version: 1\n    formatters:\n      evil:\n        (): evilmod.touch\n"
    return config_path(tmp, None, text)


EVIL_LOGGING = "version: 1\nformatters:\n  evil:\n    (): evilmod.touch\nroot:\n  level: INFO\n"


def case_folder_hydra_group(tmp: Path) -> Outcome:
    """A logging option beside the config that its defaults pick; ``--help`` configures it."""
    plant(tmp)
    folder = frozen(tmp)
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(
        "defaults:\n  - override hydra/hydra_logging: evil\n  - _self_\n" + text
    )
    (folder / "hydra" / "hydra_logging").mkdir(parents=True)
    (folder / "hydra" / "hydra_logging" / "evil.yaml").write_text(EVIL_LOGGING)
    return run(tmp, ["--config-path", str(folder), "--config-name", "config", "--help"])


def case_reproduce_shadow(tmp: Path) -> Outcome:
    """A run folder holding ``hydra/job_logging/vizpipe.yaml``: found before vizpipe's own when
    reproduce picks ``hydra/job_logging=vizpipe``."""
    plant(tmp)
    folder = frozen(tmp)
    (folder / "hydra" / "job_logging").mkdir(parents=True)
    (folder / "hydra" / "job_logging" / "vizpipe.yaml").write_text(EVIL_LOGGING)
    return run(tmp, [str(folder.parent), "--out", str(tmp / "again")], module="vizpipe.reproduce")


def case_folder_defaults(tmp: Path) -> Outcome:
    plant(tmp)
    folder = frozen(tmp)
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text("defaults:\n  - extra\n  - _self_\n" + text)
    (folder / "extra.yaml").write_text("hydra:\n  callbacks:\n    e:\n      _target_: evilmod.Evil\n")
    return run(tmp, ["--config-path", str(folder), "--config-name", "config", f"hydra.run.dir={tmp}/out"])


def case_folder_searchpath(tmp: Path) -> Outcome:
    return config_path(tmp, set_in("hydra", {"searchpath": ["pkg://evilpkg"]}))


def case_folder_env_set(tmp: Path) -> Outcome:
    return config_path(tmp, None, "hydra:\n  job:\n    env_set:\n      GIT_CONFIG_COUNT: '1'\n")


def case_rerun_pickle(tmp: Path) -> Outcome:
    plant(tmp)
    return run(tmp, ["--experimental-rerun", str(tmp / "payload.pkl")])


def case_reproduce_frozen(tmp: Path) -> Outcome:
    plant(tmp)
    payload = {"_target_": "torch.load", "f": str(tmp / "payload.pkl"), "weights_only": False}
    folder = frozen(tmp, set_in("model.kwargs", {"x": payload}))
    return run(tmp, [str(folder.parent), "--out", str(tmp / "again")], module="vizpipe.reproduce")


def case_reproduce_from_conf(tmp: Path) -> Outcome:
    from vizpipe.pipeline import reproduce

    plant(tmp)
    folder = frozen(tmp)
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create([*SMALL, *nested(tmp)])))
    return in_process(lambda: reproduce.build_command(folder.parent, tmp / "again", [], from_conf=True))


def case_reproduce_cwd(tmp: Path) -> Outcome:
    """A run folder whose ``hydra.runtime.cwd`` holds an ``omegaconf.py``: run.py starts there,
    but with Python's safe path that file is never imported (the run itself is clean and works)."""
    plant(tmp)
    folder = frozen(tmp)
    code = tmp / "code"
    code.mkdir()
    (code / "omegaconf.py").write_text(f"from pathlib import Path\nPath({str(tmp / 'marker')!r}).touch()\n")
    (folder / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {code}\n")
    return run(tmp, [str(folder.parent), "--out", str(tmp / "again")], module="vizpipe.reproduce")


def case_secret(tmp: Path, show: bool = False) -> Outcome:
    """``notes=${oc.env:...}``: the value stays out of manifest.json and both reports."""
    from vizpipe.pipeline.runner import run_pipeline

    os.environ["VIZPIPE_TEST_SECRET"] = "s3cr3t-t0ken-4711"
    try:
        extra = ["report.show_env=true"] if show else []
        cfg = compose_config([*SMALL, "notes=${oc.env:VIZPIPE_TEST_SECRET}", *extra])
        result = run_pipeline(cfg, tmp / "out")
    finally:
        del os.environ["VIZPIPE_TEST_SECRET"]
    return Outcome(0 if result.ok else 1)


def check_secret(tmp: Path, out: Outcome) -> None:
    files = [tmp / "out" / n for n in ("manifest.json", "report.html", "report.md")]
    assert all("s3cr3t-t0ken-4711" not in f.read_text() for f in files)
    notes = json.loads(files[0].read_text())["config"]["notes"]
    assert notes == "<hidden: ${oc.env:VIZPIPE_TEST_SECRET}>"
    assert "&lt;hidden: ${oc.env:VIZPIPE_TEST_SECRET}&gt;" in files[1].read_text()


def case_secret_shown(tmp: Path) -> Outcome:
    return case_secret(tmp, show=True)


def check_secret_shown(tmp: Path, out: Outcome) -> None:
    files = [tmp / "out" / n for n in ("manifest.json", "report.html", "report.md")]
    assert all("s3cr3t-t0ken-4711" in f.read_text() for f in files)


def case_secret_cli(tmp: Path) -> Outcome:
    os.environ["VIZPIPE_TEST_SECRET"] = "s3cr3t-t0ken-4711"  # the run's environment
    try:
        return run(tmp, [*SMALL, "notes=${oc.env:VIZPIPE_TEST_SECRET}", f"hydra.run.dir={tmp}/out"])
    finally:
        del os.environ["VIZPIPE_TEST_SECRET"]


def check_secret_cli(tmp: Path, out: Outcome) -> None:
    check_secret(tmp, out)
    assert "${oc.env:VIZPIPE_TEST_SECRET}" in (tmp / "out" / ".hydra" / "config.yaml").read_text()
    assert "s3cr3t-t0ken-4711" not in (tmp / "out" / ".hydra" / "config.yaml").read_text()


def case_binary_categories(tmp: Path) -> Outcome:
    from vizpipe.pipeline.runner import run_pipeline

    (tmp / "classes.txt").write_bytes(b"cat\n\xff\xfe\x00dog\n")
    cfg = compose_config([*SMALL, f"model.categories={tmp / 'classes.txt'}"])
    result = run_pipeline(cfg, tmp / "out")
    return Outcome(1, "", f"vizpipe: error: {result.error}")


def case_truncated_manifest(tmp: Path) -> Outcome:
    from vizpipe.pipeline import reproduce

    folder = frozen(tmp).parent
    (folder / "manifest.json").write_text('{"status": "ok", "stages": [{"name": "sum')
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = reproduce.main([str(folder), "--check", "--out", str(tmp / "again")])
    assert not (tmp / "again").exists()  # nothing ran
    return Outcome(rc, "", err.getvalue())


def case_compare_into_head(tmp: Path) -> Outcome:
    """``python -m vizpipe.compare A B --json | head -1``: the reader stops; no traceback."""
    for name in ("a", "b"):
        (tmp / name).mkdir()
        doc = {"status": "ok", "setup": {"name": "setup", "status": "ok", "artifacts": []}}
        arts = [{"path": f"x/{i}.npy", "bytes": 1, "sha256": f"{name}{i}"} for i in range(3000)]
        doc["stages"] = [{"name": "x", "status": "ok", "artifacts": arts}]
        (tmp / name / "manifest.json").write_text(json.dumps(doc))
    cmd = [
        sys.executable,
        "-m",
        "vizpipe.compare",
        str(tmp / "a"),
        str(tmp / "b"),
        "--trust-manifest",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what head does after its first line
    err = proc.stderr.read()
    return Outcome(proc.wait(), "", err)


def case_train_overflow(tmp: Path) -> Outcome:
    from vizpipe.pipeline.runner import run_pipeline

    cfg = compose_config(
        [
            "model=shapes_net",
            "input=shapes",
            "stages=[train]",
            "train.lr=1e12",
            "train.epochs=2",
            "input.train_count=64",
            "input.val_count=32",
            "input.test_count=16",
            "train.cam_images=0",
            "train.pointing_game=false",
            "train.histograms=false",
            "train.graph=false",
        ]
    )
    result = run_pipeline(cfg, tmp / "out")
    return Outcome(0 if result.ok else 1, "", f"vizpipe: error: {result.error}")


def check_train_overflow(tmp: Path, out: Outcome) -> None:
    import torch

    state = torch.load(tmp / "out" / "train" / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    history = json.loads((tmp / "out" / "train" / "history.json").read_text())
    assert history["status"] == "stopped" and history["epochs_done"] == 0


def check_marker_written(tmp: Path, out: Outcome) -> None:
    """The control rows: what the user vouches for runs (so the marker check can fail)."""
    assert (tmp / "marker").exists()
    (tmp / "marker").unlink()


@dataclass(frozen=True)
class Case:
    """One row: what is tried, and what must come of it."""

    name: str
    tried: str  # one line (README: Reliability)
    act: Callable[[Path], Outcome]
    status: int  # expected exit status (a refused command line: 2; a failed run: 1)
    says: str = ""  # a substring of the one line on stderr ("" = no message)
    check: Callable[[Path, Outcome], None] | None = None
    slow: bool = False
    tags: tuple[str, ...] = field(default=())


CASES = [
    Case(
        "override-nested-target",
        "override: model.kwargs.x._target_=torch.load of a pickle",
        case_override,
        2,
        says="model.kwargs.x._target_='torch.load' is refused",
        slow=True,
    ),
    Case(
        "inspect-overrides-nested-target",
        "vizpipe.inspect(overrides=[model.kwargs.x._target_=...])",
        case_inspect,
        2,
        says="model.kwargs.x._target_='torch.load' is refused",
    ),
    Case(
        "inspect-settings-nested-target",
        "vizpipe.inspect(overrides=[cam.kwargs.x._target_=...])",
        case_inspect_settings,
        2,
        says="cam.kwargs.x._target_='torch.load' is refused",
    ),
    Case(
        "folder-nested-target",
        "run folder (--config-path): model.kwargs.x._target_=torch.load",
        case_folder_nested,
        2,
        says="model.kwargs.x._target_='torch.load' is refused",
        slow=True,
    ),
    Case(
        "folder-model-target",
        "run folder: model._target_ outside vizpipe's factories",
        case_folder_model,
        2,
        says="model._target_='evilmod.Evil' comes from a config in",
        slow=True,
    ),
    Case(
        "folder-model-trusted",
        "the same with --trust-config (control: it runs)",
        case_folder_model_trusted,
        1,
        check=check_marker_written,
        slow=True,
    ),
    Case(
        "folder-model-typed",
        "the same target typed on the command line (control: it runs)",
        case_folder_model_typed,
        1,
        check=check_marker_written,
        slow=True,
    ),
    Case(
        "folder-callbacks",
        "run folder: hydra.callbacks._target_",
        case_folder_callbacks,
        2,
        says="hydra.callbacks.evil._target_='evilmod.Evil'",
        slow=True,
    ),
    Case(
        "folder-job-logging",
        "run folder: hydra.job_logging formatter () factory",
        case_folder_logging,
        2,
        says="hydra.job_logging.formatters.evil.()='evilmod.touch'",
        slow=True,
    ),
    Case(
        "folder-hydra-group-help",
        "run folder: its defaults pick hydra/hydra_logging=evil beside it, with --help",
        case_folder_hydra_group,
        2,
        says="hydra.hydra_logging.formatters.evil.()='evilmod.touch'",
        slow=True,
    ),
    Case(
        "folder-defaults",
        "run folder: a defaults list pulling a file with callbacks",
        case_folder_defaults,
        2,
        says="hydra.callbacks.e._target_='evilmod.Evil'",
        slow=True,
    ),
    Case(
        "folder-searchpath",
        "run folder: hydra.searchpath=[pkg://evilpkg] (imported as Hydra composes)",
        case_folder_searchpath,
        2,
        says="hydra.searchpath=['pkg://evilpkg']",
        slow=True,
    ),
    Case(
        "folder-env-set",
        "run folder: hydra.job.env_set (git runs with it)",
        case_folder_env_set,
        2,
        says="hydra.job.env_set.GIT_CONFIG_COUNT='1'",
        slow=True,
    ),
    Case(
        "rerun-pickle",
        "Hydra's --experimental-rerun <pickle>",
        case_rerun_pickle,
        2,
        says="--experimental-rerun loads a pickle",
        slow=True,
    ),
    Case(
        "reproduce-frozen",
        "python -m vizpipe.reproduce <folder> with a nested _target_",
        case_reproduce_frozen,
        2,
        says="model.kwargs.x._target_='torch.load' is refused",
        slow=True,
    ),
    Case(
        "reproduce-shadowed-logging",
        "reproduce <folder> holding hydra/job_logging/vizpipe.yaml (shadows vizpipe's)",
        case_reproduce_shadow,
        2,
        says="hydra.job_logging.formatters.evil.()='evilmod.touch'",
        slow=True,
    ),
    Case(
        "reproduce-from-conf",
        "reproduce --from-conf: a recorded override with a _target_",
        case_reproduce_from_conf,
        2,
        says="recorded overrides set '+model.kwargs.x._target_=torch.load'",
    ),
    Case(
        "reproduce-cwd",
        "reproduce: hydra.runtime.cwd holds an omegaconf.py",
        case_reproduce_cwd,
        0,
        slow=True,
    ),
    Case(
        "secret-hidden",
        "notes=${oc.env:TOKEN}: manifest.json and both reports",
        case_secret,
        0,
        check=check_secret,
    ),
    Case(
        "secret-shown", "the same with report.show_env=true", case_secret_shown, 0, check=check_secret_shown
    ),
    Case(
        "secret-cli",
        "notes=${oc.env:TOKEN} through run.py (.hydra/config.yaml keeps the interpolation)",
        case_secret_cli,
        0,
        check=check_secret_cli,
        slow=True,
    ),
    Case(
        "binary-categories",
        "model.categories=<a binary file>",
        case_binary_categories,
        1,
        says="model.categories file",
    ),
    Case(
        "reproduce-check-truncated",
        "reproduce --check on a truncated manifest.json",
        case_truncated_manifest,
        2,
        says="is not a vizpipe manifest (not valid JSON",
    ),
    Case("compare-into-head", "python -m vizpipe.compare ... | head -1", case_compare_into_head, 1),
    Case(
        "train-overflow",
        "train.lr=1e12 (BatchNorm's running_var overflows, the loss stays finite)",
        case_train_overflow,
        1,
        says="the buffer conv2.1.running_var holds inf",
        check=check_train_overflow,
        slow=True,
    ),
]


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_case(case: Case, tmp_path: Path) -> None:
    out = case.act(tmp_path)
    if case.check is not None:
        case.check(tmp_path, out)
    assert not (tmp_path / "marker").exists(), f"{case.name}: a payload ran"
    assert out.rc == case.status, (out.rc, out.out[-2000:], out.err[-2000:])
    assert "Traceback" not in out.err and "Traceback" not in out.out
    lines = [line for line in out.err.splitlines() if line.strip() and "Warning" not in line]
    if case.says:
        errors = [line for line in lines if line.startswith("vizpipe: error:")]
        assert len(errors) == 1 and case.says in errors[0], out.err
    elif case.check is not check_marker_written:
        assert not [line for line in lines if line.startswith("vizpipe: error:")], out.err


# =========================================================================== the same payloads, quick


PRECHECKED = [
    "folder-nested-target",
    "folder-model-target",
    "folder-callbacks",
    "folder-job-logging",
    "folder-defaults",
    "folder-searchpath",
    "folder-env-set",
    "rerun-pickle",
]


@pytest.mark.parametrize("name", PRECHECKED)
def test_precheck_refuses_payloads_in_process(name: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """The command line's check alone (no Hydra run, so nothing could run): one line, exit 2."""
    from vizpipe.pipeline import precheck as pc

    case = next(c for c in CASES if c.name == name)
    argv: list[str] = []

    def fake_run(tmp: Path, args: list[str], **_: object) -> Outcome:
        argv.extend(args)
        return Outcome(0)

    monkeypatch.setattr(sys.modules[__name__], "run", fake_run)
    case.act(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    with pytest.raises(SystemExit) as exc:
        pc.precheck([*argv, f"hydra.run.dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and case.says in err
    assert not (tmp_path / "marker").exists()
