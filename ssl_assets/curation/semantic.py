"""Semantic near duplicates: a pinned, training-free embedding and SemDeDup-style pairs.

Why: perceptual hashes miss copies that moved a few pixels (crops) or changed tone, and the
curation result must not depend on the encoder this project trains (that would be circular and
would change every time the encoder does). So the semantic tier uses a *pinned* embedder: a fixed,
deterministic function of the canonical pixels, identified by `PINNED_EMBEDDER_VERSION`. Change
the function and you must change the version, so recorded results stay reproducible.

The embedding (`pinned_embed`) concatenates three L2-normalised blocks, then L2-normalises:

- layout (weight 0.8): an 8x8 luma thumbnail minus its mean (brightness/contrast invariant);
- colour (weight 0.4): a 4x4x4 joint RGB histogram of a 32x32 thumbnail, square-rooted
  (Hellinger) and centred;
- gradients (weight 0.45): an 8-bin unsigned gradient-orientation histogram in 2x2 cells of
  the 32x32 luma, magnitude-weighted, square-rooted and centred.

So cosine similarity is 0.64 x layout + 0.16 x colour + 0.2 x gradient similarity.

v2 differs from v1 only in that a 32x32 input is used as is instead of passing through a
nearly-identity resampling matrix, whose 1e-17 residues used to decide the orientation bin of
exactly vertical gradients (cosine between v1 and v2 embeddings of CIFAR-10 images >= 0.999).

`DEFAULT_SEMANTIC_THRESHOLD = 0.95` was set on CIFAR-10 (32x32 natural images). Share of copies
kept at 0.92 / 0.95 / 0.98: JPEG q75 1.0 / 1.0 / 1.0; 1.2x brightened 0.99 / 0.96 / 0.65;
1-pixel crop-and-resize 0.99 / 0.93 / 0.34; 2-pixel crop 0.67 / 0.31 / 0.02; 2x blurred
0.90 / 0.63 / 0.05. Random distinct pairs reach 0.92 at a rate of 1e-6 and 0.95 at 3e-7 (the
floor: CIFAR's own duplicates). Low-detail data needs a higher threshold: on the 8x8 sklearn
digits upscaled, 0.95 merges half the images (same digit, different writers) and 0.98 about 3%.

`semantic_pairs` follows SemDeDup (Abbas et al., 2023): k-means (scikit-learn, fixed seed) over
the embeddings, then exact cosine similarities only *within* each cluster, keeping pairs at or
above a threshold. Like `near_duplicates.find_near_pairs`, it can search a new batch against the
existing curated set (new-new and new-existing pairs, never existing-existing) and returns the
same `left`/`right`/`right_is_existing` layout, so `near_duplicates.connected_groups` groups
both tiers.
"""

from __future__ import annotations

from math import ceil

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from ssl_assets.curation.hashing import batch_slices, check_batch, resize

PINNED_EMBEDDER_VERSION = "pinned-v2:luma8x8+rgbhist4x4x4+gradhist8x2x2;w=0.8,0.4,0.45"
EMBEDDING_DIM = 64 + 64 + 32
DEFAULT_SEMANTIC_THRESHOLD = 0.95
# Clusters are sized so that the within-cluster similarity blocks stay small.
TARGET_CLUSTER_SIZE = 1000
# k-means is fitted on at most this many points (a seeded subsample) and predicts the rest:
# clusters only bound the similarity blocks, ~300 points per centroid place them well enough.
MAX_KMEANS_FIT = 20_000
PAIR_COLUMNS = ["left", "right", "right_is_existing", "similarity"]

_LUMA = np.array([0.299, 0.587, 0.114])
_WEIGHTS = (0.8, 0.4, 0.45)
# Similarity entries computed at once (float32): bounds memory when one cluster is large.
_BLOCK = 1 << 24


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _layout(luma32: np.ndarray) -> np.ndarray:
    thumb = resize(luma32, 8, 8).reshape(len(luma32), -1)
    return _unit(thumb - thumb.mean(axis=1, keepdims=True))


def _colour(rgb32: np.ndarray, pixels: np.ndarray | None = None) -> np.ndarray:
    n = len(rgb32)
    # From 32x32 uint8 pixels the bin is p >> 6, exactly floor(p / 255 * 4): the bin edges
    # 63.75, 127.5 and 191.25 are far from any integer p.
    bins = pixels >> 6 if pixels is not None else np.clip((rgb32 * 4).astype(np.int64), 0, 3)
    code = (bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]).reshape(n, -1)
    flat = code + 64 * np.arange(n)[:, None]
    hist = np.bincount(flat.ravel(), minlength=64 * n).reshape(n, 64) / code.shape[1]
    root = np.sqrt(hist)
    return _unit(root - root.mean(axis=1, keepdims=True))


