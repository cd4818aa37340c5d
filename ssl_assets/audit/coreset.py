"""Which unlabeled images to label next: k-center greedy (coreset) over embeddings.

Why: the labeling budget is small, and labels spent on ten near-identical pictures teach a
fine-tuned model one thing ten times. The coreset approach (Sener & Savarese, 2018) picks, one at
a time, the image farthest from everything already labeled or picked, so K labels cover the
embedding space as evenly as K points can (a 2-approximation of the k-center problem). With
clusters that are clearly separated (every cluster's diameter smaller than the gap between
clusters), it therefore takes one image from every cluster before a second from any.

Details:
- images already labeled are the starting centres; with none, the first pick is the image
  nearest the mean embedding (a typical one), so the result is deterministic;
- rows are L2-normalised, so the geometry is cosine; distances are Euclidean between unit vectors;
- near-duplicates are skipped: once the farthest remaining image is within the near-duplicate
  similarity of a labeled or picked image, everything left is such a copy and selection stops,
  returning fewer than K (the reason is given);
- the embedding source is the caller's: the pinned embeddings today, a trained encoder's later.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

DEFAULT_BUDGET = 100
DEFAULT_NEAR_DUPLICATE_SIMILARITY = 0.95
_BLOCK_ENTRIES = 1 << 25


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _max_similarity_to(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Cosine similarity of each unit row of `points` to its most similar row of `centers`."""
    best = np.full(len(points), -np.inf, dtype=np.float32)
    if len(centers) == 0 or len(points) == 0:
        return best
    step = max(1, _BLOCK_ENTRIES // len(points))
    for s in range(0, len(centers), step):
        best = np.maximum(best, (points @ centers[s : s + step].T).max(axis=1))
    return best


def similarity_to_distance(similarity: float) -> float:
    """Euclidean distance between unit vectors with this cosine similarity."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * similarity))


def k_center_greedy(
    points: np.ndarray,
    budget: int,
    centers: np.ndarray | None = None,
    min_distance: float = 0.0,
) -> pd.DataFrame:
    """Pick up to `budget` rows of `points`, each the farthest from `centers` and earlier picks.

    Returns `position` (row in `points`), `rank` (1 = first) and `distance` (to the nearest
    centre or earlier pick when chosen; NaN for a first pick with no centres). Stops early when
    the farthest remaining row is closer than `min_distance` to a centre or pick. (Internally the
    farthest row is the one with the lowest best cosine similarity: the same order, cheaper.)
    """
    pts = _unit(points)
    n = len(pts)
    budget = max(0, min(int(budget), n))
    ctr = _unit(centers) if centers is not None and len(centers) else np.zeros((0, pts.shape[1]))
    best = _max_similarity_to(pts, ctr.astype(np.float32))
    max_similarity = 1.0 - min_distance**2 / 2.0  # distance >= d  <=>  similarity <= this
    picks: list[tuple[int, float]] = []
    for _ in range(budget):
        if not len(ctr) and not picks:
            mean = pts.mean(axis=0)
            pick = int(np.argmin(np.linalg.norm(pts - mean, axis=1)))
            distance = float("nan")
        else:
            pick = int(np.argmin(best))
            if not best[pick] < np.inf or best[pick] > max_similarity:
                break
            distance = similarity_to_distance(float(best[pick]))
        picks.append((pick, distance))
        best = np.maximum(best, pts @ pts[pick])
        best[pick] = np.inf  # never again
    return pd.DataFrame(
        {
            "position": np.array([p for p, _ in picks], dtype=np.int64),
            "rank": np.arange(1, len(picks) + 1, dtype=np.int64),
            "distance": np.array([d for _, d in picks], dtype=np.float64),
        }
    )


def select_labeling_candidates(
    embeddings: np.ndarray,
    labeled: np.ndarray,
    budget: int = DEFAULT_BUDGET,
    near_duplicate_similarity: float = DEFAULT_NEAR_DUPLICATE_SIMILARITY,
) -> tuple[pd.DataFrame, str]:
    """The `budget` unlabeled rows whose labels would help most, with the reason it stopped.

    `embeddings` are the candidate pool *and* the labeled images (any source, e.g. pinned
    embeddings of the included train split); `labeled` marks rows that already have a label:
    they are the starting centres and are never picked. Returns (`position`, `rank`,
    `distance`) rows in pick order, and a sentence saying why it stopped."""
    emb = _unit(embeddings)
    labeled = np.asarray(labeled, dtype=bool)
    if len(labeled) != len(emb):
        raise ValueError(f"labeled has {len(labeled)} rows for {len(emb)} embeddings")
    pool = np.flatnonzero(~labeled)
    picked = k_center_greedy(
        emb[pool],
        budget,
        centers=emb[labeled],
        min_distance=similarity_to_distance(near_duplicate_similarity),
    )
    picked["position"] = pool[picked["position"].to_numpy()]
    if len(picked) == budget:
        why = f"picked the full budget of {budget} from {len(pool)} unlabeled images"
    elif len(picked) == len(pool):
        why = f"every one of the {len(pool)} unlabeled images was picked (budget {budget})"
    else:
        why = (
            f"stopped after {len(picked)} of {budget}: every remaining unlabeled image is a near "
            f"duplicate (cosine >= {near_duplicate_similarity}) of a labeled or picked image"
        )
    return picked, why
