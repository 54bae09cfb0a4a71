"""Which files are the images: ``input.path`` (a file, a folder or a glob) and image-folder classes.

* **Taken**: a file whose extension is a common image extension in any case (``COMMON``:
  ``.jpg``, ``.JPG``, ``.jpeg``, ``.png``, ``.webp``, ``.tif``, ...), and any other file Pillow
  recognises by its content (no extension, ``.jfif``, ``.jpe``, ``.tga``, ...).
* **Skipped, and said**: a file Pillow does not recognise (or only as a stub format it cannot
  decode), and a second path to a file already taken (a symbolic link, a loop of links). Each
  skipped file is listed in ``Scan.skipped``; the run warns once (console and manifest) and the
  manifest lists them all (``provenance.skipped``).
* A folder is searched recursively, following links to folders but entering each real folder
  once, so a link loop ends and counts nothing twice.
* A glob has Python's syntax (``*``, ``?``, ``[...]``, ``**`` for any depth) and rules (a name
  starting with ``.`` only when the pattern's part does), except that its file-name part ignores
  case, as on macOS and Windows: ``photos/*.jpg`` takes ``IMG_1.JPG``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vizpipe.pipeline.errors import ConfigError, closest_first
from vizpipe.pipeline.files import special_kind

__all__ = [
    "COMMON",
    "Scan",
    "Skipped",
    "find_images",
    "header_problem",
    "is_image",
    "readable",
    "scan_folder",
    "scan_images",
]

#: extensions taken without opening the file (compared in lower case)
COMMON = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NOT_IMAGE = "not an image Pillow can open"
UNREADABLE = "cannot be read"  # input.on_bad_image=skip: an image file whose header fails
SHOWN = 5  # skipped files named in the one-line warning (the manifest lists all)
SAME_FILE = "the same file as"


@dataclass
class Skipped:
    """A file under ``input.path`` that is not used, and why."""

    path: str
    why: str


@dataclass
class Scan:
    """The image files found (sorted by path) and the files skipped."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def is_image(path: Path) -> bool:
    """True when ``path`` has a common image extension, or Pillow recognises its content."""
    if path.suffix.lower() in COMMON:
        return True
    from PIL import Image, ImageFile

    try:
        with Image.open(path) as im:  # reads the header only
            return not isinstance(im, ImageFile.StubImageFile)  # stubs (HDF5, GRIB...) cannot decode
    except Exception:  # noqa: BLE001 - UnidentifiedImageError, OSError, ...: not an image to us
        return False


