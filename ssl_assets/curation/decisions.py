"""Combine duplicates, splits, quality flags and people's overrides into one include decision.

Every exclusion carries its reasons, so a person can always see why an image is out, and an
override (include, exclude, unmerge) always wins and is visible as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ssl_assets.curation.image_issues import ISSUES

DUPLICATE_REASONS = (
    "exact_duplicate",
    "near_duplicate",
    "semantic_duplicate",
    "aligned_duplicate",
)
OTHER_REASONS = ("cross_split_duplicate", "forced_exclude", "batch_not_admitted")
OVERRIDE_ACTIONS = ("include", "exclude", "unmerge")
CURATED_COLUMNS = ["image_id", "batch", "group_id", "split", "include", "reasons", "annotations"]


def allowed_reasons(issues: Iterable[str] | None = None) -> list[str]:
    """Every reason an image may be excluded for: duplicates, the other fixed reasons, and an
    issue name per quality issue (default: every issue registered in `image_issues`)."""
    return [*DUPLICATE_REASONS, *OTHER_REASONS, *(ISSUES if issues is None else issues)]


def decide(
    images: pd.DataFrame, flags: pd.DataFrame, overrides: pd.DataFrame, admitted: set[str]
) -> pd.DataFrame:
    """One row per image with include, reasons and annotations.

    images:    image_id, batch, group_id, split, role, tier, cross_split
    flags:     image_id, issue, excludes (one row per flagged issue)
    overrides: image_id, action (latest per image)
    """
    action = overrides.set_index("image_id")["action"].to_dict() if len(overrides) else {}
    excl = flags[flags["excludes"]].groupby("image_id")["issue"].apply(sorted).to_dict()
    notes = flags[~flags["excludes"]].groupby("image_id")["issue"].apply(sorted).to_dict()
    rows = []
    for r in images.itertuples(index=False):
        act = action.get(r.image_id)
        reasons: list[str] = []
        group_id = r.group_id
        if r.batch not in admitted:
            reasons.append("batch_not_admitted")
        if r.cross_split:
            reasons.append("cross_split_duplicate")
        if act == "unmerge":
            group_id = r.image_id
        elif r.role == "member" and not r.cross_split and isinstance(r.tier, str):
            reasons.append(f"{r.tier}_duplicate")
        reasons += excl.get(r.image_id, [])
        annotations = list(notes.get(r.image_id, []))
        if act == "exclude":
            reasons.append("forced_exclude")
        if act == "include" and reasons and "batch_not_admitted" not in reasons:
            annotations.append("forced_include:" + "+".join(reasons))
            reasons = []
        if act == "unmerge":
            annotations.append("unmerged")
        rows.append(
            {
                "image_id": r.image_id,
                "batch": r.batch,
                "group_id": group_id,
                "split": r.split,
                "include": not reasons,
                "reasons": ",".join(reasons),
                "annotations": ",".join(annotations),
            }
        )
    return pd.DataFrame(rows, columns=CURATED_COLUMNS)


def read_overrides_csv(path: Path) -> pd.DataFrame:
    """`overrides.csv` (image_id, action[, who, why]) as rows for the `overrides` table; a
    missing column or an unknown action is a ValueError that says which."""
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"image_id", "action"} - set(rows.columns)
    if missing:
        raise ValueError(
            f"overrides.csv needs columns image_id, action[, who, why]: missing {missing}"
        )
    bad = sorted(set(rows["action"]) - set(OVERRIDE_ACTIONS))
    if bad:
        raise ValueError(
            f"overrides.csv has unknown actions {bad}; use include, exclude or unmerge"
        )
    return rows.reindex(columns=["image_id", "action", "who", "why"]).fillna("")


@dataclass
class CurationSummary:
    """What one curation run decided, in the numbers its gates and the UI show."""

    excluded_by_reason: dict[str, int]
    included_by_split: dict[str, int]
    excluded_fraction_by_batch: dict[str, float]
    groups_across_splits: int
    cross_split: pd.DataFrame

    @property
    def worst_batch(self) -> str | None:
        by_batch = self.excluded_fraction_by_batch
        return max(by_batch, key=by_batch.get) if by_batch else None  # type: ignore[arg-type]


def summarise(curated: pd.DataFrame) -> CurationSummary:
    """Exclusion reasons, included images per split, excluded share per batch, groups with
    included images in two splits (leaks) and the cross-split duplicates of `curated_images`."""
    excluded = curated[~curated["include"]]
    included = curated[curated["include"]]
    return CurationSummary(
        excluded_by_reason=(
            excluded["reasons"].str.split(",").explode().value_counts().to_dict()
            if len(excluded)
            else {}
        ),
        included_by_split=included["split"].value_counts().to_dict(),
        excluded_fraction_by_batch=curated.groupby("batch")["include"]
        .agg(lambda s: 1.0 - s.mean())
        .to_dict(),
        groups_across_splits=int(included.groupby("group_id")["split"].nunique().gt(1).sum())
        if len(curated)
        else 0,
        cross_split=curated[curated["reasons"].str.contains("cross_split_duplicate", regex=False)],
    )
