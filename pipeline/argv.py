"""The command line's words as Hydra reads them: overrides, flags, ``-m``.

Both the precheck (``vizpipe.pipeline.precheck``) and the run folder's claim
(``vizpipe.pipeline.run_folder``) read ``argv`` before Hydra does, and the command line
(``vizpipe.pipeline.cli``) adds overrides to it; they read it through this module alone.
"""

from __future__ import annotations

__all__ = ["after_overrides", "split_args"]

_FLAGS_WITH_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "--package", "-p"}
_OPTIONAL_VALUE = {"--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}


def split_args(argv: list[str]) -> tuple[list[str], dict[str, str], bool]:
    """(overrides, flags, multirun) as Hydra will read ``argv``."""
    overrides: list[str] = []
    flags: dict[str, str] = {}
    multirun = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            key, _, val = a.partition("=")
            if key in _FLAGS_WITH_VALUE and not val:
                val = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            elif key in _OPTIONAL_VALUE and not val and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                val = argv[i + 1]
                i += 1
            flags[key] = val
        else:
            overrides.append(a)
        i += 1
    return overrides, flags, multirun


def after_overrides(argv: list[str]) -> int:
    """Where one more override goes: right after the last one. Hydra's argparse reads the overrides
    as one run of words, so ``model=vgg11 --cfg job hydra.job.name=run`` would be refused."""
    count = len(split_args(argv)[0])
    if not count:
        return len(argv)
    return next(i + 1 for i in range(len(argv)) if len(split_args(argv[: i + 1])[0]) == count)