def _gradients(luma32: np.ndarray) -> np.ndarray:
    n = len(luma32)
    padded = np.pad(luma32, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
    gy = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    orient = np.minimum((angle / np.pi * 8).astype(np.int64), 7)
    cell = (np.arange(32) // 16)[:, None] * 2 + (np.arange(32) // 16)[None, :]
    code = (cell[None] * 8 + orient).reshape(n, -1) + 32 * np.arange(n)[:, None]
    hist = np.bincount(code.ravel(), weights=magnitude.ravel(), minlength=32 * n).reshape(n, 32)
    root = np.sqrt(_unit(hist))
    return _unit(root - root.mean(axis=1, keepdims=True))


def pinned_embed(images: np.ndarray) -> np.ndarray:
    """Deterministic, training-free embedding of N x H x W x 3 uint8 images (float32, N x 160).

    Rows are L2-normalised, so a dot product is a cosine similarity. See the module docstring
    and `PINNED_EMBEDDER_VERSION`.
    """
    images = check_batch(images)
    out = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
    for part in batch_slices(images, pixels_per_batch=1 << 22):
        pixels = images[part]
        rgb32 = resize(np.true_divide(pixels, 255.0, dtype=np.float64), 32, 32)
        luma32 = rgb32 @ _LUMA
        native = pixels if pixels.shape[1:3] == (32, 32) else None
        blocks = (_layout(luma32), _colour(rgb32, native), _gradients(luma32))
        joined = np.concatenate([w * b for w, b in zip(_WEIGHTS, blocks, strict=True)], axis=1)
        out[part] = _unit(joined)
    return out


def cluster_labels(points: np.ndarray, n_clusters: int | None, seed: int) -> np.ndarray:
    """k-means cluster of each row (int64); `None` picks ~`TARGET_CLUSTER_SIZE` rows a cluster."""
    n = len(points)
    k = n_clusters if n_clusters is not None else ceil(n / TARGET_CLUSTER_SIZE)
    k = max(1, min(int(k), n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit = points if n <= MAX_KMEANS_FIT else points[np.sort(rng.choice(n, MAX_KMEANS_FIT, False))]
    with single_threaded_kmeans():
        model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(fit)
        return model.predict(points).astype(np.int64)


def single_threaded_kmeans() -> threadpool_limits:
    """Run scikit-learn's k-means on one thread. Its OpenMP threads spin while they wait, so on a
    busy machine two threads were 2-3x *slower* than one (60,000 x 160 points, 2 cores at
    load 3: 8.5-11.6 s vs 4.0-4.3 s); on a quiet one they gain far less than that."""
    return threadpool_limits(limits=1)


def _by_label(labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices grouped by label (ascending within a label) and each label's start offset."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(n_labels + 1))


def semantic_pairs(
    emb: np.ndarray,
    threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
    n_clusters: int | None = None,
    seed: int = 0,
    existing: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> pd.DataFrame:
    """SemDeDup pairs: cosine similarity >= `threshold` between items of the same k-means cluster.

    `emb` (new items) and `existing` are L2-normalised rows (e.g. from `pinned_embed`). k-means
    runs on new and existing rows together. Returns columns `left`, `right`,
    `right_is_existing`, `similarity` with the same meaning as `find_near_pairs`: `left` indexes
    `emb`; `right` indexes `emb` (and `left < right`) or, where `right_is_existing`, `existing`.
    Rows are sorted by (`left`, `right_is_existing`, `right`). Pairs split across clusters are
    missed by design (SemDeDup's trade-off); `n_clusters=1` is the exact all-pairs search.
    `labels` (new rows, then existing ones) reuses clusters computed already.
    """
    new = np.asarray(emb, dtype=np.float32)
    if new.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {new.shape}")
    old = np.zeros((0, new.shape[1]), np.float32) if existing is None else np.asarray(existing)
    old = old.astype(np.float32, copy=False)
    if old.ndim != 2 or old.shape[1] != new.shape[1]:
        raise ValueError(f"existing embeddings must be N x {new.shape[1]}, got {old.shape}")
    if labels is None:
        labels = cluster_labels(np.concatenate([new, old]), n_clusters, seed)
    n_labels = int(labels.max(initial=0)) + 1
    new_members, new_bounds = _by_label(labels[: len(new)], n_labels)
    old_members, old_bounds = _by_label(labels[len(new) :], n_labels)
    found: list[tuple[np.ndarray, np.ndarray, bool, np.ndarray]] = []
    for cluster in range(n_labels):
        members = new_members[new_bounds[cluster] : new_bounds[cluster + 1]]
        others = old_members[old_bounds[cluster] : old_bounds[cluster + 1]]
        step = max(1, _BLOCK // (len(members) + len(others)))
        for s in range(0, len(members), step):
            rows = members[s : s + step]
            sim = new[rows] @ new[members[s:]].T  # only members from this block on (i < j)
            i, j = np.nonzero(sim >= threshold)
            keep = j > i  # position j in members[s:] is member s + j; rows are s + i
            found.append((rows[i[keep]], members[s:][j[keep]], False, sim[i[keep], j[keep]]))
            if len(others):
                sim = new[rows] @ old[others].T
                i, j = np.nonzero(sim >= threshold)
                found.append((rows[i], others[j], True, sim[i, j]))
    left = np.concatenate([f[0] for f in found] or [np.empty(0, np.int64)]).astype(np.int64)
    right = np.concatenate([f[1] for f in found] or [np.empty(0, np.int64)]).astype(np.int64)
    is_old = np.concatenate([np.full(len(f[0]), f[2]) for f in found] or [np.empty(0, bool)])
    similarity = np.concatenate([f[3] for f in found] or [np.empty(0, np.float32)])
    order = np.lexsort((right, is_old, left))
    return pd.DataFrame(
        {
            "left": left[order],
            "right": right[order],
            "right_is_existing": is_old[order].astype(bool),
            "similarity": similarity[order].astype(np.float32),
        }
    )
