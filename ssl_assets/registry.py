"""The model registry's rules: which model is the champion, and how that changes.

Only two things change the champion: the `champion_model` asset, when a challenger passes every
promotion rule, and a person, with `ssl-assets champion restore|promote MODEL_ID`. Both go
through `set_champion`, which retires the previous champion (and the encoder behind it) and
records the decision in `promotions`, so the history is one query away.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from resources.metadata import MetadataStore, utcnow


def current_champion(metadata: MetadataStore) -> pd.Series | None:
    df = metadata.query(
        "SELECT * FROM models WHERE kind = 'finetuned' AND status = 'champion' "
        "ORDER BY created_at DESC LIMIT 1"
    )
    return None if df.empty else df.iloc[0]


def champion_dir(metadata: MetadataStore) -> Path:
    """Directory of the current champion (model.json + model.safetensors + MODEL_CARD.md)."""
    champion = current_champion(metadata)
    if champion is None:
        raise LookupError("there is no champion yet: run the pipeline (make run) first")
    return Path(champion["path"])


def set_champion(
    metadata: MetadataStore, model_id: str, decided_by: str, reasons: list[str], run_id: str | None
) -> str | None:
    """Make `model_id` (a fine-tuned model) the champion, retire the previous one, and mark the
    encoders behind them likewise; returns the previous champion's id."""
    models = metadata.query("SELECT model_id, kind, status, lineage FROM models")
    target = models[models["model_id"] == model_id]
    if target.empty or target["kind"].iloc[0] != "finetuned":
        raise ValueError(f"{model_id} is not a fine-tuned model in the registry")
    previous = models[(models["kind"] == "finetuned") & (models["status"] == "champion")]
    encoder = json.loads(target["lineage"].iloc[0] or "{}").get("encoder")
    with metadata.transaction() as con:
        con.execute(
            "UPDATE models SET status = 'retired', reason = ? "
            "WHERE status = 'champion' AND kind IN ('finetuned', 'encoder')",
            [f"replaced by {model_id} ({decided_by})"],
        )
        con.execute(
            "UPDATE models SET status = 'champion', reason = ? WHERE model_id IN (?, ?)",
            [f"champion since {utcnow():%Y-%m-%d %H:%M} ({decided_by})", model_id, encoder or ""],
        )
        record_decision(
            con,
            metadata,
            challenger_id=model_id,
            champion_id=previous["model_id"].iloc[0] if len(previous) else None,
            promoted=True,
            reasons=reasons,
            decided_by=decided_by,
            run_id=run_id,
        )
    return previous["model_id"].iloc[0] if len(previous) else None


def retrain_inputs(metadata: MetadataStore) -> dict:
    """What the retrain policy needs: the train split's size, how many of its included images
    were curated after the newest usable encoder was trained, and whether there is one."""
    last = metadata.query(
        "SELECT max(created_at) AS at FROM models WHERE kind = 'encoder' AND status <> 'rejected'"
    )["at"].iloc[0]
    has_encoder = not pd.isna(last)
    counts = metadata.query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE s.assigned_at > ?) AS new "
        "FROM curated_images c JOIN splits s USING (image_id) "
        "WHERE c.include AND c.split = 'train'",
        [last if has_encoder else None],
    )
    total = int(counts["total"].iloc[0])
    return {
        "train_images": total,
        "new_since_last_encoder": int(counts["new"].iloc[0]) if has_encoder else total,
        "has_encoder": has_encoder,
    }


def train_snapshot(metadata: MetadataStore) -> str:
    """A short key of the included train split (which images), for run keys."""
    ids = metadata.query(
        "SELECT image_id FROM curated_images WHERE include AND split = 'train' ORDER BY image_id"
    )["image_id"]
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def register_model(
    metadata: MetadataStore,
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
    """Add (or replace, when re-materialized) one model in the registry."""
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
    with metadata.transaction() as con:
        con.execute("DELETE FROM models WHERE model_id = ?", [model_id])
        metadata.insert(con, "models", pd.DataFrame([row]))


def record_decision(
    con,
    metadata: MetadataStore,
    *,
    challenger_id: str,
    champion_id: str | None,
    promoted: bool,
    reasons: list[str],
    decided_by: str,
    run_id: str | None,
) -> None:
    """One row of `promotions`, on an open transaction."""
    metadata.insert(
        con,
        "promotions",
        pd.DataFrame(
            [
                {
                    "challenger_id": challenger_id,
                    "champion_id": champion_id,
                    "promoted": promoted,
                    "reasons": json.dumps(reasons),
                    "decided_by": decided_by,
                    "run_id": run_id,
                    "decided_at": utcnow(),
                }
            ]
        ),
    )
