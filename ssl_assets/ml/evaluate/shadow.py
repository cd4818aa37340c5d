"""Champion decay and shadow evaluation: models scored on a batch's new labels, side by side.

Why: the champion is judged once, at promotion, on the val images of its day. Data keeps
arriving, and when a batch brings labels the question "is the champion still as good?" can be
answered on images no model has trained on. The champion and the latest challenger (a model
that lost, or has not yet faced, a promotion) are scored on the same images — a shadow
evaluation: the challenger serves nothing, it is only measured.

Rules:

- Each model's accuracy gets a 95 % Wilson score interval (Wilson, "Probable inference, the law
  of succession, and statistical inference", JASA 22, 1927): unlike the normal approximation
  it stays inside [0, 1] and is honest at 10-50 images, which is what a labeled batch holds.
- **Decay** is judged against the model's reference accuracy (its test accuracy when it was
  fine-tuned): decayed when even the interval's upper end is more than `max_drop` below it. A
  few unlucky images do not trigger a retrain; a real fall does, once enough labels say so.
- A label outside a model's class list counts as an error (the model cannot predict it) and
  is reported as `unknown_labels`: new classes are a kind of decay too.
- Challenger minus champion on the same images gets a paired-bootstrap interval (as the
  promotion rule does, `ssl_assets.ml.evaluate.promotion.paired_bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from quality import thresholds
from quality.verdict import Verdict


@dataclass(frozen=True)
class DecayPolicy:
    """The decay rule's bound (default in quality/thresholds.py) and interval confidence."""

    max_accuracy_drop: float = thresholds.MONITOR_MAX_ACCURACY_DROP
    confidence: float = 0.95


@dataclass(frozen=True)
class ModelScore:
    """One model on one batch's new labeled images."""

    model_id: str
    role: str  # champion | challenger
    images: int
    correct: int
    accuracy: float | None
    low: float | None
    high: float | None
    unknown_labels: int
    reference_accuracy: float | None
    decayed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion `correct / n` (n > 0)."""
    if n <= 0:
        raise ValueError("need at least one trial")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def correct_predictions(
    model: Any, class_names: Sequence[str], images: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, int]:
    """Per-image correctness of a fine-tuned model on canonical uint8 images, and how many
    labels lie outside its class list (always counted as wrong)."""
    from ssl_assets.ml.evaluate.supervised import predict_labels

    predicted = np.asarray(class_names, dtype=object)[predict_labels(model, images)]
    truth = np.asarray([str(v) for v in labels], dtype=object)
    unknown = int((~np.isin(truth, np.asarray(class_names, dtype=object))).sum())
    return predicted == truth, unknown


def judge(
    model_id: str,
    role: str,
    correct: np.ndarray,
    unknown: int,
    reference: float | None,
    policy: DecayPolicy | None = None,
) -> ModelScore:
    """Accuracy with its interval, and whether it decayed below `reference` beyond the bound."""
    policy = policy or DecayPolicy()
    n, k = int(len(correct)), int(np.sum(correct))
    if n == 0:
        why = f"{role} {model_id}: no new labeled image it has not trained on"
        return ModelScore(model_id, role, 0, 0, None, None, None, 0, reference, False, why)
    low, high = wilson_interval(k, n, policy.confidence)
    acc = k / n
    text = f"{role} {model_id}: accuracy {acc:.3f} [{low:.3f}, {high:.3f}] on {n} new labels"
    if unknown:
        text += f" ({unknown} with a class it does not know)"
    if reference is None:
        return ModelScore(
            model_id, role, n, k, acc, low, high, unknown, None, False, text + "; no reference"
        )
    decayed = high < reference - policy.max_accuracy_drop
    text += (
        f"; {'decayed' if decayed else 'no decay'}: upper bound {high:.3f} "
        f"{'<' if decayed else '≥'} reference {reference:.3f} - {policy.max_accuracy_drop:g}"
    )
    return ModelScore(model_id, role, n, k, acc, low, high, unknown, reference, decayed, text)


def decay_verdict(scores: Sequence[tuple[str, ModelScore]]) -> Verdict:
    """The `champion_decay` gate over (batch, champion score) pairs: passed unless the champion
    decayed on some batch's new labels."""
    decayed = [(b, s) for b, s in scores if s.decayed]
    judged = [(b, s) for b, s in scores if s.images]
    if not judged:
        description = "no new labels to judge the champion on"
    elif decayed:
        description = "; ".join(f"{b}: {s.reason}" for b, s in decayed)
    else:
        description = "; ".join(f"{b}: {s.reason}" for b, s in judged)
    accuracies = [s.accuracy for _, s in judged if s.accuracy is not None]
    return Verdict(
        check_name="champion_decay",
        passed=not decayed,
        metric="champion_accuracy_on_new_labels",
        value=min(accuracies) if accuracies else None,
        description=description,
        details={"decayed_on": [b for b, _ in decayed], "judged_batches": [b for b, _ in judged]},
    )
