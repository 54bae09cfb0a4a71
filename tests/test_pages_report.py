"""Run reports: ``pipeline/report`` collect/context/sections/templating/common on synthetic run folders.

The template contexts are plain data, so each field is compared exactly with what the run folder holds.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.report import __main__ as report_main
from vizpipe.pipeline.report import (
    collect_run,
    is_run_dir,
    is_sweep_dir,
    write_run_report,
)
from vizpipe.pipeline.report import common as C
from vizpipe.pipeline.report import run as R
from vizpipe.pipeline.report import sections as S
from vizpipe.pipeline.report import templating as T
from vizpipe.pipeline.schema import ReportConfig
from vizpipe.pipeline.stage import Picture, Scalar, StageResult, Table, Text


def png(path: Path, color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (6, 4)) -> bytes:
    """Write a solid RGB PNG; return its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path.read_bytes()


def rec(name: str, status: str = "ok", result: StageResult | None = None, **kw: object) -> dict:
    """A manifest step record."""
    out: dict = {"name": name, "status": status, "seconds": 1.5, "artifacts": [], **kw}
    if result is not None:
        out["result"] = result.to_dict()
    return out


def manifest(run: Path, stages: list[dict], **extra: object) -> Path:
    """Write ``run/manifest.json`` with setup, ``stages`` and a report record."""
    run.mkdir(parents=True, exist_ok=True)
    doc = {
        "status": "ok",
        "model": "tiny",
        "device": "cpu",
        "seed": 7,
        "created": "2025-01-01T00:00:00",
        "seconds": 3.25,
        "vizpipe": "1.2.3",
        "setup": rec("setup"),
        "stages": stages,
        **extra,
    }
    (run / "manifest.json").write_text(json.dumps(doc))
    return run


def stage_result(run: Path) -> StageResult:
    """A result with pictures in two groups, tables, texts, scalars and a warning."""
    for rel in ("cam/a.png", "cam/b.png", "cam/g1/c.png", "cam/g2/d.png"):
        png(run / rel)
    return StageResult(
        "cam",
        summary="2 layers",
        params={"layer": "a", "n": "2"},
        pictures=[
            Picture("cam/g1/c.png", "C", group="g1"),
            Picture("cam/a.png", "A", badge="invalid"),
            Picture("cam/b.png", "", wide=True),
            Picture("cam/g2/d.png", "D", group="g2"),
        ],
        tables=[
            Table(
                "T",
                ["name", "file", "v"],
                [["x", "cam/a.png", 1.23456], ["y", "", None]],
                links=[1],
                code=[0],
            ),
            Table("G", ["k"], [[True]], group="g2", kv=True, caption="cap"),
        ],
        texts=[Text("log", "body", open=True), Text("g", "gb", group="g1", pre=False)],
        scalars=[
            Scalar("acc", 0.5, key=True, better="higher", step=0),
            Scalar("acc", 0.75, key=True, better="higher", step=2),
            Scalar("loss", 2.0, key=True, better="lower"),
            Scalar("plain", 1.0, key=True),
            Scalar("hidden", 9.0),
        ],
        warnings=["careful"],
    )


# --------------------------------------------------------------------------- common


def test_fmt_num() -> None:
    """None dash, bools lower case, ints with separators, whole floats as ints, else 4 digits."""
    assert C.fmt_num(None) == "–"
    assert C.fmt_num(True) == "true" and C.fmt_num(False) == "false"
    assert C.fmt_num(1234567) == "1,234,567"
    assert C.fmt_num(2.0) == "2" and C.fmt_num(-3000.0) == "-3,000"
    assert C.fmt_num(1e15) == "1e+15" and C.fmt_num(999999999999999.0) == "999,999,999,999,999"
    assert C.fmt_num(3.14159265) == "3.142" and C.fmt_num(3.14159265, 2) == "3.1"
    assert C.fmt_num(0.000123456) == "0.0001235"
    assert C.fmt_num("abc") == "abc" and C.fmt_num(float("nan")) == "nan"


def test_small_formatters() -> None:
    """Seconds, megabytes, shapes, badge classes and URLs."""
    assert C.fmt_seconds(None) == "–" and C.fmt_seconds(1.234) == "1.23\u00a0s"
    assert C.fmt_mb(None) == "–" and C.fmt_mb(2_345_678) == "2.35 MB"
    assert C.fmt_shape([1, 3, 8]) == "1×3×8" and C.fmt_shape((2,)) == "2"
    assert C.fmt_shape(None) == "–" and C.fmt_shape("x") == "x"
    assert C.badge_class("Failed!") == "failed" and C.badge_class(None) == "none"
    assert C.url("a b/c#d=e,f+g@h?.png") == "a%20b/c#d=e,f+g@h%3F.png"
    assert C.url("https://x.org/a b") == "https://x.org/a b" and C.url("http://x") == "http://x"
    assert C.url("#anchor x") == "#anchor x" and C.url("xhttp:/a") == "xhttp%3A/a"
    assert C.record_error({"error": "boom", "error_type": "E"}) == "boom"
    assert C.record_error({"error_type": "E"}) == "E" and C.record_error({}) == ""


def test_read_helpers(tmp_path: Path) -> None:
    """read_json: missing None, broken None + a problem naming folder/file; read_yaml/read_text."""
    problems: list[str] = []
    assert C.read_json(tmp_path / "no.json", problems) is None and problems == []
    (tmp_path / "bad.json").write_text("{")
    assert C.read_json(tmp_path / "bad.json", problems) is None
    assert len(problems) == 1 and problems[0].startswith(f"Could not read {tmp_path.name}/bad.json: ")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert C.read_json(tmp_path / "ok.json", problems) == {"a": 1}
    assert C.read_text(tmp_path / "nope") is None
    assert C.read_yaml(tmp_path / "nope.yaml") is None
    (tmp_path / "y.yaml").write_text("- a\n- 1\n")
    assert C.read_yaml(tmp_path / "y.yaml") == ["a", 1]
    (tmp_path / "b.yaml").write_text("a: [\n")
    assert C.read_yaml(tmp_path / "b.yaml") is None


