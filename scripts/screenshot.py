"""Screenshot a real vizpipe report in headless Chromium (for the README): ``docs/report.png``.

    python scripts/screenshot.py                      # make a fresh run, then screenshot it
    python scripts/screenshot.py --run outputs/2024-01-01/12-00-00 --out docs/report.png

Without ``--run`` it runs the pipeline once (resnet18, random init, the bundled photo, every stage,
CPU; or the overrides given) into a temporary folder. Needs Debian's ``chromium``
(``apt-get install chromium``).

Also home of ``Chromium``, a dependency-free Chrome DevTools Protocol client over
``--remote-debugging-pipe`` that ``tests/test_browser.py`` uses to check a rendered report.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)
# Evaluated in the page: which pictures loaded, which sections exist.
PAGE_CHECK = """(() => {
  const imgs = Array.from(document.images);
  return {
    title: document.title,
    images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.dataset.path || i.alt),
    sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
    details: document.querySelectorAll('details').length,
    height: document.documentElement.scrollHeight,
  };
})()"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are numbered 10 or more (so moving them onto fds 3 and 4 cannot clash)."""
    import fcntl

    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (CDP messages on fds 3 and 4).

    A context manager: the browser and its temporary profile are removed on exit.
    """

    def __init__(
        self, binary: str | None = None, width: int = 1280, height: int = 900, timeout: float = 60
    ) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("No Chromium found (apt-get install chromium, or set $CHROMIUM)")
        self.width, self.height, self.timeout = width, height, timeout
        self._id = 0
        self._buf = b""
        self._events: list[dict[str, Any]] = []
        self.session: str | None = None

    def __enter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="vizpipe-chromium-")
        cmd_r, self._cmd_w = _high_pipe()  # we write commands; Chromium reads them on fd 3
        self._res_r, res_w = _high_pipe()  # Chromium writes on fd 4; we read

        def wire() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        args = [
            self.binary,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # close_fds=False: Python's own fds are non-inheritable anyway (PEP 446); 3 and 4 are not.
        self.proc = subprocess.Popen(
            args,
            preexec_fn=wire,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(cmd_r)
        os.close(res_w)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            self.call("Page.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": self.width,
                    "height": self.height,
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc.poll() is None:
                self.session = None
                self._send("Browser.close", {})
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
        finally:
            for fd in (self._cmd_w, self._res_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.proc.stderr:
                self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    # -------------------------------------------------------------- protocol
    def _send(self, method: str, params: dict[str, Any]) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                    raise RuntimeError(f"Chromium closed the pipe: {err}")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one CDP command and wait for its result (events seen meanwhile are kept)."""
        want = self._send(method, params or {})
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def wait_event(self, method: str) -> dict[str, Any]:
        """Wait for a CDP event (e.g. ``Page.loadEventFired``)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method:
                    return self._events.pop(i)
            self._events.append(self._read(deadline))

    # -------------------------------------------------------------- helpers
    def open(self, path: Path) -> None:
        """Load a local file and wait for its load event (every picture decoded)."""
        self._events.clear()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its JSON value."""
        res = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def check_page(self) -> dict[str, Any]:
        """Pictures loaded/broken and section ids of the open page (see ``PAGE_CHECK``)."""
        return self.evaluate(PAGE_CHECK)

    def screenshot(self, out: Path, height: int | None = None, top: float = 0) -> Path:
        """Save a PNG of ``height`` pixels of the page from ``top`` (None = the viewport)."""
        h = height or self.height
        data = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": top, "width": self.width, "height": h, "scale": 1},
            },
        )["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out


# A compact but complete report for the README: every stage, two kernel layers.
DEFAULT_OVERRIDES = ("device=cpu", "input=photo", "kernels.layers=[conv1,layer1.0.conv1]")


def make_run(out: Path, overrides: list[str]) -> Path:
    """Run the pipeline once (every stage) into ``out`` with ``overrides``."""
    cmd = [sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.run.dir={out}"]
    print("vizpipe: running", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Screenshot ``<run>/report.html`` or ``<sweep>/index.html`` (default: a fresh run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run or sweep folder (default: a fresh run)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3300, help="pixels from the top of the page")
    parser.add_argument("--section", help="start the picture at this section (e.g. cam)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help=f"overrides for the fresh run (default: {' '.join(DEFAULT_OVERRIDES)})",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vizpipe-shot-") as tmp:
        run = args.run or make_run(Path(tmp) / "run", args.overrides or list(DEFAULT_OVERRIDES))
        report = run / "report.html" if (run / "manifest.json").is_file() else run / "index.html"
        if not report.is_file():
            from vizpipe.pipeline.report.__main__ import main as rebuild

            rebuild([str(run)])
        with Chromium(width=args.width, height=args.height) as browser:
            browser.open(report)
            check = browser.check_page()
            if check["broken"]:
                print(f"vizpipe: error: pictures did not load: {check['broken']}", file=sys.stderr)
                return 1
            top = 0.0
            if args.section:
                el = f"document.getElementById({json.dumps(args.section)})"
                top = float(browser.evaluate(f"{el} ? {el}.getBoundingClientRect().top + window.scrollY : 0"))
            browser.screenshot(args.out, args.height, top)
    print(
        f"vizpipe: screenshot {args.out} ({check['images']} pictures, "
        f"sections: {', '.join(check['sections'])})"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
