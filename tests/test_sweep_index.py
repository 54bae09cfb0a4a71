"""Sweep index: ``vizpipe.pipeline.report.jobs``/``merge``/``sweep`` on job folders written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from vizpipe.pipeline.report import jobs as J
from vizpipe.pipeline.report import merge as M
from vizpipe.pipeline.report import sweep as W
from vizpipe.pipeline.report import write_sweep_index
from vizpipe.pipeline.report.common import Alert
from vizpipe.pipeline.report.sections import TableView
from vizpipe.pipeline.stage import Merge, Picture, Scalar, StageResult, Table


def png(path: Path, size: tuple[int, int] = (6, 4)) -> None:
    """A small solid PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (5, 6, 7)).save(path, format="PNG")


def job(
    sweep: Path,
    name: str,
    overrides: list[str],
    *,
    status: str = "ok",
    results: list[StageResult] | None = None,
    stage_status: str = "ok",
    **extra: object,
) -> Path:
    """A job folder with a manifest holding ``results`` as stage records."""
    folder = sweep / name
    folder.mkdir(parents=True)
    stages = [
        {
            "name": r.stage,
            "status": stage_status,
            "result": r.to_dict(),
            "error": "bad" if stage_status == "failed" else None,
        }
        for r in results or []
    ]
    doc = {
        "status": status,
        "overrides": overrides,
        "seconds": 1.0,
        "created": f"t{name}",
        "setup": {"name": "setup", "status": "ok"},
        "stages": stages,
        **extra,
    }
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder


def score(
    value: float | None, *, name: str = "score", better: str = "higher", key: bool = True, step: int = 0
) -> StageResult:
    """A result with one ranked scalar."""
    return StageResult("cam", scalars=[Scalar(name, value, key=key, better=better, step=step)])


# --------------------------------------------------------------------------- jobs


def test_split_override_and_is_job_dir(tmp_path: Path) -> None:
    """Prefixes dropped from keys; job folders by manifest, .hydra or a number prefix."""
    assert J.split_override("+cam.layer=layer3") == ("cam.layer", "layer3")
    assert J.split_override("~a") == ("a", "") and J.split_override("a=b=c") == ("a", "b=c")
    for name in ("3_x", "12", "x", "x_3", ".5_x", "h", "m"):
        (tmp_path / name).mkdir()
    (tmp_path / "h" / ".hydra").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{}")
    (tmp_path / "7_file").write_text("")
    got = {n: J.is_job_dir(tmp_path / n) for n in ("3_x", "12", "x", "x_3", ".5_x", "h", "m", "7_file")}
    assert got == {
        "3_x": True,
        "12": True,
        "x": False,
        "x_3": False,
        ".5_x": False,
        "h": True,
        "m": True,
        "7_file": False,
    }
    (tmp_path / "12a").mkdir()
    assert not J.is_job_dir(tmp_path / "12a")
    (tmp_path / ".m").mkdir()
    (tmp_path / ".m" / "manifest.json").write_text("{}")
    assert not J.is_job_dir(tmp_path / ".m")


def test_last_error_line(tmp_path: Path) -> None:
    """The last error line (else the last non-blank line), cut to 500 characters."""
    log = tmp_path / "run.log"
    assert J._last_error_line(log) is None
    log.write_text("")
    assert J._last_error_line(log) is None
    log.write_text("a\n[ERROR] one\nValueError: two\nlast\n\n")
    assert J._last_error_line(log) == "ValueError: two"
    log.write_text("a\nb\n  \n")
    assert J._last_error_line(log) == "b"
    log.write_text("Error " + "x" * 600)
    assert J._last_error_line(log) == ("Error " + "x" * 600)[:500]


