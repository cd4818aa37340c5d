"""Which embedder the semantic duplicate tier uses: the pinned one, or a named encoder.

Why a choice at all: the pinned embedder (`semantic.pinned_embed`, computed once at cataloging)
is cheap and never changes, so duplicate groups and splits never move. A trained encoder finds
more semantic copies; pinning one by id keeps the same guarantee (a fixed, named model), and the
graph keeps no edge from training back to curation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def semantic_embedder(
    name: str,
    read_rows: Callable[[pd.DataFrame, str], np.ndarray],
    model_dir: Callable[[str], Path],
) -> tuple[Embed, str]:
    """(embed(catalog rows) -> unit vectors, the name recorded with every group).

    `name` is "pinned" or the id of an encoder whose directory is `model_dir(name)`;
    `read_rows(rows, suffix)` reads catalog arrays (pixels for ".npy", pinned embeddings for
    ".pinned.npy")."""
    if name == "pinned":

        def pinned(rows: pd.DataFrame) -> np.ndarray:
            if rows.empty:
                return np.zeros((0, EMBEDDING_DIM), np.float32)
            check_pinned_versions(rows)
            return read_rows(rows, ".pinned.npy")

        return pinned, PINNED_EMBEDDER_VERSION
    from ssl_assets.ml.encoder_io import ENCODER_META, load_encoder
    from ssl_assets.ml.evaluate.features import embed_images

    directory = model_dir(name)
    if not (directory / ENCODER_META).is_file():
        raise ValueError(
            f"embedder {name!r} is neither 'pinned' nor an encoder in {directory.parent}"
        )
    backbone, meta = load_encoder(directory)

    def encoder(rows: pd.DataFrame) -> np.ndarray:
        if rows.empty:
            return np.zeros((0, int(meta["out_dim"])), np.float32)
        features = embed_images(backbone, read_rows(rows, ".npy"), meta["preprocessing"])
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)

    return encoder, f"encoder:{name}:{meta.get('weights_sha256', '')[:12]}"


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
