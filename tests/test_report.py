"""Run reports and sweep indexes, built from fake run folders whose manifests carry StageResults.

The fake runs hold real PNG files (each one its own colour) and a manifest whose stage records
carry ``StageResult`` records, as the runner writes them. The tests parse the HTML and compare
every embedded picture's pixels with its file, so a dropped section, a lost picture, an
off-by-one in the picture cap or an unescaped string fails.

Run reports: ``pipeline/report`` collect/context/sections/templating/common on synthetic run
folders."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vizpipe.pipeline import report as rp
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

# ---- Run reports and sweep indexes, built from fake run folders whose manifests carry
# StageResults.
ROOT = Path(__file__).resolve().parent.parent
EVIL_LAYER = "<script>alert(1)</script>\"&'"
EVIL_CLASS = '"cat" & <b onmouseover="x">dog</b>'
EVIL_ERROR = "Unknown layer '<img src=x onerror=alert(2)>' | & friends"
EVIL_OVERRIDE = "notes='<i>hi</i>'"
STAGES = ["summary", "kernels", "cam", "features", "tensorboard"]  # manifest order, not sorted


def esc(text: str) -> str:
    """``text`` as jinja2's autoescape writes it into HTML."""
    from markupsafe import escape

    return str(escape(text))


# =========================================================================== fake runs


def png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> None:
    """A PNG of one colour, with one odd pixel so that pixel comparisons see the layout too."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, color)
    im.putpixel((1, 2), (color[2], color[0], color[1]))
    im.save(path)


_colors = iter((i * 37 % 256, i * 91 % 256, i * 53 % 256) for i in range(1, 1 << 20))


def pic(run: Path, rel: str, size: tuple[int, int] = (24, 16), **kw: object) -> Picture:
    """A ``Picture`` whose file exists under ``run`` with a colour of its own."""
    png(run / rel, next(_colors), size)
    return Picture(rel, **kw)  # type: ignore[arg-type]


def record(
    run: Path, name: str, result: StageResult | None, status: str = "ok", error: str | None = None
) -> dict:
    """A manifest stage record: artifacts are the files under ``<run>/<name>/``."""
    folder = run / name
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    arts = [
        {
            "path": p.relative_to(run).as_posix(),
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in files
    ]
    return {
        "name": name,
        "title": f"Title of {name}",
        "status": status,
        "seconds": 0.25,
        "error": error,
        "error_type": "ConfigError" if error else None,
        "artifacts": arts,
        "result": None if result is None else result.to_dict(),
    }


def write_manifest(run: Path, stages: list[dict], status: str = "ok", **extra: object) -> Path:
    """``manifest.json`` with the given stage records (other keys as the runner writes them)."""
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text(f'- model=tiny\n- "{EVIL_OVERRIDE}"\n')
    manifest = {
        "vizpipe": "0.1.0",
        "run_dir": str(run),
        "created": "2024-05-06T07:08:09+0000",
        "command": ["python", "run.py", "model=tiny", EVIL_OVERRIDE],
        "overrides": ["model=tiny", EVIL_OVERRIDE],
        "seed": 7,
        "model": "tiny",
        "weights": None,
        "input": {"kind": "image", "path": "inputs/photo.jpg"},
        "device": "cpu",
        "versions": {"python": "3.11", "torch": "2.3.0", "grad-cam": None},
        "git": {"commit": "abc123def4567890", "dirty": True},
        "config": {
            "seed": 7,
            "notes": "<i>hi</i>",
            "input": {"kind": "image", "shape": [1, 3, 32, 32]},
            "model": {"name": "tiny", "checkpoint": "ck.pt"},
            "report": {"max_images": 64},
        },
        "warnings": ["Model has <NaN> values"],
        "provenance": {
            "inputs": [{"path": "inputs/photo.jpg", "sha256": "f" * 64, "bytes": 10}],
            "checkpoint": {"path": "ck.pt", "sha256": "c" * 64, "bytes": 99},
        },
        "status": status,
        "seconds": 4.2,
        "setup": {
            "name": "setup",
            "status": "ok",
            "seconds": 0.1,
            "error": None,
            "error_type": None,
            "artifacts": [],
        },
        "stages": stages,
        "report": {
            "name": "report",
            "status": "running",
            "seconds": None,
            "error": None,
            "error_type": None,
            "artifacts": [],
        },
        **extra,
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run


def make_fake_run(run: Path, *, per_group: int = 3, score: float = 0.5, better: str = "higher") -> Path:
    """Five stages: summary (texts, kv table, key number), kernels (wide pictures, links, code),
    cam (two groups of ``per_group`` pictures with tables, a badge, a warning, key numbers),
    features (failed, no result), tensorboard (skipped, no result)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary").mkdir()
    (run / "summary" / "summary.txt").write_text("TORCHINFO-TABLE\n")
    summary = StageResult(
        "summary",
        summary="1,234 parameters in 3 layers",
        tables=[
            Table("Totals", ["What", "Value"], [["Total params", 1234567], ["Mult-adds", 2.5e9]], kv=True)
        ],
        texts=[
            Text("torchinfo table", "TORCHINFO-TABLE\nConv2d: 1-1   [1, 8, 30, 30]   224"),
            Text("Notes shown open", "OPEN-TEXT <u>not markup</u>", pre=False, open=True),
        ],
        scalars=[Scalar("summary/params", 1234567, key=True), Scalar("summary/hidden", 3.0)],
        files=["summary/summary.txt"],
    )
    (run / "kernels").mkdir()
    (run / "kernels" / "conv.npy").write_bytes(b"npy")
    kernels = StageResult(
        "kernels",
        pictures=[
            pic(run, "kernels/conv.png", (120, 40), caption=f"{EVIL_LAYER} 8×3×3×3", wide=True),
            pic(run, "kernels/conv_rgb.png", (30, 10), caption="as RGB filters", wide=True),
        ],
        tables=[
            Table(
                "Layers",
                ["Layer", "Weight shape", "max |w|", "Data"],
                [[EVIL_LAYER, "8×3×3×3", 0.5, "kernels/conv.npy"], ["fc", "10×8", None, None]],
                code=[0],
                links=[3],
                caption="from kernels/stats.json",
            )
        ],
    )
    cam_pics, cam_tables = [], []
    for g in ("img0", "img1"):
        cam_tables.append(
            Table(
                "Top-5",
                ["Rank", "Class", "Probability"],
                [[1, EVIL_CLASS, "61.00%"], [2, "dog", "20.00%"]],
                group=g,
            )
        )
        for i in range(per_group):
            cam_pics.append(
                pic(
                    run,
                    f"cam/{g}__{i}.png",
                    caption=f"{g} map {i} {EVIL_LAYER}",
                    group=g,
                    badge="invalid" if (g, i) == ("img1", 0) else None,
                    preview=i == 0,
                )
            )
    cam = StageResult(
        "cam",
        summary="GradCAM on 1 layer, 2 images",
        params={"method": "gradcam", "layer": EVIL_LAYER},
        pictures=cam_pics,
        tables=cam_tables,
        texts=[Text("cam.json", '{"method": "gradcam"}', group="img0")],
        scalars=[
            Scalar("cam/score", score, key=True, better=better),
            Scalar("cam/road", -score, key=True, better="lower" if better == "higher" else "higher"),
        ],
        warnings=[f"Layer {EVIL_LAYER} has <no> gradient"],
    )
    stages = [
        record(run, "summary", summary),
        record(run, "kernels", kernels),
        record(run, "cam", cam),
        record(run, "features", None, "failed", EVIL_ERROR),
        record(run, "tensorboard", None, "skipped"),
    ]
    return write_manifest(run, stages, status="failed")