def test_collect_job_without_manifest(tmp_path: Path) -> None:
    """No manifest: a failed job whose error says why and quotes the log's last error line."""
    f = tmp_path / "4_x"
    (f / ".hydra").mkdir(parents=True)
    (f / ".hydra" / "overrides.yaml").write_text(
        "- a=1\n- hydra.job.chdir=true\n- +b=2\n- +hydra.x=1\n- ~hydra.y\n"
    )
    (f / "run.log").write_text("start\n[ERROR] it broke\n")
    (f / "report.md").write_text("x")
    d = J.collect_job(f)
    assert (d.name, d.num, d.status, d.overrides, d.params) == (
        "4_x",
        4,
        "failed",
        ["a=1", "+b=2"],
        {"a": "1", "b": "2"},
    )
    assert (
        d.error
        == "no manifest.json: the job stopped before the pipeline started; last log line: [ERROR] it broke"
    )
    assert d.reports == ["report.md"] and d.seconds is None and d.created is None
    (f / "run.log").unlink()
    (f / "manifest.json").write_text("{")
    d = J.collect_job(f)
    assert d.error.startswith("Could not read 4_x/manifest.json: ") and "last log line" not in d.error
    g = tmp_path / "named"
    g.mkdir()
    d = J.collect_job(g)
    assert d.num is None and d.overrides == [] and d.params == {}


def test_collect_job_with_manifest(tmp_path: Path) -> None:
    """Status, seconds, created, errors of failed steps joined, previews/first/tables/scalars."""
    tab = Table("per class", ["c", "n"], [[0, 1]], merge=Merge(keys=[0], weight=1))
    plain = Table("plain", ["c"], [[1]])
    res = StageResult(
        "cam",
        pictures=[
            Picture("cam/a.png", "A"),
            Picture("cam/b.png", "B", preview=True),
            Picture("cam/c.png", "C"),
        ],
        tables=[tab, plain],
        scalars=[
            Scalar("s", 1.0, key=True, step=3),
            Scalar("s", 2.0, key=True, step=1),
            Scalar("s", 4.0, key=True, step=3),
            Scalar("r", 5.0, better="lower"),
            Scalar("x", 6.0),
        ],
    )
    f = job(
        tmp_path,
        "2_j",
        ["hydra.x=1", "k=v"],
        status="failed",
        results=[res, StageResult("t")],
        stage_status="failed",
    )
    doc = json.loads((f / "manifest.json").read_text())
    doc["setup"] = {"name": "setup", "status": "failed", "error_type": "OSError"}
    doc["stages"].append("junk")
    (f / "manifest.json").write_text(json.dumps(doc))
    (f / "report.html").write_text("x")
    (f / "report.md").write_text("x")
    d = J.collect_job(f)
    assert (d.status, d.seconds, d.created, d.overrides) == ("failed", 1.0, "t2_j", ["k=v"])
    assert d.error == "setup: OSError; cam: bad; t: bad"
    assert d.first == Picture("cam/a.png", "A") and d.previews == [Picture("cam/b.png", "B", preview=True)]
    assert d.tables == [tab]
    assert {n: (s.value, s.step) for n, s in d.scalars.items()} == {"s": (4.0, 3), "r": (5.0, 0)}
    assert d.reports == ["report.html", "report.md"] and d.problems == []


def test_collect_job_unreadable_result_and_fallback_overrides(tmp_path: Path) -> None:
    """A broken picture record is a problem naming job and stage; empty manifest overrides use .hydra."""
    f = tmp_path / "0_j"
    (f / ".hydra").mkdir(parents=True)
    (f / ".hydra" / "overrides.yaml").write_text("- q=1\n")
    stages = [
        {"name": "cam", "status": "ok", "result": {"pictures": [{"path": "a", "nope": 1}]}},
        {"name": "n", "result": None},
    ]
    (f / "manifest.json").write_text(json.dumps({"status": "ok", "overrides": [], "stages": stages}))
    d = J.collect_job(f)
    assert d.overrides == ["q=1"] and d.status == "ok" and d.error is None
    assert len(d.problems) == 1 and d.problems[0].startswith("0_j: unreadable result of stage cam: ")
    (f / "manifest.json").write_text(json.dumps({"overrides": "x"}))
    d = J.collect_job(f)
    assert d.status == "unknown" and d.overrides == ["q=1"] and d.params == {"q": "1"}
    (f / "manifest.json").write_text("[1]")
    d = J.collect_job(f)
    assert d.status == "failed" and d.overrides == ["q=1"]
    assert d.error == "no manifest.json: the job stopped before the pipeline started"