def test_inside_and_embed(tmp_path: Path) -> None:
    """Pictures are embedded as exact data URIs; outside, missing and folders are 'missing'."""
    raw = png(tmp_path / "run" / "p.png")
    (tmp_path / "run" / "x.svg").write_text("<svg/>")
    (tmp_path / "out.png").write_bytes(raw)
    base = tmp_path / "run"
    assert C.inside(base, "p.png") == (base / "p.png").resolve()
    assert C.inside(base, "../out.png") is None and C.inside(base, ".") is None
    v = C.embed(base, C.PictureView("p.png"))
    assert v.src == "data:image/png;base64," + base64.b64encode(raw).decode() and v.problem is None
    assert C.embed(base, C.PictureView("x.svg")).src == "data:image/svg+xml;base64," + base64.b64encode(
        b"<svg/>"
    ).decode("ascii")
    m = C.embed(base, C.PictureView("../out.png"))
    assert m.src is None and m.problem == "missing picture: ../out.png"
    (base / "d.xyz").write_bytes(b"zz")
    assert C.embed(base, C.PictureView("d.xyz")).src == "data:application/octet-stream;base64,eno="


def test_thumbnails_downscale_and_cache(tmp_path: Path) -> None:
    """thumb_px: a large picture becomes a PNG at most px per edge, kept in the cache folder."""
    base = tmp_path / "run"
    png(base / "big.png", size=(40, 20))
    png(base / "small.png", size=(8, 4))
    cache = tmp_path / "thumbs"
    v = C.embed(base, C.PictureView("big.png"), thumb_px=10, cache=cache)
    data = base64.b64decode(v.src.split(",", 1)[1])
    assert v.src.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (10, 5)
    kept = list(cache.iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".png" and kept[0].read_bytes() == data
    st = (base / "big.png").stat()
    assert kept[0].name == C._disk_key(str((base / "big.png").resolve()), st.st_mtime_ns, st.st_size, 10)
    small = C.embed(base, C.PictureView("small.png"), thumb_px=10, cache=cache)
    assert base64.b64decode(small.src.split(",", 1)[1]) == (base / "small.png").read_bytes()
    assert len(list(cache.iterdir())) == 1
    (base / "broken.png").write_bytes(b"not a png")
    bad = C.embed(base, C.PictureView("broken.png"), thumb_px=10)
    assert bad.src is None and bad.problem.startswith(
        "unreadable picture broken.png: UnidentifiedImageError: "
    )
    assert C.THUMB_PX == 256 and C.THUMBS == ".thumbs"


# --------------------------------------------------------------------------- templating


def test_markdown_filters() -> None:
    """Escaping of HTML and Markdown syntax; table cells; code spans and fences survive backticks."""
    assert T.md_text("<b>*x*_[y]#`\\") == "&lt;b&gt;\\*x\\*\\_\\[y\\]\\#\\`\\\\"
    assert T.md_text("a \"q\" 's'") == "a \"q\" 's'"
    assert T.md_text("a|b\nc") == "a|b\nc" and T.md_text("a|b\nc", table=True) == "a\\|b<br>c"
    assert T.md_cell("a|b") == "a\\|b"
    assert T.md_code("x") == "`x`" and T.md_code("a``b") == "```a``b```"
    assert T.md_code("`a") == "`` `a ``" and T.md_code("a`") == "`` a` ``"
    assert T.md_code("a|b\nc", table=True) == "`a\\|b c`" and T.md_code("a|b") == "`a|b`"
    assert T.md_badge("ok") == "ok" and T.md_badge("failed") == "**FAILED**"
    assert T.md_badge("interrupted") == "**INTERRUPTED**" and T.md_badge("invalid") == "**INVALID**"
    assert T.md_badge("skipped") == "**skipped**" and T.md_badge("a|b") == "**a\\|b**"
    assert T.fence("x\n") == "```text\nx\n```" and T.fence("a ```` b") == "`````text\na ```` b\n`````"
    assert T.fence("a `` b") == "```text\na `` b\n```"


def test_environment_filters_and_escaping() -> None:
    """Strings are autoescaped; the filters are registered; the CSS and version globals exist."""
    env = T.environment()
    assert env.from_string("{{ x }}").render(x="<a>") == "&lt;a&gt;"
    assert (
        env.from_string("{{ x|num }}|{{ y|seconds }}|{{ z|mb }}|{{ s|shape }}").render(
            x=1000, y=1, z=1e6, s=[1, 2]
        )
        == "1,000|1.00\u00a0s|1.00 MB|1×2"
    )
    assert env.from_string("{{ x|badge_class }} {{ p|url }}").render(x="OK!", p="a b") == "ok a%20b"
    assert "body" in str(env.globals["css"]) and isinstance(env.globals["version"], str)


# --------------------------------------------------------------------------- sections


def test_status_alerts() -> None:
    """failed/skipped/interrupted alerts with their exact text; nothing for ok or unknown."""
    assert S.status_alerts({"status": "failed", "error": "boom"}) == [
        C.Alert("error", "This stage failed: ", "boom")
    ]
    assert S.status_alerts({"status": "skipped"}) == [
        C.Alert("info", "", "Skipped: an earlier step failed (see the manifest below).")
    ]
    assert S.status_alerts({"status": "interrupted"}) == [
        C.Alert("error", "", "Interrupted (Ctrl-C); files written so far are kept.")
    ]
    assert S.status_alerts({"status": "ok"}) == [] and S.status_alerts({}) == []


def test_table_view_cells() -> None:
    """Numbers formatted, link columns linked (empty values not), code columns marked."""
    t = Table("T", ["a", 2], [["x y", 1.5, None], ["", 1000, "q"]], caption="c", links=[0], code=[1], kv=True)
    v = S.table_view(t)
    assert (v.title, v.caption, v.columns, v.kv) == ("T", "c", ["a", "2"], True)
    assert v.rows == [
        [C.Cell("x y", href="x%20y"), C.Cell("1.5", code=True), C.Cell("–")],
        [C.Cell(""), C.Cell("1,000", code=True), C.Cell("q")],
    ]


def test_stage_view_exact(tmp_path: Path) -> None:
    """Header fields, alerts, key numbers (last step), groups in first-appearance order, galleries."""
    run = tmp_path / "run"
    res = stage_result(run)
    r = rec("cam", "ok", artifacts=[{"path": "cam/a.png"}, {"path": "cam/b.png"}], title="Grad-CAM")
    v = S.stage_view(r, res, run, 0, embed_pictures=False)
    assert (v.id, v.name, v.title, v.status, v.seconds, v.files, v.folder) == (
        "cam",
        "cam",
        "Grad-CAM",
        "ok",
        1.5,
        2,
        "cam/",
    )
    assert v.alerts == [C.Alert("warning", "Warning: ", "careful")]
    assert v.key_numbers == [
        S.KeyNumber("acc", "0.75", "↑"),
        S.KeyNumber("loss", "2", "↓"),
        S.KeyNumber("plain", "1", ""),
    ]
    assert v.summary == "2 layers" and v.params == ["layer=a", "n=2"]
    assert [t.title for t in v.body.tables] == ["T"] and [x.title for x in v.body.texts] == ["log"]
    assert [(x.pre, x.open) for x in v.body.texts] == [(True, True)]
    assert [g.name for g in v.groups] == ["g2", "g1"]
    assert [t.title for t in v.groups[0].tables] == ["G"] and v.groups[1].texts[0].pre is False
    assert [[(g.wide, [p.path for p in g.pictures]) for g in b.galleries] for b in (v.body, *v.groups)] == [
        [(False, ["cam/a.png"]), (True, ["cam/b.png"])],
        [(False, ["cam/g2/d.png"])],
        [(False, ["cam/g1/c.png"])],
    ]
    assert [p.path for p in v.pictures] == ["cam/a.png", "cam/b.png", "cam/g2/d.png", "cam/g1/c.png"]
    a = v.pictures[0]
    assert (a.caption, a.alt, a.badge, a.wide, a.src) == ("A", "A", "invalid", False, None)
    assert v.pictures[1].alt == "cam/b.png" and v.pictures[1].wide is True
    assert v.more is None and v.fragment is None


def test_stage_view_picture_cap_and_embedding(tmp_path: Path) -> None:
    """max_images counts in display order; the note counts the hidden ones and names their folders."""
    run = tmp_path / "run"
    res = stage_result(run)
    v = S.stage_view(rec("cam"), res, run, 2, embed_pictures=True)
    assert [p.path for p in v.pictures] == ["cam/a.png", "cam/b.png"]
    assert all(p.src and p.src.startswith("data:image/png;base64,") for p in v.pictures)
    assert v.groups == []  # groups whose every picture is past the limit: left out, tables and texts too
    assert v.more == C.Alert(
        "info",
        "",
        "2 more pictures in 2 more groups not shown (report.max_images=2); they are in ",
        "cam/g2/, cam/g1/",
    )
    v3 = S.stage_view(rec("cam"), res, run, 4, embed_pictures=False)
    assert v3.more is None and len(v3.pictures) == 4
    v1 = S.stage_view(rec("cam"), res, run, 3, embed_pictures=False)
    assert [g.name for g in v1.groups] == ["g2"]
    assert v1.more.text.startswith("1 more pictures in 1 more groups not shown (report.max_images=3)")
    assert v1.more.code == "cam/g1/"


def test_stage_view_names_many_folders_by_their_parent(tmp_path: Path) -> None:
    """Hidden pictures in more than four folders (a CAM run of many images): their common folder."""
    assert S._folders([f"cam/img{i}/a.png" for i in range(5)]) == "cam/ (5 folders)"
    assert S._folders(["cam/a/x.png", "cam/b/y.png"]) == "cam/a/, cam/b/"


def test_stage_view_without_result_and_with_problem(tmp_path: Path) -> None:
    """No result: only the header and the alerts (failed + the problem)."""
    v = S.stage_view({"name": "x", "status": "failed", "error_type": "E"}, None, tmp_path, 0, True, "bad doc")
    assert (v.title, v.status, v.seconds, v.files) == ("x", "failed", None, 0)
    assert v.alerts == [
        C.Alert("error", "This stage failed: ", "E"),
        C.Alert("error", "Could not read this stage's result: ", "bad doc"),
    ]
    assert v.key_numbers == [] and v.summary == "" and v.pictures == []
    assert S.stage_view({"name": "y"}, None, tmp_path, 0, True).status == "unknown"


def test_render_fragment_ok_and_broken(tmp_path: Path) -> None:
    """A fragment renders with result/record/run/section; a broken one leaves an alert naming it."""
    frag = tmp_path / "frag.html.j2"
    frag.write_text("{{ result.stage }}|{{ record.name }}|{{ run }}|{{ section.title }}|{{ '<' }}")
    view = S.StageView("s", "s", "Title", "ok", None, 0, "s/")
    S.render_fragment(frag, view, StageResult("st"), {"name": "rn"}, "R")
    assert str(view.fragment) == "st|rn|R|Title|&lt;" and view.alerts == []
    frag.write_text("{{ nothing.here }}")
    view2 = S.StageView("s", "s", "T", "ok", None, 0, "s/")
    S.render_fragment(frag, view2, StageResult("st"), {}, None)
    assert view2.fragment is None
    assert view2.alerts[0].level == "warning"
    assert view2.alerts[0].strong == "The stage's report template failed; generic view. "
    assert view2.alerts[0].text.startswith("frag.html.j2: UndefinedError: ")


def test_fragment_paths_point_beside_the_stage_modules() -> None:
    """Every discovered stage template is a file beside its class's module."""
    paths = S.fragment_paths()
    for name, path in paths.items():
        assert path.is_file(), name


# --------------------------------------------------------------------------- collect and context


def test_collect_run_with_manifest(tmp_path: Path) -> None:
    """Manifest records in order (pending setup/report filled in), results read, overrides and config."""
    run = tmp_path / "run"
    res = stage_result(run)
    manifest(run, [rec("cam", result=res), rec("bad", result=None)], overrides=["seed=1"], config={"seed": 1})
    doc = json.loads((run / "manifest.json").read_text())
    del doc["setup"]
    (run / "manifest.json").write_text(json.dumps(doc))
    d = collect_run(run)
    assert d.run_dir == run and d.overrides == ["seed=1"] and d.config == {"seed": 1}
    assert [r["name"] for r in d.records] == ["setup", "cam", "bad", "report"]
    assert d.records[0] == {"name": "setup", "status": "pending"}
    assert d.records[-1] == {"name": "report", "status": "pending"}
    assert d.stages[0].result == StageResult.from_dict(res.to_dict()) and d.stages[1].result is None
    assert d.problems == [] and d.config_yaml() == "seed: 1"
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- a=1\n- 2\n")
    (run / ".hydra" / "config.yaml").write_text("seed: 5\n")
    d2 = collect_run(run)
    assert d2.overrides == ["a=1", "2"] and d2.config == {"seed": 1}


def test_collect_run_unreadable_result_and_no_manifest(tmp_path: Path) -> None:
    """A broken result is a problem naming the stage; no manifest: folders on disk, hydra files."""
    run = tmp_path / "run"
    manifest(run, [{"name": "cam", "status": "ok", "result": {"stage": "cam", "bogus": 1}}])
    d = collect_run(run)
    assert d.stages[0].result is None and d.stages[0].problem.startswith(
        "ValueError: StageResult: unknown key"
    )
    assert d.problems == [f"Could not read the result of stage cam: {d.stages[0].problem}"]
    with pytest.raises(FileNotFoundError, match=rf"^Run folder {tmp_path / 'x'} does not exist$"):
        collect_run(tmp_path / "x")
    bare = tmp_path / "bare"
    png(bare / "b" / "z.png")
    png(bare / "a" / "sub" / "y.PNG")
    (bare / "a" / "n.npy").write_bytes(b"x")
    (bare / ".hidden").mkdir()
    (bare / "run.log").write_text("log")
    (bare / ".hydra").mkdir()
    (bare / ".hydra" / "overrides.yaml").write_text("- m=1\n")
    (bare / ".hydra" / "config.yaml").write_text("seed: 2\n")
    d = collect_run(bare)
    assert d.manifest is None and d.overrides == ["m=1"] and d.config == {"seed": 2}
    assert d.problems == ["manifest.json is missing: this report shows only the files found on disk"]
    assert [s.record["name"] for s in d.stages] == ["a", "b"]
    a = d.stages[0]
    assert a.record == {
        "name": "a",
        "status": "unknown",
        "artifacts": [{"path": "a/n.npy"}, {"path": "a/sub/y.PNG"}],
    }
    assert a.result.summary == "No manifest: the pictures found in this folder."
    assert a.result.stage == "a" and a.result.pictures == [Picture("a/sub/y.PNG", caption="a/sub/y.PNG")]
    assert d.records == [s.record for s in d.stages]


def test_collect_run_manifest_not_an_object(tmp_path: Path) -> None:
    """A JSON list as manifest: two problems; a broken file: the read problem first."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("[1]")
    d = collect_run(run)
    assert d.problems == [
        "manifest.json is not a JSON object",
        "manifest.json is missing: this report shows only the files found on disk",
    ]
    assert d.config is None and d.overrides == []
    (run / "manifest.json").write_text("{")
    assert collect_run(run).problems[0].startswith("Could not read run/manifest.json: ")
    (run / "manifest.json").write_text(json.dumps({"overrides": ["o=1"], "config": [1]}))
    d = collect_run(run)
    assert d.overrides == ["o=1"] and d.config is None and d.config_yaml() is None


def test_settings_from_config() -> None:
    """Known report keys are taken, unknown ignored; defaults otherwise."""
    assert R.settings_from_config(None) == ReportConfig()
    s = R.settings_from_config({"report": {"html": False, "max_images": 3, "zzz": 1}})
    assert s.html is False and s.max_images == 3 and s.markdown is True


def test_command_text() -> None:
    """A list command is shell-joined; a string kept; none is a dash."""
    assert R._command({"command": ["run.py", "a b", "c=1"]}) == "run.py 'a b' c=1"
    assert R._command({"command": "x y"}) == "x y" and R._command({}) == "–"
    assert R._command({"command": ""}) == "–"


def _data(tmp_path: Path, m: dict | None, config: dict | None = None, records=(), problems=()) -> R.RunData:
    return R.RunData(tmp_path, m, [], config, list(records), [], list(problems))


def test_header_fields(tmp_path: Path) -> None:
    """Header: model, weights, input description, seed, alerts from records/warnings/problems."""
    m = {
        "model": "tiny",
        "weights": "DEFAULT",
        "input": {"kind": "imagefolder", "path": "/data"},
        "device": "cuda:0",
        "seed": 3,
        "created": "now",
        "command": ["a", "b"],
        "status": "failed",
        "seconds": 2.0,
        "vizpipe": "9",
        "run_dir": "/runs/x",
        "warnings": ["w1"],
    }
    cfg = {"input": {"split": "val"}, "model": {"checkpoint": "ck.pt"}, "deterministic": True, "notes": "hi"}
    records = [
        {"name": "setup", "status": "ok"},
        {"name": "cam", "status": "failed", "error": "boom"},
        {"name": "x", "status": "interrupted"},
    ]
    h = R._header(_data(tmp_path, m, cfg, records, ["p1"]))
    assert h == {
        "model": "tiny",
        "weights": "DEFAULT + checkpoint ck.pt",
        "input": "imagefolder: /data, val split",
        "device": "cuda:0",
        "seed": "3 (deterministic algorithms)",
        "date": "now",
        "command": "a b",
        "status": "failed",
        "seconds": 2.0,
        "version": "9",
        "run_folder": "/runs/x",
        "notes": "hi",
        "alerts": [
            C.Alert("error", "cam failed: ", "boom"),
            C.Alert("error", "x was interrupted"),
            C.Alert("warning", "Warning: ", "w1"),
            C.Alert("warning", "", "p1"),
        ],
    }


def test_header_defaults_and_random_input(tmp_path: Path) -> None:
    """No manifest: dashes; random input shows the batch shape; config model name and seed used."""
    h = R._header(_data(tmp_path, None, {"input": {"kind": "random", "shape": [2, 3, 8, 8]}}))
    assert h["input"] == "random (batch 2×3×8×8)" and h["weights"] == "random init (seed –)"
    assert (h["model"], h["device"], h["seed"], h["date"], h["command"]) == ("–", "–", "–", "–", "–")
    assert (h["status"], h["seconds"], h["version"], h["notes"]) == ("unknown", None, "–", None)
    assert h["run_folder"] == str(tmp_path) and h["alerts"] == []
    cfg = {"model": {"name": "m"}, "seed": 4, "input": {"kind": "shapes", "root": "/r", "shape": [1]}}
    h = R._header(_data(tmp_path, {"seed": 0}, cfg))
    assert h["model"] == "m" and h["seed"] == "0" and h["input"] == "shapes: /r"
    assert h["weights"] == "random init (seed 0)"
    assert R._header(_data(tmp_path, {}, {"seed": 4}))["seed"] == "4"
    assert R._header(_data(tmp_path, {}, {"seed": 4}))["input"] == "–"
    h = R._header(_data(tmp_path, {"input": {"kind": "cifar10"}}, {"input": {"split": "test"}}))
    assert h["input"] == "cifar10, test split"
    h = R._header(_data(tmp_path, {"input": {"kind": "folder"}}, {"input": {"split": "x", "shape": [1]}}))
    assert h["input"] == "folder"
    assert R._header(_data(tmp_path, {"input": {"kind": "shapes"}}, {}))["input"] == "shapes"
    assert R._header(_data(tmp_path, {}, {"input": {"kind": "random"}}))["input"] == "random"


def test_provenance_fields(tmp_path: Path) -> None:
    """Re-run commands quoted, git only as a dict, versions, input and checkpoint hashes."""
    m = {
        "run_dir": "/runs/a b",
        "git": {"commit": "abc", "dirty": False},
        "versions": {"torch": "2.0", "x": None},
        "provenance": {
            "inputs": [{"path": "i.png", "bytes": 3, "sha256": "s1"}],
            "checkpoint": {"path": "c.pt", "bytes": 9, "sha256": "s2"},
        },
    }
    d = _data(tmp_path, m, {"seed": 1})
    d.overrides = ["seed=1"]
    p = R._provenance(d)
    assert p == {
        "overrides": ["seed=1"],
        "rerun": "python run.py --config-path '/runs/a b/.hydra' --config-name config\n"
        "python -m vizpipe.reproduce '/runs/a b'   # into a new folder, then compares",
        "git": {"commit": "abc", "dirty": False},
        "versions": [("torch", "2.0"), ("x", "not installed")],
        "hashes": [
            {"path": "i.png", "bytes": 3, "sha256": "s1", "what": ""},
            {"path": "c.pt", "bytes": 9, "sha256": "s2", "what": "checkpoint "},
        ],
        "config_yaml": "seed: 1",
    }
    p = R._provenance(_data(tmp_path, {"git": "abc", "provenance": {"checkpoint": "c.pt"}}))
    assert p["git"] is None and p["hashes"] == [] and p["versions"] == [] and p["config_yaml"] is None
    assert p["rerun"].startswith(f"python run.py --config-path {shlex.quote(str(tmp_path) + '/.hydra')} ")


def test_manifest_section(tmp_path: Path) -> None:
    """Steps with file counts and bytes; a pending/running report shows as writing; artifacts listed."""
    records = [
        {
            "name": "setup",
            "status": "ok",
            "seconds": 0.5,
            "artifacts": [{"path": "a", "bytes": 1000, "sha256": "h"}],
        },
        {
            "name": "cam",
            "status": "failed",
            "error": "boom",
            "artifacts": [{"path": "b"}, {"path": "c", "bytes": 5}],
        },
        {"name": "report", "status": "running"},
    ]
    out = R._manifest(_data(tmp_path, {"status": "failed", "seconds": 9}, None, records))
    assert out == {
        "status": "failed",
        "seconds": 9,
        "steps": [
            {
                "name": "setup",
                "status": "ok",
                "writing": False,
                "seconds": 0.5,
                "files": 1,
                "bytes": 1000,
                "error": "",
            },
            {
                "name": "cam",
                "status": "failed",
                "writing": False,
                "seconds": None,
                "files": 2,
                "bytes": 5,
                "error": "boom",
            },
            {
                "name": "report",
                "status": "writing",
                "writing": True,
                "seconds": None,
                "files": 0,
                "bytes": 0,
                "error": "",
            },
        ],
        "artifacts": [
            {"path": "a", "bytes": "1,000", "sha256": "h"},
            {"path": "b", "bytes": "–", "sha256": "None"},
            {"path": "c", "bytes": "5", "sha256": "None"},
        ],
    }
    steps = R._manifest(_data(tmp_path, None, None, [{"name": "report", "status": "pending"}, {"name": "x"}]))
    assert steps["status"] == "unknown" and steps["steps"][0]["status"] == "writing"
    assert steps["steps"][1]["status"] == "unknown" and steps["steps"][1]["writing"] is False
    done = R._manifest(
        _data(tmp_path, None, None, [{"name": "report", "status": "ok"}, {"name": "x", "status": "running"}])
    )
    assert done["steps"][0]["writing"] is False and done["steps"][0]["status"] == "ok"
    assert (done["steps"][1]["status"], done["steps"][1]["writing"]) == ("running", False)


def test_run_context_nav_and_title(tmp_path: Path) -> None:
    """Title from the model (else the folder name), nav: header, stages, provenance, manifest."""
    run = tmp_path / "myrun"
    res = stage_result(run)
    manifest(run, [rec("cam", result=res, title="Grad-CAM"), rec("other", "skipped")])
    ctx = R.run_context(collect_run(run), max_images=1, html=False)
    assert (
        ctx["title"] == "vizpipe report: tiny"
        and ctx["status"] == "ok"
        and ctx["created"] == "2025-01-01T00:00:00"
    )
    assert ctx["nav"] == [
        ("header", "Run"),
        ("cam", "Grad-CAM"),
        ("other", "other"),
        ("provenance", "Provenance"),
        ("manifest", "Manifest"),
    ]
    assert [s.name for s in ctx["stages"]] == ["cam", "other"] and ctx["run"].run_dir == run
    assert ctx["stages"][0].pictures[0].src is None and ctx["stages"][0].more is not None
    doc = json.loads((run / "manifest.json").read_text())
    doc.pop("model")
    doc.pop("status")
    doc.pop("created")
    (run / "manifest.json").write_text(json.dumps(doc))
    ctx = R.run_context(collect_run(run))
    assert ctx["title"] == "vizpipe report: myrun" and ctx["status"] == "unknown" and ctx["created"] == ""
    assert ctx["stages"][0].pictures[0].src.startswith("data:image/png")
    assert len(ctx["stages"][0].pictures) == 4


def test_each_warning_is_shown_once_where_it_belongs(tmp_path: Path) -> None:
    """A stage's warnings (in its record) head its section; the header shows only the rest of the
    manifest's warnings (the build's), so no warning appears twice."""
    run = tmp_path / "run"
    res = stage_result(run)  # warns "careful"
    manifest(run, [rec("cam", result=res)], warnings=["the model has NaN", "careful"])
    ctx = R.run_context(collect_run(run))
    assert [a.text for a in ctx["header"]["alerts"]] == ["the model has NaN"]
    assert [a.text for a in ctx["stages"][0].alerts] == ["careful"]


# --------------------------------------------------------------------------- written files and the CLI


def test_write_run_report_outputs(tmp_path: Path) -> None:
    """html+md by default (html path returned); md only returns md; neither is a config error."""
    run = tmp_path / "run"
    manifest(run, [rec("cam", result=stage_result(run))], config={"report": {"max_images": 1}})
    assert write_run_report(run) == run / "report.html"
    md = (run / "report.md").read_text()
    assert "](cam/a.png)" in md and "](cam/b.png)" not in md
    note = "3 more pictures in 2 more groups not shown (report.max\\_images=1); they are in "
    assert note + "`cam/, cam/g2/, cam/g1/`" in md
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1
    (run / "report.html").unlink()
    (run / "report.md").unlink()
    assert write_run_report(run, ReportConfig(html=False)) == run / "report.md"
    assert not (run / "report.html").exists() and "](cam/b.png)" in (run / "report.md").read_text()
    (run / "report.md").unlink()
    assert write_run_report(run, ReportConfig(markdown=False, max_images=2)) == run / "report.html"
    assert not (run / "report.md").exists()
    assert (run / "report.html").read_text().count('src="data:image/png;base64,') == 2
    with pytest.raises(ConfigError) as exc:
        write_run_report(run, ReportConfig(html=False, markdown=False))
    assert str(exc.value) == (
        "report.html and report.markdown are both false: nothing to write (set report.enabled=false instead)"
    )


def test_markdown_report_lines(tmp_path: Path) -> None:
    """report.md holds the header table, stage headings, key numbers and the settings."""
    run = tmp_path / "run"
    manifest(run, [rec("cam", result=stage_result(run), title="Grad-CAM")], command=["run.py", "x=1"])
    write_run_report(run, ReportConfig(html=False))
    md = (run / "report.md").read_text()
    for line in (
        "# vizpipe report: tiny",
        "| Model | **tiny** |",
        "| Command | `run.py x=1` |",
        "| Seed | 7 |",
        "## Grad-CAM (ok)",
        "| `acc` ↑ | 0.75 |",
        "| `loss` ↓ | 2 |",
        "Settings: `layer=a` `n=2` ",
        "### g2",
        "> **Warning:** careful",
    ):
        assert line in md.splitlines(), line


def test_is_run_and_sweep_dir(tmp_path: Path) -> None:
    """A manifest or a lone .hydra is a run; multirun.yaml or a job folder is a sweep."""
    a = tmp_path / "a"
    a.mkdir()
    assert not is_run_dir(a) and not is_sweep_dir(a)
    (a / ".hydra").mkdir()
    assert is_run_dir(a)
    (a / "0_x").mkdir()
    assert is_sweep_dir(a) and not is_run_dir(a)
    (a / "manifest.json").write_text("{}")
    assert is_run_dir(a)
    b = tmp_path / "b"
    b.mkdir()
    (b / "multirun.yaml").write_text("{}")
    assert is_sweep_dir(b)


def test_report_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 0 with the path; 2 for a non-folder or neither; --jobs writes each job's report; 1 on failure."""
    run = tmp_path / "run"
    manifest(run, [rec("cam", result=stage_result(run))])
    assert report_main.main([str(run)]) == 0
    assert capsys.readouterr().out == f"vizpipe: report {run / 'report.html'}\n"
    assert report_main.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"vizpipe: error: {tmp_path / 'nope'} is not a folder\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main.main([str(empty)]) == 2
    assert capsys.readouterr().err == (
        f"vizpipe: error: {empty} is neither a run folder (no manifest.json) "
        "nor a sweep folder (no job folders)\n"
    )
    sweep = tmp_path / "sweep"
    for n in ("0_a", "1_b"):
        manifest(sweep / n, [], overrides=[f"x={n}"])
    (sweep / "2_c").mkdir()
    assert report_main.main([str(sweep), "--jobs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"vizpipe: report {sweep / '0_a' / 'report.html'}",
        f"vizpipe: report {sweep / '1_b' / 'report.html'}",
        f"vizpipe: report {sweep / 'index.html'}",
    ]
    (sweep / "0_a" / "report.html").unlink()
    assert report_main.main([str(sweep)]) == 0
    assert not (sweep / "0_a" / "report.html").exists()
    capsys.readouterr()

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report_main, "write_run_report", boom)
    assert report_main.main([str(run)]) == 1
    assert capsys.readouterr().err == (
        f"vizpipe: error: could not write the report for {run}: OSError: disk full\n"
    )


