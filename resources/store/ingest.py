"""Ingestion's tables: the manifest, labels, attributes, CSV rejects and the admission log."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from resources.store.core import Queries, registered, utcnow
from resources.store.sql import sql


class IngestQueries(Queries):
    """`images` (view `raw_images`), `labels`, `attributes`, `ingest_rejects`, `batches`."""

    def known_image_ids(
        self, image_ids: Sequence[str], exclude_batch: str | None = None
    ) -> set[str]:
        """Which of `image_ids` are in the manifest (of batches other than `exclude_batch`)."""
        if not image_ids:
            return set()
        with self.connect() as con:
            with registered(con, "_ids", pd.DataFrame({"image_id": list(image_ids)})):
                rows = con.execute(sql("ingest", "known_image_ids"), [exclude_batch]).fetchall()
        return {r[0] for r in rows}

    def write_raw_batch(
        self,
        batch: str,
        manifest: pd.DataFrame,
        labels: pd.DataFrame,
        attributes: pd.DataFrame,
        rejects: pd.DataFrame,
        run_id: str | None,
    ) -> None:
        """Store one batch's manifest, attributes and rejects (replacing an earlier ingestion of
        the same batch) and append its labels, all in one transaction."""
        now = utcnow()
        stamp = {"run_id": run_id}
        with self.transaction() as con:
            for table, df, time_col in (
                ("images", manifest, "ingested_at"),
                ("attributes", attributes, "recorded_at"),
                ("ingest_rejects", rejects, "recorded_at"),
            ):
                con.execute(f"DELETE FROM {table} WHERE batch = ?", [batch])  # noqa: S608
                self.insert(con, table, df.assign(batch=batch, **stamp, **{time_col: now}))
            if not labels.empty:
                new = labels.assign(batch=batch, **stamp, recorded_at=now)
                with registered(con, "_new_labels", new):
                    con.execute(sql("ingest", "append_new_labels"))

    def batch_manifest(self, batch: str) -> pd.DataFrame:
        """Every manifest row of one batch, by relative path."""
        return self.query(sql("ingest", "batch_manifest"), [batch])

    def ok_images(self, batch: str) -> pd.DataFrame:
        """image_id, rel_path, content_hash of the batch's usable images, by relative path."""
        return self.query(sql("ingest", "ok_images"), [batch])

    def record_admission(
        self,
        batch: str,
        admitted: bool,
        reason: str,
        counts: dict[str, int],
        run_id: str | None,
    ) -> None:
        """Append the admission decision for a batch; the latest decision wins."""
        row = {
            "batch": batch,
            "admitted": bool(admitted),
            "reason": reason,
            "files": int(counts.get("files", 0)),
            "ok": int(counts.get("ok", 0)),
            "quarantined": int(counts.get("quarantined", 0)),
            "run_id": run_id,
            "recorded_at": utcnow(),
        }
        self.append("batches", pd.DataFrame([row]))

    def batch_admission(self, batch: str) -> tuple[bool, str]:
        """(admitted, why) of the batch's latest admission decision; (False, "never ingested")
        when there is none."""
        df = self.query(sql("ingest", "batch_admission"), [batch])
        if df.empty:
            return False, "never ingested"
        return bool(df["admitted"].iloc[0]), str(df["reason"].iloc[0])

    def admitted_batches(self) -> list[str]:
        """Batches whose latest gate decision admitted them: the only ones later stages read."""
        return self.query(sql("ingest", "admitted_batches"))["batch"].tolist()

    def decided_batches(self) -> set[str]:
        """Batches whose gates reached an admission decision (admitted or not)."""
        return set(self.query(sql("ingest", "decided_batches"))["batch"])

    def settled_batches(self, version: str) -> set[str]:
        """Batches with nothing left to ingest: rejected, or admitted and catalogued at `version`."""
        return set(self.query(sql("ingest", "settled_batches"), [version])["batch"])

    def batch_status(self) -> pd.DataFrame:
        """The latest admission decision of every batch (files, ok, quarantined, why)."""
        return self.query(sql("ingest", "batch_status"))

    def quarantine_counts(self) -> pd.DataFrame:
        """batch, reason, n for every quarantine reason of every batch."""
        return self.query(sql("ingest", "quarantine_counts"))