def results(run: Path) -> dict[str, StageResult | None]:
    m = json.loads((run / "manifest.json").read_text())
    return {r["name"]: StageResult.from_dict(r["result"]) if r["result"] else None for r in m["stages"]}


# =========================================================================== parsing


class Page(HTMLParser):
    """Sections (id -> html text), <img> attributes per section, tags, visible text outside <details>."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.sections = re.findall(r'<section id="([^"]*)" data-section="\1">', text)
        self.section_html = dict(
            re.findall(r'<section id="([^"]*)" data-section="\1">(.*?)</section>', text, flags=re.S)
        )
        self.imgs: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.visible: list[str] = []
        self._details = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "details":
            self._details += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self._details -= 1

    def handle_data(self, data: str) -> None:
        if self._details == 0:
            self.visible.append(data)

    def visible_text(self) -> str:
        return " ".join(self.visible)

    def section(self, sid: str) -> Page:
        return Page(self.section_html[sid])


def pixels(data: bytes) -> tuple[tuple[int, int], bytes]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size, im.convert("RGB").tobytes()


def decode(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1])


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    return make_fake_run(tmp_path / "run")


def write(run: Path, **settings: object) -> Page:
    rp.write_run_report(run, ReportConfig(**settings))  # type: ignore[arg-type]
    return Page((run / "report.html").read_text(encoding="utf-8"))


# =========================================================================== run report: sections


def test_every_stage_section_in_manifest_order(fake_run: Path) -> None:
    page = write(fake_run)
    assert page.sections == ["header", *STAGES, "provenance", "manifest"]
    for name in STAGES:
        sec = page.section(name)
        h2 = re.search(r"<h2>(.*?) <span", sec.text).group(1)
        assert h2 == f"Title of {name}"  # the record's title
        assert f'<a href="#{name}">Title of {name}</a>' in page.text  # in the navigation
        assert f"<code>{name}/</code>" in sec.text and "0.25\u00a0s" in sec.text


def test_title_falls_back_to_the_stage_name(fake_run: Path) -> None:
    m = json.loads((fake_run / "manifest.json").read_text())
    del m["stages"][0]["title"]
    (fake_run / "manifest.json").write_text(json.dumps(m))
    assert re.search(r"<h2>summary <span", write(fake_run).section_html["summary"])


def test_every_picture_embedded_once_with_its_pixels(fake_run: Path) -> None:
    page = write(fake_run, max_images=0)
    expected = {name: [p.path for p in r.pictures] if r else [] for name, r in results(fake_run).items()}
    assert sum(len(v) for v in expected.values()) == 8
    for name, paths in expected.items():
        imgs = page.section(name).imgs
        assert [i["data-path"] for i in imgs] == paths, name  # each once, in record order
        for i in imgs:
            assert pixels(decode(i["src"])) == pixels((fake_run / i["data-path"]).read_bytes()), i[
                "data-path"
            ]
    assert len(page.imgs) == 8  # nothing outside the stage sections
    assert not re.search(r'src="(?!data:)', page.text)  # self-contained


def test_captions_badges_and_wide_pictures(fake_run: Path) -> None:
    page = write(fake_run)
    cam = page.section("cam").text
    figures = re.findall(r'<figure><img [^>]*data-path="([^"]+)"><figcaption>(.*?)</figcaption>', cam)
    caps = dict(figures)
    assert caps["cam/img0__1.png"] == f"img0 map 1 {esc(EVIL_LAYER)}"
    assert caps["cam/img1__0.png"].endswith('<span class="badge invalid">invalid</span>')
    assert sum("badge invalid" in c for c in caps.values()) == 1
    kernels = page.section("kernels").text
    assert kernels.count('<div class="gallery wide">') == 1 and cam.count('<div class="gallery">') == 2
    assert "image-rendering:pixelated" in page.text.split("</style>")[0]


@pytest.mark.parametrize("limit", [1, 2, 4, 5])
def test_picture_cap_shows_exactly_max_images(fake_run: Path, limit: int) -> None:
    page = write(fake_run, max_images=limit)
    cam = page.section("cam")
    order = [p.path for p in results(fake_run)["cam"].pictures]  # img0's three, then img1's three
    assert [i["data-path"] for i in cam.imgs] == order[:limit]
    more = len(order) - limit
    groups = " in 1 more groups" if limit < 3 else ""  # img1's pictures all past the limit: img1 left out
    assert (
        f"{more} more pictures{groups} not shown (report.max_images={limit}); they are in <code>cam/</code>"
        in cam.text
    )
    assert ("<h3>img1</h3>" in cam.text) == (limit >= 3)
    kernels = page.section("kernels")  # counted per section: 2 pictures
    assert len(kernels.imgs) == min(2, limit)
    assert ("more pictures not shown" in kernels.text) == (limit < 2)


def test_picture_cap_equal_to_the_count_shows_all_without_a_note(fake_run: Path) -> None:
    cam = write(fake_run, max_images=6).section("cam")
    assert len(cam.imgs) == 6 and "not shown" not in cam.text
    assert len(write(fake_run, max_images=0).section("cam").imgs) == 6


def test_picture_cap_counts_ungrouped_pictures_first(fake_run: Path) -> None:
    m = json.loads((fake_run / "manifest.json").read_text())
    extra = [pic(fake_run, f"cam/extra{i}.png", caption=f"extra {i}") for i in range(2)]
    m["stages"][2]["result"]["pictures"] += StageResult("cam", pictures=extra).to_dict()[
        "pictures"
    ]  # shown first
    (fake_run / "manifest.json").write_text(json.dumps(m))
    cam = write(fake_run, max_images=3).section("cam")
    assert [i["data-path"] for i in cam.imgs] == ["cam/extra0.png", "cam/extra1.png", "cam/img0__0.png"]
    assert "5 more pictures in 1 more groups not shown" in cam.text
    assert cam.text.index("extra1.png") < cam.text.index("<h3>img0</h3>")  # ungrouped before the groups


def test_groups_tables_left_pictures_right(fake_run: Path) -> None:
    cam = write(fake_run).section("cam").text
    assert re.findall(r"<h3>(.*?)</h3>", cam) == ["img0", "img1"]
    blocks = re.findall(r'<div class="columns"><div>(.*?)</div><div>(.*?)</div></div>', cam, flags=re.S)
    assert len(blocks) == 2
    for (left, right), g in zip(blocks, ("img0", "img1"), strict=True):
        assert "Top-5" in left and "<img" not in left
        assert re.findall(r'data-path="cam/(img\d)__', right) == [g] * 3
    assert "cam.json" in blocks[0][0] and "cam.json" not in blocks[1][0]  # a grouped text


def test_tables_cells_links_code_and_kv(fake_run: Path) -> None:
    page = write(fake_run)
    kernels = page.section("kernels").text
    rows = re.findall(r"<tr>(.*?)</tr>", kernels.split("<tbody>", 1)[1], flags=re.S)
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows]
    assert cells[0] == [
        f"<code>{esc(EVIL_LAYER)}</code>",
        "8×3×3×3",
        "0.5",
        '<a href="kernels/conv.npy">kernels/conv.npy</a>',
    ]
    assert cells[1] == ["<code>fc</code>", "10×8", "–", "–"]  # no link for an empty cell
    assert (fake_run / "kernels/conv.npy").is_file()
    assert "<th>max |w|</th>" in kernels and "from kernels/stats.json" in kernels
    summary = page.section("summary").text
    kv = summary[summary.index('<table class="kv">') :]
    kv = kv[: kv.index("</table>")]
    assert "<th>" not in kv and "<tr><td>Total params</td><td>1,234,567</td></tr>" in kv


def test_key_numbers_head_the_section(fake_run: Path) -> None:
    page = write(fake_run)
    cam = page.section("cam").text
    key = cam.index("Key numbers")
    assert key < cam.index("GradCAM on 1 layer") < cam.index("<h3>img0")
    assert "<tr><td><code>cam/score</code> ↑</td><td>0.5</td></tr>" in cam
    assert "<tr><td><code>cam/road</code> ↓</td><td>-0.5</td></tr>" in cam
    summary = page.section("summary").text
    assert "<code>summary/params</code></td><td>1,234,567</td>" in summary
    assert "summary/hidden" not in summary  # not a key number


def test_texts_fold_open_and_pre(fake_run: Path) -> None:
    page = write(fake_run)
    summary = page.section("summary")
    assert "<details><summary>torchinfo table</summary>\n<pre>TORCHINFO-TABLE" in summary.text
    assert "TORCHINFO-TABLE" not in summary.visible_text()  # folded
    assert '<details open><summary>Notes shown open</summary>\n<div class="text">OPEN-TEXT' in summary.text
    assert "1,234 parameters in 3 layers" in summary.visible_text()  # the summary paragraph


def test_hostile_strings_are_escaped_in_html(fake_run: Path) -> None:
    page = write(fake_run)
    allowed = {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "h1",
        "h2",
        "h3",
        "div",
        "nav",
        "a",
    }
    allowed |= {"main", "section", "table", "thead", "tbody", "tr", "th", "td", "code", "strong", "span", "p"}
    allowed |= {"pre", "details", "summary", "figure", "figcaption", "img", "footer", "br"}
    assert page.tags <= allowed
    for raw in (EVIL_LAYER, EVIL_CLASS, EVIL_ERROR, EVIL_OVERRIDE, "<i>hi</i>", "<u>not markup</u>"):
        assert raw not in page.text, raw
    assert esc(EVIL_LAYER) in page.section("cam").text
    assert esc(EVIL_CLASS) in page.section("cam").text
    assert "<script" not in page.text and "onerror=" not in page.text.replace("onerror=alert(2)&gt;", "")
    for img in page.imgs:  # attributes stay attributes
        assert set(img) == {"src", "alt", "title", "data-path"}


def test_failed_and_skipped_stages_and_warnings(fake_run: Path) -> None:
    page = write(fake_run)
    alerts = re.findall(r'<div class="alert (\w+)" role="alert">(.*?)</div>', page.text)
    failed = page.section("features").text
    assert 'class="badge failed"' in failed
    assert (
        f'<div class="alert error" role="alert"><strong>This stage failed: </strong>{esc(EVIL_ERROR)}'
        in failed
    )
    assert "<img" not in failed
    skipped = page.section("tensorboard").text
    assert 'class="badge skipped"' in skipped and "Skipped: an earlier step failed" in skipped
    cam = page.section("cam").text
    assert f"<strong>Warning: </strong>Layer {esc(EVIL_LAYER)} has &lt;no&gt; gradient" in cam
    header = page.section("header").text
    assert f"<strong>features failed: </strong>{esc(EVIL_ERROR)}" in header
    assert "Model has &lt;NaN&gt; values" in header
    assert ("error", f"<strong>features failed: </strong>{esc(EVIL_ERROR)}") in alerts
    assert 'class="badge failed"' in header  # the run's status


def test_interrupted_stage(fake_run: Path) -> None:
    m = json.loads((fake_run / "manifest.json").read_text())
    m["stages"][1]["status"] = "interrupted"
    (fake_run / "manifest.json").write_text(json.dumps(m))
    page = write(fake_run)
    assert "Interrupted (Ctrl-C)" in page.section("kernels").text
    assert "<strong>kernels was interrupted</strong>" in page.section("header").text
    assert len(page.section("kernels").imgs) == 2  # what it wrote is still shown


def test_header_provenance_and_manifest(fake_run: Path) -> None:
    page = write(fake_run)
    header = page.section("header").visible_text()
    for expected in (
        "tiny",
        "random init (seed 7) + checkpoint ck.pt",
        "image: inputs/photo.jpg",
        "cpu",
        "2024-05-06T07:08:09+0000",
        "0.1.0",
        "python run.py model=tiny",
        str(fake_run),
        "<i>hi</i>",  # the notes, as text
    ):
        assert expected in header, expected
    prov = page.section("provenance")
    visible = prov.visible_text()
    assert "f" * 64 in visible and "c" * 64 in visible and "checkpoint" in visible
    assert "abc123def4567890" in visible and "uncommitted changes" in visible
    assert "grad-cam" in visible and "not installed" in visible and "--config-path" in visible
    assert "<details open><summary>Resolved config</summary>" in prov.text
    assert "notes: &lt;i&gt;hi&lt;/i&gt;" in prov.text
    mf = page.section("manifest")
    steps = re.findall(r"<tr><td><code>(\w+)</code></td><td><span class=\"badge (\w+)\"", mf.text)
    assert steps == [
        ("setup", "ok"),
        ("summary", "ok"),
        ("kernels", "ok"),
        ("cam", "ok"),
        ("features", "failed"),
        ("tensorboard", "skipped"),
        ("report", "writing"),
    ]
    assert "(this report)" in mf.text
    assert "All 10 artifacts with sha256" in mf.text
    assert hashlib.sha256((fake_run / "cam/img0__0.png").read_bytes()).hexdigest() in mf.text


# =========================================================================== run report: Markdown, settings


def _outside_code(md: str) -> str:
    """Markdown without fenced blocks and code spans (where text is literal)."""
    md = re.sub(r"^(`{3,})text\n.*?\n\1$", "", md, flags=re.S | re.M)
    return re.sub(r"(`+).*?\1", "", md)


def test_markdown_links_every_shown_picture(fake_run: Path) -> None:
    rp.write_run_report(fake_run, ReportConfig(max_images=0))
    md = (fake_run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == [p.path for r in results(fake_run).values() if r for p in r.pictures]
    assert all((fake_run / link).is_file() for link in links)
    assert "data:" not in md
    assert "[kernels/conv.npy](kernels/conv.npy)" in md
    assert "img1 map 0" in md and "**INVALID**" in md
    assert [ln for ln in md.splitlines() if ln.startswith("## ")][1:6] == [
        f"## Title of {n} ({s})"
        for n, s in zip(STAGES, ["ok", "ok", "ok", "**FAILED**", "**skipped**"], strict=True)
    ]


def test_markdown_cap_and_escaping(fake_run: Path) -> None:
    rp.write_run_report(fake_run, ReportConfig(max_images=4))
    md = (fake_run / "report.md").read_text()
    cam = md[md.index('<a id="cam">') : md.index('<a id="features">')]
    assert len(re.findall(r"!\[", cam)) == 4 and "2 more pictures not shown (report.max\\_images=4)" in cam
    prose = _outside_code(md)
    for raw in ("<script", "<b ", "<img", "<i>", "<u>"):
        assert raw not in prose, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in prose and "&lt;img src=x onerror=alert(2)&gt;" in prose
    # Markdown tables keep their shape: a pipe inside a cell is escaped.
    line = next(ln for ln in md.splitlines() if ln.startswith("| `features`"))
    assert "\\| &amp; friends" in line and line.count(" | ") == 5
    assert "<details><summary>torchinfo table</summary>" in md and "TORCHINFO-TABLE" in md


def test_settings_select_outputs(fake_run: Path) -> None:
    path = rp.write_run_report(fake_run, ReportConfig(html=False, markdown=True))
    assert path == fake_run / "report.md" and not (fake_run / "report.html").exists()
    assert rp.write_run_report(fake_run, ReportConfig(markdown=False)) == fake_run / "report.html"
    with pytest.raises(Exception, match="both false"):
        rp.write_run_report(fake_run, ReportConfig(html=False, markdown=False))
    assert not list(fake_run.glob(".*.tmp"))  # atomic writes left no temp file


def test_recorded_settings_are_used(fake_run: Path) -> None:
    m = json.loads((fake_run / "manifest.json").read_text())
    m["config"]["report"] = {"max_images": 2, "markdown": False, "unknown_key": 1}
    (fake_run / "manifest.json").write_text(json.dumps(m))
    assert rp.write_run_report(fake_run) == fake_run / "report.html"
    assert not (fake_run / "report.md").exists()
    assert len(Page((fake_run / "report.html").read_text()).section("cam").imgs) == 2


# =========================================================================== run report: robustness


def test_picture_paths_cannot_leave_the_run_folder(fake_run: Path, tmp_path: Path) -> None:
    png(tmp_path / "secret.png", (1, 2, 3))
    m = json.loads((fake_run / "manifest.json").read_text())
    m["stages"][1]["result"]["pictures"][0]["path"] = "../secret.png"
    m["stages"][1]["result"]["pictures"][1]["path"] = "kernels/gone.png"
    (fake_run / "manifest.json").write_text(json.dumps(m))
    page = write(fake_run)
    kernels = page.section("kernels").text
    assert "missing picture: ../secret.png" in kernels and "missing picture: kernels/gone.png" in kernels
    assert page.section("kernels").imgs == []


def test_an_unreadable_result_costs_only_its_section(fake_run: Path) -> None:
    m = json.loads((fake_run / "manifest.json").read_text())
    m["stages"][1]["result"]["pictures"][0]["colour"] = "red"  # unknown key
    (fake_run / "manifest.json").write_text(json.dumps(m))
    page = write(fake_run)
    assert page.sections == ["header", *STAGES, "provenance", "manifest"]
    kernels = page.section("kernels").text
    assert "Could not read this stage&#39;s result: " in kernels and "colour" in kernels
    assert "Could not read the result of stage kernels" in page.section("header").text
    assert len(page.section("cam").imgs) == 6


def test_rebuild_without_manifest_shows_the_folders(fake_run: Path) -> None:
    (fake_run / "manifest.json").unlink()
    page = write(fake_run)
    assert "manifest.json is missing" in page.section("header").text
    assert page.sections == ["header", "cam", "kernels", "summary", "provenance", "manifest"]
    assert {i["data-path"] for i in page.section("cam").imgs} == {
        f"cam/img{g}__{i}.png" for g in (0, 1) for i in range(3)
    }


def test_unreadable_manifest(fake_run: Path) -> None:
    (fake_run / "manifest.json").write_text("{not json")
    page = write(fake_run)
    assert "Could not read run/manifest.json" in page.section("header").text


# =========================================================================== run report: stage fragments

FRAGMENT_MODULE = """
from vizpipe.pipeline.stage import Stage


