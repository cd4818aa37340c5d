"""The verdict of one audit gate, decided in plain code so it can be tested without Dagster.

Why: the asset layer only records an `Outcome` (in `gate_results`) and turns it into an
`AssetCheckResult`; what passes, and the words that say why, live next to the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """One gate: passed or not, the metric judged, and a sentence a person can act on."""

    check_name: str
    passed: bool
    metric: str
    value: float | None
    description: str
    details: dict[str, Any] = field(default_factory=dict)
