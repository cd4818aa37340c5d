"""Everything curation derives from a batch's canonical pixels, computed in one parallel pass.

Why: after decoding, the perceptual hashes, the pinned embedding and the quality scores are the
next largest cost of curating a batch (about as much CPU as decoding it). Each is a per-image
function of the pixels, so the batch is cut into chunks that worker threads process side by
side (numpy releases the GIL in its kernels); the results are identical to one call over the
whole batch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ssl_assets.curation.hashing import dhash64, phash64
from ssl_assets.curation.image_issues import quality_scores
from ssl_assets.curation.semantic import EMBEDDING_DIM, pinned_embed

CHUNK_IMAGES = 2048


@dataclass
class ImageFeatures:
    phash: np.ndarray  # uint64, N
    dhash: np.ndarray  # uint64, N
    embeddings: np.ndarray  # float32, N x EMBEDDING_DIM, unit rows (pinned embedder)
    scores: pd.DataFrame  # quality_scores columns, one row per image


def _one_chunk(
    images: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    images = np.ascontiguousarray(images)  # a memory-mapped slice is read once, here
    return phash64(images), dhash64(images), pinned_embed(images), quality_scores(images, sizes)


def image_features(
    images: np.ndarray, orig_sizes: np.ndarray, workers: int | None = None
) -> ImageFeatures:
    """pHash, dHash, pinned embedding and quality scores of N x R x R x 3 uint8 images.

    `orig_sizes` is N x 2 (height, width) before canonicalisation (for the geometry scores).
    """
    n = len(images)
    if n == 0:
        return ImageFeatures(
            np.zeros(0, np.uint64),
            np.zeros(0, np.uint64),
            np.zeros((0, EMBEDDING_DIM), np.float32),
            pd.DataFrame(),
        )
    sizes = np.asarray(orig_sizes).reshape(-1, 2)
    starts = range(0, n, CHUNK_IMAGES)
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(
            pool.map(
                lambda s: _one_chunk(images[s : s + CHUNK_IMAGES], sizes[s : s + CHUNK_IMAGES]),
                starts,
            )
        )
    return ImageFeatures(
        phash=np.concatenate([p[0] for p in parts]),
        dhash=np.concatenate([p[1] for p in parts]),
        embeddings=np.concatenate([p[2] for p in parts]),
        scores=pd.concat([p[3] for p in parts], ignore_index=True),
    )


def catalog_tables(
    index: pd.DataFrame,
    failures: pd.DataFrame,
    features: ImageFeatures,
    *,
    batch: str,
    version: str,
    array_path: str,
    embedder: str,
    stamp: dict,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The rows `image_catalog`, `quality_scores` (long form) and `catalog_failures` record for
    one batch: the catalog index with its hashes and embedder version, each score per image,
    and each image that could not be catalogued. `stamp` (run_id, recorded_at) goes on every
    row."""
    rows = index.assign(
        batch=batch,
        version=version,
        array_path=array_path,
        phash=features.phash,
        dhash=features.dhash,
        embedder=embedder,
        **stamp,
    )
    scores = features.scores
    scores_long = (
        scores.drop(columns=["orig_height", "orig_width"])
        .assign(image_id=rows["image_id"].to_numpy())
        .melt(id_vars="image_id", var_name="score", value_name="value")
        .assign(batch=batch, version=version, **stamp)
        if len(scores)
        else pd.DataFrame()
    )
    return rows, scores_long, failures.assign(batch=batch, version=version, **stamp)