def test_png_helper_is_exact(tmp_path: Path) -> None:
    """(Test helper sanity) the PNGs written decode to the colour asked for."""
    png(tmp_path / "p.png", (1, 2, 3))
    with Image.open(tmp_path / "p.png") as im:
        assert np.asarray(im)[0, 0].tolist() == [1, 2, 3]


def test_report_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The report command's usage line and its arguments' help."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        report_main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(
        "usage: python -m vizpipe.report [-h] [--jobs] folder Rebuild the report of a run folder"
    )
    assert "folder a run folder (has manifest.json) or a sweep folder (has job folders)" in text
    assert "--jobs for a sweep: also rebuild every job's report.html first" in text


def test_environment_settings() -> None:
    """HTML templates and strings autoescaped, Markdown not; strict undefined; block whitespace trimmed."""
    import jinja2

    env = T.environment()
    assert env is T.environment()
    assert env.autoescape("run.html.j2") and env.autoescape("x.html") and env.autoescape(None)
    assert not env.autoescape("run.md.j2")
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    assert env.from_string("{% if true %}\nx\n{% endif %}").render() == "x\n"
    assert env.from_string("  {% if true %}x{% endif %}").render() == "x"
    assert env.from_string("a\n").render() == "a\n"
    filters = {
        "num": C.fmt_num,
        "seconds": C.fmt_seconds,
        "mb": C.fmt_mb,
        "shape": C.fmt_shape,
        "badge_class": C.badge_class,
        "url": C.url,
        "md": T.md_text,
        "md_cell": T.md_cell,
        "md_code": T.md_code,
        "md_badge": T.md_badge,
        "fence": T.fence,
    }
    for name, fn in filters.items():
        assert env.filters[name] is fn, name
    assert str(env.globals["css"]) == (T.TEMPLATES / "report.css").read_text(encoding="utf-8")
    assert T.TEMPLATES.name == "templates" and (T.TEMPLATES / "run.md.j2").is_file()