def test_collect_sweep_order_task_and_swept(tmp_path: Path) -> None:
    """Jobs sorted by number (unnumbered last, by name); swept keys in multirun order, then job order."""
    job(tmp_path, "10_a", ["b=1", "a=x", "same=1"])
    job(tmp_path, "2_b", ["b=2", "a=x", "same=1", "c=9"])
    job(tmp_path, "zz", ["b=3", "a=y", "same=1"])
    (tmp_path / "x").mkdir()
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - a=x,y\n    - b=1,2\n")
    d = J.collect_sweep(tmp_path)
    assert [j.name for j in d.jobs] == ["2_b", "10_a", "zz"]
    assert d.task == ["a=x,y", "b=1,2"] and d.swept == ["a", "b", "c"] and d.sweep_dir == tmp_path
    (tmp_path / "multirun.yaml").write_text("- 1\n")
    d = J.collect_sweep(tmp_path)
    assert d.task == [] and d.swept == ["b", "a", "c"]
    with pytest.raises(FileNotFoundError, match=rf"^Sweep folder {tmp_path / 'no'} does not exist$"):
        J.collect_sweep(tmp_path / "no")


# --------------------------------------------------------------------------- merge


SPEC = Merge(keys=[0, 1], weight=2, count=[3], means=[4])


def _t(rows: list[list], title: str = "per class") -> Table:
    return Table(title, ["idx", "name", "images", "correct", "acc", "note"], rows, merge=SPEC)


def test_merge_tables_exact() -> None:
    """Keys grouped and sorted, counts summed, means weighted by the weight column, 'all' last."""
    a = _t([[1, "dog", 2, 1, 0.5, "x"], [0, "cat", 1, 1, 1.0, "x"]])
    b = _t([[1, "dog", 2, 2, 1.0, "y"], [2, "cow", 0, 0, 0.3, "z"], ["b", "q", 1, 0, None, "z"]])
    m = M.merge_tables([a, b])
    assert m.rows == [
        [0, "cat", 1, 1, 1.0, "x"],
        [1, "dog", 4, 3, 0.75, "–"],
        [2, "cow", 0, 0, None, "z"],
        ["b", "q", 1, 0, None, "z"],
        ["all", "", 6, 4, pytest.approx((1 + 4 * 0.75) / 5), "–"],
    ]
    assert m.title == "per class" and m.columns == a.columns and m.merge == SPEC
    assert m.caption == "Merged over 2 shard(s): summed images, correct; means weighted by images"
    assert all(type(r[2]) is int for r in m.rows)
    f = _t([[0, "a", 1.5, 1, 2.0, ""], [0, "a", 1.0, True, float("nan"), ""]])
    assert M.merge_tables([f]).rows[0] == [0, "a", 2.5, 1, 2.0, ""]
    with pytest.raises(ValueError, match=r"^table 'plain' is not mergeable$"):
        M.merge_tables([Table("plain", ["a"], [[1]])])
    assert M._number(True) is None and M._number("1") is None and M._number(float("inf")) is None
    assert M._number(3) == 3.0 and M._shard_order("10/12") == [10, 12] and M._shard_order("a/2") == [0, 2]


def _jd(name: str, overrides: list[str], status: str = "ok", tables: list[Table] | None = None) -> J.JobData:
    return J.JobData(
        name, None, overrides, dict(J.split_override(o) for o in overrides), status, tables=tables or []
    )


