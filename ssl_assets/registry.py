"""The model registry's rules: which model is the champion, and how that changes.

Only two things change the champion: the `champion_model` asset, when a challenger passes every
promotion rule, and a person, with `ssl-assets champion restore|promote MODEL_ID`. Both go
through `set_champion`, which retires the previous champion (and the encoder behind it) and
records the decision in `promotions`, so the history is one query away.

The registry records where a model lives relative to the lake root (`models/<id>[/file]`), so a
copied lake serves its own champion and a moved lake keeps working; `model_path` resolves a
recorded path under the current lake (never outside it), and `verified_model_path` also checks
the weights against the recorded `content_hash`, so swapped weights are refused, not served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from resources.lake import LakeResource, UnsafePathError
from resources.metadata import MetadataStore, utcnow

#: weights file of a model directory, per kind of directory (the registry records the directory
#: of a fine-tuned model and the weights file of an encoder)
_WEIGHTS_IN_DIR = ("model.safetensors", "encoder.safetensors")


class ModelIntegrityError(ValueError):
    """A registered model's weights are not the ones the registry recorded."""


def recorded_path(lake: LakeResource, path: str | Path) -> str:
    """What the registry records for a model file or folder: its path relative to the lake root
    (POSIX separators), so that the record stays true when the lake is copied or moved."""
    return Path(path).resolve().relative_to(lake.root_path).as_posix()


def model_path(lake: LakeResource, recorded: str) -> Path:
    """The path of a registry record under the current lake.

    Relative records resolve under the lake root. Absolute ones (written by older code) keep
    their part from the last `models/` on, under the current lake: they point into the lake the
    model was trained in, which may since have been copied (the copy must not serve the
    original's files) or moved. Nothing may resolve outside the lake.
    """
    parts = PurePath(recorded).parts
    if PurePath(recorded).is_absolute():
        if "models" not in parts:
            raise UnsafePathError(f"registered path {recorded!r} is not under a models/ folder")
        parts = parts[len(parts) - 1 - parts[::-1].index("models") :]
    return lake.path(*parts)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_model_path(lake: LakeResource, row: Mapping[str, Any]) -> Path:
    """`model_path` of a `models` row, after checking its weights' SHA-256 against the row's
    `content_hash`; raises `ModelIntegrityError` naming both when they differ (or when there is
    nothing to check against), `FileNotFoundError` when the weights are gone."""
    path = model_path(lake, str(row["path"]))
    weights = path
    if path.is_dir():
        weights = next((path / n for n in _WEIGHTS_IN_DIR if (path / n).is_file()), path / "?")
    if not weights.is_file():
        raise FileNotFoundError(
            f"model {row['model_id']}: no weights at {weights} (registered as {row['path']!r})"
        )
    expected = row.get("content_hash")
    if not isinstance(expected, str) or not expected:
        raise ModelIntegrityError(
            f"model {row['model_id']}: the registry records no content_hash for {weights}, so "
            "its weights cannot be verified"
        )
    actual = _sha256(weights)
    if actual != expected:
        raise ModelIntegrityError(
            f"model {row['model_id']}: {weights} has SHA-256 {actual}, but the registry "
            f"recorded {expected}; the weights were replaced or damaged since registration "
            "(restore them, or promote or retrain another model)"
        )
    return path


def current_champion(metadata: MetadataStore) -> pd.Series | None:
    df = metadata.query(
        "SELECT * FROM models WHERE kind = 'finetuned' AND status = 'champion' "
        "ORDER BY created_at DESC LIMIT 1"
    )
    return None if df.empty else df.iloc[0]


def champion_dir(metadata: MetadataStore, lake: LakeResource) -> Path:
    """Directory of the current champion (model.json + model.safetensors + MODEL_CARD.md) in
    this lake, its weights verified against the registry."""
    champion = current_champion(metadata)
    if champion is None:
        raise LookupError("there is no champion yet: run the pipeline (make run) first")
    return verified_model_path(lake, champion)


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
    """Add (or replace, when re-materialized) one model in the registry. `path` is relative to
    the lake root (`recorded_path`), so the lake can be copied or moved."""
    if PurePath(path).is_absolute():
        raise ValueError(f"register {path!r} relative to the lake root (recorded_path)")
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
