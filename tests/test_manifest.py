"""The run's record: atomic writes, hashes, which step wrote which file, the run's status."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import pytest
from vizpipe.pipeline import manifest as mf
from vizpipe.pipeline.files import finite, sha256_file, write_atomic, write_json


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    assert write_atomic(path, "première\n") == path
    assert path.read_bytes() == "première\n".encode()
    write_atomic(path, b"\x00\x01 bytes")
    assert path.read_bytes() == b"\x00\x01 bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")

    def no_rename(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # e.g. Ctrl-C between the write and the rename

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_is_indented_ends_with_a_newline_and_refuses_nan(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    write_json(path, {"a": [1, 2], "b": "x"})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "x"\n}\n'
    with pytest.raises(ValueError):
        write_json(path, {"a": math.nan})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": "x"}  # the old file kept


def test_sha256_file_is_the_hash_of_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 5
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk=7) == hashlib.sha256(data).hexdigest()  # chunked reads
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_finite_maps_nan_and_inf_to_none() -> None:
    assert finite(None) is None and finite(math.nan) is None
    assert finite(math.inf) is None and finite(-math.inf) is None
    assert finite(2) == 2.0 and isinstance(finite(2), float) and finite(-0.5) == -0.5


def _files(run: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)


def test_snapshot_skips_the_manifest_the_log_hydra_and_hidden_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _files(
        run,
        {
            "manifest.json": "{}",
            "run.log": "log",
            ".hydra/config.yaml": "seed: 0",
            "cam/.x.png.123.tmp": "half",
            "cam/a.npy": "12345",
            "sub/run.log": "a stage's own file of that name",
        },
    )
    (run / "empty_folder").mkdir()
    m = mf.Manifest(run, {}, ["cam"])
    snap = m.snapshot()
    assert sorted(snap) == ["cam/a.npy", "sub/run.log"]
    st = (run / "cam/a.npy").stat()
    assert snap["cam/a.npy"] == (5, st.st_mtime_ns)


def test_collect_records_what_a_step_wrote_or_changed_and_nothing_of_another_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _files(run, {"before.txt": "untouched", "shared/edited.txt": "v1"})
    m = mf.Manifest(run, {}, ["a", "b"], titles={"a": "Stage A"})
    assert (m.stage("a").title, m.stage("b").title, m.stage("setup").title) == ("Stage A", "", "")
    before = m.snapshot()
    _files(run, {"a/z.txt": "zz", "a/y.txt": "y", "shared/edited.txt": "version 2"})
    m.collect(m.stage("a"), before)
    arts = m.stage("a").artifacts
    assert [a.path for a in arts] == ["a/y.txt", "a/z.txt", "shared/edited.txt"]  # sorted, changed too
    for a in arts:
        data = (run / a.path).read_bytes()
        assert (a.bytes, a.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    before = m.snapshot()
    _files(run, {"b/new.txt": "b", "a/z.txt": "rewritten by b"})
    m.collect(m.stage("b"), before)
    assert [a.path for a in m.stage("b").artifacts] == ["b/new.txt"]  # a/z.txt stays a's
    m.collect(m.stage("a"), {})  # a step collected again keeps its own files
    assert [a.path for a in m.stage("a").artifacts] == [
        "a/y.txt",
        "a/z.txt",
        "before.txt",
        "shared/edited.txt",
    ]
    with pytest.raises(KeyError, match="nope"):
        m.stage("nope")


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({}, "ok"),
        ({"a": "ok", "b": "skipped", "report": "ok"}, "ok"),
        ({"report": "failed"}, "ok"),  # a report that failed leaves the numbers intact
        ({"a": "running"}, "running"),
        ({"report": "running"}, "running"),
        ({"a": "failed", "b": "running"}, "failed"),
        ({"setup": "failed"}, "failed"),
        ({"a": "failed", "b": "interrupted"}, "interrupted"),
        ({"report": "interrupted", "setup": "failed"}, "interrupted"),
    ],
)
def test_status_from_the_step_records(tmp_path: Path, statuses: dict[str, str], expected: str) -> None:
    m = mf.Manifest(tmp_path, {}, ["a", "b"])
    for name, status in statuses.items():
        m.stage(name).status = status
    assert m.status == expected


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    m = mf.Manifest(tmp_path, {"seed": 3, "model": "tiny"}, ["a"], titles={"a": "A"})
    m.stage("a").status = "ok"
    m.stage("a").artifacts.append(mf.Artifact("a/x.txt", 2, "f" * 64))
    assert m.write() == tmp_path / "manifest.json"
    doc = mf.load(tmp_path)
    assert doc == json.loads((tmp_path / "manifest.json").read_text())
    assert doc["seed"] == 3 and doc["model"] == "tiny" and doc["status"] == "ok"
    assert 0 <= doc["seconds"] < 60
    assert doc["setup"] == {
        "name": "setup",
        "status": "pending",
        "seconds": None,
        "error": None,
        "error_type": None,
        "artifacts": [],
        "title": "",
        "result": None,
    }
    assert doc["stages"][0]["title"] == "A"
    assert doc["stages"][0]["artifacts"] == [{"path": "a/x.txt", "bytes": 2, "sha256": "f" * 64}]
    assert doc["report"]["name"] == "report"
    assert (tmp_path / "manifest.json").read_text().startswith('{\n  "seed": 3,')


def test_provenance_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    v = mf.versions()
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    for pkg in mf.PACKAGES:
        assert pkg in v
    assert v["torch"] == metadata.version("torch") and v["grad-cam"] == metadata.version("grad-cam")
    monkeypatch.setattr(sys, "argv", ["run.py", "model=vgg11"])
    assert mf.command_line() == [Path(sys.executable).name, "run.py", "model=vgg11"]
    assert mf.git_commit(tmp_path) is None  # not a checkout
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        here = mf.git_commit(root)
        assert here is not None and len(here["commit"]) == 40 and isinstance(here["dirty"], bool)


def test_env_keys_follow_references_to_the_environment() -> None:
    """A value read by ``oc.env`` (also nested in another resolver), and every key that refers to
    one (absolute, relative, ``oc.select``, a parent node), is from the environment; ``hydra:``
    and plain values are not."""
    from vizpipe.pipeline.manifest import env_keys

    raw = {
        "notes": "${oc.env:TOKEN}",
        "a": {"b": "x ${notes} y", "c": "${..notes}", "d": "${.b}", "e": "plain", "f": "${.e}"},
        "g": "${oc.select:a.d,z}",
        "h": "${hydra:runtime.cwd}",
        "i": ["${oc.decode:${oc.env:N}}", "${now:%H}"],
        "j": "${a}",
    }
    assert env_keys(raw) == [("a", "b"), ("a", "c"), ("a", "d"), ("g",), ("i", 0), ("j",), ("notes",)]


def test_config_record_hides_environment_values_and_scrub_their_copies(monkeypatch) -> None:
    from omegaconf import OmegaConf
    from vizpipe.pipeline.manifest import Manifest, config_record

    monkeypatch.setenv("VIZPIPE_TEST_TOKEN", "tok-123456")
    monkeypatch.setenv("VIZPIPE_TEST_SHORT", "ab")
    cfg = OmegaConf.create(
        {"notes": "${oc.env:VIZPIPE_TEST_TOKEN}", "n": "${oc.env:VIZPIPE_TEST_SHORT}", "p": "/d/${notes}"}
    )
    doc, hidden = config_record(cfg)
    assert doc == {
        "notes": "<hidden: ${oc.env:VIZPIPE_TEST_TOKEN}>",
        "n": "<hidden: ${oc.env:VIZPIPE_TEST_SHORT}>",
        "p": "<hidden: /d/${notes}>",
    }
    assert hidden == ["/d/tok-123456", "tok-123456"]  # "ab" is too short to hunt for elsewhere
    assert config_record(cfg, show_env=True) == ({"notes": "tok-123456", "n": "ab", "p": "/d/tok-123456"}, [])
    m = Manifest(Path("/x"), {"config": doc, "warnings": ["read /d/tok-123456/a.jpg"]}, [], hidden=hidden)
    out = m.to_dict()
    assert out["warnings"] == ["read <hidden>/a.jpg"] and out["config"] == doc