def test_shard_groups() -> None:
    """Jobs grouped by their other overrides; missing shards include never-started ones."""
    t1 = _t([[0, "a", 2, 1, 0.5, ""]])
    t2 = _t([[0, "a", 2, 2, 1.0, ""]])
    other = Table("other", ["k", "n"], [[1, 1]], merge=Merge(keys=[0], weight=1))
    jobs = [
        _jd("n", ["m=d"]),
        _jd("0", ["m=a", "input.shard=0/4"], tables=[t1, other]),
        _jd("1", ["m=a", "input.shard=1/4"], tables=[t2]),
        _jd("2", ["m=a", "input.shard=2/4"], status="failed", tables=[t2]),
        _jd("3", ["m=b", "input.shard=0/2"]),
        _jd("4", ["m=c"]),
    ]
    assert M.shard_groups(jobs, ["m"]) == []
    groups = M.shard_groups(jobs, ["m", "input.shard"])
    assert [(g.params, g.shards, g.ok, g.missing) for g in groups] == [
        (["m=a"], ["0/4", "1/4", "2/4"], 2, ["2/4", "3/4"]),
        (["m=b"], ["0/2"], 0, ["0/2", "1/2"]),
    ]
    assert [t.title for t in groups[0].tables] == ["per class", "other"]
    assert groups[0].tables[0].rows[0] == [0, "a", 4, 3, 0.75, ""] and groups[1].tables == []
    odd = M.shard_groups([_jd("0", ["input.shard=x"], tables=[t1])], ["input.shard"])
    assert odd[0].missing == [] and odd[0].ok == 1
    assert M.SHARD_KEY == "input.shard"


# --------------------------------------------------------------------------- sweep context


def test_grid_axes() -> None:
    """Rows prefer a layer-like key, then sweep order; the next key is the column; the rest facets."""
    assert W.grid_axes([]) == (None, None, [])
    assert W.grid_axes(["a"]) == ("a", None, [])
    assert W.grid_axes(["a", "cam.Layer", "b", "c"]) == ("cam.Layer", "a", ["b", "c"])
    assert W.grid_axes(["a", "b"]) == ("a", "b", [])


def _sweep(tmp_path: Path) -> Path:
    """Four jobs over cam.layer x seed, one failed, previews and a ranked score."""
    sw = tmp_path / "sw"
    for i, (layer, seed, val, status) in enumerate(
        [("l1", "0", 0.5, "ok"), ("l1", "1", 0.9, "ok"), ("l2", "0", None, "ok"), ("l2", "1", 0.7, "failed")]
    ):
        res = StageResult(
            "cam",
            pictures=[Picture(f"cam/{i}.png", f"c{i}", preview=True, group="img")],
            scalars=[Scalar("score", val, key=True, better="higher"), Scalar("same", 1.0, better="lower")],
        )
        f = job(
            sw, f"{i}_j", [f"cam.layer={layer}", f"seed={seed}", "model=tiny"], status=status, results=[res]
        )
        png(f / "cam" / f"{i}.png")
        if status == "ok":
            (f / "report.html").write_text("r")
    (sw / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - seed=0,1\n    - cam.layer=l1,l2\n"
    )
    return sw


def test_sweep_context_header_and_table(tmp_path: Path) -> None:
    """Status, counts, command, swept/common overrides, alerts, key columns and the jobs table."""
    sw = _sweep(tmp_path)
    ctx = W.sweep_context(J.collect_sweep(sw))
    assert ctx["title"] == "vizpipe sweep: sw" and ctx["status"] == "failed"
    assert ctx["command"] == "python run.py -m seed=0,1 cam.layer=l1,l2"
    assert ctx["counts"] == [("failed", 1), ("ok", 3)] and ctx["jobs_count"] == 4
    assert ctx["swept"] == ["seed", "cam.layer"] and ctx["common"] == ["model=tiny"]
    assert ctx["started"] == "t0_j" and ctx["sweep_dir"] == str(sw.resolve())
    assert ctx["rebuild"] == f"python -m vizpipe.report {sw}"
    assert ctx["alerts"] == [Alert("error", "Job 3_j failed: ", "see its run.log")]
    assert ctx["key_columns"] == ["score ↑"] and ctx["overrides_head"] == "Swept overrides"
    assert ctx["nav"] == [
        ("header", "Sweep"),
        ("jobs", "Jobs"),
        ("grids", "Comparison grids"),
        ("leaderboard", "Leaderboard"),
    ]
    assert ctx["jobs"][0] == {
        "num": "0",
        "overrides": ["cam.layer=l1", "seed=0"],
        "status": "ok",
        "seconds": 1.0,
        "error": "",
        "reports": [("report.html", "0_j/report.html")],
        "numbers": ["0.5"],
    }
    assert [r["numbers"] for r in ctx["jobs"]] == [["0.5"], ["0.9"], ["–"], ["0.7"]]
    assert ctx["jobs"][3]["reports"] == [] and ctx["shards"] == []


