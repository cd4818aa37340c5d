"""Curation's tables: catalog, quality scores and issues, duplicates, splits, overrides and the
include decision. Splits and duplicate groups are append-only: nothing here rewrites them."""

from __future__ import annotations

import hashlib

import pandas as pd

from resources.store.core import Queries, registered
from resources.store.sql import sql


class CurationQueries(Queries):
    """`image_catalog`, `catalog_failures`, `quality_scores`, `quality_issues`, `duplicates`,
    `duplicate_pairs`, `splits`, `overrides`, `curated_images`."""

    # -- the catalog ---------------------------------------------------------------------------

    def admitted_catalog(self, version: str) -> pd.DataFrame:
        """Catalogued images of admitted batches at `version`, in curation order (batches by
        arrival, then path), positions 0..n-1. Earlier images are kept when copies turn up."""
        df = self.query(sql("curation", "admitted_catalog"), [version])
        return df.reset_index(drop=True)

    def write_catalog(
        self,
        batch: str,
        version: str,
        index: pd.DataFrame,
        failures: pd.DataFrame,
        scores: pd.DataFrame,
    ) -> None:
        """Replace one batch's catalog rows, failures and quality scores at `version`."""
        where = {"batch": batch, "version": version}
        self.replace(
            ("image_catalog", index, where),
            ("catalog_failures", failures, where),
            ("quality_scores", scores, where),
        )

    def admitted_quality_scores(self, version: str) -> pd.DataFrame:
        """Long-form scores (image_id, score, value) of admitted images at `version`."""
        return self.query(sql("curation", "admitted_quality_scores"), [version])

    def replace_quality_issues(self, issues: pd.DataFrame) -> None:
        """`quality_issues` is rebuilt from the scores on every run (thresholds are config)."""
        self.replace(("quality_issues", issues, None))

    def image_issues(self) -> pd.DataFrame:
        """image_id, issue, excludes: one row per flagged issue."""
        return self.query(sql("curation", "image_issues"))

    # -- duplicates ----------------------------------------------------------------------------

    def deduplicated(self) -> pd.DataFrame:
        """image_id, current group_id, seq of every image already in a duplicate group."""
        return self.query(sql("curation", "deduplicated"))

    def append_duplicates(self, groups: pd.DataFrame, pairs: pd.DataFrame) -> None:
        """Append new images' groups and the edges that formed them, together."""
        with self.transaction() as con:
            self.insert(con, "duplicates", groups)
            self.insert(con, "duplicate_pairs", pairs)

    # -- overrides -----------------------------------------------------------------------------

    def overridden(self, action: str) -> set[str]:
        """Images whose latest override is `action` (include, exclude or unmerge)."""
        return set(self.query(sql("curation", "overridden"), [action])["image_id"])

    def current_overrides(self) -> pd.DataFrame:
        return self.query(sql("curation", "current_overrides"))

    def import_overrides(self, rows: pd.DataFrame) -> int:
        """Append rows (image_id, action, who, why) not recorded before; returns how many."""
        with self.transaction() as con:
            with registered(con, "_overrides", rows):
                added = con.execute(sql("curation", "import_overrides")).fetchone()
        return int(added[0]) if added else 0

    # -- splits and the include decision -------------------------------------------------------

    def unsplit_images(self) -> pd.DataFrame:
        """Deduplicated images without a split, in curation order, with their split pin."""
        return self.query(sql("curation", "unsplit_images"))

    def group_splits(self) -> dict[str, str]:
        """The split of every duplicate group that has one."""
        return dict(self.query(sql("curation", "group_splits")).itertuples(index=False))

    def append_splits(self, splits: pd.DataFrame) -> None:
        self.append("splits", splits)

    def split_images(self) -> pd.DataFrame:
        """Every split image with batch, group, split, role, tier and cross_split."""
        return self.query(sql("curation", "split_images"))

    def replace_curated(self, curated: pd.DataFrame) -> None:
        """`curated_images` holds the current decision per image: rebuilt on every run."""
        self.replace(("curated_images", curated, None))

    def curated_images(self) -> pd.DataFrame:
        return self.query(sql("curation", "curated_images"))

    def curated_catalog(self, version: str) -> pd.DataFrame:
        """Catalog rows of every curated image of admitted batches (curation order), with split,
        include and reasons; positions 0..n-1."""
        catalog = self.admitted_catalog(version)
        curated = self.query(sql("curation", "curated_decisions"))
        return catalog.merge(curated, on="image_id", how="inner").reset_index(drop=True)

    # -- leaks ---------------------------------------------------------------------------------

    def split_leaks(self) -> pd.DataFrame:
        """The `split_leaks` view: one row per duplicate edge between a held-out image and a
        training image, with tier, scores and whether each end is included."""
        return self.query(sql("curation", "split_leaks"))

    def split_sizes(self) -> dict[str, int]:
        """Curated images (included or not) per split."""
        rows = self.query(sql("curation", "split_sizes"))
        return {r.split: int(r.images) for r in rows.itertuples(index=False)}

    def catalog_rows(self, version: str, image_ids: list[str]) -> pd.DataFrame:
        """image_id, array_path, array_row of the given images at `version` (for pictures)."""
        return self.query(sql("curation", "catalog_rows"), [version, list(image_ids)])

    # -- re-curation -------------------------------------------------------------------------

    def recuration_state(self) -> pd.DataFrame:
        """Every deduplicated image in curation order: seq, role, tier, its split row (split,
        split_group, cross_split), its decision (group_id, include, reasons) and split pin."""
        return self.query(sql("curation", "recuration_state"))

    def protected_images(self) -> set[str]:
        """Held-out images that were in use when a promoted model was evaluated."""
        return set(self.query(sql("curation", "protected_images"))["image_id"])

    def apply_recuration(
        self,
        record: pd.DataFrame,
        duplicates: pd.DataFrame,
        pairs: pd.DataFrame,
        splits: pd.DataFrame,
        curated: pd.DataFrame,
        changes: pd.DataFrame,
    ) -> None:
        """In one transaction: replace the re-curated images' duplicate rows and edges, the split
        rows that changed and the whole decision, and record the re-curation and its changes."""
        with self.transaction() as con:
            with registered(con, "_recurated", duplicates[["image_id"]]):
                con.execute(sql("curation", "delete_recurated_duplicates"))
                con.execute(sql("curation", "delete_recurated_pairs"))
            with registered(con, "_resplit", splits[["image_id"]]):
                con.execute(sql("curation", "delete_resplit"))
            con.execute(sql("curation", "clear_curated"))
            for table, rows in (
                ("duplicates", duplicates),
                ("duplicate_pairs", pairs),
                ("splits", splits),
                ("curated_images", curated),
                ("recurations", record),
                ("curation_changes", changes),
            ):
                self.insert(con, table, rows)

    def recurations(self) -> pd.DataFrame:
        return self.query(sql("curation", "recurations"))

    def curation_changes(self, recuration_id: str) -> pd.DataFrame:
        return self.query(sql("curation", "curation_changes"), [recuration_id])

    def batches_by_arrival(self, batches: set[str]) -> list[str]:
        """The given admitted batches in order of arrival (first admission-log row)."""
        order = self.query(sql("curation", "batches_by_arrival"))
        return [b for b in order["batch"] if b in batches]

    def curation_snapshot(self) -> tuple[str, list[str], int]:
        """(key, admitted catalogued batches, images not yet curated): what the curation sensor
        compares between ticks."""
        catalogued = self.query(sql("curation", "catalogued_per_batch"))
        pending = self.query(sql("curation", "uncurated_count"))["n"].iloc[0]
        text = ";".join(f"{r.batch}@{r.version}:{r.n}" for r in catalogued.itertuples())
        return (
            hashlib.sha256(text.encode()).hexdigest()[:16],
            catalogued["batch"].tolist(),
            int(pending),
        )
