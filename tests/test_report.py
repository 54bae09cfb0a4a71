"""Run reports and sweep indexes, built from fake run folders whose manifests carry StageResults.

The fake runs hold real PNG files (each one its own colour) and a manifest whose stage records
carry ``StageResult`` records, as the runner writes them. The tests parse the HTML and compare
every embedded picture's pixels with its file, so a dropped section, a lost picture, an
off-by-one in the picture cap or an unescaped string fails.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from vizpipe.pipeline import report as rp
from vizpipe.pipeline.schema import ReportConfig
from vizpipe.pipeline.stage import Picture, Scalar, StageResult, Table, Text

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
    before = registry.stage_classes().get("cam")
    registry.register(module.FragmentStage)
    try:
        yield folder
    finally:
        registry.unregister("cam")
        if before is not None:
            registry.register(before)


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
