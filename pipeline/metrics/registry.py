"""Every metric vizpipe records, by name: what it scores, which way is better, its paper.

``METRICS`` is the one table the CAM stage, its record (``cam.json``'s ``metric_targets``), the
report's explanations, the announcements of their cost and the sweep index's leaderboard read.
``cam.metrics`` names them (snake case, or the library's class name for grad-cam's); the
arguments a metric takes (``cam.metric_args: {deletion_auc: {step: 128}}``) are checked against
``Metric.args``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vizpipe.pipeline.errors import ConfigError, unknown_choice

__all__ = ["METRICS", "Metric", "available_metrics", "check_metric_args", "resolve_metrics"]

#: the families, in the order the report and the leaderboard list them
FAMILIES = ("faithfulness", "localisation", "complexity")


@dataclass(frozen=True)
class Metric:
    """One metric: how it is computed and how to read it."""

    name: str
    family: str  # faithfulness | localisation | complexity
    better: str  # higher | lower: which way a better map moves the number
    # what the number is computed from: "softmax" (the class's probability), "raw" (its raw output),
    # "map" (the map alone), "box" / "mask" (the map against the object's box / mask)
    target: str
    sentence: str  # one sentence for the report
    paper: str  # authors, year, title
    url: str  # the paper
    forwards: int = 0  # forward passes per batch of maps (for announcing the cost; 0: none)
    # who computes it: "grad-cam" (pytorch_grad_cam.metrics.<module>.<cls>) or "vizpipe"
    library: str = "vizpipe"
    module: str = ""  # grad-cam: the module under pytorch_grad_cam.metrics
    cls: str = ""  # grad-cam: the class
    # grad-cam's calling convention: perturb: metric(input, cams, targets, model); cams: metric(cams);
    # base_method: metric(input, cams, targets, model, base_method=cam) (Coherency);
    # init_base_method: metric(base_method=cam)(input, cams, targets, model) (ARCC)
    how: str = ""
    args: dict[str, Any] = field(default_factory=dict)  # the arguments it takes, with their defaults
    automatic: bool = False  # recorded whenever the input knows its ground truth (not named in cam.metrics)


_GRADCAM_BOOK = "https://jacobgil.github.io/pytorch-gradcam-book/CAM%20Metrics%20And%20Tuning%20Tutorial.html"
_PLUSPLUS = ("Chattopadhyay et al. 2018, Grad-CAM++", "https://arxiv.org/abs/1710.11063")
_ROAD = (
    "Rong et al. 2022, A Consistent and Efficient Evaluation Strategy for Attribution Methods (ROAD)",
    "https://arxiv.org/abs/2202.00449",
)
_ARCC = (
    "Poppi et al. 2021, Revisiting the Evaluation of Class Activation Mapping for Explainability",
    "https://arxiv.org/abs/2104.10252",
)
_RISE = (
    "Petsiuk et al. 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models",
    "https://arxiv.org/abs/1806.07421",
)
_PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]  # grad-cam's default ROAD percentiles


def _gradcam(
    name: str, cls: str, better: str, forwards: int, sentence: str, paper: tuple[str, str], **how: Any
) -> Metric:
    """One of grad-cam's metrics (``pytorch_grad_cam.metrics.<module>.<cls>``)."""
    module = how.pop("module", "road")
    call = how.pop("how", "perturb")
    target = how.pop("target", "softmax")
    family = "complexity" if call == "cams" else "faithfulness"
    args = dict(how.pop("args", {}))
    return Metric(
        name, family, better, target, sentence, *paper, forwards, "grad-cam", module, cls, call, args
    )


