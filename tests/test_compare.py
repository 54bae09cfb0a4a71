"""``pipeline/compare.py`` and ``reproduce.py`` on synthetic run folders with planted differences."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from vizpipe.pipeline import compare as cmp
from vizpipe.pipeline import config_store  # noqa: F401 - imported here, not inside a timed test
from vizpipe.pipeline import reproduce as rep
from vizpipe.pipeline.errors import ConfigError


def sha(data: bytes) -> str:
    """sha256 hex of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_run(
    run: Path,
    files: dict[str, bytes],
    *,
    statuses: dict[str, str] | None = None,
    config: dict | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """A run folder whose manifest lists ``files`` under stages named by their first folder."""
    run.mkdir(parents=True)
    stages: dict[str, list[dict]] = {}
    report: list[dict] = []
    for rel, data in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
        art = {"path": rel, "bytes": len(data), "sha256": sha(data)}
        (report if rel.startswith("report.") else stages.setdefault(rel.split("/")[0], [])).append(art)
    statuses = statuses or {}
    manifest = {
        "status": "ok",
        "config": {"seed": 0, "cam": {"layer": "a"}} if config is None else config,
        "overrides": overrides or [],
        "setup": {"name": "setup", "status": statuses.get("setup", "ok"), "artifacts": []},
        "stages": [{"name": n, "status": statuses.get(n, "ok"), "artifacts": a} for n, a in stages.items()],
        "report": {"name": "report", "status": statuses.get("report", "ok"), "artifacts": report},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


BASE = {
    "summary/s.txt": b"table",
    "features/a.npy": b"A",
    "features/b.npy": b"B",
    "tensorboard/events.out.tfevents.1.host": b"t=1",
    "report.html": b"<html>1</html>",
}


def test_difference_describe_each_kind() -> None:
    """Each kind of difference has its own sentence; hashes are cut to 12 characters."""
    a, b = "a" * 64, "b" * 64
    assert cmp.Difference("x.npy", "changed", a, b).describe() == f"x.npy: sha256 {'a' * 12} != {'b' * 12}"
    assert cmp.Difference("x.npy", "changed", None, None).describe() == "x.npy: sha256 - != -"
    assert cmp.Difference("x", "only_a", a).describe() == "x: only in A"
    assert cmp.Difference("x", "only_b", None, b).describe() == "x: only in B"
    assert (
        cmp.Difference("x (A)", "hash_on_disk", "file missing").describe()
        == "x (A): the file on disk no longer matches its manifest hash (file missing)"
    )
    assert cmp.Difference("step cam", "status", "ok", "failed").describe() == "step cam: status ok != failed"
    assert cmp.Difference("step cam", "status", None, "ok").describe() == "step cam: status absent != ok"
    assert cmp.Difference("step cam", "status", "ok").describe() == "step cam: status ok != absent"


def test_is_volatile_by_file_name() -> None:
    """TensorBoard events, reports, run.log and the manifest are volatile; by name, not folder."""
    assert cmp.is_volatile("tensorboard/events.out.tfevents.1.h")
    assert cmp.is_volatile("report.html") and cmp.is_volatile("report.md")
    assert cmp.is_volatile("run.log") and cmp.is_volatile("x/manifest.json")
    assert not cmp.is_volatile("report/a.npy") and not cmp.is_volatile("features/a.npy")
    assert not cmp.is_volatile("run.log.txt")


def test_load_manifest_and_records(tmp_path: Path) -> None:
    """A folder without manifest.json is named in the error; records are setup, stages, report."""
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path} is not a run folder: no manifest\.json$"):
        cmp.load_manifest(tmp_path)
    m = {"setup": {"name": "setup"}, "stages": [{"name": "a"}, {"name": "b"}], "report": {"name": "r"}}
    assert [r["name"] for r in cmp.records(m)] == ["setup", "a", "b", "r"]
    assert cmp.records({"stages": [{"name": "a"}]}) == [{"name": "a"}]
    assert cmp.records({}) == []
    arts = {"stages": [{"artifacts": [{"path": "x", "sha256": 1}, {"path": "y", "sha256": "2"}]}]}
    assert cmp.artifacts(arts) == {"x": "1", "y": "2"}


def test_equal_runs(tmp_path: Path) -> None:
    """Same files: equal, counts of identical and volatile artifacts, text for an equal pair."""
    a, b = write_run(tmp_path / "a", BASE), write_run(tmp_path / "b", BASE)
    c = cmp.compare_runs(a, b)
    assert (c.equal, c.identical, c.volatile_same, c.volatile, c.differences) == (True, 3, 2, [], [])
    assert c.first is None and c.config_changes == []
    assert (c.a, c.b) == (str(a), str(b))
    assert (
        cmp.format_comparison(c) == f"A: {a}\nB: {b}\nequal: 3 artifacts identical; "
        "0 of 2 volatile artifacts differ (timestamps; ignored)"
    )


def test_volatile_differences_reported_not_counted(tmp_path: Path) -> None:
    """A differing report/event file is listed as volatile; --strict counts it as a difference."""
    other = {**BASE, "report.html": b"<html>2</html>"}
    a, b = write_run(tmp_path / "a", BASE), write_run(tmp_path / "b", other)
    c = cmp.compare_runs(a, b)
    assert c.equal and [d.path for d in c.volatile] == ["report.html"] and c.volatile_same == 1
    assert c.volatile[0].kind == "changed"
    assert "equal: 3 artifacts identical; 1 of 2 volatile artifacts differ" in cmp.format_comparison(c)
    s = cmp.compare_runs(a, b, strict=True)
    assert not s.equal and [d.path for d in s.differences] == ["report.html"] and s.volatile == []


def test_no_volatile_artifacts_no_volatile_sentence(tmp_path: Path) -> None:
    """Without volatile artifacts, the equal line is just the count."""
    files = {"features/a.npy": b"A"}
    a, b = write_run(tmp_path / "a", files), write_run(tmp_path / "b", files)
    text = cmp.format_comparison(cmp.compare_runs(a, b))
    assert text.splitlines()[-1] == "equal: 1 artifacts identical"


def test_every_kind_of_difference_in_order(tmp_path: Path) -> None:
    """Status, changed, only-in-A/B, in step then artifact order; text lists them with counts."""
    b_files = {k: v for k, v in BASE.items() if k != "features/b.npy"}
    b_files["features/a.npy"] = b"A2"
    b_files["cam/new.npy"] = b"N"
    a = write_run(tmp_path / "a", BASE, statuses={"summary": "failed", "report": "failed"})
    b = write_run(tmp_path / "b", b_files, config={"seed": 1, "cam": {"layer": "a"}, "new": 2})
    c = cmp.compare_runs(a, b)
    got = [(d.path, d.kind, d.a, d.b) for d in c.differences]
    assert got == [
        ("step summary", "status", "failed", "ok"),
        ("step cam", "status", None, "ok"),
        ("features/a.npy", "changed", sha(b"A"), sha(b"A2")),
        ("features/b.npy", "only_a", sha(b"B"), None),
        ("cam/new.npy", "only_b", None, sha(b"N")),
    ]
    assert c.identical == 1 and not c.equal and c.first is c.differences[0]
    assert c.config_changes == ["seed", "new"]
    text = cmp.format_comparison(c)
    assert text.splitlines() == [
        f"A: {a}",
        f"B: {b}",
        "different: first difference: step summary: status failed != ok",
        "5 difference(s), 1 artifacts identical:",
        "  step summary: status failed != ok",
        "  step cam: status absent != ok",
        f"  features/a.npy: sha256 {sha(b'A')[:12]} != {sha(b'A2')[:12]}",
        "  features/b.npy: only in A",
        "  cam/new.npy: only in B",
        "0 of 2 volatile artifacts differ (timestamps; not counted)",
        "config differs in: seed, new",
    ]
    short = cmp.format_comparison(c, limit=2).splitlines()
    assert short[4:7] == [
        "  step summary: status failed != ok",
        "  step cam: status absent != ok",
        "  ... and 3 more (--limit 0 shows all)",
    ]


def test_first_differing_artifact_wording(tmp_path: Path) -> None:
    """A first difference that is an artifact says 'differing artifact'."""
    a = write_run(tmp_path / "a", {"features/a.npy": b"A"})
    b = write_run(tmp_path / "b", {"features/a.npy": b"Z"})
    text = cmp.format_comparison(cmp.compare_runs(a, b))
    assert f"different: first differing artifact: features/a.npy: sha256 {sha(b'A')[:12]}" in text
    assert "volatile" not in text


def test_verify_rehashes_files(tmp_path: Path) -> None:
    """verify: files edited or removed after the manifest are differences (A and B named)."""
    a, b = write_run(tmp_path / "a", BASE), write_run(tmp_path / "b", BASE)
    (a / "features/a.npy").write_bytes(b"edited")
    (b / "summary/s.txt").unlink()
    (b / "report.html").unlink()  # volatile: not re-hashed unless strict
    c = cmp.compare_runs(a, b)
    assert [(d.path, d.kind, d.a) for d in c.differences] == [
        ("features/a.npy (A)", "hash_on_disk", "changed on disk"),
        ("summary/s.txt (B)", "hash_on_disk", "file missing"),
    ]
    assert cmp.compare_runs(a, b, verify=False).equal
    strict = cmp.compare_runs(a, b, strict=True)
    assert ("report.html (B)", "file missing") in [(d.path, d.a) for d in strict.differences]


def test_config_changes_listing_is_cut_at_ten(tmp_path: Path) -> None:
    """More than 10 changed config keys: the first ten, then '...'; nested keys are dotted."""
    cfg_a = {f"k{i}": i for i in range(12)} | {"n": {"x": {"y": 1}}}
    cfg_b = {f"k{i}": -i - 1 for i in range(12)} | {"n": {"x": {"y": 2}}}
    a = write_run(tmp_path / "a", {"f/a": b"1"}, config=cfg_a)
    b = write_run(tmp_path / "b", {"f/a": b"1"}, config=cfg_b)
    c = cmp.compare_runs(a, b)
    assert c.config_changes == [*(f"k{i}" for i in range(12)), "n.x.y"]
    last = cmp.format_comparison(c).splitlines()[-1]
    assert last == "config differs in: " + ", ".join(f"k{i}" for i in range(10)) + " ..."
    assert cmp._flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
    assert cmp._flatten(3) == {"": 3}


def test_main_exit_codes_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0 equal, 1 different, 2 not a run; --json holds 'first'; --limit 0 lists all."""
    a, b = write_run(tmp_path / "a", BASE), write_run(tmp_path / "b", BASE)
    assert cmp.main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("equal: 3 artifacts identical")
    assert cmp.main([str(a), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"vizpipe: error: {tmp_path} is not a run folder: no manifest.json\n"
    (b / "features/a.npy").write_bytes(b"x")
    assert cmp.main([str(a), str(b), "--trust-manifest"]) == 0
    capsys.readouterr()
    assert cmp.main([str(a), str(b)]) == 1
    assert "features/a.npy (B): the file on disk" in capsys.readouterr().out
    assert cmp.main([str(a), str(b), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["equal"] is False and doc["first"]["path"] == "features/a.npy (B)"
    assert doc["identical"] == 3 and doc["volatile_same"] == 2
    assert cmp.main([str(a), str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["first"] is None
    c = write_run(tmp_path / "c", {f"f/{i}": bytes([i]) for i in range(25)})
    d = write_run(tmp_path / "d", {f"f/{i}": bytes([i + 100]) for i in range(25)})
    assert cmp.main([str(c), str(d), "--limit", "0"]) == 1
    out = capsys.readouterr().out
    assert "more (--limit 0" not in out and "  f/24: sha256" in out
    assert cmp.main([str(c), str(d)]) == 1
    assert "  ... and 5 more (--limit 0 shows all)" in capsys.readouterr().out
    assert cmp.main([str(c), str(d), "--limit", "1"]) == 1
    assert "  ... and 24 more (--limit 0 shows all)" in capsys.readouterr().out
    assert cmp.main([str(a), str(b), "--strict"]) == 1
    capsys.readouterr()
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "manifest.json").write_text(json.dumps({"stages": [{"artifacts": [{"p": 1}]}]}))
    assert cmp.main([str(tmp_path / "e"), str(a)]) == 2
    assert capsys.readouterr().err.startswith("vizpipe: error: ")


# --------------------------------------------------------------------------- reproduce


def test_recorded_overrides_sources(tmp_path: Path) -> None:
    """.hydra/overrides.yaml first, else the manifest's 'overrides', else none."""
    run = tmp_path / "r"
    run.mkdir()
    assert rep.recorded_overrides(run) == []
    (run / "manifest.json").write_text(json.dumps({"overrides": ["seed=1", 2]}))
    assert rep.recorded_overrides(run) == ["seed=1", "2"]
    (run / "manifest.json").write_text(json.dumps({}))
    assert rep.recorded_overrides(run) == []
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- model=vgg11\n- seed=3\n")
    assert rep.recorded_overrides(run) == ["model=vgg11", "seed=3"]
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    assert rep.recorded_overrides(run) == []


def test_original_cwd_unreadable(tmp_path: Path) -> None:
    """An unreadable hydra.yaml or one without the key means 'unknown'."""
    run = tmp_path / "r"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text("hydra: [unclosed\n")
    assert rep.original_cwd(run) is None
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  job: {}\n")
    assert rep.original_cwd(run) is None
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path}\n")
    assert rep.original_cwd(run) == tmp_path