def test_version_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an installed distribution the version reads '(not installed)'."""
    from importlib import metadata

    def missing(name: str) -> str:
        assert name == "vizpipe"
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert T._version() == "(not installed)"
    monkeypatch.setattr(metadata, "version", lambda name: f"{name}-9")
    assert T._version() == "vizpipe-9"


def test_key_numbers_take_the_highest_step(tmp_path: Path) -> None:
    """Key numbers show the value of the last step, whatever the record order."""
    res = StageResult("s", scalars=[Scalar("a", 2.0, key=True, step=5), Scalar("a", 1.0, key=True, step=1)])
    v = S.stage_view({"name": "s"}, res, tmp_path, 0, False)
    assert v.key_numbers == [S.KeyNumber("a", "2", "")]
    assert S.stage_view({"name": "s"}, res, tmp_path, -1, False).pictures == []


class _Templated:
    """A stage class with a report fragment beside this test module."""

    template = "frag_for_test.html.j2"


def test_fragment_paths_from_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Classes with a template map to the file beside their module; others and failures are skipped."""
    import vizpipe.pipeline.registry

    nosrc = type("NoSource", (), {"template": "x.j2", "__module__": "builtins"})
    classes = {"t": _Templated, "plain": type("Plain", (), {"template": None}), "n": nosrc}
    monkeypatch.setattr(vizpipe.pipeline.registry, "stage_classes", lambda: classes)
    assert S.fragment_paths() == {"t": Path(__file__).resolve().parent / "frag_for_test.html.j2"}

    def broken() -> dict:
        raise RuntimeError("plugin")

    monkeypatch.setattr(vizpipe.pipeline.registry, "stage_classes", broken)
    assert S.fragment_paths() == {}


