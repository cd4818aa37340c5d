"""Monitoring's tables: drift of each curated batch (`batch_drift`), models scored on a batch's
new labels (`batch_scores`) and every retrain decision with its evidence (`retrain_decisions`).

A batch's monitoring rows are replaced together when it is monitored again. A retrain decision
is recorded when it differs from the last one recorded (another outcome, reason or train
split), so a sensor ticking every few seconds leaves one row per decision, not per tick.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from resources.store.core import Queries, utcnow
from resources.store.sql import sql


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts, NaN as None (JSON- and sentence-ready)."""
    return [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        for row in df.astype(object).to_dict("records")
    ]


class MonitoringQueries(Queries):
    """`batch_drift`, `batch_scores`, `retrain_decisions`."""

    # -- what the monitoring asset reads -------------------------------------------------------

    def unmonitored_batches(self) -> list[str]:
        """Admitted, curated batches without monitoring rows, in order of arrival."""
        return self.query(sql("monitoring", "unmonitored_batches"))["batch"].tolist()

    def trained_reference(self, trained_at: Any, version: str, batch: str) -> pd.DataFrame:
        """Catalog rows of the included train images split by `trained_at` (an encoder's
        creation time), leaving out `batch`'s own images."""
        return self.query(sql("monitoring", "trained_reference"), [trained_at, version, batch])

    def trained_image_ids(self, trained_at: Any) -> set[str]:
        """Included train images split by `trained_at`: what an encoder created then has
        trained on (itself or through its warm-start ancestors); replay draws from them."""
        return set(self.query(sql("monitoring", "trained_image_ids"), [trained_at])["image_id"])

    def batch_included(self, batch: str, version: str) -> pd.DataFrame:
        """Catalog rows of the batch's included images, any split."""
        return self.query(sql("monitoring", "batch_included"), [batch, version])

    def batch_new_labels(self, batch: str, version: str) -> pd.DataFrame:
        """Included images labeled by this batch's labels.csv: image_id, label, array_path,
        array_row and split_at (when the image got its split; a model created before that
        has never trained on it)."""
        return self.query(sql("monitoring", "batch_new_labels"), [batch, version])

    # -- what it writes, and reads back for the plots -------------------------------------------

    def replace_batch_monitoring(
        self, batch: str, drift: pd.DataFrame, scores: pd.DataFrame
    ) -> None:
        """A batch's drift rows and model scores, replacing any earlier ones, together."""
        where = {"batch": batch}
        self.replace(("batch_drift", drift, where), ("batch_scores", scores, where))

    def drift_history(self) -> pd.DataFrame:
        """Every monitored batch's drift rows, batches in order of arrival."""
        return self.query(sql("monitoring", "drift_history"))

    def scores_history(self) -> pd.DataFrame:
        """Every batch's model scores, batches in order of arrival, champion first."""
        return self.query(sql("monitoring", "scores_history"))

    # -- the retrain policy's evidence ----------------------------------------------------------

    def retrain_evidence(self) -> dict[str, list]:
        """Monitoring evidence the newest usable encoder has not yet answered: the drift rows
        and champion scores of batches none of whose images had a split when it was created,
        and those of them that have no monitoring record."""
        last = self.query(sql("registry", "last_encoder_at"))["at"].iloc[0]
        last = None if pd.isna(last) else last
        pending = self.query(sql("monitoring", "pending_batches"), [last, last])["batch"].tolist()
        monitored = set(self.query(sql("monitoring", "monitored_batches"), [pending])["batch"])
        return {
            "pending_batches": pending,
            "unmonitored": [b for b in pending if b not in monitored],
            "drift": _records(self.query(sql("monitoring", "drift_of"), [pending])),
            "decay": _records(self.query(sql("monitoring", "champion_scores_of"), [pending])),
        }

    def record_retrain_decision(
        self,
        *,
        decided_by: str,
        retrain: bool,
        triggers: list[str],
        reason: str,
        evidence: Mapping[str, Any],
        snapshot: str | None,
        run_key: str | None,
    ) -> bool:
        """Record a retrain decision unless it repeats the last one recorded (same outcome,
        reason, train split and decider); returns whether a row was written."""
        key = hashlib.sha256(
            json.dumps([decided_by, retrain, reason, snapshot], default=str).encode()
        ).hexdigest()[:16]
        latest = self.query(sql("monitoring", "latest_decision_key"))
        if len(latest) and latest["decision_key"].iloc[0] == key:
            return False
        row = {
            "decided_at": utcnow(),
            "decided_by": decided_by,
            "retrain": bool(retrain),
            "triggers": json.dumps(list(triggers)),
            "reason": reason,
            "evidence": json.dumps(evidence, default=str),
            "snapshot": snapshot,
            "run_key": run_key,
            "decision_key": key,
        }
        self.append("retrain_decisions", pd.DataFrame([row]))
        return True

    def retrain_decisions(self) -> pd.DataFrame:
        """Every retrain decision recorded, oldest first."""
        return self.query(sql("monitoring", "retrain_decisions"))
