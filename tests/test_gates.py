"""The gate helpers: GX suites and metric rules, recorded in gate_results with their reasons."""

from __future__ import annotations

import json

import pandas as pd
from dagster import AssetCheckSeverity

from quality.gates import metric_gate, suite_gate
from quality.suites import raw_images_suite


def _manifest(n_ok: int, n_bad: int) -> pd.DataFrame:
    rows = [
        {
            "image_id": f"id{i}",
            "batch": "b",
            "rel_path": f"{i}.png",
            "content_hash": "h",
            "bytes": 10,
            "format": "PNG",
            "width": 4,
            "height": 4,
            "mode": "RGB",
            "status": "ok",
            "reason": None,
            "detail": None,
        }
        for i in range(n_ok)
    ]
    rows += [
        {**rows[0], "image_id": f"bad{i}", "status": "quarantined", "reason": "corrupt"}
        for i in range(n_bad)
    ]
    return pd.DataFrame(rows)


def test_suite_gate_passes_clean_manifest_and_records_it(store):
    expectations = raw_images_suite(0.2)
    result = suite_gate(
        store,
        _manifest(9, 1),
        asset="raw_images",
        check_name="raw_manifest_suite",
        suite_name="raw_images",
        expectations=expectations,
        partition="b",
        run_id="r1",
    )
    assert result.passed
    row = store.query("SELECT * FROM gate_results").iloc[0]
    assert bool(row["passed"]) and row["severity"] == "ERROR" and row["partition"] == "b"


def test_suite_gate_reports_which_expectation_failed_with_sample_values(store):
    df = _manifest(5, 0)
    df.loc[3, "image_id"] = "id0"  # duplicate id
    df.loc[4, "width"] = 0  # impossible size for an ok row
    expectations = raw_images_suite(0.2)
    result = suite_gate(
        store,
        df,
        asset="raw_images",
        check_name="raw_manifest_suite",
        suite_name="raw_images",
        expectations=expectations,
        partition="b",
        run_id="r1",
        blocking=False,
    )
    assert not result.passed
    assert result.severity == AssetCheckSeverity.WARN
    details = json.loads(store.query("SELECT details FROM gate_results")["details"].iloc[0])
    failed = {f["expectation"]: f for f in details["failed"]}
    assert failed["expect_column_values_to_be_unique"]["sample_values"] == ["id0", "id0"]
    assert failed["expect_column_values_to_be_between"]["kwargs"]["column"] == "width"
    assert failed["expect_column_values_to_be_between"]["unexpected_count"] == 1
    assert "expect_column_values_to_be_unique on image_id" in result.description


def test_metric_gate_against_a_fixed_threshold(store):
    ok = metric_gate(
        store,
        asset="a",
        check_name="c",
        metric="m",
        value=5,
        min_value=1,
        partition=None,
        run_id="r",
    )
    low = metric_gate(
        store,
        asset="a",
        check_name="c",
        metric="m",
        value=0,
        min_value=1,
        partition=None,
        run_id="r",
    )
    assert ok.passed and not low.passed
    assert "below the minimum" in low.description


def test_metric_gate_against_the_previous_runs_value(store):
    store.record_metrics("probe", None, "run-1", {"accuracy": 0.90})
    steady = metric_gate(
        store,
        asset="probe",
        check_name="no_regression",
        metric="accuracy",
        value=0.88,
        max_drop_from_previous=0.05,
        partition=None,
        run_id="run-2",
    )
    worse = metric_gate(
        store,
        asset="probe",
        check_name="no_regression",
        metric="accuracy",
        value=0.70,
        max_drop_from_previous=0.05,
        partition=None,
        run_id="run-3",
    )
    assert steady.passed and not worse.passed
    assert "from the previous 0.9" in worse.description
    recorded = store.query("SELECT passed, details FROM gate_results ORDER BY recorded_at")
    assert recorded["passed"].tolist() == [True, False]
    assert json.loads(recorded["details"].iloc[1])["previous"] == 0.9