def test_run_context_renders_fragments_for_html_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage's fragment replaces its body in HTML when it has a result; never in Markdown."""
    run = tmp_path / "run"
    frag = tmp_path / "f.j2"
    frag.write_text("F:{{ result.stage }}:{{ run.run_dir.name }}")
    manifest(run, [rec("cam", result=StageResult("cam")), rec("bad", "failed")])
    asked: list[int] = []

    def paths() -> dict[str, Path]:
        asked.append(1)
        return {"cam": frag, "bad": frag}

    monkeypatch.setattr(R, "fragment_paths", paths)
    ctx = R.run_context(collect_run(run), html=True)
    assert str(ctx["stages"][0].fragment) == "F:cam:run" and ctx["stages"][1].fragment is None
    assert ctx["stages"][1].alerts == [C.Alert("error", "This stage failed: ", "")]
    assert ctx["stages"][0].alerts == []
    md = R.run_context(collect_run(run), html=False)
    assert md["stages"][0].fragment is None and asked == [1]
    empty = tmp_path / "empty"
    manifest(empty, [])
    R.run_context(collect_run(empty), html=True)
    assert asked == [1]


def test_config_yaml_keeps_order_and_unicode(tmp_path: Path) -> None:
    """The provenance YAML keeps the config's key order and non-ASCII text; it is made once."""
    d = _data(tmp_path, {}, {"b": 1, "a": {"c": "é"}})
    assert d.config_yaml() == "b: 1\na:\n  c: é"
    d.config["b"] = 2
    assert d.config_yaml() == "b: 1\na:\n  c: é"


