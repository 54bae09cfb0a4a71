"""Names that become files, folders and tags: one slugifier, one way to make names unique.

``slug`` keeps letters, digits and a few safe punctuation marks; everything else (path separators,
spaces, commas, non-ASCII letters) becomes ``_``. ``unique_slugs`` turns any list of texts into
readable, unique, file-system-safe names, also on case-insensitive file systems: names that would
collide get a short hash of their original text, so the result does not depend on input order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

__all__ = ["FILE_CHARS", "JOB_CHARS", "RUN_SUFFIXES", "input_names", "safe_dirname", "slug", "unique_slugs"]

#: characters kept in file names and TensorBoard tag parts
FILE_CHARS = "._-"
#: characters also kept in job folder names (``cam.layer=layer4,cam.target_class=207``)
JOB_CHARS = "._=,+@-"


#: endings of the files vizpipe writes for itself (records, arrays, pictures, logs, the report):
#: an input whose name ends like one (``cam.json.png`` -> ``cam.json``, whose folder would be
#: ``cam/cam.json/`` beside the record ``cam/cam.json``) gets a hash (``input_names``), so an
#: input's outputs never land on one of vizpipe's own files. (Slugs never start with a dot, so
#: ``.hydra`` and ``.thumbs`` cannot be hit.)
RUN_SUFFIXES = (".json", ".html", ".md", ".txt", ".log", ".yaml", ".pt", ".npy", ".png")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def slug(text: object, *, keep: str = FILE_CHARS, max_len: int = 100) -> str:
    """A file-system-safe version of ``text``: runs of other characters become ``_``.

    Leading and trailing dots, underscores and spaces are removed (no hidden files, no ``..``);
    an empty result is ``_``. A name longer than ``max_len`` is cut and ends with a short hash of
    the whole text, so two long names never collide.
    """
    raw = str(text)
    out = re.sub(f"[^A-Za-z0-9{re.escape(keep)}]+", "_", raw).strip("._ ") or "_"
    if len(out) > max_len:
        out = out[: max_len - 9].rstrip("._") + "_" + _digest(raw)
    return out


def safe_dirname(text: str, max_len: int = 120) -> str:
    """A file-system-safe folder name for ``text`` (``slug`` keeping ``JOB_CHARS``): job and run folders."""
    return slug(text, keep=JOB_CHARS, max_len=max_len) if str(text).strip("._ ") else "job"


def unique_slugs(
    texts: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    keep: str = FILE_CHARS,
    max_len: int = 100,
    reserved_suffixes: Sequence[str] = (),
) -> list[str]:
    """``slug`` of each text, made unique (case-insensitively) in a way independent of order.

    ``ids`` (default: the texts) say what each name stands for, e.g. an image's full path when
    the texts are file stems. A slug shared by several different ids (``a.jpg`` and ``a.png``,
    ``x/a.jpg`` and ``y/a.jpg``, ``A.jpg`` and ``a.jpg``, ``a,b.jpg`` and ``a_b.jpg``) becomes
    ``<slug>_<hash of the id>`` for each of them; the hash grows until every name is unique.
    Equal ids get equal names. A slug ending (in any case) with one of ``reserved_suffixes`` (the
    endings of files the caller writes itself) also gets the hash.
    """
    ids = list(texts) if ids is None else list(ids)
    bases = [slug(t, keep=keep, max_len=max_len) for t in texts]
    owners: dict[str, set[str]] = {}
    for ident, base in zip(ids, bases, strict=True):
        owners.setdefault(base.casefold(), set()).add(ident)
    endings = tuple(e.casefold() for e in reserved_suffixes)
    out = list(bases)
    clashing = [
        i for i, b in enumerate(bases) if len(owners[b.casefold()]) > 1 or b.casefold().endswith(endings)
    ]
    n = 6
    while clashing:
        taken = {b.casefold() for i, b in enumerate(bases) if i not in set(clashing)}
        for i in clashing:
            out[i] = f"{bases[i][: max_len - n - 1]}_{_digest(ids[i], n)}"
        fresh: dict[str, set[str]] = {}
        for i in clashing:
            fresh.setdefault(out[i].casefold(), set()).add(ids[i])
        bad = [i for i in clashing if len(fresh[out[i].casefold()]) > 1 or out[i].casefold() in taken]
        if not bad or n >= 40:
            break
        n += 4
    return out


def input_names(texts: Sequence[str], *, ids: Sequence[str] | None = None) -> list[str]:
    """Unique, file-safe names of a run's inputs (images, tensor items), never ending as one of
    vizpipe's own files does (``RUN_SUFFIXES``)."""
    return unique_slugs(texts, ids=ids, reserved_suffixes=RUN_SUFFIXES)
