"""The audits' tables: diversity scores and clusters, subgroup shares, drift, statistics and
shortcut probes, labeling candidates, and `audit_runs` (which batch was newest at each run)."""

from __future__ import annotations

import pandas as pd

from resources.store.core import Queries, utcnow
from resources.store.sql import sql


def _audit_run(
    asset: str, run_id: str, newest: str | None, batches: int, images: int, embedder: str | None
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "asset": asset,
                "newest_batch": newest,
                "batches": batches,
                "images": images,
                "embedder": embedder,
                "recorded_at": utcnow(),
            }
        ]
    )


class AuditQueries(Queries):
    """`audit_runs`, `diversity_*`, `bias_*`, `labeling_candidates`."""

    def issue_pairs(self) -> pd.DataFrame:
        """(image_id, issue) of every flagged quality issue."""
        return self.query(sql("audits", "issue_pairs"))

    def attributes(self) -> pd.DataFrame:
        """metadata.csv values in long form (image_id, key, value)."""
        return self.query(sql("audits", "attributes"))

    def current_labels(self) -> pd.DataFrame:
        """The latest label of every labeled image (image_id, label)."""
        return self.query(sql("audits", "current_labels"))

    def latest_bias_shares(self) -> pd.DataFrame:
        """attribute, subgroup, scope (train | all), share of the newest bias audit."""
        return self.query(sql("audits", "latest_bias_shares"))

    def write_diversity(
        self,
        run_id: str,
        scores: pd.DataFrame,
        clusters: pd.DataFrame,
        newest: str | None,
        batches: int,
        embedder: str,
    ) -> None:
        """Replace the per-image diversity scores, append this run's clusters and its run row."""
        with self.transaction() as con:
            con.execute("DELETE FROM diversity_scores")
            self.insert(con, "diversity_scores", scores)
            self.insert(con, "diversity_clusters", clusters)
            run = _audit_run("diversity_audit", run_id, newest, batches, len(scores), embedder)
            self.insert(con, "audit_runs", run)

    def write_bias(
        self,
        run_id: str,
        tables: dict[str, pd.DataFrame],
        newest: str | None,
        batches: int,
        images: int,
    ) -> None:
        """Append this run's bias tables (`bias_groups`, `bias_drift`, `bias_group_stats`,
        `bias_shortcuts`, each stamped with run_id and time) and its run row."""
        now = utcnow()
        with self.transaction() as con:
            for table, df in tables.items():
                self.insert(con, table, df.assign(run_id=run_id, recorded_at=now))
            run = _audit_run("bias_audit", run_id, newest, batches, images, None)
            self.insert(con, "audit_runs", run)

    def write_labeling_candidates(
        self,
        run_id: str,
        rows: pd.DataFrame,
        newest: str | None,
        batches: int,
        pool: int,
        embedder: str,
    ) -> None:
        """Append this run's picks (in rank order) and its run row."""
        with self.transaction() as con:
            self.insert(con, "labeling_candidates", rows)
            run = _audit_run("labeling_candidates", run_id, newest, batches, pool, embedder)
            self.insert(con, "audit_runs", run)
