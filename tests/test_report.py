"""Run reports and sweep indexes: sections, embedded pictures, escaping, failures, rebuilds.

Most tests build run folders by hand in the stages' data contracts (real PNGs, real JSON), so they
are fast and pin the report's behaviour; the slow ones run the real pipeline and CLI.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from pipeline import report as rp
from pipeline import report_sweep as rs
from pipeline.schema import ReportConfig

EVIL_LAYER = 'blocks.<b onmouseover="x">0</b>'
EVIL_CLASS = '"cat" & <script>alert(1)</script>'
EVIL_ERROR = "Unknown layer '<img src=x onerror=alert(2)>' | & friends"
EVIL_OVERRIDE = "notes='<i>hi</i>'"


# --------------------------------------------------------------------------- fixtures


def _png(path: Path, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 30, 30)) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path.as_posix()


def _art(run: Path, rel: str) -> dict:
    p = run / rel
    return {
        "path": rel,
        "bytes": p.stat().st_size,
        "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
    }


def _rec(
    run: Path, name: str, status: str = "ok", error: str | None = None, folder: str | None = None
) -> dict:
    arts = []
    if folder and (run / folder).is_dir():
        arts = [
            _art(run, p.relative_to(run).as_posix()) for p in sorted((run / folder).rglob("*")) if p.is_file()
        ]
    return {
        "name": name,
        "status": status,
        "seconds": 0.25,
        "error": error,
        "error_type": "ConfigError" if error else None,
        "artifacts": arts,
    }


def make_fake_run(
    run: Path,
    *,
    cam_status: str = "failed",
    metrics: dict | None = None,
    layer: str = EVIL_LAYER,
    method: str = "GradCAM",
    score: float = 3.5,
) -> Path:
    """A run folder in the stages' data contracts: summary, kernels, features, cam, tensorboard."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary").mkdir()
    (run / "summary" / "summary.txt").write_text("TORCHINFO-TABLE\nConv2d: 1-1   [1, 8, 30, 30]   224\n")
    (run / "summary" / "modules.txt").write_text("TinyNet(\n  (conv): Conv2d(3, 8, kernel_size=(3, 3))\n)\n")
    (run / "summary" / "layers.txt").write_text("# name type\nconv Conv2d\n")
    totals = {
        "total_params": 1234567,
        "trainable_params": 1234000,
        "non_trainable_params": 567,
        "total_mult_adds": 2_500_000_000,
        "input_size_bytes": 600000,
        "params_size_bytes": 4938268,
        "forward_backward_size_bytes": 39750000,
        "total_size_bytes": 45288268,
    }
    (run / "summary" / "summary.json").write_text(
        json.dumps({"model": "tiny", "input_shape": [1, 3, 32, 32], "totals": totals, "layers": []})
    )
    _png(run / "kernels" / "conv.png", (120, 40), (10, 10, 220))
    _png(run / "kernels" / "conv_rgb.png", (20, 20), (10, 200, 10))
    (run / "kernels" / "stats.json").write_text(
        json.dumps(
            {
                "scale": "layer",
                "cmap": "bwr",
                "layers": {
                    layer: {
                        "shape": [8, 3, 3, 3],
                        "grid": "kernels/conv.png",
                        "rgb": "kernels/conv_rgb.png",
                        "vmax": 0.5,
                        "dead": 1,
                        "channels": [],
                    },
                },
            }
        )
    )
    _png(run / "features" / "conv__img0.png", (64, 64), (250, 200, 0))
    np.save(run / "features" / "conv.npy", np.arange(8, dtype=np.float32))
    (run / "features" / "stats.json").write_text(
        json.dumps(
            {
                "cmap": "viridis",
                "normalize": "channel",
                "select": "first",
                "layers": {
                    layer: {
                        "shape": [1, 8, 30, 30],
                        "npy": "features/conv.npy",
                        "grids": {"img0": "features/conv__img0.png"},
                        "channels_drawn": list(range(8)),
                        "mean": 0.5,
                        "max": 2.0,
                        "zero_fraction": 0.25,
                        "channels": [],
                    },
                },
            }
        )
    )
    _png(run / "cam" / "img0__overlay.png", (50, 50), (255, 0, 255))
    _png(run / "cam" / "img0__heatmap.png", (50, 50), (0, 255, 255))
    (run / "cam" / "cam.json").write_text(
        json.dumps(
            {
                "method": method,
                "method_key": method.lower(),
                "layers": [layer],
                "targets": None,
                "images": [
                    {
                        "name": "img0",
                        "source": "random",
                        "top5": [
                            {"class": 7, "name": EVIL_CLASS, "prob": 0.61},
                            {"class": 3, "name": "dog", "prob": 0.2},
                        ],
                        "maps": [
                            {
                                "layer": layer,
                                "target": 7,
                                "target_name": EVIL_CLASS,
                                "score": score,
                                "logit": score,
                                "overlay": "cam/img0__overlay.png",
                                "heatmap": "cam/img0__heatmap.png",
                                "npy": None,
                                "metrics": metrics or {},
                                "valid": True,
                            }
                        ],
                    }
                ],
            }
        )
    )
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"not really an event file")
    (run / "inputs").mkdir()
    (run / "inputs" / "photo.jpg").write_bytes(b"jpeg bytes")
    (run / ".hydra").mkdir()
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
            "model": {"name": "tiny", "checkpoint": "ck.pt"},
            "report": {"max_images": 64},
        },
        "warnings": ["Model has <NaN> values"],
        "provenance": {
            "inputs": [{"path": "inputs/photo.jpg", "sha256": "f" * 64, "bytes": 10}],
            "checkpoint": {"path": "ck.pt", "sha256": "c" * 64, "bytes": 99},
        },
        "status": "failed" if cam_status == "failed" else "ok",
        "seconds": 4.2,
        "setup": _rec(run, "setup"),
        "stages": [
            _rec(run, "summary", folder="summary"),
            _rec(run, "kernels", folder="kernels"),
            _rec(run, "features", folder="features"),
            _rec(run, "cam", cam_status, EVIL_ERROR if cam_status == "failed" else None, folder="cam"),
            _rec(
                run,
                "tensorboard",
                "skipped" if cam_status == "failed" else "ok",
                folder="tensorboard",
            ),
        ],
        "report": {
            "name": "report",
            "status": "pending",
            "seconds": None,
            "error": None,
            "error_type": None,
            "artifacts": [],
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run


class _Tree(HTMLParser):
    """Collects section ids, <img> srcs, and text found outside any <details>."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.depth_details = 0
        self.visible: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "details":
            self.depth_details += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.depth_details -= 1

    def handle_data(self, data: str) -> None:
        if self.depth_details == 0:
            self.visible.append(data)


def _parse(text: str) -> _Tree:
    t = _Tree()
    t.feed(text)
    return t


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    return make_fake_run(tmp_path / "run")


# --------------------------------------------------------------------------- run report


def test_sections_in_stage_order_and_header(fake_run: Path) -> None:
    path = rp.write_run_report(fake_run, ReportConfig())
    assert path == fake_run / "report.html"
    text = path.read_text()
    tree = _parse(text)
    assert tree.sections == [
        "header",
        "summary",
        "kernels",
        "features",
        "cam",
        "tensorboard",
        "provenance",
        "manifest",
    ]
    visible = " ".join(tree.visible)
    for expected in (
        "tiny",
        "random init (seed 7)",
        "cpu",
        "2024-05-06T07:08:09+0000",
        "0.1.0",
        "image: inputs/photo.jpg (batch 1×3×32×32)",
        "1,234,567",
        "2.500 G",
        "39.75 MB",
    ):
        assert expected in visible, expected
    assert "python run.py model=tiny" in visible  # the command
    assert "TORCHINFO-TABLE" in text and "TinyNet(" in text  # torchinfo table and print(model) ...
    assert "TORCHINFO-TABLE" not in visible and "TinyNet(" not in visible  # ... collapsed


def test_pictures_embedded_as_data_uris(fake_run: Path, tmp_path: Path) -> None:
    text = rp.write_run_report(fake_run, ReportConfig()).read_text()
    imgs = _parse(text).imgs
    by_path = {i["data-path"]: i["src"] for i in imgs}
    assert set(by_path) == {
        "kernels/conv.png",
        "kernels/conv_rgb.png",
        "features/conv__img0.png",
        "cam/img0__overlay.png",
        "cam/img0__heatmap.png",
    }
    for rel, src in by_path.items():
        assert src.startswith("data:image/png;base64,"), rel
        assert base64.b64decode(src.split(",", 1)[1]) == (fake_run / rel).read_bytes(), rel
    # Copied alone, the file needs nothing else: no relative src/href to a picture.
    alone = tmp_path / "elsewhere" / "report.html"
    alone.parent.mkdir()
    shutil.copy(fake_run / "report.html", alone)
    assert not re.search(r'src="(?!data:)', alone.read_text())


def test_everything_inserted_is_escaped(fake_run: Path) -> None:
    text = rp.write_run_report(fake_run, ReportConfig()).read_text()
    tree = _parse(text)
    # Only the report's own tags exist: nothing from the data became markup.
    assert tree.tags <= {
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
        "main",
        "section",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "code",
        "strong",
        "span",
        "p",
        "pre",
        "details",
        "summary",
        "figure",
        "figcaption",
        "img",
        "footer",
        "br",
    }
    for raw in (EVIL_LAYER, EVIL_CLASS, EVIL_ERROR, EVIL_OVERRIDE, "<i>hi</i>"):
        assert raw not in text, raw
        assert html.escape(raw) in text, raw
    assert "<script" not in text


def test_failed_stage_error_shown_never_hidden(fake_run: Path) -> None:
    text = rp.write_run_report(fake_run, ReportConfig()).read_text()
    visible = " ".join(_parse(text).visible)
    assert visible.count(EVIL_ERROR) >= 3  # header alert, cam section, manifest table
    cam = text[text.index('<section id="cam"') : text.index('<section id="tensorboard"')]
    assert 'class="badge failed"' in cam and 'class="alert error"' in cam
    tb = text[text.index('<section id="tensorboard"') : text.index('<section id="provenance"')]
    assert 'class="badge skipped"' in tb
    assert "tensorboard --logdir" in tb


def test_cam_predictions_and_provenance(fake_run: Path) -> None:
    text = rp.write_run_report(fake_run, ReportConfig()).read_text()
    visible = " ".join(_parse(text).visible)
    assert "61.00%" in visible and "20.00%" in visible  # top-5 probabilities
    assert "score 3.5" in visible and "GradCAM" in visible
    assert "f" * 64 in visible and "c" * 64 in visible  # sha256 of the input file and the checkpoint
    assert "abc123def4567890" in visible and "uncommitted changes" in visible
    assert "grad-cam" in visible and "not installed" in visible
    assert "model=tiny" in visible
    assert "Resolved config" in text and "notes: &lt;i&gt;hi&lt;/i&gt;" in text
    assert "--config-path" in visible  # how to re-run
    assert "Model has &lt;NaN&gt; values" in text  # warnings


def test_markdown_links_pictures_relatively(fake_run: Path) -> None:
    rp.write_run_report(fake_run, ReportConfig())
    md = (fake_run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == [
        "cam/img0__heatmap.png",
        "cam/img0__overlay.png",
        "features/conv__img0.png",
        "kernels/conv.png",
        "kernels/conv_rgb.png",
    ]
    assert all((fake_run / link).is_file() for link in links)
    assert "data:" not in md and "<script" not in md
    assert "EVIL" not in md and "\\<img src=x" not in md and "&lt;img src=x onerror=alert(2)&gt;" in md
    assert "<details><summary>torchinfo table" in md and "TORCHINFO-TABLE" in md
    # Markdown tables keep their shape: a pipe inside a cell is escaped.
    for line in md.splitlines():
        if line.startswith("| ") and "friends" in line:
            assert "\\| &amp; friends" in line


def test_settings_select_outputs_and_cap_pictures(fake_run: Path) -> None:
    path = rp.write_run_report(fake_run, ReportConfig(html=False, markdown=True))
    assert path == fake_run / "report.md" and not (fake_run / "report.html").exists()
    rp.write_run_report(fake_run, ReportConfig(max_images=1))
    text = (fake_run / "report.html").read_text()
    assert len(_parse(text).imgs) < 5 and "not shown (report.max_images=1)" in text
    with pytest.raises(Exception, match="both false"):
        rp.write_run_report(fake_run, ReportConfig(html=False, markdown=False))


def test_picture_paths_cannot_leave_the_run_folder(fake_run: Path, tmp_path: Path) -> None:
    _png(tmp_path / "secret.png")
    stats = json.loads((fake_run / "kernels" / "stats.json").read_text())
    stats["layers"][EVIL_LAYER]["grid"] = "../secret.png"
    (fake_run / "kernels" / "stats.json").write_text(json.dumps(stats))
    text = rp.write_run_report(fake_run, ReportConfig()).read_text()
    assert "missing picture: ../secret.png" in text
    assert all(i["data-path"] != "../secret.png" for i in _parse(text).imgs)


def test_rebuild_from_disk_without_manifest(fake_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fake_run / "manifest.json").unlink()
    assert rp.main([str(fake_run)]) == 0
    text = (fake_run / "report.html").read_text()
    assert "manifest.json is missing" in text
    assert _parse(text).sections[:3] == ["header", "summary", "kernels"]
    assert "vizpipe: report" in capsys.readouterr().out


def test_cli_rejects_a_folder_that_is_neither(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert rp.main([str(tmp_path / "empty")]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert rp.main([str(tmp_path / "nope")]) == 2


def test_runner_writes_the_report(compose, tmp_path: Path) -> None:
    from pipeline.manifest import load
    from pipeline.runner import run_pipeline

    cfg = compose(
        [
            "stages=[summary]",
            "model=seed_net",
            "input=random",
            "input.shape=[1,3,32,32]",
            "device=cpu",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.ok and result.report_path == tmp_path / "run" / "report.html"
    m = load(tmp_path / "run")
    assert m["report"]["status"] == "ok"
    assert {a["path"] for a in m["report"]["artifacts"]} == {"report.html", "report.md"}
    text = result.report_path.read_text()
    assert _parse(text).sections == ["header", "summary", "provenance", "manifest"]
    assert "seed_net" in text and "Conv2d" in text


# --------------------------------------------------------------------------- sweep index


def make_fake_sweep(sweep: Path) -> Path:
    """2 layers × 2 methods; one job failed in a stage, one job folder without a manifest."""
    metrics = {(0, "gradcam"): 0.30, (0, "scorecam"): 0.10, (1, "gradcam"): 0.50}
    n = 0
    for li, layer in enumerate(["layer3", "layer4"]):
        for method in ["gradcam", "scorecam"]:
            name = f"{n}_cam.layer={layer},cam.method={method}"
            ov = ["stages=[cam]", f"cam.layer={layer}", f"cam.method={method}"]
            if (li, method) == (1, "scorecam"):  # no manifest at all: the job died early
                (sweep / name / ".hydra").mkdir(parents=True)
                (sweep / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
                (sweep / name / "run.log").write_text("[x][HYDRA][ERROR] - killed by <OOM>\n")
            else:
                run = make_fake_run(
                    sweep / name,
                    cam_status="ok",
                    layer=layer,
                    method=method,
                    metrics={
                        "road_combined": metrics[(li, method)],
                        "road_most_relevant_first": -metrics[(li, method)],
                    },
                    score=float(n),
                )
                (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
                rp.write_run_report(run, ReportConfig())
            n += 1
    failed = make_fake_run(
        sweep / f"{n}_cam.layer=layer5,cam.method=gradcam", cam_status="failed", layer="layer5"
    )
    (failed / ".hydra" / "overrides.yaml").write_text(
        "- stages=[cam]\n- cam.layer=layer5\n- cam.method=gradcam\n"
    )
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - stages=[cam]\n"
        "    - cam.layer=layer3,layer4,layer5\n    - cam.method=gradcam,scorecam\n"
    )
    return sweep


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    return make_fake_sweep(tmp_path / "sweep")


def test_sweep_collects_jobs_and_swept_keys(fake_sweep: Path) -> None:
    data = rs.collect_sweep(fake_sweep)
    assert [j.num for j in data.jobs] == [0, 1, 2, 3, 4]
    assert data.swept == ["cam.layer", "cam.method"]
    assert [j.status for j in data.jobs] == ["ok", "ok", "ok", "failed", "failed"]
    assert "no manifest.json" in data.jobs[3].error and "killed by <OOM>" in data.jobs[3].error
    assert EVIL_ERROR in data.jobs[4].error
    assert rs.grid_axes(data.swept) == ("cam.layer", "cam.method", [])
    assert rs.grid_axes(["cam.method", "seed", "cam.layer"]) == (
        "cam.layer",
        "cam.method",
        ["seed"],
    )


def test_sweep_index_table_grid_and_leaderboard(fake_sweep: Path) -> None:
    path = rp.write_sweep_index(fake_sweep)
    text = path.read_text()
    tree = _parse(text)
    assert tree.sections == ["header", "jobs", "grids", "leaderboard"]
    # Job table: links to every report, failures with their errors.
    jobs = text[text.index('<section id="jobs"') : text.index('<section id="grids"')]
    for j in ("0_cam.layer=layer3,cam.method=gradcam", "2_cam.layer=layer4,cam.method=gradcam"):
        assert f'href="{j}/report.html"' in jobs
    assert jobs.count('class="badge failed"') == 2 and "killed by &lt;OOM&gt;" in jobs
    assert html.escape(EVIL_ERROR) in jobs
    # Grid: rows layer3/layer4/layer5, columns gradcam/scorecam; cells are the CAM overlays.
    grid = text[text.index('<section id="grids"') : text.index('<section id="leaderboard"')]
    rows = re.findall(r"<tr>(.*?)</tr>", grid.split("<tbody>", 1)[1], flags=re.S)
    assert [re.search(r"<code>(.*?)</code>", r).group(1) for r in rows] == [
        "layer3",
        "layer4",
        "layer5",
    ]
    assert "cam.method=gradcam" in grid and "cam.method=scorecam" in grid
    assert rows[0].count("<img") == 2 and rows[1].count("<img") == 1 and "badge failed" in rows[1]
    assert "badge failed" in rows[2]
    assert all(i["src"].startswith("data:image/png;base64,") for i in tree.imgs)
    # Leaderboard: ranked by road_combined, higher first; arrows mark each metric's direction.
    board = text[text.index('<section id="leaderboard"') :]
    assert "road_combined ↑" in board and "road_most_relevant_first ↓" in board
    order = re.findall(r"<tr><td>(\d+)</td><td>(layer\d)</td><td>(\w+)</td>", board)
    assert order == [
        ("1", "layer4", "gradcam"),
        ("2", "layer3", "gradcam"),
        ("3", "layer3", "scorecam"),
    ]


def test_sweep_index_thumbnails_are_small(fake_sweep: Path) -> None:
    from PIL import Image

    job = fake_sweep / "0_cam.layer=layer3,cam.method=gradcam"
    _png(job / "cam" / "img0__overlay.png", (1000, 500))
    text = rp.write_sweep_index(fake_sweep).read_text()
    src = next(i["src"] for i in _parse(text).imgs if i["data-path"].startswith("0_"))
    import io

    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        assert max(im.size) == rs.THUMB_PX


def test_metric_directions() -> None:
    assert rs.metric_lower_is_better("road_most_relevant_first")
    assert rs.metric_lower_is_better("drop_in_confidence")
    assert not rs.metric_lower_is_better("road_least_relevant_first")
    assert not rs.metric_lower_is_better("road_combined")
    assert not rs.metric_lower_is_better("increase_in_confidence")
    assert not rs.metric_lower_is_better("confidence_change")


def test_sweep_index_rebuild_command(fake_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rp.main([str(fake_sweep)]) == 0
    assert (fake_sweep / "index.html").is_file()
    assert capsys.readouterr().out.strip().endswith("index.html")
    reports = sorted(fake_sweep.glob("*/report.html"))
    for r in reports:
        r.unlink()
    assert rp.main([str(fake_sweep), "--jobs"]) == 0
    out = capsys.readouterr().out
    assert out.count("report.html") == 4 and len(list(fake_sweep.glob("*/report.html"))) == 4


@pytest.mark.slow
def test_real_multirun_writes_index_with_failed_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "stages=[summary,features]",
            "model=seed_net",
            "input=random",
            "input.shape=[1,3,32,32]",
            "device=cpu",
            "features.layers=[conv1],[nosuchlayer]",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode != 0  # one job failed
    text = (sweep / "index.html").read_text()
    tree = _parse(text)
    assert tree.sections == ["header", "jobs", "grids", "leaderboard"]
    jobs = text[text.index('<section id="jobs"') : text.index('<section id="grids"')]
    assert jobs.count('class="badge ok"') == 1 and jobs.count('class="badge failed"') == 1
    assert "nosuchlayer" in jobs
    ok_job = next(p for p in sweep.iterdir() if p.name.startswith("0_"))
    assert f'href="{ok_job.name}/report.html"' in text
    assert len(tree.imgs) == 1  # the ok job's feature grid stands in for a CAM overlay


def test_a_malformed_stage_file_costs_only_its_section(fake_run: Path) -> None:
    (fake_run / "features" / "stats.json").write_text(json.dumps({"layers": ["not", "a", "dict"]}))
    (fake_run / "kernels" / "stats.json").write_text("{not json")
    text = rp.write_run_report(fake_run, ReportConfig()).read_text()
    tree = _parse(text)
    assert tree.sections[:5] == ["header", "summary", "kernels", "features", "cam"]
    features = text[text.index('<section id="features"') : text.index('<section id="cam"')]
    assert "Could not show this stage&#x27;s data files: AttributeError" in features
    assert "Could not read kernels/stats.json" in text  # the unparsable file, in the header
    assert any(i["data-path"] == "cam/img0__overlay.png" for i in tree.imgs)  # the rest is there
