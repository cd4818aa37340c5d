"""`ssl-assets recurate`: curate every curated image again under new settings, changes listed first.

The duplicate tiers run over every image already deduplicated, in its original curation order,
under the lake's settings with the given changes (thresholds, tiers, a new pinned embedder; see
`resources/curation_settings.py`); `ssl_assets/curation/recurate.py` turns the groups into
splits and a list of changes. A dry run prints that list and writes nothing. Otherwise the
command refuses when a split move would touch an image that evaluated a promoted model, unless
forced, and else writes in one transaction: the new duplicate rows and edges (each recording
the new settings), the split rows that changed, the whole include decision, a `recurations` row
and one `curation_changes` row per image and kind of change; then it saves the settings as the
lake's `curation.json`, so later batches are curated the same way. The next curation run
re-checks the gates (leak rates included) and refreshes the asset's metadata in the UI.
"""

from __future__ import annotations

import getpass
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

from resources.curation_settings import CurationSettings
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from ssl_assets.curation.decisions import decide
from ssl_assets.curation.dedup import assign_groups, find_edges, group_tables
from ssl_assets.curation.recurate import curation_changes, describe, resplit
from ssl_assets.curation.splits import SplitConfig
from ssl_assets.ml.evaluate.features import semantic_embedder

REFUSED = 2


@dataclass
class Plan:
    """What a re-curation would write, and what it changes."""

    before: CurationSettings
    after: CurationSettings
    duplicates: pd.DataFrame
    pairs: pd.DataFrame
    splits: pd.DataFrame  # only the rows that change
    curated: pd.DataFrame
    changes: pd.DataFrame

    @property
    def protected_moves(self) -> pd.DataFrame:
        moves = self.changes[self.changes["change"] == "split"]
        return moves[moves["protected"]]


def _regroup(
    rows: pd.DataFrame, settings: CurationSettings, lake: LakeResource, store: MetadataStore
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every row deduplicated again as if all arrived now: (groups, edges, duplicate rows,
    numbered with their original seq) and the edges as `duplicate_pairs` rows."""
    embed, embedder = semantic_embedder(settings.embedder, lake.read_rows, lake.model_dir)
    emb = embed(rows)
    none = rows.iloc[:0]
    edges = find_edges(
        rows, emb, none, emb[:0], settings.dedup_config(), read_pixels=lake.read_rows
    )
    groups = assign_groups(
        rows["image_id"].tolist(),
        none[["image_id", "group_id"]],
        edges,
        store.overridden("unmerge"),
    )
    stamp = {"run_id": None, "recorded_at": utcnow(), "settings": settings.record()}
    duplicates, pairs = group_tables(
        groups, edges, rows, none, next_seq=0, embedder=embedder, stamp=stamp
    )
    return groups, duplicates.assign(seq=rows["seq"].to_numpy()), pairs


def plan(
    lake: LakeResource,
    store: MetadataStore,
    settings: CurationSettings,
    version: str,
    split_config: SplitConfig,
) -> Plan:
    """Re-curate every deduplicated image of the admitted catalog at `version` under
    `settings`; reads the store, writes nothing."""
    state = store.recuration_state()
    catalog = store.admitted_catalog(version)
    rows = state.merge(catalog, on="image_id").sort_values("seq").reset_index(drop=True)
    groups, duplicates, pairs = _regroup(rows, settings, lake, store)
    splits = resplit(
        groups.merge(rows[["image_id", "pixel_hash", "pin", "split"]], on="image_id"),
        split_config,
    )
    images = splits.merge(rows[["image_id", "batch"]], on="image_id").merge(
        groups[["image_id", "role", "tier"]], on="image_id"
    )
    curated = decide(
        images,
        store.image_issues(),
        store.current_overrides(),
        set(store.admitted_batches()),
    )
    changes = curation_changes(
        rows[["image_id", "group_id", "split", "include", "reasons"]],
        curated[["image_id", "group_id", "split", "include", "reasons"]],
        store.protected_images(),
    )
    kept = rows[["image_id", "split_group", "split", "cross_split"]].rename(
        columns={"split_group": "group_id"}
    )
    key = ["image_id", "group_id", "split", "cross_split"]
    same = splits.merge(kept, on=key, how="left", indicator=True)["_merge"].eq("both")
    same = same.to_numpy()
    return Plan(
        before=CurationSettings.for_lake(lake),
        after=settings,
        duplicates=duplicates,
        pairs=pairs,
        splits=splits[~same].reset_index(drop=True),
        curated=curated,
        changes=changes,
    )


def apply(
    lake: LakeResource, store: MetadataStore, planned: Plan, *, forced: bool, why: str
) -> str:
    """Write the plan (one transaction), save the settings as `curation.json`; returns the
    re-curation's id."""
    recuration_id = f"recurate-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    now = utcnow()
    counts = planned.changes["change"].value_counts()
    record = pd.DataFrame(
        [
            {
                "recuration_id": recuration_id,
                "settings_before": planned.before.record(),
                "settings_after": planned.after.record(),
                "images": len(planned.duplicates),
                "group_changes": int(counts.get("group", 0)),
                "exclusion_changes": int(counts.get("exclusion", 0)),
                "split_moves": int(counts.get("split", 0)),
                "protected_moves": len(planned.protected_moves),
                "forced": forced,
                "who": getpass.getuser(),
                "why": why,
                "recorded_at": now,
            }
        ]
    )
    stamp = {"run_id": recuration_id, "recorded_at": now}
    store.apply_recuration(
        record,
        planned.duplicates.assign(**stamp),
        planned.pairs.assign(**stamp),
        planned.splits.assign(run_id=recuration_id, assigned_at=now),
        planned.curated.assign(run_id=recuration_id, updated_at=now),
        planned.changes.assign(recuration_id=recuration_id, recorded_at=now),
    )
    planned.after.write(lake)
    return recuration_id


def parse_changes(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings as settings changes; values are read as JSON (numbers, true/false,
    null) and otherwise kept as text (an encoder id)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def run(
    lake: LakeResource,
    store: MetadataStore,
    version: str,
    changes: dict[str, Any],
    *,
    dry_run: bool,
    force: bool,
    why: str,
    out=print,
) -> int:
    """The command: plan, print, then refuse, stop (dry run) or apply. Returns the exit code."""
    current = CurationSettings.for_lake(lake)
    settings = current.replaced(source="ssl-assets recurate", **changes)
    diff = {
        k: (v, settings.values()[k])
        for k, v in current.values().items()
        if v != settings.values()[k]
    }
    out("settings: " + (", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items()) or "unchanged"))
    planned = plan(lake, store, settings, version, SplitConfig())
    out(describe(planned.changes, len(planned.duplicates)))
    if dry_run:
        out("dry run: nothing was changed")
        return 0
    protected = planned.protected_moves
    if len(protected) and not force:
        out(
            f"refused: {len(protected)} split moves touch images held out when a promoted model "
            "was evaluated (its reported scores would no longer mean what they meant); nothing "
            "was changed. Re-run with --force to move them anyway (recorded)."
        )
        return REFUSED
    recuration_id = apply(lake, store, planned, forced=force, why=why)
    out(
        f"applied as {recuration_id}: settings saved to curation.json, every change recorded "
        "in the curation_changes table under that id"
    )
    return 0
