"""Reports rendered in a real browser: headless Chromium loads report.html and index.html.

Checks that every picture decoded (``naturalWidth > 0``) and every section exists, through a
dependency-free DevTools client (``scripts/screenshot.py``). Skipped where Chromium is absent.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT, run_cli
from test_report import make_fake_run, make_fake_sweep

from pipeline import report as rp
from pipeline.schema import ReportConfig


def _load_screenshot() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vizpipe_screenshot", ROOT / "scripts" / "screenshot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shot = _load_screenshot()
pytestmark = pytest.mark.skipif(
    shot.find_chromium() is None,
    reason="headless Chromium not found (Debian: apt-get install chromium; "
    "./dev.sh test installs it when run as root)",
)
RUN_SECTIONS = [
    "header",
    "summary",
    "kernels",
    "features",
    "cam",
    "tensorboard",
    "provenance",
    "manifest",
]
SWEEP_SECTIONS = ["header", "jobs", "grids", "leaderboard"]


def _check(browser: object, page: Path) -> dict:
    browser.open(page)  # type: ignore[attr-defined]
    return browser.check_page()  # type: ignore[attr-defined]


def test_fake_report_and_index_render(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "run")
    rp.write_run_report(run, ReportConfig())
    sweep = make_fake_sweep(tmp_path / "sweep")
    rp.write_sweep_index(sweep)
    # The report still works alone, copied away from its run folder.
    alone = tmp_path / "copied" / "report.html"
    alone.parent.mkdir()
    shutil.copy(run / "report.html", alone)
    with shot.Chromium(width=1100, height=800) as browser:
        page = _check(browser, alone)
        assert page["sections"] == RUN_SECTIONS
        assert page["images"] == 5 and page["loaded"] == 5 and page["broken"] == []
        assert page["title"] == "vizpipe report: tiny"
        assert browser.evaluate("document.querySelectorAll('#cam .alert.error').length") == 1
        # Injected markup stayed text: no element came from the data.
        assert browser.evaluate("document.querySelectorAll('script, b, i').length") == 0
        index = _check(browser, sweep / "index.html")
        assert index["sections"] == SWEEP_SECTIONS
        assert index["images"] >= 4 and index["broken"] == []
        # Every job report linked from the index exists.
        hrefs = browser.evaluate("Array.from(document.querySelectorAll('#jobs a')).map(a => a.href)")
        assert hrefs and all(Path(h.removeprefix("file://")).is_file() for h in hrefs)


def test_screenshot_script(tmp_path: Path) -> None:
    from PIL import Image

    run = make_fake_run(tmp_path / "run")
    out = tmp_path / "shot.png"
    assert shot.main(["--run", str(run), "--out", str(out), "--width", "900", "--height", "700"]) == 0
    with Image.open(out) as im:
        assert im.size == (900, 700)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20  # a rendered page, not a blank one


@pytest.mark.slow
def test_real_sweep_report_and_index_render(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "stages=[summary,kernels,features,cam,tensorboard]",
            "input=random",
            "input.shape=[1,3,64,64]",
            "device=cpu",
            "kernels.layers=[conv1,layer1.0.conv1]",
            "features.layers=[layer1]",
            "tensorboard.histograms=false",
            "tensorboard.graph=false",
            "cam.layer=layer3,layer4",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    with shot.Chromium() as browser:
        for job in jobs:
            page = _check(browser, job / "report.html")
            assert page["sections"] == RUN_SECTIONS
            assert page["broken"] == [] and page["images"] == page["loaded"] >= 5
        index = _check(browser, sweep / "index.html")
        assert index["sections"] == SWEEP_SECTIONS
        assert index["broken"] == [] and index["images"] == 2  # one CAM overlay per job
        text = browser.evaluate("document.getElementById('grids').innerText")
        assert "layer3" in text and "layer4" in text
