"""The pinned embedder's vectors as curation reads them: one version at a time, or a refusal.

Why: the pinned embedder (`semantic.pinned_embed`, computed once at cataloging) is cheap and never
changes, so duplicate groups and splits never move. The semantic tier may instead pin a named,
trained encoder (`ssl_assets.ml.evaluate.features.encoder_embedder`, chosen by the asset): a
fixed model, so the same guarantee holds and the graph keeps no edge from training back to
curation. Either way the tier sees an `Embed`: catalog rows in, unit vectors out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ssl_assets.curation.semantic import EMBEDDING_DIM, PINNED_EMBEDDER_VERSION

Embed = Callable[[pd.DataFrame], np.ndarray]


def check_pinned_versions(rows: pd.DataFrame) -> None:
    """Embeddings of two pinned-embedder versions are not comparable: refuse them."""
    stale = sorted(set(rows["embedder"]) - {PINNED_EMBEDDER_VERSION})
    if stale:
        raise ValueError(
            f"catalog rows carry pinned embedder versions {stale}, not the current "
            f"{PINNED_EMBEDDER_VERSION}: re-materialize image_catalog for their batches "
            "so every embedding comes from one embedder"
        )


def pinned_embedder(read_rows: Callable[[pd.DataFrame, str], np.ndarray]) -> tuple[Embed, str]:
    """(embed(catalog rows) -> the pinned embeddings computed at cataloging, its version).
    `read_rows(rows, suffix)` reads catalog arrays (".pinned.npy" for the embeddings)."""

    def pinned(rows: pd.DataFrame) -> np.ndarray:
        if rows.empty:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        check_pinned_versions(rows)
        return read_rows(rows, ".pinned.npy")

    return pinned, PINNED_EMBEDDER_VERSION


def pinned_embeddings(
    rows: pd.DataFrame, read_rows: Callable[[pd.DataFrame, str], np.ndarray]
) -> tuple[np.ndarray, str]:
    """Pinned embeddings of catalog rows (float32, in row order) and their embedder version.
    Rows of two embedder versions are refused: their embeddings are not comparable."""
    if rows.empty:
        return np.zeros((0, EMBEDDING_DIM), np.float32), PINNED_EMBEDDER_VERSION
    versions = sorted(set(rows["embedder"]))
    if len(versions) > 1:
        raise ValueError(
            f"catalog rows carry {len(versions)} pinned embedder versions {versions}; re-catalog "
            "the older batches so every embedding comes from one embedder"
        )
    emb = read_rows(rows.reset_index(drop=True), ".pinned.npy")
    return np.asarray(emb, np.float32), versions[0]