def _key(path: Path | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk(root: Path, depth: int | None) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Files below ``root`` and their path parts relative to it, folders ``depth`` deep at most
    (None: all). Links to folders are followed, each real folder entered once; a link back to a
    folder above (a loop) is not followed."""
    real = Path(os.path.realpath(root))
    above = {k for k in (_key(p) for p in real.parents) if k is not None}
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path, rel: tuple[str, ...]) -> Iterator[tuple[Path, tuple[str, ...]]]:
        key = _key(folder)
        if key is None or key in seen or key in above:
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:
                continue
            if is_dir and (depth is None or len(rel) < depth):
                yield from visit(folder / entry.name, (*rel, entry.name))
            elif is_file:
                yield folder / entry.name, (*rel, entry.name)

    yield from visit(root, ())


def _collect(candidates: list[Path]) -> Scan:
    """Sort, drop second paths to one file, keep the images."""
    out = Scan()
    first: dict[str, Path] = {}
    for path in sorted(candidates):
        real = os.path.realpath(path)
        if real in first:
            out.skipped.append(Skipped(str(path), f"{SAME_FILE} {first[real]}"))
            continue
        first[real] = path
        if is_image(path):
            out.files.append(path)
        else:
            out.skipped.append(Skipped(str(path), NOT_IMAGE))
    return out


def scan_folder(folder: Path) -> Scan:
    """Every image file below ``folder`` (see the module docstring)."""
    return _collect([path for path, _ in _walk(folder, None)])


def _magic(part: str) -> bool:
    return any(ch in part for ch in "*?[")


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Glob ``pattern`` parts against a file's relative path parts (the last part ignores case)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if not rest:  # last: any file at any depth below, through no hidden folder
            return bool(parts) and not any(part.startswith(".") for part in parts)
        for skip in range(len(parts)):  # zero or more folders, then the rest of the pattern
            if _matches(rest, parts[skip:]):
                return True
            if parts[skip].startswith("."):
                return False
        return False
    if not parts or (parts[0].startswith(".") and _magic(head) and not head.startswith(".")):
        return False
    if rest:
        return fnmatch.fnmatchcase(parts[0], head) and _matches(rest, parts[1:])
    return len(parts) == 1 and re.fullmatch(fnmatch.translate(head), parts[0], re.IGNORECASE) is not None


def _glob(spec: str, p: Path) -> Scan:
    parts = p.parts
    fixed = next(i for i, part in enumerate(parts) if _magic(part))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    pattern = parts[fixed:]
    depth = None if "**" in pattern else len(pattern) - 1
    found = [path for path, rel in _walk(base, depth) if _matches(pattern, rel)]
    if not found:
        raise ConfigError(
            f"input.path glob '{spec}' matched no file; check the pattern (quote it in the shell)"
        )
    scan = _collect(found)
    if not scan.files:
        raise ConfigError(f"input.path glob '{spec}' matched no image: {describe(scan.skipped)}")
    return scan


def scan_images(spec: str) -> Scan:
    """The image files named by ``spec``: a file, a folder (recursively) or a glob, sorted by path."""
    p = Path(spec).expanduser()
    if _magic(spec):
        return _glob(spec, p)
    if p.is_dir():
        scan = scan_folder(p)
        if not scan.files:
            what = f": {describe(scan.skipped)}" if scan.skipped else " (it holds no file)"
            raise ConfigError(
                f"input.path folder '{spec}' holds no image{what}; give a folder of image files "
                f"({', '.join(COMMON)} or any other Pillow opens)"
            )
        return scan
    if p.is_file():
        return Scan([p])
    what = special_kind(p)
    if what is not None:
        raise ConfigError(f"input.path '{spec}' is {what}, not an image file or a folder of images")
    parent = p.parent if str(p.parent) else Path(".")
    near: list[str] = []
    if parent.is_dir():
        images = sorted(f.name for f in parent.iterdir() if f.is_file() and f.suffix.lower() in COMMON)
        near = closest_first(p.name, images)[:3]
    hint = f"; did you mean {', '.join(repr(str(parent / n)) for n in near)}?" if near else "."
    raise ConfigError(
        f"input.path '{spec}' does not exist{hint} Give an image file, a folder of images or a glob"
    )


def header_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image, from its header alone (cheap), or None."""
    from PIL import Image

    try:
        with Image.open(path):
            return None
    except Image.DecompressionBombError as exc:
        return f"too large to decode safely ({' '.join(str(exc).split())})"
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError, ...: said, not raised
        return f"{UNREADABLE} ({' '.join(str(exc).split()) or type(exc).__name__})"


def readable(scan: Scan) -> Scan:
    """``input.on_bad_image=skip``: ``scan`` without the image files whose header cannot be read
    (a decompression bomb, a damaged header), each added to its skipped files with why. Damage
    further inside a file still stops the stage that reads it, naming the file."""
    out = Scan([], list(scan.skipped))
    for path in scan.files:
        problem = header_problem(path)
        if problem is None:
            out.files.append(path)
        else:
            out.skipped.append(Skipped(str(path), problem))
    if not out.files:
        raise ConfigError(f"input.path holds no readable image: {describe(out.skipped)}")
    return out


def find_images(spec: str) -> list[Path]:
    """The image files of ``scan_images`` (the skipped ones dropped)."""
    return scan_images(spec).files


def describe(skipped: list[Skipped]) -> str:
    """One line about skipped files: how many, why, the first few by name."""
    links = [s for s in skipped if s.why.startswith(SAME_FILE)]
    other = [s for s in skipped if s.why == NOT_IMAGE]
    bad = [s for s in skipped if s not in links and s not in other]  # input.on_bad_image=skip
    said = []
    if bad:
        names = ", ".join(f"{Path(s.path).name} ({s.why})" for s in bad[:SHOWN])
        more = f", ... ({len(bad) - SHOWN} more)" if len(bad) > SHOWN else ""
        said.append(f"{len(bad)} image file(s) skipped (input.on_bad_image=skip): {names}{more}")
    if other:
        names = ", ".join(Path(s.path).name for s in other[:SHOWN])
        more = f", ... ({len(other) - SHOWN} more)" if len(other) > SHOWN else ""
        said.append(f"{len(other)} file(s) skipped, {NOT_IMAGE}: {names}{more}")
    if links:
        names = ", ".join(f"{s.path} ({s.why})" for s in links[:SHOWN])
        more = f", ... ({len(links) - SHOWN} more)" if len(links) > SHOWN else ""
        said.append(f"{len(links)} second path(s) to a file already taken, skipped: {names}{more}")
    return "; ".join(said)