def test_sweep_grid_cells(tmp_path: Path) -> None:
    """Rows over the layer key, columns over seed; each cell has the job's thumbnail and numbers."""
    sw = _sweep(tmp_path)
    g = W.sweep_context(J.collect_sweep(sw))["grid"]
    assert (g["row_key"], g["col_key"], g["facet_keys"]) == ("cam.layer", "seed", [])
    assert len(g["grids"]) == 1 and g["grids"][0]["title"] == ""
    grid = g["grids"][0]
    assert grid["head"] == ["cam.layer", "seed=0", "seed=1"]
    assert [r[0] for r in grid["rows"]] == ["l1", "l2"]
    names = [[[c["name"] for c in cell] for cell in row[1]] for row in grid["rows"]]
    assert names == [[["0_j"], ["1_j"]], [["2_j"], ["3_j"]]]
    cell = grid["rows"][0][1][0][0]
    assert cell["status"] == "ok" and cell["error"] == "" and cell["report"] == "0_j/report.html"
    assert cell["scalars"] == [("score", "0.5")]
    pic = cell["pictures"][0]
    assert pic.path == "0_j/cam/0.png" and pic.caption == "c0" and pic.alt == "0_j: c0"
    assert pic.src.startswith("data:image/png;base64,") and pic.problem is None
    assert grid["rows"][1][1][1][0]["report"] is None


def test_sweep_leaderboard(tmp_path: Path) -> None:
    """Ranked by the key scalar (a shared value never leads, nor is it a column: it is named above
    the table); jobs without it last with a dash; each number's rank; the winner; maps linked."""
    sw = _sweep(tmp_path)
    lb = W.sweep_context(J.collect_sweep(sw))["leaderboard"]
    assert lb["primary"] == "score" and lb["better"] == "higher"
    assert lb["head"] == ["cam.layer", "seed", "score ↑"] and lb["shared"] == ["same 1"]
    assert [(r["rank"], r["name"], r["params"], r["numbers"], r["ranks"]) for r in lb["rows"]] == [
        ("1", "1_j", ["l1", "1"], ["0.9"], [1]),
        ("2", "3_j", ["l2", "1"], ["0.7"], [2]),
        ("3", "0_j", ["l1", "0"], ["0.5"], [3]),
        ("–", "2_j", ["l2", "0"], ["–"], [None]),  # its number is not finite: last, with a dash
    ]
    assert lb["unranked"] == []
    assert lb["rows"][0]["report"] == "1_j/report.html" and lb["rows"][1]["status"] == "failed"
    assert lb["winners"] == [
        {
            "name": "score",
            "arrow": "↑",
            "value": "0.9",
            "jobs": ["cam.layer=l1, seed=1"],
            "hrefs": [lb["rows"][0]["maps"]],
        }
    ]


@pytest.mark.parametrize("better", ["higher", "lower"])
def test_leaderboard_direction_and_choice(tmp_path: Path, better: str) -> None:
    """'lower' ranks ascending; without key scalars, the differing one most jobs have wins."""
    sw = tmp_path / "s"
    vals = [3.0, 1.0, 2.0]
    for i, v in enumerate(vals):
        rs = StageResult(
            "t",
            scalars=[
                Scalar("flat", 5.0, better="higher"),
                Scalar("loss", v, better=better),
                *([Scalar("rare", float(i), better="higher")] if i == 0 else []),
            ],
        )
        job(sw, f"{i}_j", [f"x={i}"], results=[rs])
    lb = W._leaderboard(J.collect_sweep(sw))
    assert lb["primary"] == "loss" and lb["better"] == better
    order = [r["name"] for r in lb["rows"]]
    assert order == (["0_j", "2_j", "1_j"] if better == "higher" else ["1_j", "2_j", "0_j"])
    assert lb["head"] == ["x", f"loss {W.ARROWS[better]}", "rare ↑"] and lb["shared"] == ["flat 5"]
    assert W._leaderboard(J.SweepData(sw, [], [], [])) == {"primary": None}


