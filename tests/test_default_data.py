"""The embedded default dataset and the README's run command on it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
from PIL import Image

from resources.lake import READY_MARKER
from ssl_assets.data.default_dataset import BATCHES, write_default_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_default_dataset_lands_two_ready_batches_with_a_labeled_minority(tmp_path):
    landing = tmp_path / "landing"
    batches = write_default_dataset(landing, n_images=1797, label_fraction=0.3)
    assert batches == list(BATCHES)
    total = 0
    for batch in batches:
        batch_dir = landing / batch
        assert (batch_dir / READY_MARKER).is_file()
        assert not (batch_dir / "metadata.csv").exists()  # the digits carry no attributes
        images = sorted(batch_dir.rglob("*.png"))
        total += len(images)
        with Image.open(images[0]) as img:
            assert img.size == (8, 8) and img.mode == "L"
        with (batch_dir / "labels.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert 0.2 * len(images) < len(rows) < 0.5 * len(images)  # a minority is labeled
        assert {r["label"] for r in rows} == {str(d) for d in range(10)}  # every class
        assert all((batch_dir / r["path"]).is_file() for r in rows)
    assert total == 1797
    # idempotent: a second call does not rewrite ready batches
    mtimes = {p: p.stat().st_mtime_ns for p in landing.rglob("*")}
    write_default_dataset(landing, n_images=1797, label_fraction=0.3)
    assert {p: p.stat().st_mtime_ns for p in landing.rglob("*")} == mtimes


def test_default_images_are_the_real_digits(tmp_path):
    from sklearn.datasets import load_digits

    write_default_dataset(tmp_path, n_images=50, label_fraction=0.3)
    path = next((tmp_path / BATCHES[0] / "images").glob("*.png"))
    index = int(path.stem.split("_")[1])
    expected = np.rint(load_digits().images[index] * 255 / 16).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(path)), expected)


def test_run_command_ingests_both_batches_and_prints_a_summary(tmp_path):
    """`ssl-assets run --profile tiny` with SSL_PROFILE unset: the flag alone sizes every stage
    (the tiny share of the digits, the tiny catalog, tiny epochs), as SSL_PROFILE=tiny would."""
    from ssl_assets.definitions import build_definitions
    from ssl_assets.profiles import get_profile

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "SSL_PROFILE"}
    env.update(SSL_LAKE=str(tmp_path / "lake"), DAGSTER_HOME=str(home))
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_assets", "run", "--profile", "tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for batch in BATCHES:
        assert f"ingest_batch[{batch}]" in proc.stdout
    assert "admitted" in proc.stdout and "raw_manifest_suite=pass" in proc.stdout

    with duckdb.connect(str(tmp_path / "lake" / "metadata.duckdb"), read_only=True) as con:
        per_batch = dict(
            con.execute("SELECT batch, count(*) FROM images GROUP BY batch").fetchall()
        )
        gates = dict(
            con.execute(
                "SELECT asset, count(*) FILTER (WHERE passed) || '/' || count(*) "
                "FROM gate_results GROUP BY asset"
            ).fetchall()
        )
        curated = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE include) FROM curated_images"
        ).fetchone()
        admitted = [
            r[0] for r in con.execute("SELECT batch FROM admitted_batches ORDER BY 1").fetchall()
        ]
        versions = {r[0] for r in con.execute("SELECT version FROM image_catalog").fetchall()}
        (encoder_config,) = con.execute(
            "SELECT config FROM models WHERE kind = 'encoder'"
        ).fetchone()
    assert sum(per_batch.values()) == 240  # the tiny profile's share of the digits
    assert set(per_batch) == set(BATCHES)
    # every stage ran and every gate passed
    assert set(gates) == {
        "raw_images",
        "image_catalog",
        "curated_images",
        "diversity_audit",
        "bias_audit",
        "labeling_candidates",
        "ssl_encoder",
        "probes",
        "finetuned_model",
        "champion_model",
        "batch_monitoring",
    }
    assert all(a == b for a, b in (v.split("/") for v in gates.values())), gates
    assert curated[0] == 240 and curated[1] > 200  # every image curated, few excluded
    for line in ("curate_and_audit run", "exclusion reasons", "audits:", "label efficiency"):
        assert line in proc.stdout
    assert "champion ft-" in proc.stdout
    assert admitted == list(BATCHES)
    tiny = get_profile("tiny")
    assert versions == {build_definitions("tiny").resources["image_spec"].version}
    trained = json.loads(encoder_config)
    assert trained["max_steps"] == tiny.pretrain_steps != get_profile("demo").pretrain_steps
    assert trained["batch_size"] <= tiny.pretrain_batch_size

    # the runs are in the persistent instance, so `dagster dev` shows them afterwards
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(RunsFilter(job_name="ingest_batch"))
        assert len(runs) == 2 and all(r.is_success for r in runs)

    # running it again does not ingest the same batches twice
    again = subprocess.run(
        [sys.executable, "-m", "ssl_assets", "run"],
        cwd=ROOT,
        env={**env, "SSL_PROFILE": "tiny"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and "ingest_batch[" not in again.stdout


def test_the_profile_is_resolved_when_the_definitions_are_built():
    """Every profile-sized value comes from the profile the Definitions were built with, not
    from the environment at import time: the flag and the variable give the same run config."""
    from ssl_assets.definitions import build_definitions
    from ssl_assets.profiles import get_profile

    for name in ("tiny", "demo", "full", "photo"):
        profile = get_profile(name)
        defs = build_definitions(name)
        assert defs.resources["profile"] == profile
        assert defs.resources["image_spec"].resolution == profile.catalog_resolution
        assert defs.resources["image_spec"].aspect == profile.catalog_aspect
        intervals = {s.name: s.minimum_interval_seconds for s in defs.sensors}
        assert set(intervals.values()) == {profile.sensor_interval_s}
    assert build_definitions("full").resources["image_spec"].version == "r64-pad"
    assert build_definitions("photo").resources["image_spec"].version == "r256-center_crop"
