"""The metadata store: the one writer path to `metadata.duckdb`.

DuckDB lets one process at a time open a file for writing (readers in other processes take a
lock too). So every unit of work opens a short-lived connection, retries with backoff while
another process holds the lock, and closes it again at once. Steps that write also share the
`metadata_writer` concurrency pool, so Dagster queues them instead of letting them race.

The schema is versioned: `resources/sql/NNN_*.sql` files are applied in order on first use and
recorded in `schema_version`. Table names in SQL come only from that schema (checked against
`TABLES`); values are always bound parameters.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from dagster import ConfigurableResource, get_dagster_logger

SQL_DIR = Path(__file__).parent / "sql"
TABLES = frozenset(
    {
        "images",
        "labels",
        "attributes",
        "ingest_rejects",
        "batches",
        "stage_metrics",
        "gate_results",
        "models",
        "image_catalog",
        "catalog_failures",
        "quality_scores",
        "quality_issues",
        "duplicate_pairs",
        "duplicates",
        "splits",
        "overrides",
        "curated_images",
        # 003_audits.sql
        "audit_runs",
        "diversity_scores",
        "diversity_clusters",
        "bias_groups",
        "bias_drift",
        "bias_group_stats",
        "bias_shortcuts",
        "labeling_candidates",
        # 004_evaluation.sql
        "image_embeddings",
        "probes",
        "promotions",
    }
)
_MIGRATED: set[str] = set()
_MIGRATE_LOCK = threading.Lock()


def utcnow() -> datetime:
    """Naive UTC timestamp (DuckDB TIMESTAMP has no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def _migrations() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(SQL_DIR.glob("*.sql")):
        match = re.match(r"^(\d+)_", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found


def _rollback(con: duckdb.DuckDBPyConnection, error: BaseException) -> None:
    """Roll back after `error`; a failing ROLLBACK is noted on `error`, never raised instead of
    it (the user must see what aborted the transaction, not "Current transaction is aborted")."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error as exc:
        error.add_note(f"(the ROLLBACK after this error failed too: {exc})")


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, df: pd.DataFrame) -> Iterator[None]:
    """`df` visible as view `name` on `con` for the block. After a failed statement DuckDB
    refuses every other one in the aborted transaction, unregistering included: that refusal is
    suppressed so the statement's own error propagates (the connection is closed right after)."""
    con.register(name, df)
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):
            con.unregister(name)
        raise
    con.unregister(name)


def _check_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown metadata table {table!r}; known: {sorted(TABLES)}")
    return table


# A connection for queries a person types (`ssl-assets sql`): it reads the database and nothing
# else. `enable_external_access=false` refuses every other file (COPY ... TO, read_csv,
# read_text, glob, ATTACH, EXPORT, installing extensions); `lock_configuration=true` refuses
# any SET that would undo it. https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview
SANDBOXED_READER_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


class MetadataStore(ConfigurableResource):
    """DuckDB-backed metadata: manifests, labels, metrics, gate results, the model registry."""

    path: str
    lock_timeout_s: float = 300.0

    # -- connections ---------------------------------------------------------------------------

    def _open(
        self, read_only: bool, config: dict[str, Any] | None = None
    ) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        warned = False
        while True:
            try:
                return duckdb.connect(self.path, read_only=read_only, config=config or {})
            except duckdb.Error as exc:
                if not _is_lock_error(exc) or time.monotonic() >= deadline:
                    raise
                if not warned and delay > 0.5:
                    get_dagster_logger().warning(
                        f"metadata.duckdb is locked by another process; retrying for up to "
                        f"{self.lock_timeout_s:.0f}s ({exc})"
                    )
                    warned = True
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.6, 1.0)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, opened with retry; the schema is migrated on first use."""
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only)
        try:
            if not read_only:
                self._migrate(con)
            yield con
        finally:
            con.close()

    @contextmanager
    def sandboxed_reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-only connection that can touch no file but the database
        (`SANDBOXED_READER_CONFIG`), for queries typed by a person. It waits for a writer
        (retry with backoff, up to `lock_timeout_s`) the way the pipeline's writers wait for a
        reader, instead of failing at once with a lock error."""
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.path} does not exist yet: run the pipeline first")
        con = self._open(read_only=True, config=SANDBOXED_READER_CONFIG)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN/COMMIT; rolled back on any error, so writes are all-or-none."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException as exc:
                _rollback(con, exc)
                raise
            con.execute("COMMIT")

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        key = str(Path(self.path).resolve())
        if key in _MIGRATED:
            return
        with _MIGRATE_LOCK:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER NOT NULL, name VARCHAR, applied_at TIMESTAMP NOT NULL)"
            )
            (current,) = con.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
            for version, sql_path in _migrations():
                if version <= current:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(sql_path.read_text())
                    con.execute(
                        "INSERT INTO schema_version VALUES (?, ?, ?)",
                        [version, sql_path.name, utcnow()],
                    )
                    con.execute("COMMIT")
                except BaseException as exc:
                    _rollback(con, exc)
                    raise
            _MIGRATED.add(key)

    def schema_version(self) -> int:
        with self.connect() as con:
            return int(con.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    # -- generic reads and writes ----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a read query with bound parameters and return a DataFrame."""
        with self.connect() as con:
            return con.execute(sql, list(params or [])).df()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, list(params or []))

    def append(self, table: str, df: pd.DataFrame) -> int:
        """Append a DataFrame's rows to a schema table, matching columns by name."""
        if df.empty:
            return 0
        with self.transaction() as con:
            self.insert(con, table, df)
        return len(df)

    def replace_where(self, table: str, column: str, value: Any, df: pd.DataFrame) -> int:
        """Replace the rows with `column = value` by `df`, in one transaction."""
        _check_table(table)
        if not re.fullmatch(r"[a-z_]+", column):
            raise ValueError(f"bad column name {column!r}")
        with self.transaction() as con:
            con.execute(f"DELETE FROM {table} WHERE {column} = ?", [value])  # noqa: S608
            self.insert(con, table, df)
        return len(df)

    @staticmethod
    def insert(con: duckdb.DuckDBPyConnection, table: str, df: pd.DataFrame) -> None:
        """Insert `df` into a schema table on an open connection (inside `transaction()`),
        matching columns by name."""
        _check_table(table)
        if df.empty:
            return
        with registered(con, "_incoming", df):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")  # noqa: S608

    # -- the records every stage writes ----------------------------------------------------------

    def record_metrics(
        self, asset: str, partition: str | None, run_id: str | None, metrics: dict[str, float]
    ) -> None:
        """Append named numeric metrics of one asset materialization to `stage_metrics`."""
        now = utcnow()
        rows = [
            {
                "asset": asset,
                "partition": partition,
                "run_id": run_id,
                "metric": name,
                "value": float(value),
                "recorded_at": now,
            }
            for name, value in metrics.items()
        ]
        self.append("stage_metrics", pd.DataFrame(rows))

    def previous_metric(
        self, asset: str, metric: str, partition: str | None = None, exclude_run: str | None = None
    ) -> float | None:
        """The most recent earlier value of a metric (optionally for one partition)."""
        sql = "SELECT value FROM stage_metrics WHERE asset = ? AND metric = ?"
        params: list[Any] = [asset, metric]
        if partition is not None:
            sql += " AND partition = ?"
            params.append(partition)
        if exclude_run is not None:
            sql += " AND run_id IS DISTINCT FROM ?"
            params.append(exclude_run)
        sql += " ORDER BY recorded_at DESC LIMIT 1"
        df = self.query(sql, params)
        return None if df.empty else float(df["value"].iloc[0])

    def record_gate(
        self,
        asset: str,
        check_name: str,
        partition: str | None,
        passed: bool,
        severity: str,
        details: dict[str, Any],
        run_id: str | None,
    ) -> None:
        row = {
            "asset": asset,
            "check_name": check_name,
            "partition": partition,
            "passed": bool(passed),
            "severity": severity,
            "details": json.dumps(details, default=str, sort_keys=True),
            "run_id": run_id,
            "recorded_at": utcnow(),
        }
        self.append("gate_results", pd.DataFrame([row]))

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

    def admitted_batches(self) -> list[str]:
        """Batches whose latest gate decision admitted them: the only ones later stages read."""
        df = self.query("SELECT batch FROM admitted_batches ORDER BY batch")
        return df["batch"].tolist()

    # -- ingestion -------------------------------------------------------------------------------

    def known_image_ids(
        self, image_ids: Sequence[str], exclude_batch: str | None = None
    ) -> set[str]:
        """Which of `image_ids` are in the manifest (of batches other than `exclude_batch`)."""
        if not image_ids:
            return set()
        with self.connect() as con:
            con.register("_ids", pd.DataFrame({"image_id": list(image_ids)}))
            rows = con.execute(
                "SELECT DISTINCT i.image_id FROM images i JOIN _ids USING (image_id) "
                "WHERE i.batch IS DISTINCT FROM ?",
                [exclude_batch],
            ).fetchall()
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
                # Labels are append-only: re-ingesting a batch adds only labels not seen before
                # from this batch, so "latest wins" keeps its meaning.
                new = labels.assign(batch=batch, **stamp, recorded_at=now)
                with registered(con, "_new_labels", new):
                    con.execute(
                        "INSERT INTO labels BY NAME SELECT n.* FROM _new_labels n "
                        "WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.image_id = n.image_id "
                        "AND l.label = n.label AND l.batch = n.batch)"
                    )
