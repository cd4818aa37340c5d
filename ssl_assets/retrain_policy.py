"""When is new data worth a retrain? A plain rule, so a test can state it and a sensor can use it.

Retraining is the expensive step. It is worth it when any of three signals says so, each
counted since the newest usable encoder was trained (what it has not answered yet):

- **count**: enough *new included train images* were curated: at least `min_new_images`, or at
  least `min_new_fraction` of the train split. Ten batches landing at once cause one retrain
  once they are curated, not ten.
- **drift**: a newly curated batch differs from the data the champion was trained on beyond the
  drift bound (`batch_monitoring`: energy distance with a permutation test and an effect size,
  and the out-of-distribution share; `ssl_assets.audit.drift`), however few images it holds: a
  new camera or site is worth a retrain before it is worth 5,000 images.
- **decay**: on a batch's new labels, the champion's accuracy fell below its reference by more
  than the decay bound, beyond doubt (`ssl_assets.ml.evaluate.shadow`).

Without an encoder only the count decides (drift and decay are measured against a champion).
Every decision, retrain or not, comes with one sentence per signal (`reason`, shown on the
sensor's tick) and the evidence behind it (`evidence`, recorded in `retrain_decisions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    triggers: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)


def _count_signal(
    train_images: int, new: int, min_new_images: int, min_new_fraction: float
) -> tuple[bool, str]:
    fraction = new / train_images
    if new >= min_new_images:
        return True, f"{new} new train images ≥ {min_new_images}"
    if fraction >= min_new_fraction:
        return True, f"new train images are {fraction:.1%} of the split ≥ {min_new_fraction:.1%}"
    return False, (
        f"{new} new train images ({fraction:.1%}) since the last encoder: "
        f"below {min_new_images} and {min_new_fraction:.1%}"
    )


def _drift_signal(drift: Sequence[Mapping[str, Any]]) -> tuple[bool, str]:
    drifted = [r for r in drift if r.get("drifted")]
    if drifted:
        return True, "drift: " + "; ".join(f"batch {r['batch']} {r['reason']}" for r in drifted)
    if not drift:
        return False, "no newly monitored batch to judge drift on"
    batches = sorted({str(r["batch"]) for r in drift})
    numbers = "; ".join(
        f"{r['batch']} {r['space']}: effect {r['effect']:.3f}, p={r['p_value']:.3g}, "
        f"{r['ood_share']:.0%} OOD"
        if r.get("effect") is not None
        else f"{r['batch']} {r['space']}: {r['reason']}"
        for r in drift
    )
    return False, f"no drift in {', '.join(batches)} ({numbers})"


def _decay_signal(decay: Sequence[Mapping[str, Any]]) -> tuple[bool, str]:
    decayed = [r for r in decay if r.get("decayed")]
    if decayed:
        return True, "decay: " + "; ".join(f"batch {r['batch']}: {r['reason']}" for r in decayed)
    judged = [r for r in decay if r.get("images")]
    if not judged:
        return False, "no new labels to judge the champion on"
    return False, "champion holds: " + "; ".join(
        f"{r['batch']}: accuracy {r['accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
        for r in judged
    )


def retrain_decision(
    train_images: int,
    new_since_last_encoder: int,
    has_encoder: bool,
    min_new_images: int,
    min_new_fraction: float = 1.0,
    drift: Sequence[Mapping[str, Any]] = (),
    decay: Sequence[Mapping[str, Any]] = (),
    unmonitored: Sequence[str] = (),
) -> RetrainDecision:
    """Whether to pretrain now, and why (or why not), in plain words.

    `drift`: `batch_drift` rows (batch, space, effect, p_value, ood_share, drifted, reason) of
    the batches the newest encoder has not trained on; `decay`: the champion's `batch_scores`
    rows of those batches (batch, images, accuracy, low, high, decayed, reason);
    `unmonitored`: those batches that have no monitoring record (said, never guessed).
    """
    evidence = {
        "train_images": train_images,
        "new_since_last_encoder": new_since_last_encoder,
        "min_new_images": min_new_images,
        "min_new_fraction": min_new_fraction,
        "drift": list(drift),
        "decay": list(decay),
        "unmonitored": list(unmonitored),
    }
    if train_images == 0:
        why = "no retrain: nothing to train on, no included train images yet"
        return RetrainDecision(False, why, (), evidence)
    if not has_encoder:
        if train_images >= min_new_images:
            why = f"retrain: there is no encoder yet and {train_images} train images to train one"
            return RetrainDecision(True, why, ("count",), evidence)
        why = (
            f"no retrain: waiting for data; there is no encoder yet, and {train_images} train "
            f"images are fewer than the {min_new_images} the first one needs"
        )
        return RetrainDecision(False, why, (), evidence)
    signals = {
        "count": _count_signal(
            train_images, new_since_last_encoder, min_new_images, min_new_fraction
        ),
        "drift": _drift_signal(drift),
        "decay": _decay_signal(decay),
    }
    triggers = tuple(name for name, (fired, _) in signals.items() if fired)
    # the signals that fired first, then the others: every decision says what each one saw
    lines = [text for fired, text in signals.values() if fired]
    lines += [text for fired, text in signals.values() if not fired]
    if unmonitored:
        lines.append(
            f"no monitoring record for {', '.join(unmonitored)} (its batch_monitoring step "
            "failed or never ran: materialize it to judge drift and decay there)"
        )
    head = "retrain" if triggers else "no retrain"
    return RetrainDecision(bool(triggers), f"{head}: " + "; ".join(lines), triggers, evidence)


def decide_and_record(
    store: Any, min_new_images: int, decided_by: str
) -> tuple[RetrainDecision, str]:
    """The decision on what the metadata store holds now (counts since the newest usable
    encoder, the monitoring evidence it has not answered), recorded in `retrain_decisions`
    unless it repeats the last one; returns it and the run key a retrain would use (one
    retrain per snapshot of the train split)."""
    evidence = store.retrain_evidence()
    decision = retrain_decision(
        **store.retrain_inputs(),
        min_new_images=min_new_images,
        drift=evidence["drift"],
        decay=evidence["decay"],
        unmonitored=evidence["unmonitored"],
    )
    run_key = f"retrain:{store.train_snapshot()}"
    store.record_retrain_decision(
        decided_by=decided_by,
        retrain=decision.retrain,
        triggers=list(decision.triggers),
        reason=decision.reason,
        evidence=decision.evidence,
        snapshot=run_key.removeprefix("retrain:"),
        run_key=run_key if decision.retrain else None,
    )
    return decision, run_key
