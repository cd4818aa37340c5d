"""When is new data worth a retrain? A plain rule, so a test can state it and a sensor can use it.

Retraining is the expensive step, so it waits until enough *new included train images* have
been curated since the last encoder was trained: at least `min_new_images`, or at least
`min_new_fraction` of the train split, whichever comes first. Ten batches landing at once
therefore cause one retrain once they are curated, not ten.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def retrain_decision(
    train_images: int,
    new_since_last_encoder: int,
    has_encoder: bool,
    min_new_images: int,
    min_new_fraction: float = 1.0,
) -> RetrainDecision:
    """Whether to pretrain now, and why (or why not)."""
    if train_images == 0:
        return RetrainDecision(False, "no included train images yet")
    if not has_encoder:
        if train_images >= min_new_images:
            return RetrainDecision(True, f"no encoder yet and {train_images} train images")
        return RetrainDecision(
            False, f"no encoder yet, {train_images} train images < {min_new_images}"
        )
    fraction = new_since_last_encoder / train_images
    if new_since_last_encoder >= min_new_images:
        return RetrainDecision(
            True, f"{new_since_last_encoder} new train images ≥ {min_new_images}"
        )
    if fraction >= min_new_fraction:
        return RetrainDecision(
            True, f"new train images are {fraction:.1%} of the split ≥ {min_new_fraction:.1%}"
        )
    return RetrainDecision(
        False,
        f"{new_since_last_encoder} new train images ({fraction:.1%}) since the last encoder: "
        f"below {min_new_images} and {min_new_fraction:.1%}",
    )
