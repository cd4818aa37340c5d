"""Re-curation: group every curated image again under new settings, and say what that changes.

Why: curation is incremental and its decisions never move on their own (groups and splits are
assigned once), so a lake curated under thresholds that later prove wrong, or before a new tier
or a new pinned embedder, keeps its old groups. `ssl-assets recurate` (`ssl_assets/recurate.py`)
runs the duplicate tiers over every image already curated, in their original curation order, as
if they all arrived now, and this module turns the result into new splits and a list of changes
(groups, exclusions, split moves) that a person reads before anything is written.

Splits move as little as they can: a group's split is its representative's pin, else the split
that image had (kept), else the deterministic hash draw a new image gets; members follow their
group, and a pinned member whose group is elsewhere is excluded as `cross_split_duplicate`,
exactly as in incremental curation. An image whose split changes is a *move*; a move of a
*protected* image (held out when a promoted model was evaluated) changes what that model's
reported scores meant, so the command refuses unless forced.
"""

from __future__ import annotations

import pandas as pd

from ssl_assets.curation.splits import SPLIT_COLUMNS, SplitConfig, hash_split, split_pin

CHANGE_COLUMNS = ["image_id", "change", "before", "after", "protected"]
CHANGES = ("group", "exclusion", "split")


def resplit(groups: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Splits of re-grouped images (`SPLIT_COLUMNS`).

    `groups`: one row per image in curation order with image_id, group_id, role, pixel_hash,
    pin (None when unpinned) and split (the image's split before, None when it had none).
    """
    pins = [split_pin(p) for p in groups["pin"]]
    before = dict(zip(groups["image_id"], groups["split"], strict=True))
    known: dict[str, tuple[str, str]] = {}
    for row, pin in zip(groups.itertuples(index=False), pins, strict=True):
        if row.role == "representative":
            kept = before.get(row.image_id)
            if pin:
                known[row.group_id] = (pin, "pin")
            elif isinstance(kept, str) and kept:
                known[row.group_id] = (kept, "kept")
            else:
                known[row.group_id] = (hash_split(row.pixel_hash, config), "hash")
    out = []
    for row, pin in zip(groups.itertuples(index=False), pins, strict=True):
        group_split, source = known[row.group_id]
        problem = None
        if row.role != "representative":
            source = "group"
            if pin and pin != group_split:
                problem = f"pinned {pin} but its duplicate group is in {group_split}"
                source = "pin"
        out.append(
            {
                "image_id": row.image_id,
                "group_id": row.group_id,
                "split": pin if problem else group_split,
                "source": source,
                "cross_split": problem is not None,
                "detail": problem,
            }
        )
    return pd.DataFrame(out, columns=SPLIT_COLUMNS)


def _state(include: bool, reasons: str) -> str:
    return "included" if include else f"excluded:{reasons}"


def curation_changes(
    before: pd.DataFrame, after: pd.DataFrame, protected: set[str]
) -> pd.DataFrame:
    """What re-curation changes, one row per image and kind (`CHANGE_COLUMNS`).

    `before` and `after` hold image_id, group_id, split, include and reasons (the
    `curated_images` decision); `protected` the images that evaluated a promoted model.
    """
    both = before.merge(after, on="image_id", suffixes=("_before", "_after"))
    parts = []
    for change, old, new in (
        ("group", both["group_id_before"], both["group_id_after"]),
        (
            "exclusion",
            pd.Series(map(_state, both["include_before"], both["reasons_before"])),
            pd.Series(map(_state, both["include_after"], both["reasons_after"])),
        ),
        ("split", both["split_before"], both["split_after"]),
    ):
        differs = (old.to_numpy() != new.to_numpy()) & ~(old.isna() & new.isna()).to_numpy()
        ids = both["image_id"].to_numpy()[differs]
        parts.append(
            pd.DataFrame(
                {
                    "image_id": ids,
                    "change": change,
                    "before": old.to_numpy()[differs],
                    "after": new.to_numpy()[differs],
                    "protected": [i in protected for i in ids],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[CHANGE_COLUMNS]


def describe(changes: pd.DataFrame, images: int, limit: int = 20) -> str:
    """A person's summary of the changes: counts per kind, then the first `limit` changes."""
    moves = changes[changes["change"] == "split"]
    exclusions = changes[changes["change"] == "exclusion"]
    newly_out = int(exclusions["after"].str.startswith("excluded").sum())
    lines = [
        f"re-curation of {images} images:",
        f"  groups: {int((changes['change'] == 'group').sum())} images change group",
        f"  exclusions: {len(exclusions)} images change ({newly_out} newly excluded, "
        f"{len(exclusions) - newly_out} newly included or excluded for other reasons)",
        f"  split moves: {len(moves)} ({int(moves['protected'].sum())} of them held out when "
        "a promoted model was evaluated)",
    ]
    shown = changes.sort_values(["protected", "change"], ascending=[False, False]).head(limit)
    for r in shown.itertuples(index=False):
        mark = "  (protected)" if r.protected else ""
        lines.append(f"    {r.image_id} {r.change}: {r.before} -> {r.after}{mark}")
    if len(changes) > limit:
        lines.append(f"    ... and {len(changes) - limit} more")
    return "\n".join(lines)
