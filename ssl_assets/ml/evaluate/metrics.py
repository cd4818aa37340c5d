"""Classifier report: accuracy, per-class and per-subgroup accuracy, calibration, robustness.

Why more than accuracy: a model can be accurate on average and still fail a class or a
subgroup (site, device, skin tone ...) badly, be over-confident (which matters as soon as a
probability is thresholded), or break under mild image degradation it will meet in
deployment. So the report includes

- per-class accuracy (recall) and, for any grouping passed as `{attribute: group value per
  image}`, per-group accuracy and the largest gap between groups;
- expected calibration error (Naeini et al., 2015; Guo et al., 2017, arXiv:1706.04599):
  15 equal-width confidence bins, `sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`;
- accuracy under gaussian noise, gaussian blur and brightness shifts at fixed severities
  (in the spirit of ImageNet-C, Hendrycks & Dietterich, 2019, arXiv:1903.12261), applied to
  the canonical uint8 images (what the model would be given) with seeded noise, so the
  numbers are reproducible and comparable between models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ssl_assets.ml.augment import gaussian_blur
from ssl_assets.ml.data import stable_seed
from ssl_assets.ml.evaluate.features import as_nchw_uint8
from ssl_assets.ml.evaluate.supervised import Classifier, predict_labels, predict_proba

#: corruption -> severities. noise: std of additive gaussian noise, in [0, 1] pixel units;
#: blur: gaussian sigma in pixels (at the canonical resolution); brightness: additive shift in
#: [0, 1] units (negative darkens)
DEFAULT_CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.08, 0.16),
    "gaussian_blur": (0.5, 1.0, 2.0),
    "brightness": (-0.3, 0.15, 0.3),
}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with `n_bins` equal-width bins over the top-1 confidence (bin edges (lo, hi])."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError("probs must be N x classes, aligned with labels")
    if labels.size == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def per_class_accuracy(
    pred: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy (recall) per true class present in `labels`, keyed by class name."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    out: dict[str, float] = {}
    for c in np.unique(labels):
        mask = labels == c
        name = class_names[int(c)] if class_names is not None else str(int(c))
        out[name] = float((pred[mask] == c).mean())
    return out


def subgroup_accuracy(
    pred: np.ndarray,
    labels: np.ndarray,
    groups: Mapping[str, Sequence[Any] | np.ndarray],
    min_group_size: int = 1,
) -> dict[str, dict[str, Any]]:
    """Per attribute: `{"groups": {value: {"accuracy", "n"}}, "gap", "worst", "best"}`.

    `gap` is the largest minus the smallest group accuracy among groups with at least
    `min_group_size` images (tiny groups are listed but do not define the gap: one image
    would make it 0 or 1 by chance). Missing values (None / NaN) form no group.
    """
    pred, labels = np.asarray(pred), np.asarray(labels)
    out: dict[str, dict[str, Any]] = {}
    for attr, values in groups.items():
        vals = np.asarray(values, dtype=object)
        if vals.shape[0] != labels.shape[0]:
            raise ValueError(
                f"group attribute {attr!r} has {vals.shape[0]} values, need {labels.shape[0]}"
            )
        present = np.array([not _missing(v) for v in vals])
        stats: dict[str, dict[str, float]] = {}
        for value in sorted({str(v) for v in vals[present]}):
            mask = present & np.array([str(v) == value for v in vals])
            stats[value] = {
                "accuracy": float((pred[mask] == labels[mask]).mean()),
                "n": int(mask.sum()),
            }
        eligible = {k: v["accuracy"] for k, v in stats.items() if v["n"] >= min_group_size}
        entry: dict[str, Any] = {"groups": stats, "gap": 0.0, "worst": None, "best": None}
        if eligible:
            worst = min(eligible, key=eligible.__getitem__)
            best = max(eligible, key=eligible.__getitem__)
            entry.update(gap=eligible[best] - eligible[worst], worst=worst, best=best)
        out[attr] = entry
    return out


def max_subgroup_gap(subgroups: Mapping[str, Mapping[str, Any]]) -> float:
    """The largest `gap` over attributes (0.0 with no grouping)."""
    return max((float(v["gap"]) for v in subgroups.values()), default=0.0)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def corrupt(images: np.ndarray, kind: str, severity: float, seed: int = 0) -> np.ndarray:
    """A corrupted copy of canonical uint8 N x R x R x 3 images (see `DEFAULT_CORRUPTIONS`).

    Noise is drawn from a generator seeded by `(kind, severity, seed)`: the same images get the
    same corruption for every model compared.
    """
    x = np.asarray(images).astype(np.float32) / 255.0
    if kind == "gaussian_noise":
        rng = np.random.default_rng(stable_seed("corrupt", kind, f"{severity:g}", seed))
        x = x + rng.normal(0.0, severity, x.shape).astype(np.float32)
    elif kind == "gaussian_blur":
        t = as_nchw_uint8(np.asarray(images)).float() / 255.0
        kernel = 2 * math.ceil(3 * severity) + 1
        sigma = torch.full((t.shape[0],), float(severity))
        x = gaussian_blur(t, sigma, kernel).permute(0, 2, 3, 1).numpy()
    elif kind == "brightness":
        x = x + severity
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose from {sorted(DEFAULT_CORRUPTIONS)}")
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def robustness(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    corruptions: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of `predict(images) -> labels` on each corruption and severity.

    Returns `{kind: {severity: accuracy}, "mean_corrupted_accuracy": ...}`.
    """
    corruptions = DEFAULT_CORRUPTIONS if corruptions is None else corruptions
    labels = np.asarray(labels)
    out: dict[str, Any] = {}
    accs: list[float] = []
    for kind, severities in corruptions.items():
        out[kind] = {}
        for severity in severities:
            pred = np.asarray(predict(corrupt(images, kind, severity, seed)))
            acc = float((pred == labels).mean())
            out[kind][f"{severity:g}"] = acc
            accs.append(acc)
    out["mean_corrupted_accuracy"] = float(np.mean(accs)) if accs else math.nan
    return out


