"""The verdict of one gate, decided in plain code so it can be tested without Dagster.

Why: every gate — a GX suite, a metric against bounds, an audit rule, a champion rule — ends in
the same record: passed or not, the metric judged, and a sentence a person can act on. Plain
code (audits, the promotion rule) returns a `Verdict`; `quality.gates.record_check` is the one
place that stores it in `gate_results` and turns it into a Dagster `AssetCheckResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """One gate: passed or not, the metric judged, and a sentence a person can act on.

    `details` holds whatever a person needs to see why (bounds, previous value, failed
    expectations); scalars and lists among them are also shown on the check in the UI."""

    check_name: str
    passed: bool
    metric: str | None
    value: float | None
    description: str
    details: dict[str, Any] = field(default_factory=dict)