def test_merge_overrides_keys() -> None:
    """Keys compare without +/~ prefixes; extra overrides go last in their own order."""
    assert rep._key("+a.b=1") == "a.b" and rep._key("~x") == "x" and rep._key("c=d=e") == "c"
    assert rep.merge_overrides(["~a=1", "b=2", "c=3"], ["c=9", "+a=5"]) == ["b=2", "c=9", "+a=5"]
    assert rep.merge_overrides(["a=1"], []) == ["a=1"]


def test_default_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """outputs/reproduce/<date>/<time>_<parent>_<name>, numbered _2, _3 when taken."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        rep.time, "strftime", lambda fmt: "2025-01-02/03-04-05" if fmt == "%Y-%m-%d/%H-%M-%S" else "?"
    )
    run = tmp_path / "2024-01-31" / "12-00-00"
    run.mkdir(parents=True)
    first = rep.default_out(run)
    assert first == Path("outputs/reproduce/2025-01-02/03-04-05_2024-01-31_12-00-00")
    first.mkdir(parents=True)
    assert rep.default_out(run) == Path("outputs/reproduce/2025-01-02/03-04-05_2024-01-31_12-00-00_2")
    Path(f"{first}_2").mkdir()
    assert rep.default_out(run) == Path("outputs/reproduce/2025-01-02/03-04-05_2024-01-31_12-00-00_3")


def _hydra_run(tmp_path: Path, files: dict[str, bytes] | None = None) -> Path:
    run = write_run(tmp_path / "src" / "run", files or {"features/a.npy": b"A"}, overrides=["seed=0"])
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / ".hydra" / "overrides.yaml").write_text("- model=tiny\n- seed=0\n")
    return run


def test_build_command_exact(tmp_path: Path) -> None:
    """The frozen command line, item by item; the from-conf one; the error texts."""
    run = _hydra_run(tmp_path)
    out = tmp_path / "new"
    hydra_dir = run.resolve() / ".hydra"
    assert rep.build_command(run, out, ["seed=5"]) == [
        *rep.python(),  # sys.executable -P: the folder run.py starts in is not on sys.path
        "-m",
        "vizpipe",
        "--config-path",
        str(hydra_dir),
        "--config-name",
        "config",
        f"hydra.run.dir={out}",
        f"hydra.searchpath=[file://{rep.CONF_DIR}]",
        "hydra/job_logging=vizpipe",
        "seed=5",
    ]
    assert rep.build_command(run, out, ["seed=5"], from_conf=True) == [
        *rep.python(),
        "-m",
        "vizpipe",
        "model=tiny",
        "seed=5",
        f"hydra.run.dir={out}",
    ]
    with pytest.raises(ConfigError) as exc:
        rep.build_command(run, out, ["model=vgg11", "x=1", "+sweep=cam_layers"])
    assert str(exc.value) == (
        "model=vgg11, +sweep=cam_layers picks a config group option, which a frozen config lacks; "
        "use --from-conf to re-compose from conf/, or set values (e.g. model.name=vgg11)"
    )
    with pytest.raises(ConfigError, match=r"^Override 'seed' is not key=value$"):
        rep.build_command(run, out, ["seed"], from_conf=True)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ConfigError) as exc:
        rep.build_command(bare, out, [])
    assert str(exc.value) == (
        f"{bare.resolve()} has no .hydra/config.yaml: it is not a run folder (or not made by Hydra)"
    )
    assert rep.GROUPS == ("model", "device", "input", "experiment", "sweep")
    for g in ("device", "input", "experiment"):
        with pytest.raises(ConfigError, match="picks a config group option"):
            rep.build_command(run, out, [f"{g}=x"])


def fake_subprocess(
    monkeypatch: pytest.MonkeyPatch, *, rc: int = 0, change: bool = False, write: bool = True
):
    """subprocess.run replaced by a copy of the source run into hydra.run.dir; records the call."""
    calls: list[tuple[list[str], Path]] = []

    def run(cmd: list[str], cwd: Path | None = None):
        calls.append((cmd, Path(cwd) if cwd else None))
        dest = Path(next(c for c in cmd if c.startswith("hydra.run.dir=")).split("=", 1)[1])
        if write:
            src = Path(os.environ["VP_SRC"])
            shutil.copytree(src, dest, dirs_exist_ok=True)
            if change:
                (dest / "features/a.npy").write_bytes(b"Z")
                m = json.loads((dest / "manifest.json").read_text())
                m["stages"][0]["artifacts"][0]["sha256"] = sha(b"Z")
                (dest / "manifest.json").write_text(json.dumps(m))
        return SimpleNamespace(returncode=rc)

    monkeypatch.setattr(rep.subprocess, "run", run)
    return calls


def test_reproduce_equal_records_and_compares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An equal re-run: status 0, comparison equal, reproduce.json says where it came from."""
    run = _hydra_run(tmp_path)
    monkeypatch.setenv("VP_SRC", str(run))
    calls = fake_subprocess(monkeypatch)
    rc, dest, comp = rep.reproduce(run, ["seed=0"], out=tmp_path / "new", cwd=tmp_path)
    assert rc == 0 and dest == (tmp_path / "new").resolve() and comp is not None and comp.equal
    assert calls[0][1] == tmp_path and calls[0][0][-1] == "seed=0"
    assert capsys.readouterr().out == f"vizpipe: reproducing with: {shlex.join(calls[0][0])}\n"
    rec = json.loads((dest / "reproduce.json").read_text())
    assert rec == {
        "source": str(run.resolve()),
        "mode": "frozen",
        "extra_overrides": ["seed=0"],
        "command": calls[0][0],
        "cwd": str(tmp_path),
        "exit_status": 0,
        "equal": True,
        "first_difference": None,
    }
    assert (dest / "reproduce.json").read_text().endswith("}\n")


