"""The store's core: short-lived DuckDB connections, retries, the versioned schema.

DuckDB lets one process at a time open a file for writing (readers in other processes take a
lock too). So every unit of work opens a short-lived connection, retries with backoff while
another process holds the lock, and closes it again at once. Steps that write also share the
`metadata_writer` concurrency pool, so Dagster queues them instead of letting them race.

The schema is versioned: `resources/sql/NNN_*.sql` files are applied in order on first use and
recorded in `schema_version`. Table names in SQL come only from that schema (checked against
`TABLES`); values are always bound parameters.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
from dagster import ConfigurableResource, get_dagster_logger

from resources.store.sql import sql

SQL_DIR = Path(__file__).parent.parent / "sql"
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
        # 005_leaks.sql
        "recurations",
        "curation_changes",
        # 006_monitoring.sql
        "batch_drift",
        "batch_scores",
        "retrain_decisions",
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


def _check_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown metadata table {table!r}; known: {sorted(TABLES)}")
    return table


class StoreCore(ConfigurableResource):
    """Connections to `metadata.duckdb`: opened with retry, migrated on first use, closed at once.

    The domain modules of `resources.store` add the named queries and writes on top of this.
    """

    path: str | None = None
    lock_timeout_s: float = 300.0

    @property
    def db_path(self) -> str:
        """The DuckDB file: `path`, else resolved when used (not when the code is loaded):
        `$SSL_METADATA`, else `metadata.duckdb` in `$SSL_LAKE` (default ./lake)."""
        from resources.lake import default_metadata_path

        return self.path or default_metadata_path()

    # -- connections ---------------------------------------------------------------------------

    def _open(
        self, read_only: bool, config: dict[str, Any] | None = None
    ) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        warned = False
        while True:
            try:
                return duckdb.connect(self.db_path, read_only=read_only, config=config or {})
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
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
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
        if not Path(self.db_path).is_file():
            raise FileNotFoundError(f"{self.db_path} does not exist yet: run the pipeline first")
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
        key = str(Path(self.db_path).resolve())
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

    def replace(self, *writes: tuple[str, pd.DataFrame, Mapping[str, Any] | None]) -> None:
        """In one transaction, for each `(table, df, where)`: delete the rows matching `where`
        (column -> value, ANDed; None = every row), then insert `df`. All or nothing."""
        with self.transaction() as con:
            for table, df, where in writes:
                _check_table(table)
                clauses = []
                for column in where or {}:
                    if not re.fullmatch(r"[a-z_]+", column):
                        raise ValueError(f"bad column name {column!r}")
                    clauses.append(f"{column} = ?")
                condition = f" WHERE {' AND '.join(clauses)}" if clauses else ""
                con.execute(f"DELETE FROM {table}{condition}", list((where or {}).values()))  # noqa: S608
                self.insert(con, table, df)

    def named(self, domain: str, name: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run the named statement `name` of `resources/store/<domain>.sql` with bound params."""
        return self.query(sql(domain, name), params)

    @staticmethod
    def insert(con: duckdb.DuckDBPyConnection, table: str, df: pd.DataFrame) -> None:
        """Insert `df` into a schema table on an open connection (inside `transaction()`),
        matching columns by name."""
        _check_table(table)
        if df.empty:
            return
        with registered(con, "_incoming", df):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")  # noqa: S608


if TYPE_CHECKING:
    Queries = StoreCore
else:

    class Queries:
        """Base of the store's domain mixins (typed as `StoreCore`, whose methods they use)."""
