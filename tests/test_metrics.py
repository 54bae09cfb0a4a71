"""vizpipe.pipeline.metrics: every metric against an independent implementation on the same maps.

Quantus (``pip install quantus``; ./dev.sh test installs it) where it has the metric; the paper's
algorithm written as the paper's code runs it (one forward pass per step) where it does not
(RISE's deletion/insertion, the mask IoU's threshold sweep); grad-cam's own classes for its
metrics. Equal to 1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.metrics import complexity, localisation, perturbation, sanity
from vizpipe.pipeline.metrics.registry import FAMILIES, METRICS, check_metric_args, resolve_metrics
from vizpipe.pipeline.metrics.scoring import describe_target, score_maps


@pytest.fixture
def quantus():
    """Quantus, the reference implementation (the quantus extra; ./dev.sh test installs it)."""
    return pytest.importorskip("quantus", reason="Quantus is not installed (./dev.sh test installs it)")


def tiny(channels: int = 3, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    ).eval()


def tie_free(b: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    """Maps whose pixels are all different (Quantus and RISE order ties differently)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(h * w).reshape(h, w) / (h * w) for _ in range(b)]).astype(np.float32)


# ----------------------------------------------------------------------------- the paper's loop


def gaussian_kernel(klen: int, nsig: float) -> torch.Tensor:
    """RISE's gkern: a delta through scipy's gaussian_filter, one kernel per channel (C, C, k, k)."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    for c in range(3):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_single_run(
    model: nn.Module, img: torch.Tensor, explanation: np.ndarray, mode: str, step: int, c: int
):
    """RISE's CausalMetric.single_run as the paper runs it: one image, one forward pass per step,
    pixels replaced in place in the order np.flip(np.argsort(saliency)), softmax scores."""
    prob = nn.Sequential(model, nn.Softmax(dim=1))
    _, ch, h, w = img.shape
    hw = h * w
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img.clone(), torch.zeros_like(img)
    else:
        kern = gaussian_kernel(11, 5)
        start, finish = nn.functional.conv2d(img, kern, padding=11 // 2), img.clone()
    scores = np.empty(n_steps + 1)
    order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        with torch.no_grad():
            scores[i] = prob(start)[0, c]
        if i < n_steps:
            coords = order[:, step * i : step * (i + 1)]
            start.numpy().reshape(1, ch, hw)[0, :, coords] = finish.numpy().reshape(1, ch, hw)[0, :, coords]
    return scores


def rise_auc(arr: np.ndarray) -> float:
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("step", [16, 10])
def test_causal_curves_equal_the_papers_loop(mode: str, step: int) -> None:
    """All steps of each image in one forward pass equal RISE's step-by-step loop, ties included."""
    model = tiny()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = np.random.default_rng(3).random((3, 16, 16)).astype(np.float32)
    maps[1] = np.round(maps[1] * 4) / 4  # many ties
    maps[2] = 0.0  # one big tie
    classes = [0, 2, 3]
    got = perturbation.causal_curves(model, x, maps, classes, mode, step=step)
    for i in range(3):
        want = rise_single_run(model, x[i : i + 1].clone(), maps[i], mode[:3], step, classes[i])
        np.testing.assert_allclose(got[i], want, atol=1e-6)
        assert perturbation.auc(got[i]) == pytest.approx(rise_auc(want), abs=1e-6)
    assert got.shape == (3, (256 + step - 1) // step + 1)


def test_causal_curves_in_chunks_and_default_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks smaller than one image's states give the same curves; the default step is the width."""
    model = tiny()
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    maps = np.random.default_rng(0).random((2, 8, 12)).astype(np.float32)
    whole = perturbation.causal_curves(model, x, maps, [1, 2], "deletion")
    assert whole.shape == (2, 8 + 1)  # 96 pixels, 12 per step
    np.testing.assert_array_equal(
        perturbation.causal_curves(model, x, maps, [1, 2], "deletion", steps=8), whole
    )
    assert perturbation.causal_curves(model, x, maps, [1, 2], "deletion", steps=10).shape == (2, 10 + 1)
    monkeypatch.setattr(perturbation, "CHUNK_BYTES", x[0].nbytes * 3)
    np.testing.assert_allclose(
        perturbation.causal_curves(model, x, maps, [1, 2], "deletion"), whole, atol=1e-6
    )
    with pytest.raises(ValueError, match="deletion or insertion"):
        perturbation.causal_curves(model, x, maps, [1, 2], "erase")


def test_deletion_equals_quantus_pixel_flipping(quantus) -> None:
    """Quantus's PixelFlipping (baseline 0, softmax) is the deletion curve without its first point."""
    model = tiny(channels=1)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    maps = tie_free(3, 8, 8)
    y = np.array([0, 1, 3])
    metric = quantus.PixelFlipping(
        features_in_step=8, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.asarray(
            metric(
                model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps[:, None], device="cpu", softmax=True
            )
        )
    got = perturbation.causal_curves(model, x, maps, list(y), "deletion", step=8)
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-6)


def test_blur_is_the_papers_kernel() -> None:
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    want = nn.functional.conv2d(x, gaussian_kernel(11, 5), padding=5)
    np.testing.assert_allclose(perturbation.blur(x).numpy(), want.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- grad-cam's metrics


@pytest.mark.parametrize(
    ("name", "args", "build"),
    [
        (
            "road_combined",
            {"percentiles": [20, 50, 80]},
            lambda m: m.road.ROADCombined(percentiles=[20, 50, 80]),
        ),
        (
            "road_most_relevant_first",
            {"percentile": 70},
            lambda m: m.road.ROADMostRelevantFirst(percentile=70),
        ),
        ("confidence_change", {}, lambda m: m.cam_mult_image.CamMultImageConfidenceChange()),
    ],
)
def test_gradcam_metrics_equal_the_library_with_their_arguments(name: str, args: dict, build) -> None:
    import pytorch_grad_cam.metrics as gm
    import pytorch_grad_cam.metrics.cam_mult_image  # noqa: F401
    import pytorch_grad_cam.metrics.road  # noqa: F401
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = tiny()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    maps = np.random.default_rng(4).random((2, 8, 8)).astype(np.float32)
    targets = [ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(3)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # ROAD's imputer adds noise
        np.random.seed(0)
        got = perturbation.library_metric(name, args, x, maps, targets, model, None)
        torch.manual_seed(0)
        np.random.seed(0)
        want = np.asarray(build(gm)(x, maps, targets, model), dtype=np.float64).reshape(2)
    np.testing.assert_allclose(got, want, atol=1e-6)


# ----------------------------------------------------------------------------- localisation


def test_pointing_game_equals_quantus_with_the_grown_box_as_mask(quantus) -> None:
    """A hit when the maximum's pixel centre is in the box grown by the tolerance: Quantus's
    PointingGame on the pixels whose centres are in it (unique maxima)."""
    maps = tie_free(6, 16, 16, seed=7)
    box = (4.0, 3.0, 9.0, 11.0)
    tolerance = 0.1
    pad = tolerance * 16
    yy, xx = np.mgrid[0:16, 0:16] + 0.5
    grown = (xx >= box[0] - pad) & (xx <= box[2] + pad) & (yy >= box[1] - pad) & (yy <= box[3] + pad)
    got = [localisation.localisation(m, box, tolerance)["pointing_game"] for m in maps]
    metric = quantus.PointingGame(disable_warnings=True)
    x = np.zeros((6, 1, 16, 16), dtype=np.float32)
    want = metric(
        model=None,
        x_batch=x,
        y_batch=np.zeros(6, int),
        a_batch=maps[:, None],
        s_batch=np.broadcast_to(grown, (6, 1, 16, 16)).astype(float),
        device="cpu",
    )
    assert got == [float(v) for v in want] and 0 < sum(got) < 6


def test_pointing_game_tie_rule_is_the_first_maximum() -> None:
    """Ties: the first maximum in row-major order counts (Quantus counts any)."""
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[0, 7] = cam[6, 1] = 1.0  # first (row-major) outside the box, second inside
    assert localisation.localisation(cam, (0.0, 4.0, 4.0, 8.0), 0.0)["pointing_game"] == 0.0
    cam[0, 7] = 0.5
    assert localisation.localisation(cam, (0.0, 4.0, 4.0, 8.0), 0.0)["pointing_game"] == 1.0


@pytest.mark.parametrize("which", ["box", "mask"])
def test_energy_equals_quantus_relevance_mass_accuracy(which: str, quantus) -> None:
    maps = np.random.default_rng(8).random((4, 16, 16)).astype(np.float32)
    box = (2.5, 3.0, 10.2, 12.0)
    if which == "box":
        s = localisation.box_mask((16, 16), box)
        got = [localisation.localisation(m, box, 0.0)["energy_in_box"] for m in maps]
    else:
        yy, xx = np.mgrid[0:16, 0:16]
        s = (xx - 8) ** 2 + (yy - 7) ** 2 < 20
        got = [localisation.mask_metrics(m, s, ["energy_in_mask"])["energy_in_mask"] for m in maps]
    metric = quantus.RelevanceMassAccuracy(disable_warnings=True)
    want = metric(
        model=None,
        x_batch=np.zeros((4, 1, 16, 16), np.float32),
        y_batch=np.zeros(4, int),
        a_batch=maps[:, None],
        s_batch=np.broadcast_to(s, (4, 1, 16, 16)).astype(float),
        device="cpu",
    )
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_mask_iou_is_the_best_over_thresholds() -> None:
    """The best IoU of the mask and map >= t * max over t = 0, 1/n, ... (a plain loop)."""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:24, 0:24]
    mask = (xx - 10) ** 2 + (yy - 12) ** 2 < 30
    for n in (100, 7):
        for cam in (rng.random((24, 24)).astype(np.float32), mask * 0.8 + rng.random((24, 24)) * 0.3):
            best = 0.0
            for t in np.arange(n) / n:
                pred = cam >= t * cam.max()
                best = max(best, (pred & mask).sum() / (pred | mask).sum())
            assert localisation.best_iou(cam, mask, n) == pytest.approx(best, abs=1e-12)
    assert localisation.best_iou(np.zeros((4, 4)), mask[:4, :4]) is None
    assert localisation.mask_metrics(np.ones((4, 4)), np.zeros((4, 4), bool), ["best_mask_iou"]) == {
        "best_mask_iou": None
    }
    # mask_iou: the map at or above 0.5 (the segmentation scores' threshold)
    cam = np.zeros((4, 4), np.float32)
    cam[:2, :2] = 0.9
    truth = np.zeros((4, 4), bool)
    truth[:2, :3] = True
    assert localisation.mask_metrics(cam, truth, ["mask_iou", "energy_in_mask"]) == {
        "energy_in_mask": 1.0,
        "mask_iou": 4 / 6,
    }


# ----------------------------------------------------------------------------- complexity


def test_sparseness_and_entropy_equal_quantus(quantus) -> None:
    maps = np.random.default_rng(10).random((3, 12, 12)).astype(np.float32) ** 3
    for i, m in enumerate(maps):
        kwargs = {"model": None, "x_batch": np.zeros((1, 1, 12, 12), np.float32), "y_batch": np.zeros(1, int)}
        sp = quantus.Sparseness(disable_warnings=True)(a_batch=m[None, None].copy(), device="cpu", **kwargs)
        cx = quantus.Complexity(disable_warnings=True)(a_batch=m[None, None].copy(), device="cpu", **kwargs)
        assert complexity.sparseness(maps)[i] == pytest.approx(sp[0], abs=1e-6)
        assert complexity.entropy(maps)[i] == pytest.approx(cx[0], rel=1e-6)
    one = np.zeros((1, 6, 6))
    one[0, 2, 3] = 5.0
    assert complexity.sparseness(one)[0] > 0.97 and complexity.entropy(one)[0] == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- sanity: similarity


def test_spearman_and_ssim_equal_quantus(quantus) -> None:
    correlation_spearman = quantus.functions.similarity_func.correlation_spearman
    quantus_ssim = quantus.functions.similarity_func.ssim

    rng = np.random.default_rng(11)
    a, b = rng.random((16, 16)), rng.random((16, 16)) * 0.5 + rng.random((16, 16))
    assert sanity.spearman(a, b) == pytest.approx(correlation_spearman(a.ravel(), b.ravel()), abs=1e-12)
    assert sanity.ssim(a, b) == pytest.approx(quantus_ssim(a, b), abs=1e-12)
    assert sanity.spearman(a, np.zeros_like(a)) == 0.0 and sanity.ssim(a, np.zeros_like(a)) == 0.0
    assert sanity.ssim(np.ones((8, 8)), np.ones((8, 8))) == 1.0


def test_cascade_equals_quantus_mprt(quantus) -> None:
    """The cascade's steps and similarities equal Quantus's MPRT (top-down, seeded) on the same
    explanation function; the model is untouched and torch's random numbers are as they were."""
    from captum.attr import Saliency

    model = tiny(classes=3, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(12))
    y = np.array([0, 1, 2, 1])

    def explain(m: nn.Module) -> np.ndarray:
        a = Saliency(m).attribute(x.clone().requires_grad_(True), target=torch.as_tensor(y), abs=True)
        return a.sum(1).detach().numpy()

    trained = explain(model)
    state = torch.get_rng_state()
    ours = list(sanity.explain_each(explain, model, sanity.cascade(model, seed=42), trained))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [name for name, _, _ in ours] == sanity.randomisable(model) == ["6", "2", "0"]

    def explain_func(model, inputs, targets, **kwargs):
        t = torch.as_tensor(inputs).requires_grad_(True)
        return (
            Saliency(model)
            .attribute(t, target=torch.as_tensor(targets), abs=True)
            .sum(1, keepdim=True)
            .detach()
            .numpy()
        )

    metric = quantus.MPRT(seed=42, disable_warnings=True, normalise=False, abs=False, layer_order="top_down")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y,
            a_batch=trained[:, None],
            explain_func=explain_func,
            device="cpu",
        )
    assert list(want) == ["original", "6", "2", "0"]
    for name, _, sim in ours:
        np.testing.assert_allclose(sim.spearman, want[name], atol=1e-6)
    avg = sanity.over_steps([s for _, _, s in ours])
    assert avg.mean_spearman == pytest.approx(np.mean([np.mean(want[n]) for n in ("6", "2", "0")]), abs=1e-6)
    assert sanity.verdict(avg, 1.0) == "pass" and sanity.verdict(avg, -1.0) == "fail"
    assert sanity.verdict(None) is None


# ----------------------------------------------------------------------------- registry


def test_every_metric_says_what_it_scores_and_which_way_is_better() -> None:
    for name, m in METRICS.items():
        assert m.name == name and m.family in FAMILIES and m.better in ("higher", "lower")
        assert m.url.startswith("https://") and m.paper and m.sentence.endswith(".")
        assert describe_target(name, True) and describe_target(name, False)
    assert describe_target("deletion_auc", True) == "softmax probability of the target class"
    assert describe_target("best_mask_iou", True) == "the object's mask"
    assert resolve_metrics(["Deletion-AUC", "ROADCombined", "sparseness"]) == [
        "deletion_auc",
        "road_combined",
        "sparseness",
    ]


def test_metric_args_are_checked() -> None:
    got = check_metric_args({"road_combined": {"percentiles": [20, 80]}}, ["road_combined", "deletion_auc"])
    assert got == {"road_combined": {"percentiles": [20, 80]}, "deletion_auc": {"step": None, "steps": None}}
    # a metric not recorded: its arguments are checked, then unused
    assert check_metric_args({"insertion_auc": {"step": 8}}, ["sparseness"]) == {"sparseness": {}}
    bad = {
        "cam.metric_args.insertion_auc.step must be a number": {"insertion_auc": {"step": -2}},
        "Unknown CAM metric 'deletion'": {"deletion": {"step": 2}},
        "Unknown argument of metric deletion_auc 'stepp'; did you mean 'step'?": {
            "deletion_auc": {"stepp": 2}
        },
        "cam.metric_args.deletion_auc.step must be a number of pixels >= 1": {"deletion_auc": {"step": 0}},
        "cam.metric_args.road_combined.percentiles must be in (0, 100)": {
            "road_combined": {"percentiles": [0]}
        },
        "cam.metric_args.deletion_auc must be a mapping": {"deletion_auc": 3},
        "cam.metric_args.deletion_auc sets both step (4 pixels) and steps (8)": {
            "deletion_auc": {"step": 4, "steps": 8}
        },
    }
    for message, given in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_metric_args(given, ["deletion_auc", "road_combined"])


def test_score_maps_dispatches_and_times_every_metric() -> None:
    model = tiny()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    maps[1, 0, 0] = np.nan  # scored as 0
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:6] = True
    names = [
        "deletion_auc",
        "insertion_auc",
        "sparseness",
        "entropy",
        "best_mask_iou",
        "energy_in_mask",
        "pointing_game",
    ]
    args = check_metric_args({"deletion_auc": {"step": 16}}, names)
    got = score_maps(
        names,
        args,
        model,
        x,
        maps,
        [1, 2],
        softmax=True,
        probabilities=lambda o: torch.softmax(o, 1),
        masks=[mask, None],
    )
    assert set(got.values) == set(names) - {"pointing_game"}  # the box scores are the stage's (automatic)
    assert got.curves["deletion"].shape == (2, 5) and got.curves["insertion"].shape == (2, 9)
    assert np.isnan(got.values["best_mask_iou"][1]) and np.isfinite(got.values["best_mask_iou"][0])
    assert set(got.seconds) == set(got.values)
