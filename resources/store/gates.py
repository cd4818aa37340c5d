"""Gate verdicts and stage metrics: the records every stage writes, and their latest values.

`quality.gates` is the only caller of `record_gate`; everything that needs a verdict later (the
admission rule, pretraining's refusal to start, summaries) reads it back through the named
queries here.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from resources.store.core import Queries, utcnow
from resources.store.sql import sql


class GateQueries(Queries):
    """`gate_results` and `stage_metrics`."""

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
        df = self.query(
            sql("gates", "previous_metric"),
            [asset, metric, partition, partition, exclude_run, exclude_run],
        )
        return None if df.empty else float(df["value"].iloc[0])

    def latest_metrics(self, asset: str) -> dict[str, float]:
        """The newest value of every metric `asset` recorded."""
        df = self.query(sql("gates", "latest_metrics"), [asset])
        return dict(zip(df["metric"], df["value"], strict=True))

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
        """One row of `gate_results` (called by `quality.gates.record_check` only)."""
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

    def latest_gate_verdicts(self, assets: list[str], per_partition: bool = True) -> pd.DataFrame:
        """Each check's latest verdict for `assets`: per partition, or whatever it judged last.
        Columns: asset, check_name, [partition,] passed, severity, details (JSON), recorded_at."""
        name = "latest_gate_verdicts" if per_partition else "latest_gate_verdicts_any_partition"
        return self.query(sql("gates", name), [list(assets)])

    def blocking_failures(self, assets: list[str]) -> list[str]:
        """`asset.check: why` for every blocking (ERROR) check of `assets` whose latest verdict
        failed. Dagster's blocking checks stop steps only within one run; this is the same rule
        as data, so a run launched later is refused too."""
        latest = self.latest_gate_verdicts(assets, per_partition=False)
        failed = latest[~latest["passed"] & (latest["severity"] == "ERROR")]
        return [
            f"{r.asset}.{r.check_name}: {json.loads(r.details or '{}').get('description', '')}"
            for r in failed.itertuples()
        ]

    def gate_counts(self) -> pd.DataFrame:
        """Gates passed / evaluated per asset (the model card's audit line)."""
        return self.query(sql("gates", "gate_counts"))