def accuracy_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured on `n` images (Wilson, 1927, "Probable
    inference, the law of succession, and statistical inference", JASA 22:209-212).

    Why Wilson and not the normal approximation: on a small test split with accuracy near 1 the
    normal interval runs past 1 and is too narrow; Wilson's stays inside [0, 1] and keeps close
    to its nominal coverage (Brown, Cai & DasGupta, 2001). (nan, nan) for n == 0.

    >>> [round(x, 3) for x in accuracy_interval(0.9, 100)]
    [0.826, 0.945]
    """
    if n <= 0 or not math.isfinite(accuracy):
        return math.nan, math.nan
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def classification_report(
    probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    min_group_size: int = 1,
    n_bins: int = 15,
) -> dict[str, Any]:
    """JSON-able metrics of predicted probabilities: accuracy, per-class, subgroups, ECE."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    pred = probs.argmax(axis=1)
    subgroups = subgroup_accuracy(pred, labels, groups or {}, min_group_size)
    return {
        "n": int(labels.size),
        "accuracy": float((pred == labels).mean()) if labels.size else 0.0,
        "per_class_accuracy": per_class_accuracy(pred, labels, class_names),
        "ece": expected_calibration_error(probs, labels, n_bins),
        "subgroups": subgroups,
        "max_subgroup_gap": max_subgroup_gap(subgroups),
    }


def evaluate_classifier(
    model: Classifier,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    corruptions: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    min_group_size: int = 1,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Full report of a `Classifier` on canonical uint8 images (usually the test split):
    `classification_report` plus `robustness` (pass `corruptions={}` to skip it)."""
    probs = predict_proba(model, images, batch_size)
    report = classification_report(probs, labels, class_names, groups, min_group_size)
    report["robustness"] = robustness(
        lambda x: predict_labels(model, x, batch_size), images, labels, corruptions, seed
    )
    return report


def flat_metrics(report: Mapping[str, Any], prefix: str = "") -> pd.DataFrame:
    """The numeric leaves of an evaluation report that are probabilities (accuracies, ECE,
    robustness), long form (metric, value), for the metrics suite."""
    rows = []
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.append(flat_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "accuracy" in name or name.endswith("ece") or name.startswith("robustness."):
                rows.append(pd.DataFrame([{"metric": name, "value": float(value)}]))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["metric", "value"])


def subgroups_beside(subgroups: Mapping[str, Any], shares: pd.DataFrame) -> pd.DataFrame:
    """A model's test accuracy per subgroup beside what the latest bias audit found for the
    same subgroup (`shares`: attribute, subgroup, scope train | all, share): a subgroup that is
    both rare in training and worse at test is the case to look at."""
    rows = [
        {
            "attribute": attribute,
            "subgroup": subgroup,
            "test_images": stats["n"],
            "test_accuracy": round(stats["accuracy"], 4),
            "gap_to_best": round(entry["groups"][entry["best"]]["accuracy"] - stats["accuracy"], 4)
            if entry.get("best") is not None
            else None,
        }
        for attribute, entry in subgroups.items()
        for subgroup, stats in entry["groups"].items()
    ]
    table = pd.DataFrame(
        rows, columns=["attribute", "subgroup", "test_images", "test_accuracy", "gap_to_best"]
    )
    if shares.empty or table.empty:
        return table.assign(train_share=None, share_all=None)
    wide = shares.pivot_table(
        index=["attribute", "subgroup"], columns="scope", values="share", aggfunc="first"
    ).rename(columns={"train": "train_share", "all": "share_all"})
    wide = wide.reindex(columns=["train_share", "share_all"]).round(4).reset_index()
    return table.merge(wide, on=["attribute", "subgroup"], how="left")