def test_header_shapes_split(tmp_path: Path) -> None:
    """The split is named for the shapes data set too."""
    h = R._header(_data(tmp_path, {"input": {"kind": "shapes"}}, {"input": {"split": "train"}}))
    assert h["input"] == "shapes, train split"


def test_collect_run_type_error_result(tmp_path: Path) -> None:
    """A result of the wrong type (TypeError) is a problem too, not a crash."""
    run = tmp_path / "run"
    manifest(run, [{"name": "cam", "status": "ok", "result": {"stage": 3}}])
    d = collect_run(run)
    assert d.stages[0].problem.startswith("TypeError: StageResult.stage: expected str, got int 3")


# --------------------------------------------------------------------------- a real run folder


class _Page(HTMLParser):
    """Section ids in order and every embedded picture (data-path -> src)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: dict[str, str] = {}
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(str(a.get("id")))
        elif tag == "img" and a.get("data-path"):
            self.images[str(a["data-path"])] = str(a.get("src"))
        elif tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder made by the runner on seed_net with a small random batch, report included."""
    from conftest import compose_config
    from vizpipe.pipeline.runner import run_pipeline

    run = tmp_path_factory.mktemp("pages") / "run"
    cfg = compose_config(
        ["model=seed_net", "input=random", "input.shape=[2,3,16,16]", "stages=[summary,kernels,features]"]
    )
    result = run_pipeline(cfg, run)
    assert result.ok, result.error
    return run