_LIST: list[Metric] = [
    Metric(
        "deletion_auc",
        "faithfulness",
        "lower",
        "softmax",
        "Area under the class's probability as the map's most important pixels are deleted first (set "
        "to 0 in the model's input, `step` pixels at a time, or in `steps` steps): a faithful map makes "
        "it fall fast.",
        *_RISE,
        forwards=-1,  # one per step
        args={"step": None, "steps": None},
    ),
    Metric(
        "insertion_auc",
        "faithfulness",
        "higher",
        "softmax",
        "Area under the class's probability as the map's most important pixels are put back first into "
        "a blurred copy of the image (`step` pixels at a time, or in `steps` steps): a faithful map makes "
        "it rise fast.",
        *_RISE,
        forwards=-1,
        args={"step": None, "steps": None, "kernel": 11, "sigma": 5.0},
    ),
    _gradcam(
        "road_most_relevant_first",
        "ROADMostRelevantFirst",
        "lower",
        1,
        "The change in the class's probability when the map's top pixels (above the `percentile`) are "
        "removed and filled in from their neighbours (noisy linear imputation): a faithful map makes it "
        "drop.",
        _ROAD,
        args={"percentile": 80},
    ),
    _gradcam(
        "road_least_relevant_first",
        "ROADLeastRelevantFirst",
        "higher",
        1,
        "The change in the class's probability when the map's least relevant pixels (below the "
        "`percentile`) are removed and imputed: a faithful map keeps it.",
        _ROAD,
        args={"percentile": 20},
    ),
    _gradcam(
        "road_most_relevant_first_average",
        "ROADMostRelevantFirstAverage",
        "lower",
        4,
        "ROAD most-relevant-first averaged over the `percentiles`.",
        _ROAD,
        args={"percentiles": _PERCENTILES},
    ),
    _gradcam(
        "road_least_relevant_first_average",
        "ROADLeastRelevantFirstAverage",
        "higher",
        4,
        "ROAD least-relevant-first averaged over the `percentiles`.",
        _ROAD,
        args={"percentiles": _PERCENTILES},
    ),
    _gradcam(
        "road_combined",
        "ROADCombined",
        "higher",
        8,
        "Half the difference of ROAD least-relevant-first and most-relevant-first, averaged over the "
        "`percentiles`: high when removing the top pixels hurts and removing the rest does not.",
        _ROAD,
        args={"percentiles": _PERCENTILES},
    ),
    _gradcam(
        "confidence_change",
        "CamMultImageConfidenceChange",
        "higher",
        1,
        "The change in the class's probability when the image is multiplied by the map (only what the "
        "map shows is kept).",
        ("Gildenblat, pytorch-grad-cam: CAM metrics and tuning", _GRADCAM_BOOK),
        module="cam_mult_image",
    ),
    _gradcam(
        "drop_in_confidence",
        "DropInConfidence",
        "lower",
        1,
        "How much the class's probability drops when the image is multiplied by the map (Grad-CAM++'s "
        "average drop, per image).",
        _PLUSPLUS,
        module="cam_mult_image",
    ),
    _gradcam(
        "increase_in_confidence",
        "IncreaseInConfidence",
        "higher",
        1,
        "1 when the class's probability rises as the image is multiplied by the map, else 0 "
        "(Grad-CAM++'s increase in confidence, per image).",
        _PLUSPLUS,
        module="cam_mult_image",
    ),
    _gradcam(
        "coherency",
        "Coherency",
        "higher",
        1,
        "How much the map stays the same when computed again on the image multiplied by it (needs a "
        "grad-cam CAM method).",
        _ARCC,
        module="arcc",
        how="base_method",
        target="raw",
    ),
    _gradcam(
        "arcc",
        "ARCC",
        "higher",
        9,
        "Average DCC: the mean of coherency, 1 - complexity and 1 - drop in confidence (needs a grad-cam "
        "CAM method).",
        _ARCC,
        module="arcc",
        how="init_base_method",
        target="raw",
    ),
    _gradcam(
        "complexity",
        "Complexity",
        "lower",
        0,
        "The map's mean value (its L1 norm over the pixels): a small one points at few pixels.",
        _ARCC,
        module="arcc",
        how="cams",
        target="none",
    ),
    Metric(
        "sparseness",
        "complexity",
        "higher",
        "map",
        "The Gini index of the map's absolute values: 1 when one pixel holds everything, 0 when all "
        "pixels are equal.",
        "Chalasani et al. 2020, Concise Explanations of Neural Networks using Adversarial Training",
        "https://arxiv.org/abs/1810.06583",
    ),
    Metric(
        "entropy",
        "complexity",
        "lower",
        "map",
        "The entropy of the map's absolute values as a distribution over the pixels: low when few "
        "pixels carry the map.",
        "Bhatt et al. 2020, Evaluating and Aggregating Feature-based Model Explanations",
        "https://arxiv.org/abs/2005.00631",
    ),
    Metric(
        "pointing_game",
        "localisation",
        "higher",
        "box",
        "1 when the map's maximum lies inside the object's box grown by `cam.pointing_tolerance` of the "
        "image side, else 0 (ties: the first maximum in row-major order).",
        "Zhang et al. 2018, Top-down Neural Attention by Excitation Backprop",
        "https://arxiv.org/abs/1608.00507",
        automatic=True,
    ),
    Metric(
        "energy_in_box",
        "localisation",
        "higher",
        "box",
        "The fraction of the map's mass (the sum of its values) inside the object's box.",
        "Wang et al. 2020, Score-CAM (the energy-based pointing game)",
        "https://arxiv.org/abs/1910.01279",
        automatic=True,
    ),
    Metric(
        "energy_in_mask",
        "localisation",
        "higher",
        "mask",
        "The fraction of the map's mass inside the object's own pixels (relevance mass accuracy).",
        "Arras et al. 2022, CLEVR-XAI: A Benchmark Dataset for the Ground Truth Evaluation of Neural "
        "Network Explanations",
        "https://arxiv.org/abs/2003.07258",
    ),
    Metric(
        "mask_iou",
        "localisation",
        "higher",
        "mask",
        "The intersection over union of the object's pixels and the map's pixels at or above 0.5 (the "
        "map's top, in [0, 1]); recorded for a segmentation model's maps whenever the true masks are known.",
        "Choe et al. 2020, Evaluating Weakly Supervised Object Localization Methods Right",
        "https://arxiv.org/abs/2001.07437",
    ),
    Metric(
        "best_mask_iou",
        "localisation",
        "higher",
        "mask",
        "The intersection over union of the object's pixels and the map's pixels at or above a threshold, "
        "at the best of `thresholds` evenly spaced ones (0, 1/n, ... of the map's maximum).",
        "Choe et al. 2020, Evaluating Weakly Supervised Object Localization Methods Right",
        "https://arxiv.org/abs/2001.07437",
        args={"thresholds": 100},
    ),
]