def test_reproduce_different_from_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed re-run records its first difference and from-conf mode; cwd is the original's."""
    run = _hydra_run(tmp_path)
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path / 'src'}\n")
    monkeypatch.setenv("VP_SRC", str(run))
    calls = fake_subprocess(monkeypatch, rc=3, change=True)
    rc, dest, comp = rep.reproduce(str(run), out=str(tmp_path / "new"), from_conf=True)
    assert rc == 3 and comp is not None and not comp.equal
    assert calls[0][1] == tmp_path / "src"
    rec = json.loads((dest / "reproduce.json").read_text())
    assert rec["mode"] == "from-conf" and rec["extra_overrides"] == [] and rec["exit_status"] == 3
    assert rec["equal"] is False and rec["first_difference"].startswith("features/a.npy: sha256 ")


def test_reproduce_without_new_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No manifest in the new folder: no comparison, equal None; no folder: no reproduce.json."""
    run = _hydra_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    fake_subprocess(monkeypatch, rc=1, write=False)
    rc, dest, comp = rep.reproduce(run, out=tmp_path / "none")
    assert (rc, comp) == (1, None) and not dest.exists()
    (tmp_path / "empty").mkdir()
    rc, dest, comp = rep.reproduce(run, out=tmp_path / "empty")
    rec = json.loads((dest / "reproduce.json").read_text())
    assert rec["equal"] is None and rec["first_difference"] is None and rec["cwd"] == str(tmp_path)
    with pytest.raises(ConfigError, match=rf"^Run folder {tmp_path / 'nope'} does not exist$"):
        rep.reproduce(tmp_path / "nope")
    with pytest.raises(ConfigError) as exc:
        rep.reproduce(run, out=tmp_path / "empty")
    assert str(exc.value) == (
        f"Output folder {(tmp_path / 'empty').resolve()} already exists and is not empty; "
        "pick another with --out"
    )


def test_reproduce_main_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main: the run's status; --check 1 when different or not compared; 2 on a config error."""
    run = _hydra_run(tmp_path)
    monkeypatch.setenv("VP_SRC", str(run))
    fake_subprocess(monkeypatch)
    assert rep.main([str(run), "--out", str(tmp_path / "n1"), "--check"]) == 0
    assert "equal: 1 artifacts identical" in capsys.readouterr().out
    fake_subprocess(monkeypatch, change=True)
    assert rep.main([str(run), "--out", str(tmp_path / "n2")]) == 0
    assert rep.main([str(run), "--out", str(tmp_path / "n3"), "--check"]) == 1
    assert "different: first differing artifact" in capsys.readouterr().out
    fake_subprocess(monkeypatch, rc=4)
    assert rep.main([str(run), "--out", str(tmp_path / "n4"), "--check"]) == 4
    fake_subprocess(monkeypatch, rc=1)
    assert rep.main([str(run), "--out", str(tmp_path / "n4b")]) == 1
    fake_subprocess(monkeypatch, write=False)
    assert rep.main([str(run), "--out", str(tmp_path / "n5")]) == 0
    assert rep.main([str(run), "--out", str(tmp_path / "n6"), "--check"]) == 1
    calls = fake_subprocess(monkeypatch)
    assert rep.main([str(run), "seed=2", "--from-conf", "--out", str(tmp_path / "n7")]) == 0
    cmd = calls[0][0]
    assert cmd[cmd.index("vizpipe") + 1 :][:2] == ["model=tiny", "seed=2"]
    capsys.readouterr()
    assert rep.main([str(run), "model=x", "--out", str(tmp_path / "n8")]) == 2
    assert capsys.readouterr().err.startswith("vizpipe: error: model=x picks a config group option")


