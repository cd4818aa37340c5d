"""The model registry: which model is the champion, and how that changes.

Only two things change the champion: the `champion_model` asset, when a challenger passes every
promotion rule, and a person, with `ssl-assets champion restore|promote MODEL_ID`. Both go
through `set_champion`, which retires the previous champion (and the encoder behind it) and
records the decision in `promotions`; a refused challenger goes through `refuse_challenger`.
Nothing else writes a model's status or a promotion, so the history is one query away.

Paths are recorded relative to the lake root (`models/<model_id>`), so a copied or moved lake
keeps serving its own models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import duckdb
import pandas as pd

from resources.store.core import Queries, utcnow
from resources.store.sql import sql

#: the promotion figures a decision records beside its reasons
DECISION_SCORES = ("challenger_val", "champion_val", "delta_low", "delta_high")


def _first(df: pd.DataFrame) -> pd.Series | None:
    return None if df.empty else df.iloc[0]


class RegistryQueries(Queries):
    """`models` and `promotions`."""

    # -- reads ---------------------------------------------------------------------------------

    def model(self, model_id: str) -> pd.Series | None:
        return _first(self.query(sql("registry", "model"), [model_id]))

    def current_champion(self, kind: str = "finetuned") -> pd.Series | None:
        """The champion fine-tuned model (or, with kind="encoder", the encoder behind it)."""
        return _first(self.query(sql("registry", "current_champion"), [kind]))

    def latest_usable_encoder(self) -> pd.Series | None:
        """The newest encoder that passed its collapse check."""
        return _first(self.query(sql("registry", "latest_usable_encoder")))

    def latest_finetuned(self) -> pd.Series | None:
        """The newest fine-tuned model: the challenger of the next champion decision."""
        return _first(self.query(sql("registry", "latest_finetuned")))

    def promotions(self) -> pd.DataFrame:
        """Every champion decision so far, oldest first."""
        return self.query(sql("registry", "promotions"))

    def retrain_inputs(self) -> dict[str, Any]:
        """What the retrain policy needs: the train split's size, how many of its included
        images were curated after the newest usable encoder was trained, and whether there is
        one."""
        last = self.query(sql("registry", "last_encoder_at"))["at"].iloc[0]
        has_encoder = not pd.isna(last)
        counts = self.query(sql("registry", "train_counts"), [last if has_encoder else None])
        total = int(counts["total"].iloc[0])
        return {
            "train_images": total,
            "new_since_last_encoder": int(counts["new"].iloc[0]) if has_encoder else total,
            "has_encoder": has_encoder,
        }

    def train_snapshot(self) -> str:
        """A short key of the included train split (which images), for run keys."""
        ids = self.query(sql("registry", "train_ids"))["image_id"]
        return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]

    # -- writes: the registry's rules ----------------------------------------------------------

    def register_model(
        self,
        *,
        model_id: str,
        kind: str,
        path: str,
        content_hash: str | None,
        config: dict,
        metrics: dict,
        lineage: dict,
        status: str,
        reason: str,
        run_id: str | None,
    ) -> None:
        """Add (or replace, when re-materialized) one model; `path` relative to the lake root."""
        row = {
            "model_id": model_id,
            "kind": kind,
            "path": path,
            "content_hash": content_hash,
            "config": json.dumps(config, default=str),
            "metrics": json.dumps(metrics, default=str),
            "lineage": json.dumps(lineage, default=str),
            "status": status,
            "reason": reason,
            "run_id": run_id,
            "created_at": utcnow(),
        }
        with self.transaction() as con:
            con.execute(sql("registry", "delete_model"), [model_id])
            self.insert(con, "models", pd.DataFrame([row]))

    def set_champion(
        self,
        model_id: str,
        decided_by: str,
        reasons: list[str],
        run_id: str | None,
        scores: Mapping[str, float | None] | None = None,
    ) -> str | None:
        """Make `model_id` (a fine-tuned model) the champion, retire the previous one, mark the
        encoders behind them likewise and record the decision; returns the previous champion."""
        models = self.query(sql("registry", "models"))
        target = models[models["model_id"] == model_id]
        if target.empty or target["kind"].iloc[0] != "finetuned":
            raise ValueError(f"{model_id} is not a fine-tuned model in the registry")
        previous = models[(models["kind"] == "finetuned") & (models["status"] == "champion")]
        previous_id = previous["model_id"].iloc[0] if len(previous) else None
        encoder = json.loads(target["lineage"].iloc[0] or "{}").get("encoder")
        with self.transaction() as con:
            con.execute(
                sql("registry", "retire_champions"), [f"replaced by {model_id} ({decided_by})"]
            )
            con.execute(
                sql("registry", "crown"),
                [
                    f"champion since {utcnow():%Y-%m-%d %H:%M} ({decided_by})",
                    model_id,
                    encoder or "",
                ],
            )
            self._record_decision(
                con, model_id, previous_id, True, reasons, decided_by, run_id, scores
            )
        return previous_id

    def refuse_challenger(
        self,
        challenger_id: str,
        champion_id: str | None,
        reasons: list[str],
        run_id: str | None,
        scores: Mapping[str, float | None] | None = None,
    ) -> None:
        """Mark a challenger rejected (its first reason says why) and record the decision."""
        with self.transaction() as con:
            con.execute(sql("registry", "reject"), [reasons[0], challenger_id])
            self._record_decision(
                con, challenger_id, champion_id, False, reasons, "pipeline", run_id, scores
            )

    def reject_model(self, model_id: str, reason: str) -> None:
        """Mark a model rejected outside a champion decision (e.g. a collapsed encoder)."""
        with self.transaction() as con:
            con.execute(sql("registry", "reject"), [reason, model_id])

    def _record_decision(
        self,
        con: duckdb.DuckDBPyConnection,
        challenger_id: str,
        champion_id: str | None,
        promoted: bool,
        reasons: list[str],
        decided_by: str,
        run_id: str | None,
        scores: Mapping[str, float | None] | None,
    ) -> None:
        row = {
            "challenger_id": challenger_id,
            "champion_id": champion_id,
            "promoted": promoted,
            **{k: (scores or {}).get(k) for k in DECISION_SCORES},
            "reasons": json.dumps(reasons),
            "decided_by": decided_by,
            "run_id": run_id,
            "decided_at": utcnow(),
        }
        self.insert(con, "promotions", pd.DataFrame([row]))
