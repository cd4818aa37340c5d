"""Champion / challenger promotion: paired bootstrap and the decision rule."""

from __future__ import annotations

import numpy as np

from ssl_assets.ml.evaluate import PromotionPolicy, decide_promotion, paired_bootstrap


def _predictions(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Predictions right on a random `accuracy` fraction of the images."""
    rng = np.random.default_rng(seed)
    pred = labels.copy()
    wrong = rng.permutation(labels.size)[: round((1 - accuracy) * labels.size)]
    pred[wrong] = (labels[wrong] + 1) % 3
    return pred


LABELS = np.random.default_rng(0).integers(0, 3, 600)
CHAMPION = _predictions(LABELS, 0.80, seed=1)


def test_paired_bootstrap_is_seeded_and_brackets_the_difference() -> None:
    better = _predictions(LABELS, 0.90, seed=2)
    a = paired_bootstrap(CHAMPION == LABELS, better == LABELS, n_resamples=1000, seed=7)
    b = paired_bootstrap(CHAMPION == LABELS, better == LABELS, n_resamples=1000, seed=7)
    assert a == b
    assert a.low < a.mean_diff < a.high
    assert abs(a.mean_diff - 0.10) < 0.005
    assert a.low > 0.0  # clearly better


def test_worse_challenger_is_refused_with_a_reason() -> None:
    worse = _predictions(LABELS, 0.70, seed=3)
    decision = decide_promotion(LABELS, worse, CHAMPION, collapse_ok=True)
    assert decision.promote is False
    assert decision.checks["not_worse"] is False
    assert decision.bootstrap is not None and decision.bootstrap.low < -0.01
    assert any("worse than the champion" in r for r in decision.reasons)
    assert decision.reasons[0].startswith("do not promote")


def test_better_or_equal_challenger_is_promoted() -> None:
    better = _predictions(LABELS, 0.88, seed=4)
    decision = decide_promotion(
        LABELS, better, CHAMPION, collapse_ok=True, reported={"test_accuracy": 0.1}
    )
    assert decision.promote is True, decision.reasons
    assert decision.reasons[0].startswith("promote")
    assert decision.reported == {"test_accuracy": 0.1}  # recorded, not used
    same = decide_promotion(LABELS, CHAMPION.copy(), CHAMPION, collapse_ok=True)
    assert same.promote is True
    assert decide_promotion(LABELS, better, None, collapse_ok=True).promote is True
    assert decision.to_dict()["bootstrap"]["n_resamples"] == 1000


def test_collapse_and_subgroup_gap_veto_promotion() -> None:
    better = _predictions(LABELS, 0.90, seed=5)
    collapsed = decide_promotion(LABELS, better, CHAMPION, collapse_ok=False)
    assert collapsed.promote is False and "collapse_check" in collapsed.reasons[0]

    # the challenger is perfect on site "a" and poor on site "b"
    site = np.where(np.arange(LABELS.size) % 2 == 0, "a", "b")
    skewed = LABELS.copy()
    b_rows = np.flatnonzero(site == "b")[:150]
    skewed[b_rows] = (LABELS[b_rows] + 1) % 3
    policy = PromotionPolicy(max_subgroup_gap=0.2, tolerance=0.2)
    gap = decide_promotion(
        LABELS, skewed, CHAMPION, collapse_ok=True, groups={"site": site}, policy=policy
    )
    assert gap.challenger_subgroup_gap is not None and gap.challenger_subgroup_gap > 0.2
    assert gap.promote is False and gap.checks == {
        "not_worse": True,
        "subgroup_gap": False,
        "collapse_check": True,
    }
    assert any("site" in r and "exceeds" in r for r in gap.reasons)