def test_real_report_html_matches_the_manifest(real_run: Path) -> None:
    """Sections in manifest order; every shown picture embedded with its file's exact bytes."""
    m = json.loads((real_run / "manifest.json").read_text())
    page = _Page()
    page.feed((real_run / "report.html").read_text())
    names = [s["name"] for s in m["stages"]]
    assert names == ["summary", "kernels", "features"]
    assert page.sections == ["header", *names, "provenance", "manifest"]
    cap = int(m["config"]["report"]["max_images"])
    for s in m["stages"]:
        pics = [p["path"] for p in s["result"]["pictures"]]
        shown = pics if cap <= 0 else pics[:cap]
        for rel in shown:
            want = "data:image/png;base64," + base64.b64encode((real_run / rel).read_bytes()).decode()
            assert page.images.get(rel) == want, rel
    every = {p["path"] for s in m["stages"] for p in s["result"]["pictures"]}
    assert set(page.images) <= every and page.images


def test_real_report_md_links_and_lists_artifacts(real_run: Path) -> None:
    """report.md links shown pictures relatively and lists every stage artifact with its hash."""
    m = json.loads((real_run / "manifest.json").read_text())
    md = (real_run / "report.md").read_text()
    for s in m["stages"]:
        assert f"## {T.md_text(s.get('title') or s['name'])} (ok)" in md.splitlines(), s["name"]
        for a in s["artifacts"]:
            row = f"| {T.md_code(a['path'], True)} | {T.md_cell(C.fmt_num(a['bytes']))} | `{a['sha256']}` |"
            assert row in md.splitlines(), row
    first = m["stages"][2]["result"]["pictures"][0]["path"]
    assert f"]({C.url(first)})" in md
    ctx = R.run_context(collect_run(real_run), html=False)
    assert [a["path"] for a in ctx["manifest"]["artifacts"]] == [
        a["path"] for r in (m["setup"], *m["stages"], m["report"]) for a in r.get("artifacts") or []
    ]
    assert ctx["header"]["model"] == m["model"] and ctx["header"]["input"] == "random (batch 2×3×16×16)"


