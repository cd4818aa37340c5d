"""Assign each new image a split once, so that no duplicate group spans train, val and test.

A new group's split comes from its representative: a `split` pin from metadata.csv, else a
deterministic draw seeded by the representative's pixel hash (the same picture always lands in
the same split, whatever its file name or batch). Members take their group's split. An image
whose duplicates sit in groups of different splits, or whose pin contradicts its group, is a
`cross_split` image: recorded, and excluded by the decision step. Old rows are never touched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["image_id", "group_id", "split", "source", "cross_split", "detail"]


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    seed: str = "ssl-assets-v1"

    def __post_init__(self) -> None:
        if (
            abs(self.train + self.val + self.test - 1.0) > 1e-9
            or min(self.train, self.val, self.test) < 0
        ):
            raise ValueError(f"split fractions must be >= 0 and sum to 1: {self}")


def split_pin(value: object) -> str | None:
    """The split an image is pinned to, or None when it has no pin.

    A missing pin arrives as None, NaN (pandas 3 keeps missing text as NaN, and NaN is truthy)
    or pd.NA (truthiness raises), or "" from a CSV: all of them mean "no pin"."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value).strip() or None


def hash_split(pixel_hash: str, config: SplitConfig) -> str:
    """Deterministic split of a picture, from its pixel hash and the configured fractions."""
    u = int(hashlib.sha256(f"{config.seed}:{pixel_hash}".encode()).hexdigest()[:12], 16) / 16**12
    if u < config.train:
        return "train"
    return "val" if u < config.train + config.val else "test"


def assign_splits(
    groups: pd.DataFrame, group_splits: dict[str, str], config: SplitConfig
) -> pd.DataFrame:
    """Splits of new images.

    `groups`: one row per new image with image_id, group_id, role, linked_groups, pixel_hash and
    pin (a split; None, NaN, pd.NA or "" when unpinned), in curation order. `group_splits`: split of every existing group.
    Returns `SPLIT_COLUMNS` rows for the new images.
    """
    known = dict(group_splits)
    pins = [split_pin(p) for p in groups["pin"]]
    # Representatives first: they fix their new group's split.
    for row, pin in zip(groups.itertuples(index=False), pins, strict=True):
        if row.role == "representative":
            known[row.group_id] = pin or hash_split(row.pixel_hash, config)
    out = []
    for row, pin in zip(groups.itertuples(index=False), pins, strict=True):
        group_split = known.get(row.group_id)
        if group_split is None:  # a member whose representative is not new (defensive)
            group_split = known[row.group_id] = pin or hash_split(row.pixel_hash, config)
        linked_splits = sorted({known[g] for g in (row.linked_groups or []) if g in known})
        problems = []
        if len(linked_splits) > 1:
            problems.append(f"duplicates in groups of splits {linked_splits}")
        if pin and pin != group_split:
            problems.append(f"pinned {pin} but its duplicate group is in {group_split}")
        if row.role == "representative":
            source = "pin" if pin else "hash"
        else:
            source = "pin" if pin and problems else "group"
        out.append(
            {
                "image_id": row.image_id,
                "group_id": row.group_id,
                "split": pin if (pin and problems) else group_split,
                "source": source,
                "cross_split": bool(problems),
                "detail": "; ".join(problems) or None,
            }
        )
    return pd.DataFrame(out, columns=SPLIT_COLUMNS)


def prepare_pending(pending: pd.DataFrame) -> pd.DataFrame:
    """Normalise the store's rows for `assign_splits`: a missing pin is None whatever pandas
    made of it, and `linked_groups` is a list."""
    pending = pending.copy()
    pending["pin"] = [p if isinstance(p, str) and p else None for p in pending["pin"]]
    pending["linked_groups"] = [list(v) if v is not None else [] for v in pending["linked_groups"]]
    return pending
