"""Diversity of an embedded image set: how many distinct modes, how evenly filled, how redundant.

Why: a self-supervised encoder learns what varies in its data. If most images are variations of a
few scenes, the features will be brittle however long it trains, so this is measured on the pinned
embeddings before any compute is spent.

Method (rows are L2-normalised embeddings, so a dot product is a cosine similarity):

- k-means (scikit-learn, k-means++, fixed seed; fitted on at most `MAX_KMEANS_FIT` rows, then
  every row predicted) with `k = clamp(round(sqrt(n / 2)), 2, MAX_AUTO_CLUSTERS)` unless given.
  k-means always returns k clusters, even of unstructured noise: a set that is one picture
  repeated with noise would come out as k even clusters and look perfectly diverse. So k-means
  clusters whose centroids are near-duplicates are merged: average linkage (UPGMA, scipy) on the
  cosine distance between normalised centroids, cut at `merge_similarity` (default 0.95). Noise
  averages out in a centroid, so copies of one picture give centroids at ~0.96-0.99, while
  distinct modes stay below. Normalised entropy after merging, measured: CIFAR-10 train 0.99
  (k=50); sklearn digits 0.97 (1,100 images, k=23) and 0.94 (all 1,797, k=50, where a few
  clusters of the same digit drawn alike merge); 60 copies of one 48-px picture with Gaussian
  pixel noise sigma 10-40: 0.00; of a 16-px picture upscaled (blocky noise): 0.00-0.18.
  Average linkage rather than single, so a chain of neighbouring modes does not collapse.
- normalised cluster-size entropy H / ln(k) (H over the merged clusters, k as fitted, so merging
  lowers it), the largest cluster's share and the effective number of clusters exp(H).
- k nearest neighbours: outlier score = the Euclidean distance to the k-th nearest neighbour
  (Ramaswamy et al., 2000), typicality = 1 / mean distance to the k nearest (TypiClust, Hacohen
  et al., 2022), and redundancy = the share of images whose nearest other image has cosine
  similarity >= `redundancy_similarity` (default 0.95, the CIFAR-calibrated semantic-duplicate
  level). Up to `EXACT_KNN_MAX` images the search is exact (blocked matrix products with torch
  top-k); above it, an inverted-file index on the k-means clusters just fitted
  (`curation/knn.py`, `KNN_PROBES` clusters probed per image), because exactness is not needed
  here and the exact search was most of the audit (50,000 CIFAR-10 train images: 16-24 s). On
  those 50,000 (50 clusters), against the exact scores, with 2 / 3 / 4 / 6 probes: outlier
  score Spearman 0.992 / 0.996 / 0.998 / 0.999, the same nearest neighbour for 75 / 85 / 90 /
  95 % of the images, redundancy 1.41 / 1.46 / 1.48 / 1.48 % (exact 1.48 %); with 4 probes
  the search took a fifth of the exact one's time (both measured at load 12 on 2 cores).
- a 2-D PCA projection (scikit-learn) for the plot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quality.verdict import Verdict

DEFAULT_KNN = 10
DEFAULT_MERGE_SIMILARITY = 0.95
DEFAULT_REDUNDANCY_SIMILARITY = 0.95
MAX_AUTO_CLUSTERS = 50
# k-means is fitted on a seeded sample of at most this many rows (at most 50 clusters: 200 rows
# a centroid). On 50,000 CIFAR-10 train images 20,000 took 173 Lloyd iterations (5.4 s at load
# 9 on 2 cores) and 10,000 took 38 (1.0 s), for a normalised entropy of 0.994 against 0.993.
MAX_KMEANS_FIT = 10_000
MAX_PCA_FIT = 20_000
# Above this many images the kNN scores come from the approximate (IVF) search.
EXACT_KNN_MAX = 10_000
KNN_PROBES = 4
# Similarity entries computed at once (float32, 256 MiB): ~1,300 rows of a 50,000-image set.
KNN_BLOCK_ENTRIES = 1 << 26


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def auto_clusters(n: int) -> int:
    """Default k for n images: round(sqrt(n / 2)), at least 2 and at most `MAX_AUTO_CLUSTERS`."""
    if n <= 1:
        return max(n, 1)
    return int(min(n, max(2, min(MAX_AUTO_CLUSTERS, round(math.sqrt(n / 2))))))


@dataclass(frozen=True)
class Clustering:
    """Merged clusters (0 = largest) and the k-means clusters they came from."""

    labels: np.ndarray  # merged cluster per row, int64, ordered by size (0 = largest)
    kmeans_labels: np.ndarray  # k-means cluster per row
    requested: int  # k fitted
    kmeans_to_cluster: np.ndarray  # merged cluster of each k-means cluster


def cluster_embeddings(
    embeddings: np.ndarray,
    n_clusters: int | None = None,
    merge_similarity: float = DEFAULT_MERGE_SIMILARITY,
    seed: int = 0,
    max_fit: int = MAX_KMEANS_FIT,
) -> Clustering:
    """k-means, then merge clusters whose centroids are near-duplicates (see the module doc)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.cluster import KMeans

    from ssl_assets.curation.semantic import single_threaded_kmeans

    emb = _unit(embeddings)
    n = len(emb)
    k = auto_clusters(n) if not n_clusters else max(1, min(int(n_clusters), n))
    if k <= 1:
        zeros = np.zeros(n, dtype=np.int64)
        return Clustering(zeros, zeros.copy(), max(k, 1), np.zeros(1, dtype=np.int64))
    rng = np.random.default_rng(seed)
    fit = emb if n <= max_fit else emb[np.sort(rng.choice(n, max_fit, replace=False))]
    with single_threaded_kmeans():
        model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(fit)
        kmeans_labels = model.predict(emb).astype(np.int64)
    sums = np.zeros((k, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, kmeans_labels, emb)
    sizes = np.bincount(kmeans_labels, minlength=k)
    used = np.flatnonzero(sizes)
    component = np.arange(k) + k  # empty k-means clusters stay apart (and get no rows)
    component[used] = 0
    if len(used) > 1:
        # UPGMA on cosine distance between normalised centroids, cut at 1 - merge_similarity.
        tree = linkage(_unit(sums[used]), method="average", metric="cosine")
        component[used] = fcluster(tree, t=1.0 - merge_similarity, criterion="distance") - 1
    merged_sizes = np.bincount(component, weights=sizes)
    # Relabel by size (largest first), ties by first k-means cluster: deterministic.
    order = np.lexsort((np.arange(len(merged_sizes)), -merged_sizes))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    kmeans_to_cluster = rank[component].astype(np.int64)
    return Clustering(kmeans_to_cluster[kmeans_labels], kmeans_labels, k, kmeans_to_cluster)


def cluster_summary(labels: np.ndarray, requested: int) -> dict[str, float]:
    """Normalised entropy H / ln(requested), largest share, effective clusters exp(H), count."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {
            "cluster_entropy": 0.0,
            "largest_cluster_share": 0.0,
            "effective_clusters": 0.0,
            "clusters": 0.0,
        }
    counts = np.bincount(labels)
    p = counts[counts > 0] / len(labels)
    entropy = max(0.0, float(-(p * np.log(p)).sum()))
    return {
        "cluster_entropy": entropy / math.log(requested) if requested > 1 else 0.0,
        "largest_cluster_share": float(p.max()),
        "effective_clusters": float(math.exp(entropy)),
        "clusters": float(len(p)),
    }


def nearest_neighbours(
    embeddings: np.ndarray, k: int, block_entries: int = KNN_BLOCK_ENTRIES
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest other rows by cosine similarity: (similarities, indices), N x k, best
    first. Blocks of rows are multiplied with all rows (torch matmul) and reduced with top-k.

    (Using the symmetry to halve the products was tried: the column-wise top-k of each block
    then costs more than the saved products on CPU.)"""
    import torch

    emb = torch.from_numpy(np.ascontiguousarray(_unit(embeddings)))
    n = len(emb)
    k = max(0, min(int(k), n - 1))
    best = np.full((n, k), -np.inf, dtype=np.float32)
    where = np.full((n, k), -1, dtype=np.int64)
    if k:
        step = max(1, block_entries // n)
        with torch.no_grad():
            for s in range(0, n, step):
                sim = emb[s : s + step] @ emb.T
                rows = torch.arange(sim.shape[0])
                sim[rows, rows + s] = -float("inf")
                values, index = torch.topk(sim, k, dim=1)
                best[s : s + step], where[s : s + step] = values.numpy(), index.numpy()
    return best, where


def knn_scores(
    embeddings: np.ndarray,
    k: int = DEFAULT_KNN,
    redundancy_similarity: float = DEFAULT_REDUNDANCY_SIMILARITY,
    lists: np.ndarray | None = None,
    n_probe: int = KNN_PROBES,
) -> pd.DataFrame:
    """kNN scores per row: `outlier_score`, `typicality`, `nn_similarity`, `nn_index`,
    `redundant` (see the module doc). Rows are L2-normalised first; an image is never its own
    neighbour, but an identical other image is (distance 0). With `lists` (a cluster label per
    row) the neighbours come from the IVF search over those clusters, probing `n_probe`."""
    n = len(embeddings)
    if lists is None:
        sims, index = nearest_neighbours(embeddings, k)
    else:
        from ssl_assets.curation.knn import ivf_neighbours

        emb = _unit(embeddings)
        k = max(0, min(int(k), n - 1))
        sims, index = ivf_neighbours(emb, emb, lists, k, n_probe, self_index=np.arange(n))
        sims[index < 0] = -1.0  # fewer than k in the probed clusters: the farthest possible
    if sims.shape[1] == 0:
        sims, index = np.full((n, 1), np.nan, np.float32), np.full((n, 1), -1, np.int64)
    dist = np.sqrt(np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None))
    nn_sim = sims[:, 0].astype(np.float64)
    return pd.DataFrame(
        {
            "outlier_score": dist[:, -1],
            "typicality": 1.0 / (dist.mean(axis=1) + 1e-6),
            "nn_similarity": nn_sim,
            "nn_index": index[:, 0],
            "redundant": np.nan_to_num(nn_sim, nan=-1.0) >= redundancy_similarity,
        }
    )


def project_2d(embeddings: np.ndarray, seed: int = 0, max_fit: int = MAX_PCA_FIT) -> np.ndarray:
    """2-D PCA projection (scikit-learn, fitted on at most `max_fit` rows), N x 2 float64."""
    from sklearn.decomposition import PCA

    emb = _unit(embeddings)
    n = len(emb)
    if n < 2:
        return np.zeros((n, 2))
    rng = np.random.default_rng(seed)
    fit = emb if n <= max_fit else emb[np.sort(rng.choice(n, max_fit, replace=False))]
    components = min(2, fit.shape[0], fit.shape[1])
    out = np.zeros((n, 2))
    out[:, :components] = PCA(n_components=components, random_state=seed).fit(fit).transform(emb)
    return out


@dataclass
class DiversityReport:
    """Per-image scores, per-cluster table and the summary metrics of one diversity audit."""

    per_image: pd.DataFrame  # cluster, kmeans_cluster, outlier_score, typicality, nn_*, x, y
    clusters: pd.DataFrame  # cluster, images, share, kmeans_clusters, mean_outlier, medoid
    metrics: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)

    def examples(self, which: str, clusters: int = 3, per_cluster: int = 8) -> list[tuple]:
        """(cluster, images, positions of its most typical images) for the `largest` or
        `smallest` clusters."""
        if self.clusters.empty:
            return []
        table = self.clusters.sort_values(["images", "cluster"], ascending=which != "largest")
        out = []
        for row in table.head(clusters).itertuples(index=False):
            members = self.per_image[self.per_image["cluster"] == row.cluster]
            best = members.sort_values("typicality", ascending=False, kind="stable")
            out.append((int(row.cluster), int(row.images), best.index[:per_cluster].to_numpy()))
        return out