#: name -> metric, in the order the report lists them
METRICS: dict[str, Metric] = {m.name: m for m in _LIST}


def normalize(name: str) -> str:
    """Lower-case ``name`` and drop all but letters and digits (``ROADCombined`` -> ``roadcombined``)."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def available_metrics() -> dict[str, Metric]:
    """The metrics this installation computes (grad-cam's: those its installed version has)."""
    import importlib

    out = {}
    for name, spec in METRICS.items():
        if spec.library == "grad-cam":
            try:
                mod = importlib.import_module(f"pytorch_grad_cam.metrics.{spec.module}")
            except ImportError:
                continue
            if not hasattr(mod, spec.cls):
                continue
        out[name] = spec
    return out


def resolve_metrics(names: list[str]) -> list[str]:
    """Canonical metric names for ``names`` (snake-case or class names, case-insensitive)."""
    table = available_metrics()
    lookup = {normalize(n): n for n in table}
    lookup.update({normalize(spec.cls): n for n, spec in table.items() if spec.cls})
    out: list[str] = []
    for name in names:
        key = lookup.get(normalize(name))
        if key is None:
            raise unknown_choice(
                "CAM metric",
                name,
                list(table),
                hint="Set cam.metrics=[<names>] (pipeline/metrics/registry.py says what each scores)",
            )
        out.append(key)
    return list(dict.fromkeys(out))


def check_metric_args(given: Any, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """``cam.metric_args`` checked: each key a metric, each argument one it takes.

    Returns the arguments of every metric of ``metrics``, its defaults overridden by the given
    ones. Arguments of a metric that ``metrics`` does not record are checked too, then unused (a
    sweep's config may set them while a command line narrows ``cam.metrics``).
    """
    from collections.abc import Mapping

    if given is not None and not isinstance(given, Mapping):
        raise ConfigError(
            f"cam.metric_args must be a mapping of metric -> arguments, e.g. "
            f"'cam.metric_args={{deletion_auc: {{step: 128}}}}', got {given!r}"
        )
    out = {name: dict(METRICS[name].args) for name in metrics}
    for name, args in (given or {}).items():
        key = resolve_metrics([name])[0]
        if not isinstance(args, Mapping):
            raise ConfigError(
                f"cam.metric_args.{name} must be a mapping of arguments, e.g. "
                f"'cam.metric_args={{{key}: {{{next(iter(METRICS[key].args), 'arg')}: ...}}}}', got {args!r}"
            )
        for arg, value in args.items():
            if arg not in METRICS[key].args:
                raise unknown_choice(
                    f"argument of metric {key}",
                    arg,
                    list(METRICS[key].args) or ["(none: it takes no arguments)"],
                    hint="cam.metric_args.<metric>.<argument>",
                )
            out.setdefault(key, dict(METRICS[key].args))[arg] = value
    _check_values(out)
    return {name: out[name] for name in metrics}


def _check_values(args: dict[str, dict[str, Any]]) -> None:
    """The ranges of the arguments vizpipe's own metrics take."""
    for name, values in args.items():
        for key, what in (("step", "a number of pixels"), ("steps", "a number of steps")):
            value = values.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"cam.metric_args.{name}.{key} must be {what} >= 1 or null (step: the image's width, "
                    f"as RISE; steps: given by step), got {value!r}"
                )
        if values.get("step") is not None and values.get("steps") is not None:
            raise ConfigError(
                f"cam.metric_args.{name} sets both step ({values['step']} pixels) and steps "
                f"({values['steps']}); set one: step = pixels per step, steps = how many steps"
            )
        for key in ("percentile", "percentiles"):
            value = values.get(key)
            items = value if isinstance(value, list | tuple) else [] if value is None else [value]
            if key == "percentiles" and key in values and not items:
                raise ConfigError(
                    f"cam.metric_args.{name}.percentiles must be a non-empty list, got {value!r}"
                )
            for p in items:
                if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < float(p) < 100:
                    raise ConfigError(
                        f"cam.metric_args.{name}.{key} must be in (0, 100) (grad-cam's percentile), got {p!r}"
                    )
        if "thresholds" in values and (
            isinstance(values["thresholds"], bool)
            or not isinstance(values["thresholds"], int)
            or values["thresholds"] < 2
        ):
            raise ConfigError(
                f"cam.metric_args.{name}.thresholds must be an integer >= 2, got {values['thresholds']!r}"
            )
        if "kernel" in values and (not isinstance(values["kernel"], int) or values["kernel"] % 2 == 0):
            raise ConfigError(
                f"cam.metric_args.{name}.kernel must be an odd integer, got {values['kernel']!r}"
            )