def _help(main, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The --help text of a command's ``main`` with whitespace collapsed."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_compare_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The compare command's usage line and every option's help."""
    text = _help(cmp.main, monkeypatch, capsys)
    assert text.startswith(
        "usage: python -m vizpipe.compare [-h] [--strict] [--trust-manifest] [--json] "
        "[--limit LIMIT] run_a run_b "
        "Compare two run folders by their manifests: ``python -m vizpipe.compare <run_a> <run_b>``."
    )
    for line in (
        "--strict volatile artifacts (TensorBoard, reports) must match too",
        "--trust-manifest compare the manifests' hashes only (fast); by default every file on disk "
        "is re-hashed too, so a file edited after its run never compares equal",
        "--json print the comparison as JSON",
        "--limit LIMIT differences listed (0 = all)",
    ):
        assert line in text


def test_reproduce_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The reproduce command's usage line and every argument's help."""
    text = _help(rep.main, monkeypatch, capsys)
    assert text.startswith(
        "usage: python -m vizpipe.reproduce [-h] [--out OUT] [--from-conf] [--check] [--trust-config] "
        "run [overrides ...] "
        "Re-run a run folder into a new folder, then compare it with the original."
    )
    for line in (
        "run the run folder to re-run",
        "overrides extra key=value overrides (replace recorded ones)",
        "--out OUT new run folder (default outputs/reproduce/<date>/<time>_<name>)",
        "--from-conf re-compose today's conf/ with the recorded overrides",
        "--check exit 1 when the new run's artifacts differ",
        "--trust-config run the folder's config even where it names code outside vizpipe's own",
    ):
        assert line in text


def test_compare_json_is_indented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints indented JSON (two spaces), the paths first."""
    a = write_run(tmp_path / "a", {"f/a": b"1"})
    assert cmp.main([str(a), str(a), "--json"]) == 0
    assert capsys.readouterr().out.startswith(f'{{\n  "a": "{a}",\n  "b": "{a}",\n  "equal": true,')


def test_exactly_ten_config_changes_and_broken_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten changed keys are all listed without '...'; an unparsable manifest exits 2."""
    a = write_run(tmp_path / "a", {"f/a": b"1"}, config={f"k{i}": i for i in range(10)})
    b = write_run(tmp_path / "b", {"f/a": b"1"}, config={f"k{i}": -1 for i in range(10)})
    last = cmp.format_comparison(cmp.compare_runs(a, b)).splitlines()[-1]
    assert last == "config differs in: " + ", ".join(f"k{i}" for i in range(10))
    (b / "manifest.json").write_text("{")
    assert cmp.main([str(a), str(b)]) == 2
    assert capsys.readouterr().err == (
        f"vizpipe: error: {b / 'manifest.json'} is not a vizpipe manifest (not valid JSON: Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1); truncated?)\n"
    )


def test_verify_checks_files_listed_after_a_volatile_one(tmp_path: Path) -> None:
    """Skipping a volatile file while re-hashing does not skip the files listed after it."""
    files = {"tensorboard/events.out.tfevents.1.h": b"t", "z/late.npy": b"L"}
    a, b = write_run(tmp_path / "a", files), write_run(tmp_path / "b", files)
    (a / "z/late.npy").write_bytes(b"edited")
    c = cmp.compare_runs(a, b)
    assert [(d.path, d.a) for d in c.differences] == [("z/late.npy (A)", "changed on disk")]
    assert (c.identical, c.volatile_same) == (1, 1)