def measure_diversity(
    embeddings: np.ndarray,
    n_clusters: int | None = None,
    merge_similarity: float = DEFAULT_MERGE_SIMILARITY,
    knn: int = DEFAULT_KNN,
    redundancy_similarity: float = DEFAULT_REDUNDANCY_SIMILARITY,
    seed: int = 0,
) -> DiversityReport:
    """The whole diversity audit of N embeddings (any source: pinned today, an encoder later)."""
    emb = _unit(embeddings)
    n = len(emb)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    clustering = cluster_embeddings(emb, n_clusters, merge_similarity, seed)
    seconds["cluster"] = time.perf_counter() - started
    started = time.perf_counter()
    lists = clustering.kmeans_labels if n > EXACT_KNN_MAX else None
    scores = knn_scores(emb, knn, redundancy_similarity, lists=lists)
    seconds["knn"] = time.perf_counter() - started
    started = time.perf_counter()
    xy = project_2d(emb, seed)
    seconds["projection"] = time.perf_counter() - started
    per_image = scores.assign(
        cluster=clustering.labels, kmeans_cluster=clustering.kmeans_labels, x=xy[:, 0], y=xy[:, 1]
    )
    summary = cluster_summary(clustering.labels, clustering.requested)
    rows = []
    for cluster, members in per_image.groupby("cluster", sort=True):
        rows.append(
            {
                "cluster": int(cluster),
                "images": len(members),
                "share": len(members) / n,
                "kmeans_clusters": int((clustering.kmeans_to_cluster == cluster).sum()),
                "mean_outlier": float(members["outlier_score"].mean()),
                "medoid": int(members["typicality"].fillna(0).idxmax()),
            }
        )
    clusters = pd.DataFrame(
        rows,
        columns=["cluster", "images", "share", "kmeans_clusters", "mean_outlier", "medoid"],
    )
    redundant = per_image["redundant"].to_numpy()
    outlier = per_image["outlier_score"].dropna()
    metrics = {
        "images": float(n),
        "clusters_requested": float(clustering.requested),
        **summary,
        "redundancy": float(redundant.mean()) if n else 0.0,
        "outlier_score_median": float(outlier.median()) if len(outlier) else 0.0,
        "outlier_score_p99": float(outlier.quantile(0.99)) if len(outlier) else 0.0,
    }
    return DiversityReport(per_image, clusters, metrics, seconds)