class FragmentStage(Stage):
    name = "cam"
    title = "Fragment stage"
    template = "fragment.html.j2"

    def run(self, ctx, settings):
        raise NotImplementedError
"""

FRAGMENT = """{% import "_macros.html.j2" as m %}
<div class="fragment">FRAGMENT {{ result.summary }} / {{ record.status }} / {{ run.manifest.model }}
/ {{ result.params.layer }} / {{ result.scalars[0].value|num }}</div>
{% for p in section.pictures[:1] %}{{ m.figure(p) }}{% endfor %}
"""


@pytest.fixture
def fragment_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A throwaway stage class named "cam" whose module folder ships ``fragment.html.j2``."""
    import importlib.util

    from vizpipe.pipeline import registry

    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "fragment_stage.py").write_text(FRAGMENT_MODULE)
    (folder / "fragment.html.j2").write_text(FRAGMENT)
    spec = importlib.util.spec_from_file_location("vizpipe_test_fragment_stage", folder / "fragment_stage.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    before = dict(registry.stage_classes())  # the registry's order is the pipeline's: restored whole
    registry.register(module.FragmentStage)
    try:
        yield folder
    finally:
        registry.stage_classes().clear()
        registry.stage_classes().update(before)


def test_a_stage_fragment_replaces_the_generic_body(fake_run: Path, fragment_stage: Path) -> None:
    page = write(fake_run, max_images=2)
    cam = page.section("cam")
    assert "FRAGMENT GradCAM on 1 layer, 2 images / ok / tiny" in cam.text  # result, record, run
    assert f"/ {esc(EVIL_LAYER)} / 0.5" in cam.text  # autoescaped like the rest
    assert EVIL_LAYER not in page.text
    assert "<h3>img0</h3>" not in cam.text and "Key numbers" not in cam.text  # no generic body ...
    assert 'class="badge ok"' in cam.text and "Warning: " in cam.text  # ... but header and alerts
    assert [i["data-path"] for i in cam.imgs] == ["cam/img0__0.png"]  # embedded pictures via `section`
    assert pixels(decode(cam.imgs[0]["src"])) == pixels((fake_run / "cam/img0__0.png").read_bytes())
    assert "4 more pictures in 1 more groups not shown" in cam.text
    assert "<h3>img0</h3>" in (fake_run / "report.md").read_text().replace("### img0", "<h3>img0</h3>")
    assert len(page.section("kernels").imgs) == 2  # other stages stay generic


def test_a_broken_fragment_falls_back_to_the_generic_body(fake_run: Path, fragment_stage: Path) -> None:
    (fragment_stage / "fragment.html.j2").write_text("{{ result.no_such_field.x }}")
    cam = write(fake_run).section("cam")
    assert "The stage&#39;s report template failed" in cam.text and "fragment.html.j2" in cam.text
    assert "<h3>img0</h3>" in cam.text and len(cam.imgs) == 6


def test_discovery_failure_renders_generically(fake_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vizpipe.pipeline import registry
    from vizpipe.pipeline.errors import ConfigError

    def broken() -> dict:
        raise ConfigError("Two stages are named 'cam'")

    monkeypatch.setattr(registry, "stage_classes", broken)
    page = write(fake_run)
    assert page.sections == ["header", *STAGES, "provenance", "manifest"]
    assert len(page.section("cam").imgs) == 6


# =========================================================================== sweep index

LAYERS = {0: "layer3", 1: "layer3", 2: "layer4", 3: "layer4", 4: "layer5"}
METHODS = {0: "gradcam", 1: "scorecam", 2: "gradcam", 3: "scorecam", 4: "gradcam"}
SCORES = {0: 0.30, 1: 0.10, 2: 0.50}  # job 3 has no manifest, job 4 failed before its scalars


def job_name(num: int) -> str:
    return f"{num}_cam.layer={LAYERS[num]},cam.method={METHODS[num]}"


def make_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    stages: list[tuple[str, StageResult | None, str, str | None]],
) -> Path:
    """A job folder: overrides in ``.hydra`` and a manifest with (name, result, status, error) stages."""
    job = sweep / name
    job.mkdir(parents=True, exist_ok=True)
    records = [record(job, n, r, status, error) for n, r, status, error in stages]
    failed = any(s[2] == "failed" for s in stages)
    write_manifest(job, records, status="failed" if failed else "ok", overrides=overrides)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return job


def cam_result(job: Path, score: float | None, better: str = "higher") -> StageResult:
    """Per group img0/img1: one preview picture and one other; key numbers, one ranked both ways."""
    pictures = []
    for g in ("img0", "img1"):
        pictures.append(pic(job, f"cam/{g}__overlay.png", caption=f"overlay {g}", group=g, preview=True))
        pictures.append(pic(job, f"cam/{g}__heatmap.png", caption=f"heatmap {g}", group=g))
    scalars = [Scalar("summary/params", 1234.0, key=True)]
    if score is not None:
        scalars += [
            Scalar("cam/road_combined", score, key=True, better=better),
            Scalar("cam/drop", 1 - score, better="lower"),  # ranked, not key: a column, not the ranking
        ]
    return StageResult("cam", pictures=pictures, scalars=scalars)


def make_fake_sweep(sweep: Path, better: str = "higher") -> Path:
    """2 layers × 2 methods + 1: job 3 died without a manifest, job 4's cam stage failed."""
    for num in range(5):
        ov = ["stages=[summary,cam]", f"cam.layer={LAYERS[num]}", f"cam.method={METHODS[num]}"]
        if num == 3:  # no manifest at all: the job died early
            (sweep / job_name(num) / ".hydra").mkdir(parents=True)
            (sweep / job_name(num) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
            (sweep / job_name(num) / "run.log").write_text("ok line\n[x][HYDRA][ERROR] - killed by <OOM>\n")
            continue
        job = sweep / job_name(num)
        summary = StageResult("summary", pictures=[pic(job, "summary/graph.png", caption="graph")])
        if num == 4:
            stages = [("summary", summary, "ok", None), ("cam", None, "failed", EVIL_ERROR)]
        else:
            stages = [
                ("summary", summary, "ok", None),
                ("cam", cam_result(job, SCORES[num], better), "ok", None),
            ]
        make_job(sweep, job_name(num), ov, stages)
        (job / "report.html").write_text("a report")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - stages=[summary,cam]\n"
        "    - cam.layer=layer3,layer4,layer5\n    - cam.method=gradcam,scorecam\n"
    )
    return sweep


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    return make_fake_sweep(tmp_path / "sweep")


def index(sweep: Path) -> Page:
    return Page(rp.write_sweep_index(sweep).read_text(encoding="utf-8"))


def rows_of(section_html: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", section_html.split("<tbody>", 1)[1], flags=re.S)


def test_sweep_collects_jobs_and_swept_keys(fake_sweep: Path) -> None:
    from vizpipe.pipeline.report.sweep import grid_axes

    data = rp.collect_sweep(fake_sweep)
    assert [j.num for j in data.jobs] == [0, 1, 2, 3, 4]
    assert data.swept == ["cam.layer", "cam.method"]
    assert [j.status for j in data.jobs] == ["ok", "ok", "ok", "failed", "failed"]
    assert "no manifest.json" in data.jobs[3].error and "killed by <OOM>" in data.jobs[3].error
    assert EVIL_ERROR in data.jobs[4].error
    assert [p.path for p in data.jobs[0].previews] == ["cam/img0__overlay.png", "cam/img1__overlay.png"]
    assert data.jobs[4].previews == [] and data.jobs[4].first.path == "summary/graph.png"
    assert grid_axes(data.swept) == ("cam.layer", "cam.method", [])
    assert grid_axes(["cam.method", "seed", "cam.layer"]) == ("cam.layer", "cam.method", ["seed"])


def test_sweep_jobs_table(fake_sweep: Path) -> None:
    page = index(fake_sweep)
    assert page.sections == ["header", "jobs", "grids", "leaderboard"]
    jobs = page.section_html["jobs"]
    head = re.findall(r"<th>(.*?)</th>", jobs)
    assert head == [
        "#",
        "Swept overrides",
        "Status",
        "Time",
        "Error",
        "Report",
        "summary/params",
        "cam/road_combined ↑",
    ]
    rows = rows_of(jobs)
    assert len(rows) == 5
    cells = [re.findall(r"<td>(.*?)</td>", r, flags=re.S) for r in rows]
    assert [c[0] for c in cells] == ["0", "1", "2", "3", "4"]
    assert [re.search(r'class="badge (\w+)"', c[2]).group(1) for c in cells] == ["ok"] * 3 + ["failed"] * 2
    assert [c[7] for c in cells] == ["0.3", "0.1", "0.5", "–", "–"]  # the key number per job
    assert [c[6] for c in cells] == ["1,234", "1,234", "1,234", "–", "1,234"][:3] + ["–", "–"]
    for num in (0, 1, 2, 4):
        assert f'href="{job_name(num)}/report.html"' in rows[num]
        assert (fake_sweep / job_name(num) / "report.html").is_file()
    assert "no report" in rows[3] and "killed by &lt;OOM&gt;" in rows[3]
    assert esc(EVIL_ERROR) in rows[4] and EVIL_ERROR not in page.text
    header = page.section_html["header"]
    assert f"Job {job_name(3)} failed: " in header and f"Job {job_name(4)} failed: " in header
    assert "python run.py -m &#39;stages=[summary,cam]&#39; cam.layer=layer3,layer4,layer5" in header


def _grid_tables(grids: str) -> list[tuple[str, str]]:
    return re.findall(r"<h3>(.*?)</h3>\s*<table class=\"grid\">(.*?)</table>", grids, flags=re.S)


def test_sweep_grid_cells_hold_each_jobs_preview(fake_sweep: Path) -> None:
    page = index(fake_sweep)
    grids = _grid_tables(page.section_html["grids"])
    assert [t for t, _ in grids] == ["image img0", "image img1"]  # one grid per group
    for (_, table), g in zip(grids, ("img0", "img1"), strict=True):
        assert re.findall(r"<th>(.*?)</th>", table) == [
            "cam.layer",
            "cam.method=gradcam",
            "cam.method=scorecam",
        ]
        rows = rows_of(table)
        assert [re.search(r"<code>(.*?)</code>", r).group(1) for r in rows] == ["layer3", "layer4", "layer5"]
        cells = [re.findall(r"<td>(.*?)</td>", r, flags=re.S)[1:] for r in rows]
        expected = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3, (2, 0): 4}
        for (r, c), num in expected.items():
            cell = Page(cells[r][c])
            job = fake_sweep / job_name(num)
            if num in (0, 1, 2):
                assert [i["data-path"] for i in cell.imgs] == [f"{job.name}/cam/{g}__overlay.png"]
                src = decode(cell.imgs[0]["src"])
                assert pixels(src) == pixels((job / "cam" / f"{g}__overlay.png").read_bytes())
                assert (
                    f"overlay {g}" in cell.text
                    and f"cam/road_combined</code> {fmt(SCORES[num])}" in cell.text
                )
            elif num == 3:
                assert cell.imgs == [] and 'class="badge failed"' in cell.text
            else:  # failed, no preview: its first picture stands in
                assert [i["data-path"] for i in cell.imgs] == [f"{job.name}/summary/graph.png"]
                assert 'class="badge failed"' in cell.text and esc(EVIL_ERROR) in cell.text
        assert cells[2][1] == "–"  # no layer5 × scorecam job


def test_sweep_grids_facet_over_the_third_key(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    num = 0
    for seed in (0, 1):
        for layer in ("layer3", "layer4"):
            for method in ("gradcam", "scorecam"):
                job = sweep / f"{num}_{layer},{method},{seed}"
                result = StageResult("cam", pictures=[pic(job, "cam/o.png", caption=job.name, preview=True)])
                ov = [f"cam.method={method}", f"seed={seed}", f"cam.layer={layer}"]
                make_job(sweep, job.name, ov, [("cam", result, "ok", None)])
                num += 1
    grids = _grid_tables(index(sweep).section_html["grids"])
    assert [t for t, _ in grids] == ["seed=0", "seed=1"]
    for seed, (_, table) in enumerate(grids):
        assert re.findall(r"<th>(.*?)</th>", table) == [
            "cam.layer",
            "cam.method=gradcam",
            "cam.method=scorecam",
        ]
        for r, row in enumerate(rows_of(table)):
            cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)[1:]
            for c, cell in enumerate(cells):
                name = f"{seed * 4 + r * 2 + c}_{('layer3', 'layer4')[r]},{('gradcam', 'scorecam')[c]},{seed}"
                assert [i["data-path"] for i in Page(cell).imgs] == [f"{name}/cam/o.png"]


def fmt(value: float) -> str:
    return f"{value:.4g}"


@pytest.mark.parametrize("better", ["higher", "lower"])
def test_sweep_leaderboard_follows_better(tmp_path: Path, better: str) -> None:
    sweep = make_fake_sweep(tmp_path / "sweep", better=better)
    board = index(sweep).section_html["leaderboard"]
    assert f"Ranked by <code>cam/road_combined</code> ({better} is better)" in board
    arrow = "↑" if better == "higher" else "↓"
    assert re.findall(r"<th>(.*?)</th>", board) == [
        "Rank",
        "cam.layer",
        "cam.method",
        f"cam/road_combined {arrow}",
        "cam/drop ↓",
        "Status",
        "Job",
    ]
    table, winners = board.split("Best per number")  # the ranking, then the best job per number
    order = [
        (rank, re.search(r"(\d+)_cam", r).group(1))
        for r in rows_of(table)
        for rank in re.findall(r"^<td>(.*?)</td>", r)
    ]
    assert re.findall(r"<code>(cam/\w+)</code> [↑↓]</td>", winners) == ["cam/road_combined", "cam/drop"]
    ranked = ["2", "0", "1"] if better == "higher" else ["1", "0", "2"]  # scores 0.5, 0.3, 0.1
    assert order == [("1", ranked[0]), ("2", ranked[1]), ("3", ranked[2]), ("–", "3"), ("–", "4")]


def test_sweep_leaderboard_ranks_by_the_number_most_jobs_have(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    values = {0: (None, 3.0), 1: (9.0, 1.0), 2: (None, 2.0)}
    for num, (rare, common) in values.items():
        scalars = [Scalar("common", common, key=True, better="lower")]
        if rare is not None:
            scalars.append(Scalar("rare", rare, key=True, better="higher"))
        make_job(
            sweep,
            f"{num}_seed={num}",
            [f"seed={num}"],
            [("s", StageResult("s", scalars=scalars), "ok", None)],
        )
    board = index(sweep).section_html["leaderboard"]
    assert "Ranked by <code>common</code> (lower is better)" in board
    assert re.findall(r"<tr><td>(\d)</td><td>(\d)</td>", board) == [("1", "1"), ("2", "2"), ("3", "0")]


def test_sweep_without_ranked_numbers_says_how_to_get_one(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for num in range(2):
        result = StageResult("s", scalars=[Scalar("plain", 1.0, key=True)])
        make_job(sweep, f"{num}_seed={num}", [f"seed={num}"], [("s", result, "ok", None)])
    board = index(sweep).section_html["leaderboard"]
    assert "no ranking" in board and "<code>cam.metrics=[road_combined]</code>" in board
    assert "<table" not in board


def test_sweep_nothing_swept_one_cell_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for num in range(2):
        job = sweep / f"{num}_x"
        result = StageResult("s", pictures=[pic(job, "s/a.png", caption="only", preview=True)])
        make_job(sweep, job.name, ["model=tiny"], [("s", result, "ok", None)])
    page = index(sweep)
    grids = page.section_html["grids"]
    assert "Nothing was swept" in grids and len(rows_of(grids)) == 2
    assert [i["data-path"] for i in page.imgs] == ["0_x/s/a.png", "1_x/s/a.png"]


def test_sweep_thumbnails_are_small_and_cached(fake_sweep: Path) -> None:
    from vizpipe.pipeline.report.common import THUMB_PX, _thumbnail

    job = fake_sweep / job_name(0)
    png(job / "cam" / "img0__overlay.png", (9, 9, 9), (1000, 500))
    before = _thumbnail.cache_info()
    page = index(fake_sweep)
    src = next(i["src"] for i in page.imgs if i["data-path"] == f"{job.name}/cam/img0__overlay.png")
    assert pixels(decode(src))[0] == (THUMB_PX, THUMB_PX // 2)
    index(fake_sweep)  # rebuilt after the next job: every picture from the cache
    after = _thumbnail.cache_info()
    files = {i["data-path"] for i in page.imgs}  # job 4's stand-in picture is in both grids
    assert after.misses - before.misses == len(files) and after.hits - before.hits >= len(page.imgs)


def test_sweep_index_is_rebuilt_from_disk(fake_sweep: Path) -> None:
    first = rp.write_sweep_index(fake_sweep).read_text()
    (fake_sweep / "index.html").unlink()
    assert rp.write_sweep_index(fake_sweep).read_text() == first  # nothing but the folders
    ov = ["stages=[summary,cam]", "cam.layer=layer5", "cam.method=scorecam"]
    job = fake_sweep / "5_cam.layer=layer5,cam.method=scorecam"
    make_job(fake_sweep, job.name, ov, [("cam", cam_result(job, 0.9), "ok", None)])
    page = index(fake_sweep)
    assert len(rows_of(page.section_html["jobs"])) == 6
    board = rows_of(page.section_html["leaderboard"])
    assert board[0].startswith("<td>1</td><td>layer5</td><td>scorecam</td>")
    assert f"{job.name}/cam/img0__overlay.png" in {i["data-path"] for i in page.imgs}


def test_sweep_index_is_linear_in_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vizpipe.pipeline.report import jobs as jobs_module

    sweep = tmp_path / "sweep"
    template = make_job(
        sweep, "0_seed=0", ["seed=0"], [("cam", cam_result(sweep / "0_seed=0", 0.5), "ok", None)]
    )
    manifest = json.loads((template / "manifest.json").read_text())
    n = 150
    for num in range(1, n):  # copies: the same pictures' bytes, one manifest each
        job = sweep / f"{num}_seed={num}"
        (job / "cam").mkdir(parents=True)
        for p in (template / "cam").iterdir():
            (job / "cam" / p.name).write_bytes(p.read_bytes())
        manifest["overrides"] = [f"seed={num}"]
        manifest["stages"][0]["result"]["scalars"][1]["value"] = num / n
        (job / "manifest.json").write_text(json.dumps(manifest))
    reads = []
    real = jobs_module.read_json
    monkeypatch.setattr(
        jobs_module, "read_json", lambda path, problems: reads.append(path) or real(path, problems)
    )
    t0 = time.perf_counter()
    page = index(sweep)
    seconds = time.perf_counter() - t0
    assert len(reads) == n  # one manifest read per job, nothing else parsed
    assert len(rows_of(page.section_html["jobs"])) == n and len(page.imgs) == 2 * n
    assert seconds < 0.5 * n / 100, seconds  # well under a second per hundred jobs


# =========================================================================== CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m vizpipe.report ARGS`` from the project root (this checkout's package)."""
    return subprocess.run(
        [sys.executable, "-m", "vizpipe.pipeline.report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_rebuilds_a_run_report(fake_run: Path) -> None:
    proc = cli(str(fake_run))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"vizpipe: report {fake_run / 'report.html'}"
    page = Page((fake_run / "report.html").read_text())
    assert page.sections == ["header", *STAGES, "provenance", "manifest"] and len(page.imgs) == 8
    assert (fake_run / "report.md").is_file()


def test_cli_rebuilds_a_sweep_index_and_its_jobs(fake_sweep: Path) -> None:
    for r in fake_sweep.glob("*/report.html"):
        r.unlink()
    proc = cli(str(fake_sweep))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"vizpipe: report {fake_sweep / 'index.html'}"
    assert not list(fake_sweep.glob("*/report.html"))
    proc = cli(str(fake_sweep), "--jobs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("report.html") == 4 and len(list(fake_sweep.glob("*/report.html"))) == 4
    assert not (fake_sweep / job_name(3) / "report.html").exists()  # no manifest: no report
    jobs = Page((fake_sweep / "index.html").read_text()).section_html["jobs"]
    assert jobs.count('report.html">report.html</a>') == 4


def test_cli_rejects_a_folder_that_is_neither(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = cli(str(tmp_path / "empty"))
    assert proc.returncode == 2 and "neither a run folder" in proc.stderr
    proc = cli(str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_cli_failure_to_write_exits_1(fake_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vizpipe.pipeline.report.__main__ import main

    m = json.loads((fake_run / "manifest.json").read_text())
    m["config"]["report"] = {"html": False, "markdown": False}
    (fake_run / "manifest.json").write_text(json.dumps(m))
    assert main([str(fake_run)]) == 1
    assert "could not write the report" in capsys.readouterr().err


# =========================================================================== a real run's picture limit


@pytest.mark.slow
def test_report_max_images_is_the_only_limit_on_the_report(tmp_path: Path) -> None:
    """40 images through CAM: the record lists every image's maps (it listed the first 32 only, so
    report.max_images=0 or 200 still showed 32 images); report.max_images=0 shows all 40, a limit
    hides the rest (and the images past it) and says so; TensorBoard's tags and the sweep index's
    previews stay on the first 32 images, as the summary says."""
    from conftest import compose_config
    from vizpipe.pipeline.runner import run_pipeline
    from vizpipe.stages.cam.render import SAMPLE_IMAGES

    args = ["model=seed_net", "input=random", "input.shape=[40,3,32,32]", "input.limit=null", "stages=[cam]"]
    run = tmp_path / "run"
    assert run_pipeline(compose_config([*args, "report.max_images=0"]), run).ok
    m = json.loads((run / "manifest.json").read_text())
    record = m["stages"][0]["result"]
    assert record["summary"].endswith(
        "40 image(s), 40 map(s); TensorBoard and the sweep index get the first 32 images' maps "
        "(the report all, up to report.max_images; every map is in cam/)"
    )
    assert len(list(run.glob("cam/*/*_overlay.png"))) == 40
    listed = [p["path"] for p in record["pictures"]]
    assert len(listed) == 80  # an overlay and a heatmap per image, every image
    assert len([t for t in record["tables"] if t["title"] == "Top-5 predictions"]) == 40
    tagged = [p for p in record["pictures"] if p["tag"]]
    assert len(tagged) == SAMPLE_IMAGES == 32 and [p["path"] for p in tagged] == listed[:64:2]
    assert [p for p in record["pictures"] if p["preview"]] == tagged
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    assert [i["data-path"] for i in page.section("cam").imgs] == listed
    assert "not shown" not in page.section("cam").visible_text()
    rp.write_run_report(run, ReportConfig(max_images=10, markdown=False))
    cam = Page((run / "report.html").read_text(encoding="utf-8")).section("cam")
    assert [i["data-path"] for i in cam.imgs] == listed[:10]
    assert "70 more pictures in 35 more groups not shown (report.max_images=10)" in cam.visible_text()
    assert "cam/ (35 folders)" in cam.visible_text()
    assert cam.text.count("Top-5 predictions") == 5  # the images past the limit: their tables too


# ---- Run reports: ``pipeline/report`` collect/context/sections/templating/common on synthetic
# run folders.
def png_report(
    path: Path, color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (6, 4)
) -> bytes:
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
        png_report(run / rel)
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
    raw = png_report(tmp_path / "run" / "p.png")
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
    png_report(base / "big.png", size=(40, 20))
    png_report(base / "small.png", size=(8, 4))
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
    png_report(bare / "b" / "z.png")
    png_report(bare / "a" / "sub" / "y.PNG")
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
    png_report(tmp_path / "p.png", (1, 2, 3))
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
    png_report(base / "edge.png", size=(10, 7))
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
    png_report(base / "big.png", size=(30, 30))
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
