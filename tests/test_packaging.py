"""The import name: everything is ``vizpipe.*``, the wheel installs only ``vizpipe`` and works alone."""

from __future__ import annotations

import ast
import os
import re
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
#: the design card's top-level folders, which are parts of vizpipe and never imported by their own name
PARTS = ("pipeline", "stages")
CODE_DIRS = ("vizpipe", "pipeline", "stages", "tests", "benchmarks", "scripts")


def _python_files() -> list[Path]:
    files = [ROOT / "run.py"]
    for d in CODE_DIRS:
        files += sorted((ROOT / d).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def test_no_module_imports_a_part_by_its_bare_name():
    """``import pipeline`` would load a second copy of every module (and shadow other packages)."""
    bad = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in PARTS]
    assert bad == []


def test_config_targets_name_vizpipe_modules():
    """Every ``_target_`` and ``()`` factory in conf/ that names vizpipe code uses the import name."""
    pattern = re.compile(r"^\s*(?:_target_|\(\)):\s*([\w.]+)", re.M)
    targets = [m for p in (ROOT / "conf").rglob("*.yaml") for m in pattern.findall(p.read_text())]
    assert targets and not [t for t in targets if t.split(".")[0] in PARTS]


def test_every_package_folder_ships():
    """pyproject lists every package folder under vizpipe/, pipeline/ and stages/ (the wheel holds them)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"vizpipe", "vizpipe.conf"}
    found |= {".".join(i.parent.relative_to(ROOT).parts) for i in (ROOT / "vizpipe").rglob("*/__init__.py")}
    for part in PARTS:
        for init in (ROOT / part).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            if "hydra_plugins" not in rel.parts:  # Hydra's plugin namespace ships as package data
                found.add(".".join(("vizpipe", *rel.parts)))
    assert listed == found


def test_import_vizpipe_is_cheap_and_public_names_resolve():
    """``import vizpipe`` loads no torch; the stage contract is reachable from the top."""
    code = (
        "import sys, vizpipe; assert 'torch' not in sys.modules, 'torch imported';"
        "from vizpipe import Stage, StageResult, Picture;"
        "import vizpipe.pipeline.stage as s; assert Stage is s.Stage;"
        "print(vizpipe.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.1.0"


def _site_dirs() -> list[str]:
    """This interpreter's library folders (the fresh venv borrows torch & co. from them)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


@pytest.mark.slow
def test_wheel_installs_only_vizpipe_and_runs_outside_the_checkout(tmp_path):
    """Build the wheel, install it into a fresh venv in a temporary folder, run both entries there.

    The venv gets the heavy dependencies (torch, Hydra, ...) through a path file naming this
    environment's site folders, whose own ``.pth`` files (this checkout's editable install) are
    not read; so ``vizpipe`` can only come from the wheel.
    """
    # no PYTHONPATH (a worktree's) or editable install may leak into pip or the fresh venv
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ROOT],
        capture_output=True,
        text=True,
        env=env,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("vizpipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vizpipe"}
    for needed in (
        "vizpipe/conf/config.yaml",
        "vizpipe/conf/model/resnet18.yaml",
        "vizpipe/stages/cam/__init__.py",
    ):
        assert needed in names
    assert "vizpipe/pipeline/hydra/hydra_plugins/vizpipe_sweeper/__init__.py" in names
    assert "vizpipe/pipeline/report/templates/report.css" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, env=env)
    vpy = venv / "bin" / "python"
    vsite = Path(
        subprocess.run(
            [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
    )
    (vsite / "zz_borrowed.pth").write_text("\n".join(_site_dirs()) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", vpy, "install", "--no-deps", "-q", wheel],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [
            vpy,
            "-c",
            "import importlib.util as u, vizpipe, vizpipe.pipeline.runner as r;"
            "print(r.__file__); print(u.find_spec('pipeline'), u.find_spec('stages'))",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    runner_file, specs = where.stdout.strip().splitlines()
    assert runner_file.startswith(str(vsite)) and specs == "None None"

    common = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]"]
    run = subprocess.run(
        [venv / "bin" / "vizpipe", *common, "stages=[summary]", f"hydra.run.dir={work / 'run'}"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (work / "run" / "summary" / "summary.txt").is_file() and (work / "run" / "run.log").is_file()

    sweep = subprocess.run(
        [
            vpy,
            "-m",
            "vizpipe",
            "-m",
            *common,
            "stages=[summary]",
            "seed=0,1",
            f"hydra.sweep.dir={work / 'sw'}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    assert (work / "sw" / "index.html").is_file()
    assert len([p for p in (work / "sw").iterdir() if (p / "manifest.json").is_file()]) == 2

    bad = subprocess.run(
        [venv / "bin" / "vizpipe", "model=resnet1"], cwd=work, capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0 and "resnet18" in bad.stderr