def test_grids_facets_and_image_groups(tmp_path: Path) -> None:
    """A third swept key makes one grid per value; several preview groups one grid per group."""
    sw = tmp_path / "s"
    i = 0
    for a in ("1", "2"):
        for b in ("p", "q"):
            for c in ("u", "v"):
                res = StageResult(
                    "cam",
                    pictures=[
                        Picture("g.png", "G", preview=True, group="g1"),
                        Picture("h.png", "H", preview=True, group="g2"),
                        Picture("all.png", "all", preview=True, badge="invalid"),
                    ],
                )
                job(sw, f"{i}_j", [f"a={a}", f"b={b}", f"c={c}"], results=[res])
                i += 1
    g = W.sweep_context(J.collect_sweep(sw))["grid"]
    assert (g["row_key"], g["col_key"], g["facet_keys"]) == ("a", "b", ["c"])
    assert [x["title"] for x in g["grids"]] == [
        "image g1, c=u",
        "image g1, c=v",
        "image g2, c=u",
        "image g2, c=v",
    ]
    cell = g["grids"][0]["rows"][0][1][0][0]
    assert [p.path for p in cell["pictures"]] == ["0_j/g.png", "0_j/all.png"]
    assert cell["pictures"][0].problem == "missing picture: g.png"
    assert cell["pictures"][1].badge == "invalid" and cell["pictures"][0].badge is None
    assert g["grids"][0]["head"] == ["a", "b=p", "b=q"]


def test_grid_without_swept_keys_and_unset_values(tmp_path: Path) -> None:
    """Nothing swept: one row per job; a job lacking the key shows '(unset)'; errors cut at 300."""
    one = tmp_path / "one"
    job(one, "0_j", ["a=1"], results=[StageResult("t", pictures=[Picture("p.png", "P")])])
    ctx = W.sweep_context(J.collect_sweep(one))
    grid = ctx["grid"]["grids"][0]
    assert grid["head"] == ["job", "result"] and grid["rows"][0][0] == "0_j"
    assert grid["rows"][0][1][0][0]["pictures"][0].path == "0_j/p.png"
    assert (
        ctx["overrides_head"] == "Overrides"
        and ctx["jobs"][0]["overrides"] == ["a=1"]
        and ctx["status"] == "ok"
    )
    assert ctx["command"] == "–" and ctx["leaderboard"] == {"primary": None}
    two = tmp_path / "two"
    job(two, "0_j", ["a=1"])
    f = job(two, "1_j", [], status="failed")
    doc = json.loads((f / "manifest.json").read_text())
    doc["setup"] = {"name": "setup", "status": "failed", "error": "e" * 400}
    (f / "manifest.json").write_text(json.dumps(doc))
    ctx = W.sweep_context(J.collect_sweep(two))
    grid = ctx["grid"]["grids"][0]
    assert grid["head"] == ["a", "result"] and [r[0] for r in grid["rows"]] == ["1", "(unset)"]
    err = grid["rows"][1][1][0][0]["error"]
    assert err == ("setup: " + "e" * 400)[:300] + "…"
    assert ctx["alerts"][0] == Alert("error", "Job 1_j failed: ", "setup: " + "e" * 400)
    assert W._unset(None) == "(unset)" and W._unset("x") == "x"
    cut = J.JobData("j", 0, [], {}, "failed", error="e" * 300)
    assert W._job_cell(cut, None, tmp_path, [])["error"] == "e" * 300
    cut.error = "e" * 301
    assert W._job_cell(cut, None, tmp_path, [])["error"] == "e" * 300 + "…"


