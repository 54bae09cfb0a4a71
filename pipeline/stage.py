"""The stage contract: a ``Stage`` base class and the typed record every stage returns.

A stage is one module (or package) under ``stages/`` (or in a plugin folder, see
``vizpipe.pipeline.registry``) plus one YAML ``conf/<name>/default.yaml``. The module defines:

* a settings dataclass (``config``): stored by the registry in Hydra's ConfigStore as
  ``<name>/_schema``; the YAML starts with ``defaults: [_schema, _self_]``, so a typo'd key or a
  wrong type fails at composition time;
* a ``Stage`` subclass with ``name``, ``title``, ``config`` and ``run``; optionally ``default``
  (join the default ``stages`` list), ``check_settings`` (rules on its own settings, run by the
  precheck before Hydra starts) and ``check_model`` (rules against the built model, before any
  stage runs).

``run`` returns a ``StageResult``: pictures with captions, tables, texts, scalars, histograms,
raw files and the warnings the stage raised. The runner stores it in ``manifest.json``; the
report, the sweep index and the TensorBoard stage read these records generically, so no reader
knows any stage.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext

__all__ = [
    "Histogram",
    "Merge",
    "Picture",
    "Scalar",
    "SharedConfig",
    "Stage",
    "StageResult",
    "Table",
    "Text",
    "from_dict",
]

T = TypeVar("T")


# =========================================================================== records


@dataclass
class Picture:
    """A picture a stage wrote, for the report, the sweep index and TensorBoard."""

    path: str  # relative to the run folder, forward slashes
    caption: str = ""  # one line under the picture
    group: str = ""  # pictures and tables of one group are shown together (e.g. one image)
    tag: str | None = None  # TensorBoard image tag; None = not logged there
    wide: bool = False  # drawn at its own size, pixelated, one per row (kernel grids)
    preview: bool = False  # shown in the sweep index's comparison cells
    badge: str | None = None  # a status word beside the caption, e.g. "invalid"
    step: int = 0  # TensorBoard step (e.g. the epoch of a CAM-over-time frame)
    # the name of a figure the sweep index builds by stacking this picture of every job, one row per
    # job (e.g. the CAM stage's randomisation check: each job's row of maps); None: not stacked
    stack: str | None = None


@dataclass
class Merge:
    """How the rows of a ``Table`` combine across the shards of one data set (``input.shard=I/N``).

    The sweep index merges the tables of jobs that differ only in ``input.shard``: rows with the
    same ``keys`` become one row, ``count`` columns are summed and ``means`` columns are averaged
    weighted by the ``weight`` column (cells that are not numbers are left out of the average).
    Nothing here knows a stage: any stage that writes per-group means and counts can use it.
    """

    keys: list[int]  # columns that identify a row (e.g. class index and name)
    weight: int  # the column holding how many items a row's means are over
    count: list[int] = field(default_factory=list)  # columns summed (the weight column is summed too)
    means: list[int] = field(default_factory=list)  # columns averaged, weighted by the weight column


@dataclass
class Table:
    """A table for the report (cells are JSON scalars)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    group: str = ""  # shown with the pictures of the same group
    caption: str = ""  # one line under the title (e.g. where the data came from)
    links: list[int] = field(default_factory=list)  # columns holding run-relative file paths
    code: list[int] = field(default_factory=list)  # columns shown as code (names, shapes)
    kv: bool = False  # a key/value table: no header row, first column bold
    merge: Merge | None = None  # set when shards' tables combine into one (the sweep index merges them)


@dataclass
class Text:
    """A block of text: the report shows it folded, TensorBoard logs it when ``tag`` is set."""

    title: str
    body: str
    group: str = ""
    tag: str | None = None  # TensorBoard text tag (markdown); None = not logged there
    pre: bool = True  # preformatted (a table printed by a library, YAML, print(model))
    open: bool = False  # shown unfolded in the report


@dataclass
class Scalar:
    """One number: logged to TensorBoard; ``key`` numbers also head the report and sweep index."""

    name: str  # TensorBoard tag, e.g. "activations/layer1/mean"
    value: float | None  # None: not a finite number
    key: bool = False  # a headline number: console line, hparams, sweep index columns
    better: str | None = None  # "higher" | "lower": the sweep index may rank jobs by it
    step: int = 0
    # a pass/fail line: the number passes when it is on the ``better`` side of it (the sweep index
    # shows the verdict); None: no verdict
    threshold: float | None = None


@dataclass
class Histogram:
    """Values whose distribution TensorBoard shows (e.g. each channel's mean activation)."""

    name: str  # TensorBoard tag
    values: list[float]
    step: int = 0


