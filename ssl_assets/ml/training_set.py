"""Which curated images a pretraining run reads, as the plain lists a training job carries.

Why its own module: the asset that launches training and the trainer live in different
processes; the job file (`ssl_assets.ml.entrypoint.TrainJob`) carries array paths and row
numbers, never an orchestration object. This turns the store's rows into those lists and
fingerprints the snapshot (which images, which catalog version), so re-running on the same data
resumes the same checkpoints. No torch import: the Dagster layer calls it cheaply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class TrainingSet:
    """`train`: [array path, rows] parts; `val`: [array path, rows, label codes] parts of the
    labeled val images (the online kNN monitor), or None; `classes`: label -> code."""

    train: list[list[Any]]
    val: list[list[Any]] | None
    classes: dict[str, int]
    fingerprint: str
    images: int


def training_set(rows: pd.DataFrame, version: str, resolve: Callable[[str], Path]) -> TrainingSet:
    """`rows`: included train/val images (image_id, split, array_path, array_row, label) as
    `MetadataStore.training_rows` returns them; `resolve` turns a recorded array path into a
    file path. Raises ValueError when there is no train image."""
    train = rows[rows["split"] == "train"]
    if train.empty:
        raise ValueError("no included train images in curated_images: curate some data first")
    parts = [
        [str(resolve(path)), g["array_row"].astype(int).tolist()]
        for path, g in train.groupby("array_path", sort=True)
    ]
    labeled_val = rows[(rows["split"] == "val") & rows["label"].notna()]
    classes = {c: i for i, c in enumerate(sorted(rows["label"].dropna().unique()))}
    val = [
        [
            str(resolve(path)),
            g["array_row"].astype(int).tolist(),
            g["label"].map(classes).astype(int).tolist(),
        ]
        for path, g in labeled_val.groupby("array_path", sort=True)
    ] or None
    ids = "\n".join(sorted(train["image_id"]))
    fingerprint = hashlib.sha256(f"{version}\n{ids}".encode()).hexdigest()[:16]
    return TrainingSet(parts, val, classes, fingerprint, len(train))


def replay_mix(
    rows: pd.DataFrame, earlier: set[str], share: float | None, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The train rows a warm-started retrain reads: every *new* train image (not in `earlier`,
    the images the warm-start encoder was trained on) and earlier ones replayed so that they
    make up at most `share` of the set, drawn by a seeded permutation; val rows untouched.

    Why: a warm-started encoder trained on new images alone drifts towards them and forgets the
    rest (catastrophic forgetting); replaying a share of earlier data during the update keeps
    it (experience replay: Rolnick et al., "Experience replay for continual learning", NeurIPS
    2019, where a 50/50 mix of old and new largely prevents forgetting). `share=None` replays
    every earlier image: the whole train split, the pipeline's default, whose realised share is
    simply earlier / all. A number makes retraining cost follow the new data instead of the
    whole lake (0.5: as many earlier images as new ones; 0: new images only). Returns the rows
    and what was replayed (requested and realised share, counts), for the encoder's lineage.
    """
    if share is not None and not 0.0 <= share <= 1.0:
        raise ValueError(f"replay_share must be in [0, 1] or None, got {share}")
    train = (rows["split"] == "train").to_numpy()
    old = train & rows["image_id"].isin(earlier).to_numpy()
    n_new, n_old = int((train & ~old).sum()), int(old.sum())
    keep_old = n_old
    if share is not None and n_new and share < 1.0:
        keep_old = min(n_old, int(round(share / (1.0 - share) * n_new)))
    keep = ~old
    if keep_old:
        old_ids = np.sort(rows.loc[old, "image_id"].to_numpy().astype(str))
        chosen = set(np.random.default_rng(seed).permutation(old_ids)[:keep_old])
        keep |= old & rows["image_id"].isin(chosen).to_numpy()
    info = {
        "replay_share": share,
        "realised_share": keep_old / (keep_old + n_new) if keep_old + n_new else 0.0,
        "new_images": n_new,
        "replayed_images": keep_old,
        "earlier_images": n_old,
    }
    return rows[keep].reset_index(drop=True), info
