"""Reproduce and verify: compare two runs' manifests, re-run a run folder, byte-identical arrays."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli
from omegaconf import DictConfig
from vizpipe.pipeline import compare as cmp
from vizpipe.pipeline import reproduce as rep
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.runner import run_pipeline

# --------------------------------------------------------------------------- compare (fast)


def _write_run(
    run: Path,
    files: dict[str, bytes],
    *,
    statuses: dict[str, str] | None = None,
    config: dict | None = None,
) -> Path:
    """A run folder whose manifest lists ``files`` (path -> bytes) under their folders' stages."""
    run.mkdir(parents=True)
    stages: dict[str, list[dict]] = {}
    report: list[dict] = []
    for rel, data in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
        art = {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (report if rel.startswith("report.") else stages.setdefault(rel.split("/")[0], [])).append(art)
    statuses = statuses or {}
    manifest = {
        "status": "ok",
        "config": config or {"seed": 0},
        "setup": {"name": "setup", "status": "ok", "artifacts": []},
        "stages": [{"name": n, "status": statuses.get(n, "ok"), "artifacts": a} for n, a in stages.items()],
        "report": {"name": "report", "status": "ok", "artifacts": report},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


BASE = {
    "summary/summary.txt": b"table",
    "features/a.npy": b"\x93NUMPY a",
    "features/b.npy": b"\x93NUMPY b",
    "tensorboard/events.out.tfevents.1.host": b"t=1",
    "report.html": b"<html>1</html>",
}


def test_equal_runs_ignore_volatile_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_run(tmp_path / "a", BASE)
    b = _write_run(
        tmp_path / "b",
        {
            **BASE,
            "tensorboard/events.out.tfevents.1.host": b"t=2",
            "report.html": b"<html>2</html>",
        },
    )
    c = cmp.compare_runs(a, b)
    assert c.equal and c.identical == 3 and c.first is None
    assert sorted(d.path for d in c.volatile) == [
        "report.html",
        "tensorboard/events.out.tfevents.1.host",
    ]
    assert cmp.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "equal: 3 artifacts identical" in out and "2 of 2 volatile artifacts differ" in out
    assert cmp.main([str(a), str(b), "--strict"]) == 1


def test_names_the_first_differing_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_run(tmp_path / "a", BASE)
    b = _write_run(
        tmp_path / "b",
        {**BASE, "features/a.npy": b"\x93NUMPY A", "features/b.npy": b"\x93NUMPY B"},
        config={"seed": 1},
    )
    c = cmp.compare_runs(a, b)
    assert not c.equal
    assert c.first.path == "features/a.npy" and c.first.kind == "changed"
    assert [d.path for d in c.differences] == ["features/a.npy", "features/b.npy"]
    assert c.config_changes == ["seed"]
    assert cmp.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "first differing artifact: features/a.npy" in out and "config differs in: seed" in out
    assert cmp.main([str(a), str(b), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["equal"] is False and doc["first"]["path"] == "features/a.npy"


def test_missing_artifacts_and_step_status(tmp_path: Path) -> None:
    files = dict(BASE)
    del files["features/b.npy"]
    a = _write_run(tmp_path / "a", BASE)
    b = _write_run(tmp_path / "b", {**files, "cam/x.npy": b"x"}, statuses={"features": "failed"})
    c = cmp.compare_runs(a, b)
    kinds = {d.path: d.kind for d in c.differences}
    assert kinds == {
        "step features": "status",
        "step cam": "status",
        "features/b.npy": "only_a",
        "cam/x.npy": "only_b",
    }
    assert c.first.path == "step features"


def test_verify_rehashes_files_on_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_run(tmp_path / "a", BASE)
    b = _write_run(tmp_path / "b", BASE)
    (b / "features" / "b.npy").write_bytes(b"edited after the run")
    assert cmp.compare_runs(a, b, verify=False).equal  # the manifests alone still agree (fast path)
    c = cmp.compare_runs(a, b)  # by default every file is re-hashed
    assert not c.equal and c.first.path == "features/b.npy (B)" and c.first.kind == "hash_on_disk"
    assert cmp.main([str(a), str(b)]) == 1 and cmp.main([str(a), str(b), "--trust-manifest"]) == 0
    assert cmp.main([str(a), str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- reproduce (fast)


def test_merge_and_build_commands(tmp_path: Path) -> None:
    assert rep.merge_overrides(["model=vgg11", "seed=0", "+x=1"], ["seed=3", "x=2"]) == [
        "model=vgg11",
        "seed=3",
        "x=2",
    ]
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / ".hydra" / "overrides.yaml").write_text("- model=vgg11\n- seed=0\n")
    frozen = rep.build_command(run, tmp_path / "new", ["seed=5"])
    i = frozen.index("--config-path")
    assert frozen[i + 1] == str((run / ".hydra").resolve()) and frozen[i + 2 : i + 4] == [
        "--config-name",
        "config",
    ]
    assert f"hydra.run.dir={tmp_path / 'new'}" in frozen and frozen[-1] == "seed=5"
    conf = rep.build_command(run, tmp_path / "new", ["seed=5", "model=resnet18"], from_conf=True)
    start = conf.index("vizpipe") + 1  # python [-P] -m vizpipe ...
    assert conf[start:] == ["seed=5", "model=resnet18", f"hydra.run.dir={tmp_path / 'new'}"]
    assert conf[:2] == [sys.executable, "-P"] or sys.version_info < (3, 11)  # the cwd is not on sys.path
    with pytest.raises(ConfigError, match="--from-conf"):
        rep.build_command(run, tmp_path / "new", ["model=resnet18"])
    with pytest.raises(ConfigError, match="not key=value"):
        rep.build_command(run, tmp_path / "new", ["seed"])
    with pytest.raises(ConfigError, match="no .hydra/config.yaml"):
        rep.build_command(tmp_path, tmp_path / "new", [])


def test_reruns_where_the_original_ran(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    assert rep.original_cwd(run) is None
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path}\n")
    assert rep.original_cwd(run) == tmp_path
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    cwd: /no/such/folder\n")
    assert rep.original_cwd(run) is None


def test_reproduce_refuses_a_non_empty_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    assert rep.main([str(run), "--out", str(tmp_path / "busy")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_reproduce_runs_run_py_in_the_folder_the_original_ran_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.py starts in the original's ``hydra.runtime.cwd`` (relative input paths mean the same
    files), not in the folder ``reproduce`` is called from; ``cwd=`` overrides it."""
    origin, elsewhere = tmp_path / "origin", tmp_path / "elsewhere"
    origin.mkdir()
    elsewhere.mkdir()
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {origin}\n")
    calls: list[tuple[list[str], Path]] = []

    def fake_run(
        cmd: list[str], cwd: str | Path | None = None, **kwargs: object
    ) -> subprocess.CompletedProcess:
        calls.append((cmd, Path(str(cwd))))
        out = next(a for a in cmd if a.startswith("hydra.run.dir="))
        Path(out.partition("=")[2]).mkdir(parents=True)  # what run.py makes first
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(rep.subprocess, "run", fake_run)
    monkeypatch.chdir(elsewhere)
    rc, dest, comparison = rep.reproduce(run, ["seed=2"], out=tmp_path / "new")
    assert (rc, dest, comparison) == (3, (tmp_path / "new").resolve(), None)
    assert calls == [(rep.build_command(run, dest, ["seed=2"]), origin)]
    record = json.loads((dest / "reproduce.json").read_text())
    assert record["cwd"] == str(origin) and record["exit_status"] == 3 and record["equal"] is None
    assert record["extra_overrides"] == ["seed=2"] and record["command"] == calls[0][0]
    rep.reproduce(run, out=tmp_path / "given", cwd=tmp_path)
    assert calls[-1][1] == tmp_path
    (run / ".hydra" / "hydra.yaml").unlink()  # the original folder unknown: the current one
    rep.reproduce(run, out=tmp_path / "here")
    assert calls[-1][1] == elsewhere


# --------------------------------------------------------------------------- real run folders (compose API)

REAL = ["model=seed_net", "input=random", "input.shape=[2,3,32,32]", "stages=[summary,kernels,features,cam]"]


def real_run(compose: Callable[..., DictConfig], run: Path, *extra: str) -> Path:
    """A run folder made by the runner (the same code run.py calls), with its report."""
    result = run_pipeline(compose([*REAL, *extra]), run)
    assert result.ok, result.error
    return run


def test_manifest_lists_every_file_once_with_its_own_size_and_hash(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run = real_run(compose, tmp_path / "run")
    m = json.loads((run / "manifest.json").read_text())
    steps = [m["setup"], *m["stages"], m["report"]]
    arts = [a for step in steps for a in step["artifacts"]]
    listed = [a["path"] for a in arts]
    on_disk = [
        p.relative_to(run).as_posix()
        for p in run.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "run.log") and not p.name.startswith(".")
    ]
    assert sorted(listed) == sorted(on_disk) and len(set(listed)) == len(listed)  # once each
    for a in arts:  # re-computed from the file itself
        data = (run / a["path"]).read_bytes()
        assert (a["bytes"], a["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), a["path"]
    for step in m["stages"]:  # each stage's files under its own folder
        assert step["artifacts"] and all(a["path"].startswith(f"{step['name']}/") for a in step["artifacts"])
    assert sorted(a["path"] for a in m["report"]["artifacts"]) == ["report.html", "report.md"]


def test_compare_real_runs(compose: Callable[..., DictConfig], tmp_path: Path) -> None:
    """Two runs of one config are equal; another seed differs first at the first changed file."""
    a = real_run(compose, tmp_path / "a")
    b = real_run(compose, tmp_path / "b")
    c = real_run(compose, tmp_path / "c", "seed=1")
    ma = json.loads((a / "manifest.json").read_text())
    arts = [x["path"] for s in ma["stages"] for x in s["artifacts"]]
    same = cmp.compare_runs(a, b)
    assert same.equal and same.first is None and same.config_changes == []
    assert same.identical == len(arts) and {d.path for d in same.volatile} <= {"report.html", "report.md"}
    other = cmp.compare_runs(a, c)
    assert not other.equal and other.config_changes == ["seed"]
    changed = [d.path for d in other.differences]
    assert all(d.kind == "changed" for d in other.differences)
    assert not any(p.startswith("summary/") for p in changed)  # the same model shape: same table
    assert changed == [p for p in arts if p in changed] and changed[0].startswith("kernels/")
    assert {p for p in arts if p.startswith("features/") and p.endswith(".npy")} <= set(changed)
    edited = next(p for p in arts if p.endswith(".npy"))
    (b / edited).write_bytes(b"edited after the run")
    again = cmp.compare_runs(a, b)
    assert [(d.path, d.kind) for d in again.differences] == [(f"{edited} (B)", "hash_on_disk")]
    assert cmp.compare_runs(a, b, verify=False).equal


# --------------------------------------------------------------------------- real runs (slow)

RUN_ARGS = [
    "stages=[summary,features,cam]",
    "model=resnet18",
    "input=random",
    "input.shape=[1,3,64,64]",
    "device=cpu",
    "features.layers=[layer1,layer4]",
]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("repro") / "a"
    proc = run_cli([*RUN_ARGS, f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def _npy(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*.npy"))}


@pytest.mark.slow
def test_run_folder_alone_reruns_with_identical_arrays(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented command and determinism: same config, identical .npy, compare says equal."""
    new = tmp_path / "b"
    proc = run_cli(
        [
            "--config-path",
            str(base_run / ".hydra"),
            "--config-name",
            "config",
            f"hydra.run.dir={new}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _npy(base_run), _npy(new)
    assert any(k.startswith("cam/") for k in a) and any(k.startswith("features/") for k in a)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), "arrays differ between identical runs"
    ma = json.loads((base_run / "manifest.json").read_text())
    mb = json.loads((new / "manifest.json").read_text())
    assert ma["config"] == mb["config"] and mb["status"] == "ok"
    assert cmp.main([str(base_run), str(new)]) == 0
    assert "equal:" in capsys.readouterr().out


@pytest.mark.slow
def test_reproduce_wrapper_frozen_and_from_conf(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = tmp_path / "same"
    assert rep.main([str(base_run), "--out", str(same), "--check"]) == 0
    record = json.loads((same / "reproduce.json").read_text())
    assert (
        record["equal"] is True and record["mode"] == "frozen" and record["source"] == str(base_run.resolve())
    )
    assert "equal:" in capsys.readouterr().out
    other = tmp_path / "other"
    assert rep.main([str(base_run), "seed=1", "--from-conf", "--out", str(other), "--check"]) == 1
    out = capsys.readouterr().out
    assert "first differing artifact: features/layer1.npy" in out
    assert rep.recorded_overrides(other) == [*RUN_ARGS, "seed=1"]
    record = json.loads((other / "reproduce.json").read_text())
    assert record["equal"] is False and record["first_difference"].startswith("features/layer1.npy")


@pytest.mark.slow
def test_reproduce_finds_relative_inputs_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run made with a relative ``input.path`` re-runs from another folder: run.py starts where
    the original was started, so ``imgs`` is the same folder and the arrays are identical."""
    from PIL import Image

    origin = tmp_path / "origin"
    for i, color in enumerate([(200, 10, 10), (10, 200, 10)]):
        (origin / "imgs").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), color).save(origin / "imgs" / f"{i}.png")
    run = tmp_path / "run"
    args = ["model=seed_net", "input=image", "input.path=imgs", "input.resize=32", "input.crop=32"]
    proc = run_cli([*args, "stages=[features]", f"hydra.run.dir={run}"], cwd=origin)
    assert proc.returncode == 0, proc.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no imgs/ here
    assert rep.main([str(run), "--out", str(tmp_path / "again"), "--check"]) == 0
    assert "equal:" in capsys.readouterr().out
    record = json.loads((tmp_path / "again" / "reproduce.json").read_text())
    assert record["cwd"] == str(origin) and record["equal"] is True
    assert _npy(run) and _npy(run) == _npy(tmp_path / "again")
