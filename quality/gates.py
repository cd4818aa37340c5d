"""The one gate path: a verdict is decided, recorded in DuckDB, and returned to Dagster.

A gate is a GX suite over a DataFrame (`suite_verdict`), a metric against bounds or its previous
value (`bounds_verdict`), several metrics against floors (`floors_verdict`), or a rule decided
in plain code (audits, the promotion rule) that returns a `quality.verdict.Verdict` itself.
`record_check` then writes one `gate_results` row with the details a person needs to see *why*
and returns the same details as an `AssetCheckResult`, keyed by check name. Every default
threshold lives in `quality.thresholds`.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
from typing import Any, Protocol

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from quality.verdict import Verdict


class GateStore(Protocol):
    """Where gate verdicts are recorded: `resources.metadata.MetadataStore` (passed in, so
    quality imports nothing above it)."""

    def record_gate(
        self,
        asset: str,
        check_name: str,
        partition: str | None,
        passed: bool,
        severity: str,
        details: dict[str, Any],
        run_id: str | None,
    ) -> None: ...


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


# -- verdicts: decided in plain code, one per kind of gate ------------------------------------------


def suite_verdict(
    df: pd.DataFrame,
    *,
    check_name: str,
    suite_name: str,
    expectations: list[Any],
    extra_details: dict[str, Any] | None = None,
) -> Verdict:
    """Validate `df` against a GX suite: passed when every expectation holds."""
    summary = run_suite(df, suite_name, expectations)
    passed = summary["success"]
    description = (
        f"{summary['successful']}/{summary['evaluated']} expectations passed"
        if passed
        else f"failed: {_describe_failures(summary['failed'])}"
    )
    return Verdict(
        check_name=check_name,
        passed=passed,
        metric=None,
        value=None,
        description=description,
        details={**summary, **(extra_details or {})},
    )


def bounds_verdict(
    *,
    check_name: str,
    metric: str,
    value: float,
    min_value: float | None = None,
    max_value: float | None = None,
    previous: float | None = None,
    max_drop_from_previous: float | None = None,
) -> Verdict:
    """A value against fixed bounds and/or against its previous value: fails when below
    `min_value`, above `max_value`, or fallen by more than `max_drop_from_previous` from
    `previous` (the caller reads it, e.g. `MetadataStore.previous_metric`)."""
    problems = []
    if min_value is not None and not value >= min_value:
        problems.append(f"{metric}={value:.6g} is below the minimum {min_value:.6g}")
    if max_value is not None and not value <= max_value:
        problems.append(f"{metric}={value:.6g} is above the maximum {max_value:.6g}")
    if max_drop_from_previous is not None and previous is not None:
        if previous - value > max_drop_from_previous:
            problems.append(
                f"{metric}={value:.6g} dropped by {previous - value:.6g} from the previous "
                f"{previous:.6g} (allowed {max_drop_from_previous:.6g})"
            )
    bounds = {
        "min_value": min_value,
        "max_value": max_value,
        "previous": previous,
        "max_drop_from_previous": max_drop_from_previous,
    }
    return Verdict(
        check_name=check_name,
        passed=not problems,
        description="; ".join(problems) or f"{metric}={value:.6g} within bounds",
        metric=metric,
        value=float(value),
        details={k: v for k, v in bounds.items() if v is not None},
    )


def floors_verdict(*, check_name: str, values: dict[str, tuple[float, float]]) -> Verdict:
    """Several metrics, each against its floor: `values` maps name -> (value, minimum).
    Fails when any is below, naming every one that is."""
    problems = [
        f"{name}={value:.4g} is below the floor {floor:.4g}"
        for name, (value, floor) in values.items()
        if not value >= floor
    ]
    description = "; ".join(problems) or ", ".join(
        f"{name}={value:.4g} ≥ {floor:.4g}" for name, (value, floor) in values.items()
    )
    return Verdict(
        check_name=check_name,
        passed=not problems,
        metric=None,
        value=None,
        description=description,
        details={
            **{k: float(v) for k, (v, _) in values.items()},
            **{f"{k}_floor": float(f) for k, (_, f) in values.items()},
        },
    )


# -- the one path from a verdict to DuckDB and Dagster ----------------------------------------------


def record_check(
    store: GateStore,
    asset: str,
    verdict: Verdict,
    *,
    partition: str | None,
    run_id: str | None,
    blocking: bool = True,
) -> AssetCheckResult:
    """Record `verdict` in `gate_results` and return it as an `AssetCheckResult` (severity
    ERROR when `blocking`, else WARN). Every gate of the pipeline goes through here, so the
    Dagster UI and `select * from gate_results` tell the same story."""
    severity = AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN
    details = {
        "metric": verdict.metric,
        "value": verdict.value,
        **verdict.details,
        "description": verdict.description,
    }
    store.record_gate(
        asset, verdict.check_name, partition, verdict.passed, severity.value, details, run_id
    )
    shown: dict[str, Any] = {}
    for key, value in details.items():
        if key == "description" or value is None:
            continue
        value = _jsonable(value)
        if isinstance(value, bool | int | float | str):
            shown[key] = value
        elif isinstance(value, list | dict):
            shown[key] = MetadataValue.json(value)
    return AssetCheckResult(
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata=shown,
    )