def diversity_gates(
    report: DiversityReport,
    min_cluster_entropy: float,
    max_largest_cluster_share: float,
    min_images: int,
) -> list[Verdict]:
    """The two diversity gates: entropy at least a floor, largest cluster at most a ceiling.

    With fewer than `min_images` images both pass and say so: k-means on a handful of images
    measures nothing, and a gate must not block a run for noise.
    """
    n = int(report.metrics["images"])
    entropy = report.metrics["cluster_entropy"]
    largest = report.metrics["largest_cluster_share"]
    common = {
        "images": n,
        "clusters_requested": int(report.metrics["clusters_requested"]),
        "clusters": int(report.metrics["clusters"]),
        "effective_clusters": round(report.metrics["effective_clusters"], 3),
    }
    if n < min_images:
        why = (
            f"only {n} included train images; at least {min_images} are needed to judge "
            "diversity, so this gate passes without judging"
        )
        return [
            Verdict("cluster_entropy_floor", True, "cluster_entropy", entropy, why, common),
            Verdict("largest_cluster_ceiling", True, "largest_cluster_share", largest, why, common),
        ]
    ok_entropy = entropy >= min_cluster_entropy
    ok_largest = largest <= max_largest_cluster_share
    return [
        Verdict(
            "cluster_entropy_floor",
            ok_entropy,
            "cluster_entropy",
            entropy,
            f"normalised cluster-size entropy {entropy:.3f} "
            + ("is at least" if ok_entropy else "is below")
            + f" the floor {min_cluster_entropy:.3f}"
            + ("" if ok_entropy else ": the train split is dominated by few modes"),
            {**common, "min_value": min_cluster_entropy},
        ),
        Verdict(
            "largest_cluster_ceiling",
            ok_largest,
            "largest_cluster_share",
            largest,
            f"largest cluster holds {largest:.1%} of the train split "
            + ("(ceiling " if ok_largest else "— above the ceiling ")
            + f"{max_largest_cluster_share:.1%}"
            + (")" if ok_largest else ""),
            {**common, "max_value": max_largest_cluster_share},
        ),
    ]