def test_sweep_status_running_unknown_and_problems(tmp_path: Path) -> None:
    """All ok -> ok; a running job is no alert; unknown status -> unknown; job problems are warnings."""
    sw = tmp_path / "s"
    job(sw, "0_j", ["a=1"], status="running")
    job(sw, "1_j", ["a=2"])
    ctx = W.sweep_context(J.collect_sweep(sw))
    assert ctx["status"] == "unknown" and ctx["alerts"] == []
    f = sw / "0_j"
    doc = json.loads((f / "manifest.json").read_text())
    doc["status"] = "ok"
    doc["stages"] = [{"name": "cam", "result": {"scalars": [{"name": "x", "key": True, "bogus": 1}]}}]
    (f / "manifest.json").write_text(json.dumps(doc))
    ctx = W.sweep_context(J.collect_sweep(sw))
    assert ctx["status"] == "ok"
    assert [a.level for a in ctx["alerts"]] == ["warning"]
    assert ctx["alerts"][0].text.startswith("0_j: unreadable result of stage cam: ")
    empty = tmp_path / "e"
    empty.mkdir()
    ctx = W.sweep_context(J.collect_sweep(empty))
    assert ctx["status"] == "unknown" and ctx["started"] == "–" and ctx["common"] == []


def test_sweep_shards_section_and_index_file(tmp_path: Path) -> None:
    """Sharded jobs add the merged-shards section; the index file shows the shards and merged numbers."""
    sw = tmp_path / "s"
    spec = Merge(keys=[0], weight=1, means=[2])
    for i, (n, acc) in enumerate([(2, 0.5), (2, 1.0)]):
        t = Table("per class", ["cls", "n", "acc"], [["a", n, acc]], merge=spec)
        job(sw, f"{i}_j", ["m=x", f"input.shard={i}/2"], results=[StageResult("cam", tables=[t])])
    ctx = W.sweep_context(J.collect_sweep(sw))
    assert ("shards", "Merged shards") in ctx["nav"] and ctx["nav"].index(("shards", "Merged shards")) == 2
    (sh,) = ctx["shards"]
    assert (sh["params"], sh["shards"], sh["ok"], sh["missing"]) == (["m=x"], 2, 2, [])
    (tv,) = sh["tables"]
    assert isinstance(tv, TableView) and [[c.text for c in r] for r in tv.rows] == [
        ["a", "4", "0.75"],
        ["all", "4", "0.75"],
    ]
    path = write_sweep_index(sw)
    assert path == sw / "index.html"
    text = path.read_text()
    assert "<code>input.shard=0/2</code>" in text and "<code>input.shard=1/2</code>" in text
    assert '<a href="#shards">Merged shards</a>' in text and "<td>0.75</td>" in text


def test_leaderboard_nan_and_plain_key_columns(tmp_path: Path) -> None:
    """A NaN score ranks last with a dash; a key number without a direction has no arrow."""
    sw = tmp_path / "s"
    for i, v in enumerate([1.0, float("nan"), 3.0]):
        rs = StageResult(
            "t", scalars=[Scalar("loss", v, key=True, better="lower"), Scalar("k", 7.0, key=True)]
        )
        job(sw, f"{i}_j", [f"x={i}"], results=[rs])
    ctx = W.sweep_context(J.collect_sweep(sw))
    assert ctx["key_columns"] == ["loss ↓", "k"]
    rows = ctx["leaderboard"]["rows"]
    assert [(r["rank"], r["name"]) for r in rows] == [("1", "0_j"), ("2", "2_j"), ("–", "1_j")]
    assert ctx["leaderboard"]["head"] == ["x", "loss ↓"]


