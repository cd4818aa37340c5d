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
        return RetrainDecision(False, "Nothing to train on: no included train images yet.")
    if not has_encoder:
        if train_images >= min_new_images:
            return RetrainDecision(
                True, f"There is no encoder yet and {train_images} train images to train one."
            )
        return RetrainDecision(
            False,
            f"Waiting for data: there is no encoder yet, and {train_images} train images are "
            f"fewer than the {min_new_images} the first one needs.",
        )
    fraction = new_since_last_encoder / train_images
    if new_since_last_encoder >= min_new_images:
        return RetrainDecision(
            True,
            f"{new_since_last_encoder} new train images since the last encoder "
            f"(≥ {min_new_images} start a retrain).",
        )
    if fraction >= min_new_fraction:
        return RetrainDecision(
            True,
            f"The new train images are {fraction:.1%} of the split "
            f"(≥ {min_new_fraction:.1%} starts a retrain).",
        )
    return RetrainDecision(
        False,
        f"Waiting for more data: {new_since_last_encoder} new train images since the last "
        f"encoder ({fraction:.1%} of the split), below {min_new_images} new images and below "
        f"{min_new_fraction:.1%} of the split, either of which starts a retrain.",
    )