@dataclass
class StageResult:
    """What a stage's ``run`` returns: the one record every reader understands."""

    stage: str
    summary: str = ""  # one line for the console and the report, e.g. "4 layers, 1 image"
    params: dict[str, str] = field(default_factory=dict)  # what was asked (hparams columns)
    pictures: list[Picture] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    scalars: list[Scalar] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # raw outputs (npy, json, txt), run-relative
    # what went wrong but did not stop the stage: the runner fills it with every ``ctx.warn`` made
    # while the stage was checked against the model and ran (a stage may also list its own here);
    # the report shows them in the stage's section, the manifest also keeps them in run order
    warnings: list[str] = field(default_factory=list)
    # the stage's own typed document (e.g. cam.json's record); kept in memory, not in the manifest
    data: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able record stored in ``manifest.json`` (without ``data``)."""
        out = dataclasses.asdict(dataclasses.replace(self, data=None))
        out.pop("data")
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StageResult:
        """Read a record back from ``manifest.json`` (unknown keys are an error)."""
        return from_dict(cls, doc)

    def key_scalars(self) -> list[Scalar]:
        """The headline numbers."""
        return [s for s in self.scalars if s.key]


# =========================================================================== records <-> JSON


def from_dict(cls: type[T], doc: Any) -> T:
    """Build dataclass ``cls`` from parsed JSON, recursively; unknown or missing keys raise.

    Lists and dicts of dataclasses, ``X | None`` and plain JSON values are supported: enough for
    every record vizpipe writes (``StageResult``, a stage's own document such as ``cam.json``).
    """
    return _convert(cls, doc, cls.__name__)


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a record type, once per type (a sweep index reads thousands)."""
    return typing.get_type_hints(tp)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{where}: {value!r} fits none of {tp}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object for {tp.__name__}, got {type(value).__name__}")
        hints = _type_hints(tp)
        known = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} for {tp.__name__}")
        kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        missing = [
            n
            for n, f in known.items()
            if n not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing} for {tp.__name__}")
        return tp(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_convert(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object, got {type(value).__name__}")
        _, arg = typing.get_args(tp) or (str, Any)
        return {k: _convert(arg, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TypeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


# =========================================================================== the base class


@dataclass(frozen=True)
class SharedConfig:
    """What ``Stage.check_settings`` may read of the config beyond the stage's own settings.

    A stage never sees the whole config: a rule that needs another group's value gets it here,
    by name, so the dependency is visible. Add a field when a stage needs one.
    """

    input_kind: (
        str  # input.kind as a string: photo | image | tensor | random | shapes | imagefolder | cifar10
    )


class Stage(ABC):
    """Base class of every stage; ``vizpipe.pipeline.registry`` finds subclasses in stage modules.

    The runner makes one instance per run, calls ``check_settings`` and then ``check_model`` for
    every requested stage before any stage runs (a bad layer name fails before any work), then
    ``run`` for each, in the order of the ``stages`` list.
    """

    #: the name used in ``stages=[...]``, the config group, the config key and the output folder
    name: ClassVar[str]
    #: the report's section title
    title: ClassVar[str] = ""
    #: the settings dataclass (stored as ``<name>/_schema``); None for a stage without settings
    config: ClassVar[type | None] = None
    #: position in the default ``stages`` list and in listings (lower first); a list the user
    #: writes runs in the user's order
    order: ClassVar[int] = 100
    #: part of the default ``stages`` list; a new stage opts in (otherwise only ``stages=[...]`` runs it)
    default: ClassVar[bool] = False
    #: reads the records of the stages that ran before it (``ctx.results``), so every ``stages``
    #: list must put it after all the others (the runner refuses one that does not)
    reads_records: ClassVar[bool] = False
    #: optional jinja2 fragment (a file beside the module) that the report renders for this stage
    template: ClassVar[str | None] = None
    #: settings keys whose ``_target_`` the stage builds (``vizpipe.pipeline.factory.targets.instantiate``)
    #: -> the modules whose classes a config from anywhere may name there (others need the user's
    #: trust: ``--trust-config``). A ``_target_`` at any other key is refused; see ``targets.py``
    targets: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in RENAMED.items():
            if old in vars(cls):
                raise TypeError(
                    f"Stage {cls.__qualname__} defines {old}(), which vizpipe no longer calls; "
                    f"rename it {new}"
                )

    def check_settings(self, settings: Any, shared: SharedConfig) -> None:  # noqa: B027 - optional hook
        """Rules on the stage's own settings (names, ranges); raise ``ConfigError``.

        ``shared`` holds what else of the config a rule may need. Runs in the precheck, before
        Hydra starts, and again in the runner. Must be cheap: no model, no data.
        """

    def check_model(self, ctx: RunContext, settings: Any) -> None:  # noqa: B027 - optional hook
        """Rules against the built model and inputs (layers, classes); raise ``ConfigError``.

        Runs for every requested stage before any stage runs. No heavy work; may keep what it
        resolved on ``self`` for ``run``.
        """

    @abstractmethod
    def run(self, ctx: RunContext, settings: Any) -> StageResult:
        """Collect data, render it under ``ctx.stage_dir(self.name)`` and return the record.

        A streamed stage may record each finished batch in ``ctx.progress``
        (``vizpipe.pipeline.progress``) so that ``resume=`` skips it after an interruption.
        """

    def restore(self, ctx: RunContext, settings: Any, result: StageResult) -> None:  # noqa: B027 - optional hook
        """``resume=``: this stage finished in the interrupted run and is not run again; put back
        into ``ctx`` what the stages after it need from it (the train stage: the trained weights).

        ``result`` is the stage's record, read back from the manifest. Default: nothing to put back.
        """


#: hooks of the stage contract that were renamed: old name -> new signature (a stage defining an
#: old one fails at import with this hint, rather than having its rules silently skipped)
RENAMED = {
    "check": "check_settings(self, settings, shared)",
    "validate": "check_model(self, ctx, settings)",
}
