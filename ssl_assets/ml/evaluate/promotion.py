"""Champion / challenger promotion: a paired bootstrap on the same val images, plus guards.

Why this rule: two models scored on the same images make correlated errors, so the right
uncertainty for "is the challenger worse?" comes from resampling *images* and recomputing both
accuracies on each resample (a paired bootstrap; Efron & Tibshirani, 1993), not from two
independent confidence intervals. The challenger is promoted when

1. it is not worse beyond a tolerance: the lower bound of the (default 95%) bootstrap
   interval of `acc(challenger) - acc(champion)` is `>= -tolerance` (so a challenger that is
   equal within noise may replace the champion, one that is clearly worse may not);
2. its largest subgroup accuracy gap on val is within `max_subgroup_gap` (when groups are
   given);
3. its encoder passed the collapse check (computed upstream, passed in as a boolean).

Decisions use val only. Test metrics may be attached to the decision for the record
(`reported`) but are never read by the rule: choosing on test would make the reported test
accuracy optimistic. With no champion yet, guards 2 and 3 decide alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from quality import thresholds
from ssl_assets.ml.evaluate.metrics import max_subgroup_gap, subgroup_accuracy
from ssl_assets.ml.evaluate.supervised import Classifier, predict_labels


@dataclass(frozen=True)
class BootstrapInterval:
    """Paired-bootstrap estimate of `acc(challenger) - acc(champion)`."""

    mean_diff: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int


def paired_bootstrap(
    champion_correct: Sequence[bool] | np.ndarray,
    challenger_correct: Sequence[bool] | np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> BootstrapInterval:
    """Percentile interval of the accuracy difference over `n_resamples` resamples of the
    images (with replacement, the same indices for both models), seeded."""
    a = np.asarray(champion_correct, dtype=np.float64)
    b = np.asarray(challenger_correct, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("need two equal-length, non-empty per-image correctness vectors")
    d = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):  # bounded memory for large val sets
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return BootstrapInterval(
        float(d.mean()), float(low), float(high), confidence, n_resamples, seed
    )


@dataclass(frozen=True)
class PromotionPolicy:
    """Thresholds of the promotion rule (see the module docstring)."""

    tolerance: float = thresholds.CHAMPION_TOLERANCE
    max_subgroup_gap: float = thresholds.CHAMPION_MAX_SUBGROUP_GAP
    min_group_size: int = thresholds.CHAMPION_MIN_GROUP_SIZE
    confidence: float = 0.95
    n_resamples: int = thresholds.CHAMPION_BOOTSTRAP_RESAMPLES
    seed: int = 0


@dataclass
class PromotionDecision:
    """`promote` and why: `reasons` has a summary line, then one human-readable line per check
    (passed or not); `rule_reasons` holds the same lines keyed by check."""

    promote: bool
    reasons: list[str]
    checks: dict[str, bool]
    challenger_val_accuracy: float
    champion_val_accuracy: float | None
    bootstrap: BootstrapInterval | None
    challenger_subgroup_gap: float | None
    policy: PromotionPolicy
    reported: dict[str, Any] = field(default_factory=dict)
    #: each rule's own sentence, keyed like `checks` (not_worse, subgroup_gap, collapse_check)
    rule_reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    labels: Sequence[int] | np.ndarray,
    challenger_pred: Sequence[int] | np.ndarray,
    champion_pred: Sequence[int] | np.ndarray | None,
    *,
    collapse_ok: bool,
    groups: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    policy: PromotionPolicy | None = None,
    reported: Mapping[str, Any] | None = None,
) -> PromotionDecision:
    """Apply the promotion rule to val predictions of both models on the same images.

    `champion_pred=None` means there is no champion yet. `reported` (e.g. test accuracies) is
    stored on the decision untouched and does not influence it.
    """
    policy = policy or PromotionPolicy()
    y = np.asarray(labels)
    chal = np.asarray(challenger_pred)
    if chal.shape != y.shape:
        raise ValueError("challenger predictions and labels differ in length")
    chal_correct = chal == y
    chal_acc = float(chal_correct.mean())
    checks: dict[str, bool] = {}
    reasons: list[str] = []
    champ_acc: float | None = None
    interval: BootstrapInterval | None = None

    if champion_pred is None:
        checks["not_worse"] = True
        reasons.append(f"no champion yet; challenger val accuracy {chal_acc:.3f}")
    else:
        champ = np.asarray(champion_pred)
        if champ.shape != y.shape:
            raise ValueError("champion predictions and labels differ in length")
        champ_correct = champ == y
        champ_acc = float(champ_correct.mean())
        interval = paired_bootstrap(
            champ_correct, chal_correct, policy.n_resamples, policy.confidence, policy.seed
        )
        ok = interval.low >= -policy.tolerance
        checks["not_worse"] = ok
        ci = (
            f"difference {interval.mean_diff:+.3f}, {policy.confidence:.0%} paired-bootstrap CI "
            f"[{interval.low:+.3f}, {interval.high:+.3f}] over {y.size} val images"
        )
        if ok:
            reasons.append(
                f"not worse than the champion: val accuracy {chal_acc:.3f} vs {champ_acc:.3f}, "
                f"{ci}; lower bound >= -{policy.tolerance:.3f}"
            )
        else:
            reasons.append(
                f"worse than the champion beyond tolerance: val accuracy {chal_acc:.3f} vs "
                f"{champ_acc:.3f}, {ci}; lower bound < -{policy.tolerance:.3f}"
            )

    gap: float | None = None
    if groups:
        sub = subgroup_accuracy(chal, y, groups, policy.min_group_size)
        gap = max_subgroup_gap(sub)
        worst = max(sub.items(), key=lambda kv: float(kv[1]["gap"]))
        ok = gap <= policy.max_subgroup_gap
        checks["subgroup_gap"] = ok
        where = f"{worst[0]}: {worst[1]['best']} vs {worst[1]['worst']}" if gap > 0 else "no gap"
        verdict = "within" if ok else "exceeds"
        reasons.append(
            f"largest subgroup accuracy gap {gap:.3f} ({where}) {verdict} the bound "
            f"{policy.max_subgroup_gap:.3f}"
        )
    else:
        checks["subgroup_gap"] = True
        reasons.append("no subgroup attributes given; subgroup gap not checked")

    checks["collapse_check"] = bool(collapse_ok)
    reasons.append(
        "encoder passed the collapse check"
        if collapse_ok
        else "encoder failed the collapse check (collapsed or low-rank embeddings)"
    )
    rule_reasons = dict(zip(checks, reasons, strict=True))
    promote = all(checks.values())
    failed = [name for name, ok in checks.items() if not ok]
    if promote:
        summary = "promote: the challenger passed every check"
    else:
        summary = f"do not promote: failed {', '.join(failed)}"
    reasons.insert(0, summary)
    return PromotionDecision(
        promote=promote,
        reasons=reasons,
        checks=checks,
        challenger_val_accuracy=chal_acc,
        champion_val_accuracy=champ_acc,
        bootstrap=interval,
        challenger_subgroup_gap=gap,
        policy=policy,
        reported=dict(reported or {}),
        rule_reasons=rule_reasons,
    )


def compare_models(
    challenger: Classifier,
    champion: Classifier | None,
    val_images: np.ndarray,
    val_labels: Sequence[int] | np.ndarray,
    *,
    collapse_ok: bool,
    groups: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    policy: PromotionPolicy | None = None,
    reported: Mapping[str, Any] | None = None,
) -> PromotionDecision:
    """Re-score both models side by side on the same val images, then `decide_promotion`.

    Both models must predict the same label indices (same class list); check before calling
    when the champion might have been trained on another label set.
    """
    chal = predict_labels(challenger, val_images)
    champ = predict_labels(champion, val_images) if champion is not None else None
    return decide_promotion(
        val_labels,
        chal,
        champ,
        collapse_ok=collapse_ok,
        groups=groups,
        policy=policy,
        reported=reported,
    )


__all__ = [
    "BootstrapInterval",
    "PromotionDecision",
    "PromotionPolicy",
    "compare_models",
    "decide_promotion",
    "paired_bootstrap",
]
