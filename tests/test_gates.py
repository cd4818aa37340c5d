"""The gate helpers: GX suites and metric rules, recorded in gate_results with their reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from dagster import AssetCheckSeverity

from quality.gates import bounds_verdict, record_check, suite_verdict
from quality.suites import raw_images_suite
from ssl_assets.data.manifest import MANIFEST_COLUMNS, QUARANTINE_REASONS


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


def _suite(store, df, blocking=True):
    verdict = suite_verdict(
        df,
        check_name="raw_manifest_suite",
        suite_name="raw_images",
        expectations=raw_images_suite(0.2, MANIFEST_COLUMNS, QUARANTINE_REASONS),
    )
    return record_check(store, "raw_images", verdict, partition="b", run_id="r1", blocking=blocking)


def test_suite_gate_passes_clean_manifest_and_records_it(store):
    result = _suite(store, _manifest(9, 1))
    assert result.passed
    row = store.query("SELECT * FROM gate_results").iloc[0]
    assert bool(row["passed"]) and row["severity"] == "ERROR" and row["partition"] == "b"


def test_suite_gate_reports_which_expectation_failed_with_sample_values(store):
    df = _manifest(5, 0)
    df.loc[3, "image_id"] = "id0"  # duplicate id
    df.loc[4, "width"] = 0  # impossible size for an ok row
    result = _suite(store, df, blocking=False)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.WARN
    details = json.loads(store.query("SELECT details FROM gate_results")["details"].iloc[0])
    failed = {f["expectation"]: f for f in details["failed"]}
    assert failed["expect_column_values_to_be_unique"]["sample_values"] == ["id0", "id0"]
    assert failed["expect_column_values_to_be_between"]["kwargs"]["column"] == "width"
    assert failed["expect_column_values_to_be_between"]["unexpected_count"] == 1
    assert "expect_column_values_to_be_unique on image_id" in result.description


def _bounds(store, run_id, **kwargs):
    verdict = bounds_verdict(check_name=kwargs.pop("check_name", "c"), **kwargs)
    return record_check(store, kwargs.get("asset", "a"), verdict, partition=None, run_id=run_id)


def test_metric_gate_against_a_fixed_threshold(store):
    ok = _bounds(store, "r", metric="m", value=5, min_value=1)
    low = _bounds(store, "r", metric="m", value=0, min_value=1)
    assert ok.passed and not low.passed
    assert "below the minimum" in low.description


def test_metric_gate_against_the_previous_runs_value(store):
    store.record_metrics("probe", None, "run-1", {"accuracy": 0.90})

    def gate(value, run_id):
        previous = store.previous_metric("probe", "accuracy", exclude_run=run_id)
        verdict = bounds_verdict(
            check_name="no_regression",
            metric="accuracy",
            value=value,
            previous=previous,
            max_drop_from_previous=0.05,
        )
        return record_check(store, "probe", verdict, partition=None, run_id=run_id)

    steady, worse = gate(0.88, "run-2"), gate(0.70, "run-3")
    assert steady.passed and not worse.passed
    assert "from the previous 0.9" in worse.description
    recorded = store.query("SELECT passed, details FROM gate_results ORDER BY recorded_at")
    assert recorded["passed"].tolist() == [True, False]
    assert json.loads(recorded["details"].iloc[1])["previous"] == 0.9


def test_every_gate_kind_goes_through_one_recorder_keyed_by_check_name(store):
    """A GX suite, a metric bound, an audit rule and a champion rule: each is a Verdict decided
    in plain code, recorded by `record_check` under its own check name, with its reason."""
    from quality.verdict import Verdict
    from ssl_assets.audit.diversity import diversity_gates, measure_diversity
    from ssl_assets.ml.evaluate.promotion import decide_promotion

    rng = np.random.default_rng(0)
    audit = diversity_gates(measure_diversity(rng.normal(size=(40, 8))), 0.5, 0.5, 30)
    decision = decide_promotion([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], collapse_ok=True)
    champion = [
        Verdict(name, decision.checks[rule], None, None, decision.rule_reasons[rule])
        for name, rule in (("challenger_not_worse", "not_worse"), ("collapse", "collapse_check"))
    ]
    suite = suite_verdict(
        _manifest(3, 0),
        check_name="suite",
        suite_name="s",
        expectations=raw_images_suite(0.2, MANIFEST_COLUMNS, QUARANTINE_REASONS),
    )
    bound = bounds_verdict(check_name="bound", metric="m", value=1, max_value=0)
    for verdict in [suite, bound, *audit, *champion]:
        result = record_check(store, "x", verdict, partition=None, run_id="r")
        assert result.check_name == verdict.check_name and result.passed == verdict.passed
    recorded = store.latest_gate_verdicts(["x"], per_partition=False).set_index("check_name")
    assert set(recorded.index) == {
        "suite",
        "bound",
        "cluster_entropy_floor",
        "largest_cluster_ceiling",
        "challenger_not_worse",
        "collapse",
    }
    assert not recorded.loc["bound", "passed"] and recorded.loc["suite", "passed"]
    why = json.loads(recorded.loc["challenger_not_worse", "details"])["description"]
    assert why == decision.rule_reasons["not_worse"] and "worse than the champion" in why
