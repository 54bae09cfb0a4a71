"""Data sets with labels and splits: input=shapes, input=cifar10 (real torchvision loader on a
CIFAR-10 folder the test writes), input=imagefolder, and the offline errors."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, run_cli
from PIL import Image
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import build_inputs, build_split
from vizpipe.pipeline.inputs.shapes import SHAPES, ShapesDataset, render

CPU = torch.device("cpu")
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def inputs_for(overrides: list[str], model=None):
    cfg = compose_config(overrides)
    return build_inputs(cfg.input, None, CPU, int(cfg.seed), model)


# --------------------------------------------------------------------------- shapes


def test_shapes_same_seed_same_images_other_seed_other_images() -> None:
    a = [render(7, "train", i, 64) for i in range(6)]
    b = [render(7, "train", i, 64) for i in range(6)]
    c = [render(8, "train", i, 64) for i in range(6)]
    for x, y, z in zip(a, b, c, strict=True):
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.mask, y.mask) and x.box == y.box
        assert not np.array_equal(x.rgb, z.rgb)
    item = ShapesDataset(7, "train", 6, 64, [0.5] * 3, [0.5] * 3)[3]
    assert torch.equal(item["rgb"], torch.from_numpy(a[3].rgb))
    assert torch.allclose(item["x"], (item["rgb"] - 0.5) / 0.5)
    assert item["label"] == a[3].label and item["box"].tolist() == list(a[3].box)


def test_shapes_boxes_hold_the_mask_tightly() -> None:
    for i in range(60):
        s = render(0, "test", i, 64)
        x0, y0, x1, y1 = (int(v) for v in s.box)
        ys, xs = np.nonzero(s.mask)
        assert s.mask.sum() > 20, f"item {i}: object of {s.mask.sum()} px"
        assert s.mask[y0:y1, x0:x1].sum() == s.mask.sum()  # every object pixel inside the box
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)  # and no slack
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert s.rgb.shape == (3, 64, 64) and s.rgb.dtype == np.float32
        assert 0.0 <= s.rgb.min() and s.rgb.max() <= 1.0


def test_shapes_splits_are_disjoint_and_classes_balanced() -> None:
    digests = {}
    for split in ("train", "val", "test"):
        digests[split] = {hashlib.sha1(render(0, split, i, 32).rgb.tobytes()).hexdigest() for i in range(150)}
        assert len(digests[split]) == 150  # no two images alike within a split either
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]
    labels = [render(0, "train", i, 32).label for i in range(300)]
    counts = np.bincount(labels, minlength=len(SHAPES))
    assert counts.min() >= 0.8 * counts.max(), counts


def test_shapes_input_has_classes_boxes_and_other_splits() -> None:
    inputs = inputs_for(["input=shapes", "input.limit=10", "input.batch_size=4", "input.size=48"])
    assert inputs.classes == list(SHAPES) and inputs.split == "test" and len(inputs) == 10
    batch = inputs.first()
    assert batch.tensor.shape == (4, 3, 48, 48) and batch.rgb.shape == (4, 48, 48, 3)
    assert all(b is not None and b[2] > b[0] for b in batch.boxes)
    assert batch.labels == [0, 1, 2, 3] and batch.names[1] == "test_00001_square"
    train = build_split(inputs, "train")  # every item: input.limit applies to the split shown only
    assert train.split == "train" and len(train) == 3000 and train.classes == list(SHAPES)
    assert not np.array_equal(train.first().rgb, batch.rgb)


def test_class_names_come_from_the_data_set_when_the_model_has_none(tmp_path: Path) -> None:
    from vizpipe.pipeline.factory import build_context

    ctx = build_context(
        compose_config(["input=shapes", "model=shapes_net", "input.limit=4", "input.test_count=4"]), tmp_path
    )
    assert ctx.categories == list(SHAPES)
    assert ctx.top_k(1)[0][0]["name"] in SHAPES


def test_split_rules_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"input.size must be >= 32"):
        inputs_for(["input=shapes", "input.size=16"])
    with pytest.raises(ConfigError, match=r"input.val_count must be >= 1"):
        inputs_for(["input=shapes", "input.val_count=0"])
    with pytest.raises(ConfigError, match=r"input.val_fraction \+ input.test_fraction must be < 1"):
        inputs_for(
            [
                "input=imagefolder",
                f"input.root={tmp_path}",
                "input.val_fraction=0.5",
                "input.test_fraction=0.5",
            ]
        )
    with pytest.raises(ConfigError, match=r"input.root '.*nowhere' is not a folder"):
        inputs_for(["input=imagefolder", f"input.root={tmp_path / 'nowhere'}"])
    photo = inputs_for(["input=photo"])
    with pytest.raises(ConfigError, match=r"input=photo has no train split; .*input=shapes"):
        build_split(photo, "train")


# --------------------------------------------------------------------------- CIFAR-10


def write_cifar(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A tiny CIFAR-10 in its own on-disk format: five training batches, the test batch, the meta."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: R plane, G, B (32×32 each)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        doc = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(doc))
        written[name] = (data, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES, "num_vis": 3072}))
    return written


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """The written folder, with torchvision's expected md5 sums set to its files' (the real
    ``_check_integrity`` and the real unpickling then run on it)."""
    from torchvision.datasets import CIFAR10

    root = tmp_path / "data"
    written = write_cifar(root)
    folder = root / "cifar-10-batches-py"
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(folder / n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5(folder / n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return root, written


def test_cifar10_reads_its_own_format_through_torchvision(cifar_root: tuple[Path, dict]) -> None:
    root, written = cifar_root
    base = ["input=cifar10", f"input.root={root}", "input.limit=null", "input.val_fraction=0.25"]
    test = inputs_for(base)
    assert test.classes == CIFAR_CLASSES and test.split == "test" and len(test) == 4
    data, labels = written["test_batch"]
    batch = test.first()
    expected = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / np.float32(255)  # (N, 32, 32, 3)
    assert np.array_equal(batch.rgb, expected.astype(np.float32))
    assert batch.labels == labels and batch.tensor.shape == (4, 3, 32, 32)
    assert torch.allclose(batch.tensor, (torch.from_numpy(batch.rgb).permute(0, 3, 1, 2) - 0.5) / 0.5)
    assert batch.names[0] == f"test_00000_{CIFAR_CLASSES[labels[0]]}"
    train, val = build_split(test, "train"), build_split(test, "val")
    assert (len(train), len(val)) == (15, 5)  # 20 training images, the last quarter held out
    all_labels = [v for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    assert [train.dataset[i]["label"] for i in range(15)] == all_labels[:15]
    assert [val.dataset[i]["label"] for i in range(5)] == all_labels[15:]
    assert {p.name for p in train.files} == {f"data_batch_{i}" for i in range(1, 6)}


def test_cifar10_damaged_folder_is_one_config_error(tmp_path: Path) -> None:
    write_cifar(tmp_path)  # torchvision's real md5 sums do not match these files
    with pytest.raises(
        ConfigError, match=r"cifar-10-batches-py is incomplete or damaged .*input.download=true"
    ):
        inputs_for(["input=cifar10", f"input.root={tmp_path}"])


@pytest.mark.slow
def test_cifar10_missing_offline_is_one_line_naming_folder_and_flag(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    proc = run_cli(
        ["input=cifar10", f"input.root={missing}", "stages=[summary]", f"hydra.run.dir={tmp_path / 'run'}"]
    )
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stdout + proc.stderr
    assert str(missing / "cifar-10-batches-py") in errors[0] and "input.download=true" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- imagefolder


def write_folder(root: Path, classes: dict[str, int], size: int = 40) -> None:
    rng = np.random.default_rng(1)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(
                root / name / f"{i:02d}.png"
            )


def test_imagefolder_labels_from_folders_and_fixed_stratified_splits(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 10, "dog": 20})
    base = [
        "input=imagefolder",
        f"input.root={tmp_path}",
        "input.limit=null",
        "input.resize=32",
        "input.crop=32",
    ]
    test = inputs_for(base)
    assert test.classes == ["cat", "dog"] and test.split == "test"
    splits = {s: build_split(test, s) for s in ("train", "val", "test")}
    files = {s: {str(f) for f in x.files} for s, x in splits.items()}
    assert sum(len(v) for v in files.values()) == 30 and not files["train"] & files["val"]
    assert not files["train"] & files["test"] and not files["val"] & files["test"]
    for s, count in (("test", 3), ("val", 3), ("train", 24)):  # 10% of each class, twice; the rest
        assert len(splits[s]) == count
    labels = [splits["test"].dataset[i]["label"] for i in range(3)]
    assert sorted(labels) == [0, 1, 1]  # stratified: 1 cat, 2 dogs
    item = splits["train"].dataset[0]
    assert item["x"].shape == (3, 32, 32) and item["label"] in (0, 1)
    assert files == {s: {str(f) for f in build_split(test, s).files} for s in files}  # fixed draw
    assert test.first().names[0].startswith(("cat_", "dog_"))


def test_imagefolder_train_val_test_folders_are_used(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        write_folder(tmp_path / split, {"a": n, "b": n})
    test = inputs_for(["input=imagefolder", f"input.root={tmp_path}", "input.limit=null"])
    assert len(test) == 6 and all("/test/" in str(f) for f in test.files)
    assert len(build_split(test, "train")) == 8 and len(build_split(test, "val")) == 4


def test_imagefolder_without_images_is_one_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(
        ConfigError, match=r"is not an image folder data set .*one sub-folder of images per class"
    ):
        inputs_for(["input=imagefolder", f"input.root={tmp_path}"])
