"""Approximate nearest neighbours of unit embeddings: an inverted-file (IVF) index on k-means lists.

Why: exact k nearest neighbours of n images cost n x n dot products and a top-k over each row
(50,000 CIFAR-10 train images: 16-24 s on 2 cores, most of the diversity audit). An inverted
file (the coarse quantiser of Jegou, Douze and Schmid, "Product quantization for nearest neighbor
search", TPAMI 2011; faiss's IndexIVFFlat) partitions the base points by k-means and searches a
query only in the `n_probe` lists whose centroids are most similar to it. Similarities inside
those lists are exact, so every neighbour returned is a true one with its true similarity; what
the index can miss is a neighbour that sits in a list not probed. Probing every list is the
exact search. Both the aligned duplicate tier (`curation/aligned.py`) and the diversity audit
reuse k-means labels their step computes anyway, so the index costs no extra fit.

Measured on the pinned embeddings of CIFAR-10 (10,000 test queries against 50,000 train images,
60 lists of about 1,000): the most similar train image is found for 70 / 88 / 95 / 97 % of the
test images whose best match is at cosine >= 0.83 with 1 / 2 / 3 / 4 probes (81 / 94 / 97 / 99 %
at >= 0.9); of the exact 10 nearest, 46 / 67 / 78 / 85 % are returned, and the 10th similarity
is off by 0.028 / 0.013 / 0.008 / 0.005 on average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

# Similarity entries computed at once (float32, 64 MiB): bounds memory when a list is large.
_BLOCK = 1 << 24


@contextmanager
def one_thread() -> Iterator[None]:
    """torch and BLAS on one thread for the block. The blocks are small (a few hundred queries
    against a list of ~1,000), and on a busy 2-core machine two threads made each product and
    top-k 3-6x *slower* than one (oversubscription, as with k-means in `semantic.py`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def list_centroids(points: np.ndarray, labels: np.ndarray, n_lists: int) -> np.ndarray:
    """Unit mean of the points of each list (an empty list gets a zero centroid)."""
    from scipy.sparse import csr_matrix

    member = csr_matrix(
        (np.ones(len(labels), np.float64), (labels, np.arange(len(labels)))),
        shape=(n_lists, len(labels)),
    )
    sums = np.asarray(member @ points.astype(np.float64))
    norm = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def ivf_neighbours(
    queries: np.ndarray,
    base: np.ndarray,
    labels: np.ndarray,
    k: int,
    n_probe: int,
    *,
    self_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar base rows of each query, searched in its `n_probe` nearest lists.

    `queries` (m x d) and `base` (n x d) are L2-normalised rows, `labels` the list of each base
    row (0..L-1, e.g. k-means labels). `self_index[i]` is the base row that query i *is* (-1
    when none): it is never its own neighbour. Returns (similarities, base indices), both m x k,
    most similar first; a query with fewer than k candidates is padded with -inf and -1.
    Blocks are multiplied and reduced with torch (its top-k is several times faster than
    numpy's argpartition, which was most of the time).
    """
    queries = np.asarray(queries, dtype=np.float32)
    base = np.asarray(base, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    with one_thread():
        return _search(queries, base, labels, k, n_probe, self_index)


def _search(
    queries: np.ndarray,
    base: np.ndarray,
    labels: np.ndarray,
    k: int,
    n_probe: int,
    self_index: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    m, n = len(queries), len(base)
    k = max(0, min(int(k), n))
    best = np.full((m, 0), -np.inf, np.float32)
    if m == 0 or k == 0:
        return best, np.full((m, 0), -1, np.int64)
    n_lists = int(labels.max(initial=0)) + 1
    n_probe = max(1, min(int(n_probe), n_lists))
    own = np.full(m, -1, np.int64) if self_index is None else np.asarray(self_index, np.int64)
    if n_probe == n_lists:
        probe = np.broadcast_to(np.arange(n_lists), (m, n_lists))
    else:
        scores = queries @ list_centroids(base, labels, n_lists).T
        probe = np.argpartition(-scores, n_probe - 1, axis=1)[:, :n_probe]
    sims = np.full((m, n_probe, k), -np.inf, np.float32)
    where = np.full((m, n_probe, k), -1, np.int64)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(n_lists + 1))
    for lst in range(n_lists):
        members = order[starts[lst] : starts[lst + 1]]
        rows, slots = np.nonzero(probe == lst)
        if len(members) == 0 or len(rows) == 0:
            continue
        step = max(1, _BLOCK // len(members))
        top = min(k, len(members))
        listed = torch.from_numpy(base[members])
        for s in range(0, len(rows), step):
            q, slot = rows[s : s + step], slots[s : s + step]
            with torch.no_grad():
                block = torch.from_numpy(queries[q]) @ listed.T
                # members are in index order (stable sort), so a query's own row is found by
                # binary search
                at = np.minimum(np.searchsorted(members, own[q]), len(members) - 1)
                mine = np.flatnonzero(members[at] == own[q])
                block[mine, at[mine]] = -float("inf")
                values, pick = torch.topk(block, top, dim=1)
            sims[q, slot, :top] = values.numpy()
            where[q, slot, :top] = members[pick.numpy()]
    sims, where = sims.reshape(m, -1), where.reshape(m, -1)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    sims, where = np.take_along_axis(sims, top, axis=1), np.take_along_axis(where, top, axis=1)
    where[~np.isfinite(sims)] = -1
    return sims, where
