"""Reports rendered in a real browser: headless Chromium loads report.html and index.html.

The pages come from fake runs and sweeps built from ``StageResult`` records (``test_report``).
Checks that every picture decoded (``naturalWidth > 0``), every section exists and is visible,
nothing from the data became markup, and the layout rules hold (wide pictures at their own size),
through a dependency-free DevTools client (``scripts/screenshot.py``). Skipped where Chromium is
absent.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlparse

import pytest
from conftest import ROOT
from test_report import STAGES, make_fake_run, make_fake_sweep
from vizpipe.pipeline import report as rp
from vizpipe.pipeline.schema import ReportConfig


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
RUN_SECTIONS = ["header", *STAGES, "provenance", "manifest"]
SWEEP_SECTIONS = ["header", "jobs", "grids", "leaderboard"]
# Every section laid out with a height, in document order.
VISIBLE = (
    "Array.from(document.querySelectorAll('section[data-section]'))"
    ".filter(s => s.offsetHeight > 0).map(s => s.id)"
)


def _check(browser: object, page: Path) -> dict:
    browser.open(page)  # type: ignore[attr-defined]
    return browser.check_page()  # type: ignore[attr-defined]


def test_fake_report_and_index_render(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "run")
    rp.write_run_report(run, ReportConfig(max_images=0))
    sweep = make_fake_sweep(tmp_path / "sweep")
    rp.write_sweep_index(sweep)
    # The report still works alone, copied away from its run folder.
    alone = tmp_path / "copied" / "report.html"
    alone.parent.mkdir()
    shutil.copy(run / "report.html", alone)
    with shot.Chromium(width=1100, height=800) as browser:
        page = _check(browser, alone)
        assert page["sections"] == RUN_SECTIONS
        assert browser.evaluate(VISIBLE) == RUN_SECTIONS
        assert page["images"] == 8 and page["loaded"] == 8 and page["broken"] == []
        assert page["title"] == "vizpipe report: tiny"
        assert browser.evaluate("document.querySelectorAll('#features .alert.error[role=alert]').length") == 1
        assert browser.evaluate("document.querySelectorAll('#cam .badge.invalid').length") == 1
        # Injected markup stayed text: no element came from the data.
        assert browser.evaluate("document.querySelectorAll('script, b, i, u, img[onerror]').length") == 0
        text = browser.evaluate("document.getElementById('cam').innerText")
        assert "<script>alert(1)</script>" in text  # shown as text, literally
        # Wide pictures: drawn at their own size, pixelated.
        wide = browser.evaluate(
            "Array.from(document.querySelectorAll('#kernels .gallery.wide img')).map(i => "
            "[i.naturalWidth, i.clientWidth, getComputedStyle(i).imageRendering])"
        )
        assert wide == [[120, 120, "pixelated"], [30, 30, "pixelated"]]
        # Grouped pictures sit beside their group's tables.
        top = browser.evaluate(
            "(() => { const c = document.querySelector('#cam .columns').children;"
            " return [c[0].getBoundingClientRect().top, c[1].getBoundingClientRect().top]; })()"
        )
        assert abs(top[0] - top[1]) < 1
        index = _check(browser, sweep / "index.html")
        assert index["sections"] == SWEEP_SECTIONS
        assert browser.evaluate(VISIBLE) == SWEEP_SECTIONS
        assert index["images"] >= 8 and index["broken"] == []
        # Every job report linked from the index exists.
        hrefs = browser.evaluate("Array.from(document.querySelectorAll('#jobs a')).map(a => a.href)")
        assert len(hrefs) == 4 and all(Path(unquote(urlparse(h).path)).is_file() for h in hrefs)


def test_screenshot_script(tmp_path: Path) -> None:
    from PIL import Image

    run = make_fake_run(tmp_path / "run")  # no report yet: the script rebuilds it
    out = tmp_path / "shot.png"
    assert shot.main(["--run", str(run), "--out", str(out), "--width", "900", "--height", "700"]) == 0
    assert (run / "report.html").is_file()
    with Image.open(out) as im:
        assert im.size == (900, 700)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20  # a rendered page, not a blank one
