"""The DuckDB metadata store: schema migrations, concurrent writers, readers during a run."""

from __future__ import annotations

import multiprocessing as mp
import time

import duckdb
import pandas as pd
import pytest
from dagster import materialize

from resources.metadata import MetadataStore
from resources.store.core import _migrations
from ssl_assets.assets.ingest_assets import raw_images
from tests.factories import add_partitions, make_batch, resources_for

ROWS_PER_WRITER = 150


def _writer(path: str, name: str, barrier) -> None:
    store = MetadataStore(path=path, lock_timeout_s=120)
    barrier.wait()
    for i in range(ROWS_PER_WRITER):
        store.record_metrics("concurrency", name, f"run-{name}", {"i": i})


def _reader(path: str, hold_s: float, opened) -> None:
    con = duckdb.connect(path, read_only=True)
    con.execute("SELECT count(*) FROM images").fetchall()
    opened.set()
    time.sleep(hold_s)
    con.close()


def test_schema_is_created_once_and_versioned(store):
    assert store.schema_version() == max(v for v, _ in _migrations())
    again = MetadataStore(path=store.path)
    assert again.schema_version() == store.schema_version()
    versions = store.query("SELECT version FROM schema_version")
    assert versions["version"].is_unique


def test_unknown_tables_are_refused(store):
    with pytest.raises(ValueError, match="unknown metadata table"):
        store.append("images; drop table images", pd.DataFrame({"a": [1]}))


def test_values_are_bound_not_interpolated(store):
    evil = "x'; DROP TABLE stage_metrics; --"
    store.record_metrics("asset", evil, "run", {"m": 1.0})
    got = store.query("SELECT partition FROM stage_metrics WHERE partition = ?", [evil])
    assert got["partition"].tolist() == [evil]


def test_two_processes_writing_at_once_lose_no_rows(store):
    store.schema_version()  # create the file first, as the pipeline does
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(store.path, n, barrier)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    counts = store.query(
        "SELECT partition, count(*) AS n, count(DISTINCT value) AS d FROM stage_metrics "
        "WHERE asset = 'concurrency' GROUP BY partition ORDER BY partition"
    )
    assert counts["n"].tolist() == [ROWS_PER_WRITER, ROWS_PER_WRITER]
    assert counts["d"].tolist() == [ROWS_PER_WRITER, ROWS_PER_WRITER]


def test_a_reader_holding_a_read_only_connection_does_not_fail_a_run(lake, store, instance):
    store.schema_version()
    make_batch(lake, "while-reading", n=3)
    add_partitions(instance, "while-reading")
    ctx = mp.get_context("spawn")
    opened = ctx.Event()
    reader = ctx.Process(target=_reader, args=(store.path, 3.0, opened))
    reader.start()
    assert opened.wait(timeout=60)
    started = time.monotonic()
    result = materialize(
        [raw_images],
        partition_key="while-reading",
        instance=instance,
        resources=resources_for(lake, store),
    )
    waited = time.monotonic() - started
    reader.join(timeout=30)
    assert result.success
    assert waited > 1.0  # it really had to wait for the reader's lock
    assert len(store.query("SELECT * FROM images WHERE batch = 'while-reading'")) == 3


def test_the_error_that_aborted_a_transaction_is_the_one_raised(store):
    """A failed statement aborts the transaction and DuckDB then refuses every other statement;
    the user must see the first error (here a NOT NULL violation), not "transaction is
    aborted" from the cleanup."""
    bad = pd.DataFrame([{"image_id": "x", "group_id": None, "split": None, "cross_split": False}])
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        store.append("splits", bad)
    assert store.query("SELECT * FROM splits").empty


def test_a_failing_rollback_does_not_hide_the_original_error(store):
    with pytest.raises(RuntimeError, match="the real problem") as caught:
        with store.transaction() as con:
            con.execute("COMMIT")  # the ROLLBACK that follows the error below fails
            raise RuntimeError("the real problem")
    assert any("ROLLBACK" in note for note in caught.value.__notes__)


def _writer_holding_the_lock(path: str, hold_s: float, opened) -> None:
    con = duckdb.connect(path)  # read-write: other processes cannot even open the file now
    con.execute("SELECT count(*) FROM images").fetchall()
    opened.set()
    time.sleep(hold_s)
    con.close()


def test_the_sql_command_reads_the_database_and_nothing_else(lake, store, tmp_path, capsys):
    from ssl_assets.cli import main as cli

    store.record_metrics("asset", "p", "run", {"m": 1.0})
    assert cli(["--lake", lake.root, "sql", "SELECT metric, value FROM stage_metrics"]) == 0
    assert "m" in capsys.readouterr().out
    target = tmp_path / "x.csv"
    for query in (
        f"COPY (SELECT 1) TO '{target}'",
        f"SELECT 1; COPY (SELECT 1) TO '{target}'",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
        f"ATTACH '{tmp_path / 'other.duckdb'}'",
        "SET enable_external_access = true",
        "INSERT INTO stage_metrics (asset, metric, value, recorded_at) VALUES ('a', 'b', 1, now())",
    ):
        assert cli(["--lake", lake.root, "sql", query]) == 2, query
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "root:" not in err
    assert not target.exists() and not (tmp_path / "other.duckdb").exists()
    assert len(store.query("SELECT * FROM stage_metrics")) == 1


def test_the_sql_command_waits_for_a_writer(lake, store, capsys):
    from ssl_assets.cli import main as cli

    store.schema_version()
    ctx = mp.get_context("spawn")
    opened = ctx.Event()
    writer = ctx.Process(target=_writer_holding_the_lock, args=(store.path, 2.0, opened))
    writer.start()
    assert opened.wait(timeout=60)
    started = time.monotonic()
    code = cli(["--lake", lake.root, "sql", "SELECT count(*) AS n FROM images"])
    waited = time.monotonic() - started
    writer.join(timeout=30)
    assert code == 0 and "n" in capsys.readouterr().out
    assert waited > 1.0  # it really had to wait for the writer's lock
