"""The bad-input matrix, through the real CLI: one readable line, non-zero exit, nothing lost.

Each failing case checks: exit code != 0; the last stderr line names the bad value (and the valid
choices where there are any); no Python traceback on the console; manifest.json says what failed.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from vizpipe.pipeline.inputs.images import bundled_photo

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent
SMALL = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]"]


def user_error(proc, run_dir: Path | None, *needles: str) -> dict:
    """Assert the CLI failed the way a user error must fail; return the manifest (if any)."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console, console[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, f"{needle!r} not in last stderr line: {last}"
    if run_dir is None:
        return {}
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed"
    failed = [r for r in [m["setup"], *m["stages"]] if r["status"] == "failed"]
    assert failed and failed[0]["error"], m
    assert needles[0] in failed[0]["error"]
    return m


CONFIG_CASES = {
    "unknown model": (["model=resnet19"], ["resnet19", "did you mean 'resnet18'", "vgg11"]),
    "unknown stage": (["stages=[nope]"], ["nope", "summary", "cam"]),
    "unknown device option": (["device=tpu"], ["tpu", "cpu", "auto"]),
    "unknown device type": (["device.type=gpu9"], ["gpu9", "cuda"]),
    "typo'd key": (["cam.target_clas=1"], ["target_clas", "cam.target_class"]),
    "wrong type": (["cam.target_class=abc"], ["abc", "cam.target_class"]),
    "stages not a list": (["stages=summary"], ["summary", "stages=[summary]"]),
    "bad enum": (["features.select=best"], ["best", "first", "top"]),
    "unknown cam method": ([*SMALL, "stages=[cam]", "cam.method=gradcan"], ["gradcan", "gradcam"]),
    "layer that does not exist": (
        [*SMALL, "stages=[features]", "features.layers=[conv3]"],
        ["conv3", "conv2"],
    ),
    "kernel layer without weights": (
        [*SMALL, "stages=[kernels]", "kernels.layers=[pool]"],
        ["pool", "conv1"],
    ),
    "cam layer without spatial output": ([*SMALL, "stages=[cam]", "cam.layer=linear1"], ["linear1"]),
    "class index too large": ([*SMALL, "stages=[cam]", "cam.target_class=1"], ["1"]),
    "class index negative": ([*SMALL, "stages=[cam]", "cam.target_class=-1"], ["-1"]),
    "mean of the wrong length": (
        [*SMALL, "stages=[summary]", "input.mean=[1,2]"],
        ["input.mean", "3 channels"],
    ),
    "std of zero": ([*SMALL, "stages=[summary]", "input.std=[0.2,0,0.2]"], ["input.std", "[0.2, 0.0, 0.2]"]),
    "missing image": (["input=image", "input.path=missing.jpg", "stages=[summary]"], ["missing.jpg"]),
    "image kind without path": (["input=image", "stages=[summary]"], ["input.path"]),
    "unknown torchvision model": (
        ["model=torchvision", "model.name=resnet181", "stages=[summary]"],
        ["resnet181", "resnet18"],
    ),
    "unknown weights": (["model.weights=IMAGENET9K", "stages=[summary]"], ["IMAGENET9K", "DEFAULT"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_errors(cli, tmp_path, case):
    args, needles = CONFIG_CASES[case]
    run = tmp_path / "run"
    user_error(cli([*args, f"hydra.run.dir={run}"]), run, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(cli, tmp_path):
    user_error(
        cli(["device=cuda", "stages=[summary]", f"hydra.run.dir={tmp_path}/run"]),
        tmp_path / "run",
        "cuda",
        "cpu",
    )


def _truncated_jpeg(path: Path) -> Path:
    data = bundled_photo().read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _text_as_jpg(path: Path) -> Path:
    path.write_text("this is not a picture\n")
    return path


def _empty_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("no images here")
    return path


FILE_CASES = {
    "truncated jpeg": (_truncated_jpeg, "cut.jpg", ["cut.jpg", "truncated"]),
    "text file named jpg": (_text_as_jpg, "fake.jpg", ["fake.jpg", "not an image"]),
    "empty folder": (_empty_folder, "empty", ["empty", ".jpg"]),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_image_files(cli, tmp_path, case):
    make, name, needles = FILE_CASES[case]
    path = make(tmp_path / name)
    run = tmp_path / "run"
    user_error(
        cli(["input=image", f"input.path={path}", "stages=[summary]", f"hydra.run.dir={run}"]), run, *needles
    )


@pytest.mark.parametrize(
    ("shape", "needle"), [((3, 32, 32), "rank 3"), ((1, 4, 32, 32), "4 channels")], ids=["rank", "channels"]
)
def test_bad_tensor_files(cli, tmp_path, shape, needle):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape, dtype=np.float32))
    run = tmp_path / "run"
    user_error(
        cli(["input=tensor", f"input.path={path}", "stages=[summary]", f"hydra.run.dir={run}"]),
        run,
        needle,
        "x.npy",
    )


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_unusual_images_are_converted(cli, tmp_path, mode):
    rgb = Image.open(bundled_photo()).convert("RGB").resize((96, 128))
    folder = tmp_path / "imgs"
    folder.mkdir()
    if mode == "I;16":
        arr = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16") or img.mode == "I"
    else:
        img = rgb.convert(mode)
    img.save(folder / "pic.png")
    run = tmp_path / "run"
    proc = cli(
        [
            "input=image",
            f"input.path={folder}",
            "stages=[features]",
            "features.layers=[layer1]",
            "features.max_channels=4",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "manifest.json").read_text())["status"] == "ok"
    from vizpipe.pipeline.inputs.images import load_rgb

    arr = load_rgb(folder / "pic.png")
    assert arr.shape == (128, 96, 3) and arr.dtype == np.uint8
    assert 40 < arr.mean() < 220, "16-bit or alpha images must not come out black or white"


def _save_state(tmp_path: Path, **changes) -> Path:
    from vizpipe.pipeline.models import SeedNet

    torch.manual_seed(0)
    state = SeedNet().state_dict()
    for key, value in changes.items():
        if value is None:
            state.pop(key.replace("__", "."))
        else:
            state[key.replace("__", ".")] = value
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    return path


def test_missing_checkpoint(cli, tmp_path):
    run = tmp_path / "run"
    user_error(
        cli([*SMALL, "model.checkpoint=nope.pt", "stages=[summary]", f"hydra.run.dir={run}"]),
        run,
        "nope.pt",
        "state_dict",
    )


def test_checkpoint_with_mismatched_keys(cli, tmp_path):
    path = _save_state(tmp_path, conv1__weight=None, extra__weight=torch.zeros(1))
    run = tmp_path / "run"
    m = user_error(
        cli([*SMALL, f"model.checkpoint={path}", "stages=[summary]", f"hydra.run.dir={run}"]),
        run,
        "ckpt.pt",
        "conv1.weight",
        "extra.weight",
    )
    assert (
        "missing keys: conv1.weight" in m["setup"]["error"]
        and "unexpected keys: extra.weight" in m["setup"]["error"]
    )


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused_without_running(cli, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload(str(marker))}, f)
    run = tmp_path / "run"
    user_error(
        cli([*SMALL, f"model.checkpoint={path}", "stages=[summary]", f"hydra.run.dir={run}"]),
        run,
        "evil.pt",
        "a pickle holding pickled Python objects (posix.system), not a state_dict",
    )
    assert not marker.exists(), "the pickle payload ran"


def test_nan_weights_warn_and_mark_cam_maps_invalid(cli, tmp_path):
    from vizpipe.pipeline.models import SeedNet

    torch.manual_seed(0)
    w = SeedNet().state_dict()["conv2.weight"].clone()
    w[0, 0, 0, 0] = float("nan")
    path = _save_state(tmp_path, conv2__weight=w)
    run = tmp_path / "run"
    proc = cli([*SMALL, f"model.checkpoint={path}", "stages=[cam]", f"hydra.run.dir={run}"])
    m = json.loads((run / "manifest.json").read_text())
    assert any("NaN" in w for w in m["warnings"]), m["warnings"]
    assert "NaN" in proc.stdout + proc.stderr
    cam = json.loads((run / "cam" / "cam.json").read_text())
    maps = [mp for img in cam["images"] for mp in img["maps"]]
    assert maps and all(mp["valid"] is False for mp in maps)


def test_path_characters_never_escape_the_run_folder(cli, tmp_path):
    cats = tmp_path / "classes.txt"
    cats.write_text("../../evil:cls\n/abs/path\nC:\\win\n")
    run = tmp_path / "work" / "run"
    before = {p for p in tmp_path.rglob("*")}
    proc = cli(
        [
            "model._target_=helper_models.PathyNet",
            "model.name=../pathy:net",
            "model.num_classes=3",
            f"model.categories={cats}",
            "input=random",
            "input.shape=[1,3,32,32]",
            "stages=[summary,kernels,features,cam]",
            "features.layers=[all]",
            "cam.layer=a/b:c",
            "cam.target_class=[0,1,2]",
            f"hydra.run.dir={run}",
        ],
        env={"PYTHONPATH": str(TESTS)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if run not in p.parents and p != run and p != run.parent]
    assert not outside, outside
    names = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()]
    assert any(n.startswith("cam/") for n in names) and any(n.startswith("kernels/") for n in names)
    for n in names:
        assert ":" not in n and "\\" not in n and "/.." not in n and not n.startswith(".."), n


def test_run_folder_that_cannot_be_written(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = cli(["stages=[summary]", f"hydra.run.dir={blocker}/run"])
    user_error(proc, None, str(blocker), "cannot be written")


def test_user_errors_keep_the_traceback_in_the_log(cli, tmp_path):
    run = tmp_path / "run"
    bad = tmp_path / "fake.jpg"
    _text_as_jpg(bad)
    proc = cli(["input=image", f"input.path={bad}", "stages=[summary]", f"hydra.run.dir={run}"])
    assert proc.returncode != 0
    log = (run / "run.log").read_text()
    assert "Traceback" in log and "UnidentifiedImageError" in log


# ------------------------------------------------------------------ where the friendly errors stopped


def test_a_path_with_a_comma_says_how_to_quote_it(cli, tmp_path):
    photo = tmp_path / "a,b.jpg"
    photo.write_bytes(bundled_photo().read_bytes())
    for i, argv in enumerate(([f"input.path={photo}"], ["-m", f"input.path={photo}"])):
        run = tmp_path / f"bad{i}"
        proc = cli(
            ["input=image", *argv, "stages=[summary]", f"hydra.run.dir={run}", f"hydra.sweep.dir={run}"]
        )
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode != 0 and f"\"input.path='{photo}'\"" in last and "quote" in last, last
    run = tmp_path / "run"
    ok = cli(
        ["input=image", f"input.path='{photo}'", "stages=[summary]", "model=seed_net", f"hydra.run.dir={run}"]
    )
    assert ok.returncode == 0, ok.stderr[-1500:]


def test_a_users_config_dir_keeps_the_friendly_errors(cli, tmp_path):
    mine = tmp_path / "myconf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("# @package _global_\nstages: [summary]\nmodel:\n  name: resnet18\n")
    base = ["--config-dir", str(tmp_path / "myconf"), "experiment=mine", f"hydra.run.dir={tmp_path / 'run'}"]
    for extra, needle in (
        (["model=resnet19"], "did you mean 'resnet18'"),
        (["cam.layr=x"], "did you mean 'cam.layer'"),
        (["experiment=mien"], "did you mean 'mine'"),
    ):
        proc = cli([*base, *extra])
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode != 0 and needle in last and "Traceback" not in proc.stderr, proc.stderr[-1500:]


def test_declarative_sweeps_need_m_and_find_any_models_blocks(cli, tmp_path):
    """sweep=cam_layers without -m is one line; with a torchvision model that names no blocks it
    sweeps the blocks found on its architecture (it was refused before issue 21: a model whose
    blocks cannot be found is refused in one line, tests/test_layers.py)."""
    proc = cli(["sweep=cam_layers", f"hydra.run.dir={tmp_path / 'a'}"])
    assert proc.returncode != 0 and "add -m" in proc.stderr.strip().splitlines()[-1]
    proc = cli(
        [
            "-m",
            "sweep=cam_layers",
            "model=torchvision",
            "model.name=convnext_tiny",
            f"hydra.sweep.dir={tmp_path / 'b'}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir())
    assert jobs == [f"{i}_cam.layer=features.{2 * i + 1}" for i in range(4)]


def test_sweep_jobs_are_named_from_the_swept_keys_only(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        [
            "-m",
            "sweep=cam_classes",
            "cam.target_class=1,2",
            *SMALL[:1],
            "input=random",
            "input.shape=[1,3,32,32]",
            "model.num_classes=3",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_cam.target_class=1", "1_cam.target_class=2"]  # not ...,stages=_cam


def test_the_console_says_one_line_per_stage(cli, tmp_path):
    proc = cli([*SMALL, f"hydra.run.dir={tmp_path / 'a'}"])
    assert proc.returncode == 0, proc.stderr[-1500:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    stage_lines = [ln for ln in lines if " ok " in ln]
    assert len(stage_lines) == 5 and len(lines) <= 9, lines  # 5 stages + run folder + report
    assert all(ln.startswith("vizpipe: ") for ln in lines)
    log = (tmp_path / "a" / "run.log").read_text()
    assert "Kernels <conv1>" in log  # the per-layer details are in run.log
    verbose = cli([*SMALL, "verbose=true", f"hydra.run.dir={tmp_path / 'b'}"])
    assert "Kernels <conv1>" in verbose.stdout