def test_shard_tables_with_other_columns_are_not_merged() -> None:
    """Only tables with the first table's columns and spec are merged together."""
    t1 = _t([[0, "a", 2, 1, 0.5, ""]])
    odd = Table("per class", ["idx"], [[0]], merge=Merge(keys=[0], weight=0))
    jobs = [_jd("0", ["input.shard=0/2"], tables=[t1]), _jd("1", ["input.shard=1/2"], tables=[odd])]
    (g,) = M.shard_groups(jobs, ["input.shard"])
    assert g.ok == 2 and len(g.tables) == 1
    assert g.tables[0].caption.startswith("Merged over 1 shard(s): ")


def test_sweep_table_common_order_num_and_error(tmp_path: Path) -> None:
    """Common overrides in the first job's order; unnumbered jobs show a dash; errors in the table."""
    sw = tmp_path / "s"
    job(sw, "0_j", ["a=1", "m=x", "n=y"])
    job(
        sw, "1_j", ["n=y", "m=x", "a=2"], status="failed", results=[StageResult("cam")], stage_status="failed"
    )
    job(sw, "extra", ["m=x", "n=y", "a=3"])
    ctx = W.sweep_context(J.collect_sweep(sw))
    assert ctx["common"] == ["m=x", "n=y"]
    assert [r["num"] for r in ctx["jobs"]] == ["0", "1", "–"]
    assert [r["error"] for r in ctx["jobs"]] == ["", "cam: bad", ""]
    assert [r["overrides"] for r in ctx["jobs"]] == [["a=1"], ["a=2"], ["a=3"]]
    assert ctx["counts"] == [("failed", 1), ("ok", 2)]
    assert ctx["alerts"] == [Alert("error", "Job 1_j failed: ", "cam: bad")]


def test_leaderboard_prefers_a_differing_number_over_a_shared_one(tmp_path: Path) -> None:
    """A number shared by every job never leads, even when it is in more jobs; 0.0 ranks as zero."""
    sw = tmp_path / "s"
    job(sw, "0_j", ["x=0"], results=[StageResult("t", scalars=[Scalar("flat", 1.0, better="higher")])])
    job(sw, "1_j", ["x=1"], results=[StageResult("t", scalars=[Scalar("flat", 1.0, better="higher")])])
    lb = W._leaderboard(J.collect_sweep(sw))
    assert lb["primary"] == "flat"
    job(sw, "2_j", ["x=2"], results=[StageResult("t", scalars=[Scalar("solo", 0.5, better="lower")])])
    lb = W._leaderboard(J.collect_sweep(sw))
    assert lb["primary"] == "solo" and lb["better"] == "lower"
    assert [(r["rank"], r["name"]) for r in lb["rows"]] == [("1", "2_j"), ("–", "0_j"), ("–", "1_j")]
    sw2 = tmp_path / "t"
    for i, v in enumerate([0.5, 0.0, -0.25]):
        job(
            sw2,
            f"{i}_j",
            [f"x={i}", "y=1"],
            results=[StageResult("t", scalars=[Scalar("l", v, better="lower")])],
        )
    job(sw2, "3_j", ["y=2"])
    lb = W._leaderboard(J.collect_sweep(sw2))
    assert [(r["rank"], r["name"], r["params"]) for r in lb["rows"]] == [
        ("1", "2_j", ["2", "1"]),
        ("2", "1_j", ["1", "1"]),
        ("3", "0_j", ["0", "1"]),
    ]
    assert lb["rows"][1]["numbers"] == ["0"] and [name for name, _ in lb["unranked"]] == ["3_j"]


def test_grid_empty_cells(tmp_path: Path) -> None:
    """A row/column pair no job ran is an empty cell; rows and columns keep first-seen order."""
    sw = tmp_path / "s"
    for i, (a, b) in enumerate([("1", "x"), ("1", "y"), ("2", "x")]):
        job(sw, f"{i}_j", [f"a={a}", f"b={b}"])
    grid = W.sweep_context(J.collect_sweep(sw))["grid"]["grids"][0]
    assert grid["head"] == ["a", "b=x", "b=y"]
    assert [(r[0], [[c["name"] for c in cell] for cell in r[1]]) for r in grid["rows"]] == [
        ("1", [["0_j"], ["1_j"]]),
        ("2", [["2_j"], []]),
    ]
