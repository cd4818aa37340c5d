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
