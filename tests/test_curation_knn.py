"""The IVF index: exact when every list is probed, true neighbours (never itself) when not."""

from __future__ import annotations

import numpy as np

from ssl_assets.audit.diversity import knn_scores
from ssl_assets.curation.knn import ivf_neighbours
from ssl_assets.curation.semantic import cluster_labels


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 16))
    return _unit(centres[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, 16)))


def test_probing_every_list_is_the_exact_search():
    x = _clustered()
    labels = cluster_labels(x, 8, seed=0)
    sims, index = ivf_neighbours(x, x, labels, 5, n_probe=8, self_index=np.arange(len(x)))
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_allclose(sims, -np.sort(-full, axis=1)[:, :5], atol=1e-5)
    assert (index != np.arange(len(x))[:, None]).all()  # never its own neighbour


def test_fewer_probes_return_true_neighbours_and_find_near_copies():
    x = _clustered(seed=1)
    copies = _unit(x[:50] + 0.02 * np.random.default_rng(2).normal(size=(50, 16)))
    base = np.concatenate([x, copies])
    labels = cluster_labels(base, 10, seed=0)
    sims, index = ivf_neighbours(
        copies, base, labels, 3, n_probe=2, self_index=len(x) + np.arange(50)
    )
    found = index >= 0
    # every similarity returned is the true one of the pair it names
    np.testing.assert_allclose(
        sims[found],
        np.einsum("ij,ij->i", np.repeat(copies, 3, 0)[found.ravel()], base[index[found]]),
        atol=1e-5,
    )
    assert (index[:, 0] == np.arange(50)).mean() >= 0.96  # each copy finds its original


def test_approximate_knn_scores_agree_with_the_exact_ones():
    x = _clustered(n=800, seed=3)
    labels = cluster_labels(x, 10, seed=0)
    exact = knn_scores(x, k=5)
    approx = knn_scores(x, k=5, lists=labels, n_probe=3)
    assert (approx["nn_index"] == exact["nn_index"]).mean() > 0.9
    assert np.corrcoef(approx["outlier_score"], exact["outlier_score"])[0, 1] > 0.95
    assert (approx["outlier_score"] >= exact["outlier_score"] - 1e-5).all()  # never closer
