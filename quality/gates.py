"""Gate helpers: validate, record the outcome in DuckDB, return an `AssetCheckResult`.

A gate is either a GX suite over a DataFrame or a metric rule (a value against a threshold, or
against the previous run's value from `stage_metrics`). Both write one `gate_results` row with
the details a person needs to see *why* it failed, and return the same details as check
metadata, so the Dagster UI and `select * from gate_results` tell the same story.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
from typing import Any

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from resources.metadata import MetadataStore

SAMPLE_VALUES = 5


_gx_import: threading.Thread | None = None


def import_gx_in_background() -> None:
    """Start importing Great Expectations (~5 s, mostly Python) in a daemon thread, for a step
    whose first gate comes after a long I/O-bound stretch (ingestion decoding files): the import
    then overlaps that work instead of following it. Every GX import in this package goes
    through `gx_modules`, which waits for it (GX's own imports are circular: importing it from
    two threads at once fails)."""
    global _gx_import
    if _gx_import is not None or "great_expectations" in sys.modules:
        return
    _gx_import = threading.Thread(
        target=importlib.import_module,
        args=("great_expectations",),
        name="import-great-expectations",
        daemon=True,
    )
    _gx_import.start()


def gx_modules() -> tuple[Any, Any]:
    """(great_expectations, great_expectations.expectations), after any background import."""
    if _gx_import is not None:
        _gx_import.join()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _severity(blocking: bool) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def run_suite(df: pd.DataFrame, suite_name: str, expectations: list[Any]) -> dict[str, Any]:
    """Validate `df` against the expectations with an ephemeral GX context; return a summary."""
    gx = gx_modules()[0]
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas(f"{suite_name}_source")
        .add_dataframe_asset(name=suite_name)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(
        suite, result_format="SUMMARY"
    )
    failed = []
    for r in result.results:
        if r.success:
            continue
        kwargs = {
            k: v
            for k, v in r.expectation_config.kwargs.items()
            if k not in ("batch_id", "result_format")
        }
        res = dict(r.result or {})
        failed.append(
            {
                "expectation": r.expectation_config.type,
                "kwargs": kwargs,
                "meta": r.expectation_config.meta or {},
                "unexpected_count": res.get("unexpected_count"),
                "unexpected_percent": _jsonable(res.get("unexpected_percent")),
                "sample_values": [_jsonable(v) for v in (res.get("partial_unexpected_list") or [])][
                    :SAMPLE_VALUES
                ],
                "observed_value": _jsonable(res.get("observed_value")),
                "exception": (r.exception_info or {}).get("exception_message")
                if isinstance(r.exception_info, dict)
                else None,
            }
        )
    stats = result.statistics
    return {
        "suite": suite_name,
        "success": bool(result.success),
        "evaluated": int(stats.get("evaluated_expectations", 0)),
        "successful": int(stats.get("successful_expectations", 0)),
        "rows": len(df),
        "failed": failed,
    }


def _describe_failures(failed: list[dict[str, Any]]) -> str:
    parts = []
    for f in failed:
        column = f["kwargs"].get("column")
        where = f" on {column}" if column else ""
        count = f["unexpected_count"]
        extra = f" ({count} unexpected, e.g. {f['sample_values']})" if count else ""
        parts.append(f"{f['expectation']}{where}{extra}")
    return "; ".join(parts)


def suite_gate(
    store: MetadataStore,
    df: pd.DataFrame,
    *,
    asset: str,
    check_name: str,
    suite_name: str,
    expectations: list[Any],
    partition: str | None,
    run_id: str | None,
    blocking: bool = True,
    extra_details: dict[str, Any] | None = None,
) -> AssetCheckResult:
    """Run a GX suite as a gate: record it in `gate_results` and return the check result."""
    summary = run_suite(df, suite_name, expectations)
    details = {**summary, **(extra_details or {})}
    passed = summary["success"]
    description = (
        f"{summary['successful']}/{summary['evaluated']} expectations passed"
        if passed
        else f"failed: {_describe_failures(summary['failed'])}"
    )
    details["description"] = description
    store.record_gate(
        asset, check_name, partition, passed, _severity(blocking).value, details, run_id
    )
    return AssetCheckResult(
        check_name=check_name,
        passed=passed,
        severity=_severity(blocking),
        description=description,
        metadata={
            "suite": suite_name,
            "evaluated_expectations": summary["evaluated"],
            "successful_expectations": summary["successful"],
            "rows_validated": summary["rows"],
            "failed_expectations": MetadataValue.json(summary["failed"]),
            **{k: v for k, v in (extra_details or {}).items() if isinstance(v, int | float | str)},
        },
    )


def metric_gate(
    store: MetadataStore,
    *,
    asset: str,
    check_name: str,
    metric: str,
    value: float,
    partition: str | None,
    run_id: str | None,
    min_value: float | None = None,
    max_value: float | None = None,
    max_drop_from_previous: float | None = None,
    blocking: bool = True,
) -> AssetCheckResult:
    """A value against fixed bounds and/or against the previous run's value of the same metric.

    `max_drop_from_previous` compares with the latest earlier `stage_metrics` row for this asset
    and metric (any partition when `partition` is None): the gate fails when the value fell by
    more than that amount.
    """
    problems = []
    if min_value is not None and not value >= min_value:
        problems.append(f"{metric}={value:.6g} is below the minimum {min_value:.6g}")
    if max_value is not None and not value <= max_value:
        problems.append(f"{metric}={value:.6g} is above the maximum {max_value:.6g}")
    previous = None
    if max_drop_from_previous is not None:
        previous = store.previous_metric(asset, metric, partition=partition, exclude_run=run_id)
        if previous is not None and previous - value > max_drop_from_previous:
            problems.append(
                f"{metric}={value:.6g} dropped by {previous - value:.6g} from the previous "
                f"{previous:.6g} (allowed {max_drop_from_previous:.6g})"
            )
    passed = not problems
    details = {
        "metric": metric,
        "value": value,
        "min_value": min_value,
        "max_value": max_value,
        "previous": previous,
        "max_drop_from_previous": max_drop_from_previous,
        "description": "; ".join(problems) or f"{metric}={value:.6g} within bounds",
    }
    store.record_gate(
        asset, check_name, partition, passed, _severity(blocking).value, details, run_id
    )
    return AssetCheckResult(
        check_name=check_name,
        passed=passed,
        severity=_severity(blocking),
        description=details["description"],
        metadata={k: v for k, v in details.items() if v is not None and k != "description"},
    )


def floors_gate(
    store: MetadataStore,
    *,
    asset: str,
    check_name: str,
    values: dict[str, tuple[float, float]],
    partition: str | None,
    run_id: str | None,
    blocking: bool = True,
) -> AssetCheckResult:
    """Several metrics, each against its floor: `values` maps name -> (value, minimum).
    Fails when any is below, naming every one that is."""
    problems = [
        f"{name}={value:.4g} is below the floor {floor:.4g}"
        for name, (value, floor) in values.items()
        if not value >= floor
    ]
    passed = not problems
    description = "; ".join(problems) or ", ".join(
        f"{name}={value:.4g} ≥ {floor:.4g}" for name, (value, floor) in values.items()
    )
    details = {
        "values": {k: v for k, (v, _) in values.items()},
        "floors": {k: f for k, (_, f) in values.items()},
        "description": description,
    }
    store.record_gate(
        asset, check_name, partition, passed, _severity(blocking).value, details, run_id
    )
    return AssetCheckResult(
        check_name=check_name,
        passed=passed,
        severity=_severity(blocking),
        description=description,
        metadata={
            **{k: float(v) for k, (v, _) in values.items()},
            **{f"{k}_floor": float(f) for k, (_, f) in values.items()},
        },
    )
