"""Calibration (ECE), per-class / subgroup accuracy and corruption robustness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssl_assets.ml.evaluate import (
    classification_report,
    corrupt,
    expected_calibration_error,
    subgroup_accuracy,
)
from ssl_assets.ml.evaluate.metrics import robustness


def _calibrated(confidence: float, n: int, n_correct: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-class predictions all at `confidence` for class 0, `n_correct` of them right."""
    probs = np.tile([confidence, 1.0 - confidence], (n, 1))
    labels = np.array([0] * n_correct + [1] * (n - n_correct))
    return probs, labels


def test_ece_of_a_perfectly_calibrated_toy_case_is_zero() -> None:
    parts = [_calibrated(0.6, 100, 60), _calibrated(0.8, 50, 40), _calibrated(0.95, 20, 19)]
    probs = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)


def test_ece_of_an_overconfident_model_is_its_confidence_gap() -> None:
    probs, labels = _calibrated(0.99, 100, 50)  # 99% sure, right half the time
    assert expected_calibration_error(probs, labels) == pytest.approx(0.49)
    assert expected_calibration_error(probs, labels, n_bins=15) > 0.4


def test_subgroup_accuracy_and_largest_gap() -> None:
    labels = np.zeros(8, dtype=int)
    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    groups = {
        "site": ["a", "a", "a", "a", "b", "b", "b", "b"],
        "device": ["x", "y"] * 4,
        "rare": ["r"] + [None] * 7,
    }
    sub = subgroup_accuracy(pred, labels, groups, min_group_size=2)
    assert sub["site"]["groups"]["a"] == {"accuracy": 1.0, "n": 4}
    assert sub["site"]["gap"] == pytest.approx(0.75)
    assert (sub["site"]["worst"], sub["site"]["best"]) == ("b", "a")
    assert sub["device"]["gap"] == pytest.approx(0.25)  # x: 3/4 right, y: 2/4
    assert sub["rare"]["gap"] == 0.0 and sub["rare"]["groups"]["r"]["n"] == 1  # too small to rank

    probs = np.eye(2)[pred]
    report = classification_report(probs, labels, ["ok", "bad"], groups, min_group_size=2)
    assert report["accuracy"] == pytest.approx(5 / 8)
    assert report["per_class_accuracy"] == {"ok": pytest.approx(5 / 8)}
    assert report["max_subgroup_gap"] == pytest.approx(0.75)


def test_corruptions_are_seeded_and_change_images() -> None:
    images = np.random.default_rng(0).integers(40, 200, (6, 32, 32, 3), dtype=np.uint8)
    for kind, severity in [("gaussian_noise", 0.08), ("gaussian_blur", 1.0), ("brightness", 0.2)]:
        out = corrupt(images, kind, severity, seed=1)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert not np.array_equal(out, images), kind
        assert np.array_equal(out, corrupt(images, kind, severity, seed=1)), kind
    noisy = [corrupt(images, "gaussian_noise", 0.08, seed=s) for s in (1, 2)]
    assert not np.array_equal(*noisy)
    brighter = corrupt(images, "brightness", 0.2).astype(int) - images.astype(int)
    assert brighter.min() >= 50  # +0.2 of 255 (no clipping in this range)
    with pytest.raises(ValueError):
        corrupt(images, "fog", 1.0)

    labels = np.zeros(6, dtype=int)
    result = robustness(lambda x: (x.mean(axis=(1, 2, 3)) > 300).astype(int), images, labels)
    assert result["mean_corrupted_accuracy"] == 1.0
    assert set(result) == {
        "gaussian_noise",
        "gaussian_blur",
        "brightness",
        "mean_corrupted_accuracy",
    }


def test_subgroup_accuracy_is_shown_beside_the_bias_audit_shares(store):
    from resources.metadata import utcnow
    from ssl_assets.ml.evaluate.metrics import subgroups_beside

    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    pred = np.array([0, 1, 0, 1, 0, 0, 1, 0])  # site a: 4/4 right, site b: 1/4
    groups = {"site": np.array(["a"] * 4 + ["b"] * 4, dtype=object)}
    subgroups = subgroup_accuracy(pred, labels, groups, min_group_size=1)
    with store.transaction() as con:
        store.insert(
            con,
            "bias_groups",
            pd.DataFrame(
                {
                    "run_id": "audit-1",
                    "attribute": ["site", "site", "site", "site"],
                    "subgroup": ["a", "b", "a", "b"],
                    "scope": ["train", "train", "all", "all"],
                    "images": [90, 10, 120, 30],
                    "share": [0.9, 0.1, 0.8, 0.2],
                    "recorded_at": utcnow(),
                }
            ),
        )
    table = subgroups_beside(subgroups, store.latest_bias_shares()).set_index("subgroup")
    assert table.loc["a", "test_accuracy"] == 1.0 and table.loc["b", "test_accuracy"] == 0.25
    assert table.loc["b", "gap_to_best"] == 0.75 and table.loc["a", "gap_to_best"] == 0.0
    # the rare training subgroup is the one the model gets wrong: both are in one row
    assert table.loc["b", "train_share"] == 0.1 and table.loc["b", "share_all"] == 0.2
