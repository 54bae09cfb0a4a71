"""The stage contract: a new stage is one module and one YAML, and everything else reads its record."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from vizpipe.pipeline.registry import stage_classes

BLUR = '''
"""A throwaway stage: the first batch, blurred (a plugin, not part of vizpipe)."""

from dataclasses import dataclass

from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.stage import Picture, Scalar, Stage, StageResult, Table


@dataclass
class BlurConfig:
    """``blur.*``."""

    sigma: float = 1.0  # Gaussian sigma in pixels (> 0)


class BlurStage(Stage):
    """Blurs the input images and reports how much detail went away."""

    name = "blur"
    title = "Blurred input"
    config = BlurConfig
    order = 50

    def check_settings(self, settings, shared):
        if settings.sigma <= 0:
            raise ConfigError(f"blur.sigma must be > 0, got {settings.sigma}")

    def run(self, ctx, settings):
        import numpy as np
        from PIL import Image, ImageFilter

        batch = ctx.inputs.first()
        pictures, rows = [], []
        for name, rgb in zip(batch.names, batch.rgb):
            img = Image.fromarray(np.uint8(rgb * 255))
            blurred = img.filter(ImageFilter.GaussianBlur(settings.sigma))
            rel = f"blur/{name}.png"
            blurred.save(ctx.claim(rel))
            lost = float(np.abs(np.asarray(img, float) - np.asarray(blurred, float)).mean())
            pictures.append(Picture(rel, f"{name} at sigma {settings.sigma}", tag=f"blur/{name}"))
            rows.append([name, round(lost, 3)])
        return StageResult(
            "blur",
            summary=f"{len(rows)} image(s) blurred",
            params={"sigma": str(settings.sigma)},
            pictures=pictures,
            tables=[Table("Detail lost", ["Image", "Mean |difference|"], rows)],
            scalars=[Scalar("blur/lost", rows[0][1], key=True, better="lower")],
        )
'''

BLUR_YAML = """\
# A throwaway plugin stage's settings.
defaults:
  - _schema         # BlurConfig, stored by vizpipe's registry
  - _self_
sigma: 2.0          # Gaussian sigma in pixels
"""


@pytest.fixture
def plugin(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "blur.py").write_text(textwrap.dedent(BLUR))
    (folder / "blur.yaml").write_text(BLUR_YAML)
    return {"VIZPIPE_PLUGINS": str(folder)}


@pytest.mark.slow
def test_a_plugin_stage_runs_without_editing_any_file(plugin: dict[str, str], tmp_path: Path) -> None:
    tracked = {p: p.stat().st_mtime_ns for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts}
    run = tmp_path / "run"
    small = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]"]
    proc = run_cli([*small, "stages=[summary,blur,tensorboard]", f"hydra.run.dir={run}"], env=plugin)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((run / "manifest.json").read_text())
    rec = next(s for s in m["stages"] if s["name"] == "blur")
    assert rec["status"] == "ok" and rec["title"] == "Blurred input"
    assert rec["result"]["params"] == {"sigma": "2.0"}  # its YAML's default
    assert [a["path"] for a in rec["artifacts"]] == ["blur/random_0.png"]
    html = (run / "report.html").read_text()
    assert 'data-section="blur"' in html and "Detail lost" in html and 'data-path="blur/random_0.png"' in html
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert "blur/random_0" in acc.Tags()["images"] and "blur/lost" in acc.Tags()["scalars"]
    # its settings are typed and checked like any stage's, before anything runs
    bad = run_cli([*small, "stages=[blur]", "blur.sigmaa=1", f"hydra.run.dir={tmp_path / 'bad'}"], env=plugin)
    assert bad.returncode != 0 and "did you mean 'blur.sigma'" in bad.stderr.strip().splitlines()[-1]
    bad = run_cli([*small, "stages=[blur]", "blur.sigma=0", f"hydra.run.dir={tmp_path / 'bad2'}"], env=plugin)
    assert "blur.sigma must be > 0, got 0.0" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad2" / "blur").exists()  # failed before any work
    changed = [p for p, t in tracked.items() if p.exists() and p.stat().st_mtime_ns != t]
    assert not [p for p in changed if "__pycache__" not in p.parts], changed


def test_no_module_outside_a_stage_names_a_stage() -> None:
    """The runner, precheck, report and schema discover stages; none of them spells a stage's name."""
    names = set(stage_classes())
    allowed = {
        ("pipeline/layers.py", "features"),  # torchvision's ``model.features`` container, not the stage
        ("pipeline/gradcam/methods.py", "cam"),  # the "cam" suffix of grad-cam's class names
        ("pipeline/manifest.py", "tensorboard"),  # the pip package whose version is recorded
        ("pipeline/tensorboard_io.py", "tensorboard"),  # the pip package torch.utils.tensorboard needs
    }
    allowed |= {  # a data set's "train" split (train/val/test), not the train stage
        (p.relative_to(ROOT).as_posix(), "train")
        for p in [*(ROOT / "pipeline" / "inputs").glob("*.py"), ROOT / "pipeline" / "schema.py"]
    }
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for word in {node.value, *node.value.split("/")} & names:
                    if (rel, word) not in allowed and not node.value.startswith(("\n", " ")):
                        found.append((rel, node.value))
    docstrings = {n for n in found if len(n[1]) > 60}  # prose in docstrings may mention a stage
    assert set(found) - docstrings == set(), found
    config = (ROOT / "conf" / "config.yaml").read_text()
    assert not any(f"- {name}:" in config for name in names)


