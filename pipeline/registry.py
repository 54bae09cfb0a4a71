"""Stage discovery: the only place that knows which stages exist.

Stages are found, never listed:

* every module or package under ``stages/`` (its YAML: ``conf/<name>/default.yaml``);
* every ``<name>.py`` (or package ``<name>/``) in the plugin folders named by the environment
  variable ``VIZPIPE_PLUGINS`` (``os.pathsep``-separated), with its YAML beside it as
  ``<name>.yaml``.

A module contributes the ``Stage`` subclasses it defines itself (imported classes are ignored).
Importing a stage module must be cheap: heavy libraries are imported inside ``run``.
``vizpipe.pipeline.schema`` turns the result into Hydra config groups; the runner, the precheck and the
report ask this module for names and classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from vizpipe.pipeline.errors import ConfigError, unknown_choice
from vizpipe.pipeline.stage import Stage

__all__ = [
    "PLUGINS_ENV",
    "default_stages",
    "get_stage",
    "plugin_yaml",
    "register",
    "stage_classes",
    "unregister",
]

#: environment variable naming extra stage folders (os.pathsep-separated)
PLUGINS_ENV = "VIZPIPE_PLUGINS"
PLUGIN_PACKAGE = "vizpipe_plugins"

_found: dict[str, type[Stage]] | None = None
_yaml: dict[str, Path] = {}  # plugin stage name -> its YAML file


def _stage_classes_in(module: ModuleType) -> list[type[Stage]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Stage)
        and not inspect.isabstract(obj)
        and obj.__module__ == module.__name__
        and isinstance(getattr(obj, "name", None), str)
    ]


def plugin_dirs() -> list[Path]:
    """The folders named by ``VIZPIPE_PLUGINS`` (missing ones are an error)."""
    out = []
    for part in os.environ.get(PLUGINS_ENV, "").split(os.pathsep):
        if not part.strip():
            continue
        path = Path(part).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{PLUGINS_ENV} names '{part}', which is not a folder; fix or unset it")
        out.append(path.resolve())
    return out


def _import_plugin(path: Path, name: str) -> ModuleType:
    """Import ``<folder>/<name>.py`` (or the package ``<folder>/<name>/``) as ``vizpipe_plugins.<name>``."""
    if PLUGIN_PACKAGE not in sys.modules:
        pkg = ModuleType(PLUGIN_PACKAGE)
        pkg.__path__ = []  # a namespace for the plugin modules
        sys.modules[PLUGIN_PACKAGE] = pkg
    full = f"{PLUGIN_PACKAGE}.{name}"
    if full in sys.modules:
        return sys.modules[full]
    location = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        full, location, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise ConfigError(f"Plugin stage {location} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[full]
        raise ConfigError(f"Plugin stage {location} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _discover() -> dict[str, type[Stage]]:
    from vizpipe import stages

    found: dict[str, type[Stage]] = {}

    def add(cls: type[Stage], where: str) -> None:
        if cls.name in found and found[cls.name] is not cls:
            raise ConfigError(
                f"Two stages are named '{cls.name}': {found[cls.name].__module__} and {where}; rename one"
            )
        found[cls.name] = cls

    for info in pkgutil.iter_modules(stages.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"vizpipe.stages.{info.name}")
        for cls in _stage_classes_in(module):
            add(cls, module.__name__)
    for folder in plugin_dirs():
        for path in sorted(folder.iterdir()):
            name = path.stem if path.suffix == ".py" else path.name
            is_pkg = path.is_dir() and (path / "__init__.py").is_file()
            if name.startswith(("_", ".")) or not (path.suffix == ".py" or is_pkg):
                continue
            module = _import_plugin(path, name)
            for cls in _stage_classes_in(module):
                add(cls, str(path))
                if (folder / f"{cls.name}.yaml").is_file():
                    _yaml[cls.name] = folder / f"{cls.name}.yaml"
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def stage_classes() -> dict[str, type[Stage]]:
    """Stage name -> class, in pipeline order (discovered once per process)."""
    global _found
    if _found is None:
        _found = _discover()
    return _found


def plugin_yaml(name: str) -> Path | None:
    """The YAML of plugin stage ``name`` (None for a built-in stage: its YAML is in ``conf/``)."""
    stage_classes()
    return _yaml.get(name)


def default_stages() -> list[str]:
    """The default ``stages`` list: every stage marked ``default``, in order."""
    return [n for n, cls in stage_classes().items() if cls.default]


def get_stage(name: str) -> Stage:
    """A new instance of stage ``name``; an unknown name lists the stages (closest first)."""
    classes = stage_classes()
    if name not in classes:
        raise unknown_choice("stage", name, classes, hint="Set e.g. 'stages=[summary,cam]'")
    return classes[name]()


def register(cls: type[Stage]) -> None:
    """Add a stage class by hand (tests); its settings are not a config group."""
    stage_classes()[cls.name] = cls


def unregister(name: str) -> None:
    """Remove a stage added with ``register``."""
    stage_classes().pop(name, None)


def built_keys() -> dict[str, tuple[str, ...]]:
    """Config key whose ``_target_`` vizpipe builds -> the modules whose callables it trusts there:
    ``model`` (vizpipe's factories) and what each stage names in ``Stage.targets``."""
    from vizpipe.pipeline.factory.targets import MODEL_MODULES

    keys: dict[str, tuple[str, ...]] = {"model": MODEL_MODULES}
    for name, cls in stage_classes().items():
        for key, modules in (getattr(cls, "targets", None) or {}).items():
            keys[f"{name}.{key}"] = tuple(modules)
    return keys