def _payload(src: str) -> bytes:
    return base64.b64decode(src.split(",", 1)[1])


def test_thumbnail_formats_boundary_and_disk_cache(tmp_path: Path) -> None:
    """Exactly px stays as is; JPEG becomes a small PNG; GIF is never resized; a kept thumb is reused."""
    base = tmp_path / "run"
    png(base / "edge.png", size=(10, 7))
    edge = C.embed(base, C.PictureView("edge.png"), thumb_px=10)
    assert _payload(edge.src) == (base / "edge.png").read_bytes()
    Image.new("CMYK", (30, 12), (1, 2, 3, 4)).save(base / "c.jpg", format="JPEG")
    jpg = C.embed(base, C.PictureView("c.jpg"), thumb_px=10)
    assert jpg.src.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(_payload(jpg.src))) as im:
        assert max(im.size) <= 10 and im.mode == "RGB"
    Image.new("P", (30, 30)).save(base / "g.gif", format="GIF")
    gif = C.embed(base, C.PictureView("g.gif"), thumb_px=10)
    assert gif.src.startswith("data:image/gif;base64,") and _payload(gif.src) == (base / "g.gif").read_bytes()
    png(base / "big.png", size=(30, 30))
    cache = tmp_path / "cache"
    cache.mkdir()
    st = (base / "big.png").stat()
    key = C._disk_key(str((base / "big.png").resolve()), st.st_mtime_ns, st.st_size, 12)
    (cache / key).write_bytes(b"kept")
    assert (
        C.embed(base, C.PictureView("big.png"), thumb_px=12, cache=cache).src
        == "data:image/png;base64,a2VwdA=="
    )
    assert C._disk_key("a", 1, 2, 3) != C._disk_key("a", 1, 2, 4) != C._disk_key("a", 1, 3, 4)
    assert C._disk_key("a", 1, 2, 3).endswith(".png") and len(C._disk_key("a", 1, 2, 3)) == 44