def test_every_stage_has_a_typed_schema_and_a_commented_yaml() -> None:
    for name, cls in stage_classes().items():
        assert cls.title and cls.config is not None, name
        yaml = ROOT / "conf" / name / "default.yaml"
        text = yaml.read_text()
        assert "- _schema" in text and "- _self_" in text, yaml
        for line in text.splitlines():
            if line and not line.startswith((" ", "#", "defaults:", "  -")) and ":" in line:
                assert "#" in line, f"{yaml}: key without a comment: {line}"


def architecture_example() -> tuple[str, str]:
    """The Python and the YAML block of docs/architecture.md's "Adding a stage" section."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## Adding a stage") :]
    section = section[: section.index("\n## ")]

    def block(lang: str) -> str:
        start = section.index(f"```{lang}\n") + len(f"```{lang}\n")
        return section[start : section.index("```", start)]

    return block("python"), block("yaml")


def test_the_architecture_docs_stage_example_passes_the_projects_lint(tmp_path: Path) -> None:
    """The example is a whole plugin module, short, and clean under the project's ruff settings."""
    code, yaml = architecture_example()
    assert 0 < len(code.splitlines()) < 60, len(code.splitlines())
    assert "- _schema" in yaml and "- _self_" in yaml
    path = tmp_path / "brightness.py"
    path.write_text(code)
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check", "--diff"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--config", config, str(path)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"ruff {command[0]}:\n{proc.stdout}{proc.stderr}"
    assert os.environ.get("VIZPIPE_PLUGINS") is None


@pytest.mark.slow
def test_the_architecture_docs_stage_example_runs_as_a_plugin(tmp_path: Path) -> None:
    """docs/architecture.md's example, written as a plugin, runs through the real CLI: the data set
    is streamed (one image per batch), each picture is the image's brightness through the YAML's
    colormap, a flat image is warned about in that stage's record, TensorBoard (after it) logs it."""
    import numpy as np
    from PIL import Image
    from vizpipe.pipeline.render import color_index, colormap_levels, colormap_lut

    code, yaml = architecture_example()
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "brightness.py").write_text(code)
    (folder / "brightness.yaml").write_text(yaml)
    pixels = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    pixels[0] = 0.5  # one flat image
    np.save(tmp_path / "x.npy", pixels)
    run = tmp_path / "run"
    args = ["model=seed_net", "input=tensor", f"input.path={tmp_path / 'x.npy'}", "input.normalized=false"]
    args += ["input.batch_size=1", "stages=[summary,brightness,tensorboard]", f"hydra.run.dir={run}"]
    proc = run_cli(args, env={"VIZPIPE_PLUGINS": str(folder)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((run / "manifest.json").read_text())
    rec = next(s for s in m["stages"] if s["name"] == "brightness")
    assert rec["status"] == "ok" and rec["result"]["params"] == {"cmap": "viridis"}  # the YAML's
    paths = [a["path"] for a in rec["artifacts"]]
    assert len(paths) == 2 and all(p.startswith("brightness/") for p in paths)
    lut, levels = colormap_lut("viridis"), colormap_levels("viridis")
    rows = rec["result"]["tables"][0]["rows"]
    for path, row, image in zip(paths, rows, pixels, strict=True):
        gray = image.mean(axis=0)  # (H, W): what the stage drew
        with Image.open(run / path) as im:
            assert im.mode == "P" and np.array_equal(np.asarray(im), color_index(gray, levels))
            assert np.array_equal(np.asarray(im.getpalette(), np.uint8).reshape(-1, 3)[:levels], lut[:levels])
        assert row[1] == pytest.approx(float(gray.mean()), abs=1e-6)
    flat = f"brightness: {Path(paths[0]).stem} is one flat colour"
    assert rec["result"]["warnings"] == [flat] and flat in m["warnings"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert f"brightness/{Path(paths[1]).stem}" in acc.Tags()["images"]
    assert "brightness/mean" in acc.Tags()["scalars"]
    bad = run_cli(
        [*args[:-1], "brightness.cmap=virdis", f"hydra.run.dir={tmp_path / 'bad'}"],
        env={"VIZPIPE_PLUGINS": str(folder)},
    )
    assert "did you mean 'viridis'" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad" / "brightness").exists()  # refused before any work