def score_tables(
    report: DiversityReport, train: pd.DataFrame, stamp: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows `diversity_scores` (one per train image) and `diversity_clusters` (one per
    merged cluster) record; `train` holds image_id and batch in the audited order."""
    per_image = report.per_image
    ids = train["image_id"].to_numpy(object)
    scores = pd.DataFrame(
        {
            "image_id": ids,
            "batch": train["batch"].to_numpy(object),
            **{
                c: per_image[c].to_numpy()
                for c in ("cluster", "kmeans_cluster", "outlier_score", "typicality")
            },
            "nn_similarity": per_image["nn_similarity"].to_numpy(),
            "nn_image_id": [ids[i] if i >= 0 else None for i in per_image["nn_index"]],
            "redundant": per_image["redundant"].to_numpy(),
            "x": per_image["x"].to_numpy(),
            "y": per_image["y"].to_numpy(),
            **stamp,
        }
    )
    clusters = report.clusters.assign(
        medoid_id=[ids[i] for i in report.clusters["medoid"]], **stamp
    ).drop(columns="medoid")
    return scores, clusters


def sample_rows(
    report: DiversityReport, read_rows: Callable[[np.ndarray], np.ndarray]
) -> list[tuple[str, list[np.ndarray]]]:
    """Captioned rows of images for a contact sheet: the most typical images of the largest
    and smallest clusters, and the images with the highest outlier scores. `read_rows(positions)`
    returns the pixels of the audited images at those positions (only those are read)."""
    n = len(report.per_image)
    largest = report.examples("largest")
    shown = {cluster for cluster, _, _ in largest}
    smallest = [
        e for e in report.examples("smallest", clusters=3 + len(shown)) if e[0] not in shown
    ]
    examples = [("largest", e) for e in largest] + [("smallest", e) for e in smallest[:3]]
    outliers = report.per_image["outlier_score"].dropna().sort_values(ascending=False).index[:8]
    wanted = sorted({int(p) for _, e in examples for p in e[2]} | {int(p) for p in outliers})
    if not wanted:
        return []
    pixels = read_rows(np.asarray(wanted))
    where = {p: k for k, p in enumerate(wanted)}
    rows = []
    for which, (cluster, size, positions) in examples:
        caption = f"{which}: cluster {cluster} ({size} images, {size / n:.1%})"
        rows.append((caption, [pixels[where[int(p)]] for p in positions]))
    rows.append(("highest outlier scores", [pixels[where[int(p)]] for p in outliers]))
    return rows
