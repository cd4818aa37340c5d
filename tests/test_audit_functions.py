"""Audit functions on data where the answer is known: coreset coverage, entropy of a repeated
picture, drift statistics, the shortcut probe and how attribute columns are read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssl_assets.audit.bias import (
    MISSING,
    NO_ATTRIBUTES_REASON,
    attribute_columns,
    measure_bias,
    share_drift,
    shortcut_probe,
    subgroup_shares,
)
from ssl_assets.audit.coreset import k_center_greedy, select_labeling_candidates
from ssl_assets.audit.diversity import (
    cluster_summary,
    diversity_gates,
    knn_scores,
    measure_diversity,
    nearest_neighbours,
)
from ssl_assets.curation.semantic import pinned_embed
from tests.factories import smooth_image


def _separated_clusters(n_clusters: int, per_cluster: int, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_clusters] * 10.0
    points = np.concatenate([c + rng.normal(0, 0.3, (per_cluster, dim)) for c in centres]).astype(
        np.float32
    )
    return points, np.repeat(np.arange(n_clusters), per_cluster)


def test_coreset_covers_every_cluster_before_a_second_from_any():
    points, cluster = _separated_clusters(n_clusters=6, per_cluster=25)
    order = np.random.default_rng(1).permutation(len(points))  # no help from the row order
    points, cluster = points[order], cluster[order]
    picked = k_center_greedy(points, budget=12)
    first_round = cluster[picked["position"][:6]]
    second_round = cluster[picked["position"][6:]]
    assert sorted(first_round) == list(range(6))
    assert sorted(second_round) == list(range(6))
    assert picked["rank"].tolist() == list(range(1, 13))


def test_labeled_images_are_centres_and_never_picked():
    points, cluster = _separated_clusters(n_clusters=5, per_cluster=20)
    labeled = cluster < 2  # clusters 0 and 1 are already labeled
    picked, why = select_labeling_candidates(points, labeled, budget=3)
    assert not labeled[picked["position"]].any()
    assert sorted(cluster[picked["position"]]) == [2, 3, 4]  # the uncovered clusters first
    assert "full budget of 3" in why


def test_coreset_stops_at_near_duplicates():
    base = np.random.default_rng(0).normal(size=(3, 32))
    copies = np.concatenate([b + np.random.default_rng(1).normal(0, 1e-3, (10, 32)) for b in base])
    picked, why = select_labeling_candidates(copies, np.zeros(len(copies), bool), budget=10)
    assert len(picked) == 3 and "near duplicate" in why


def _noisy_copies(n: int, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.asarray(smooth_image(3).resize((32, 32))).astype(float)
    noisy = base + rng.normal(0, sigma, (n, *base.shape))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_one_picture_repeated_with_noise_has_near_zero_entropy():
    report = measure_diversity(pinned_embed(_noisy_copies(60, sigma=25)))
    assert report.metrics["cluster_entropy"] < 0.1
    assert report.metrics["largest_cluster_share"] > 0.9
    assert report.metrics["clusters_requested"] >= 5  # k-means did split it; merging undid it
    gates = {g.check_name: g.passed for g in diversity_gates(report, 0.5, 0.5, 30)}
    assert gates == {"cluster_entropy_floor": False, "largest_cluster_ceiling": False}

    distinct = np.stack([np.asarray(smooth_image(s).resize((32, 32))) for s in range(80)])
    healthy = measure_diversity(pinned_embed(distinct))
    assert healthy.metrics["cluster_entropy"] > 0.8
    assert all(g.passed for g in diversity_gates(healthy, 0.5, 0.5, 30))
    # too few images: the gates pass and say why
    few = measure_diversity(pinned_embed(_noisy_copies(10, sigma=25)))
    outcomes = diversity_gates(few, 0.5, 0.5, 30)
    assert all(g.passed and "at least 30" in g.description for g in outcomes)


def test_cluster_summary_and_knn_scores():
    summary = cluster_summary(np.array([0, 0, 1, 1]), requested=2)
    assert summary["cluster_entropy"] == pytest.approx(1.0)
    assert summary["effective_clusters"] == pytest.approx(2.0)
    emb = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    scores = knn_scores(emb, k=1, redundancy_similarity=0.95)
    assert scores["nn_index"].tolist()[:2] == [1, 0]  # an identical other image, never itself
    assert scores["redundant"].tolist() == [True, True, False, False]
    assert scores["outlier_score"].iloc[0] == pytest.approx(0.0, abs=1e-3)


def test_share_drift_total_variation_and_chi_square():
    earlier = pd.Series(["a"] * 50 + ["b"] * 50)
    same = share_drift(pd.Series(["a"] * 25 + ["b"] * 25), earlier)
    assert same["tv_distance"] == pytest.approx(0.0) and same["p_value"] > 0.5
    shifted = share_drift(pd.Series(["a"] * 45 + ["b"] * 5), earlier)
    assert shifted["tv_distance"] == pytest.approx(0.4) and shifted["p_value"] < 1e-4
    new_group = share_drift(pd.Series(["c"] * 10), earlier)
    assert new_group["tv_distance"] == pytest.approx(1.0)


def test_shortcut_probe_finds_brightness_and_not_chance():
    rng = np.random.default_rng(0)
    n = 200
    features = pd.DataFrame(
        {
            "brightness": rng.uniform(0, 1, n),
            "contrast": rng.uniform(0, 1, n),
            "log2_resolution": np.full(n, 5.0),
            "aspect_ratio": np.ones(n),
        }
    )
    bright = pd.Series(np.where(features["brightness"] > 0.5, "day", "night"))
    probe = shortcut_probe(features, bright)
    assert probe["lift"] > 0.9 and probe["top_feature"] == "brightness"
    random_groups = pd.Series(rng.choice(["x", "y", "z"], n))
    assert shortcut_probe(features, random_groups)["lift"] < 0.3
    assert "only" in shortcut_probe(features.head(12), bright.head(12))["skipped_reason"]


def test_attribute_columns_skip_the_split_pin_bin_numbers_and_add_labels():
    ids = pd.Series([f"i{k}" for k in range(40)])
    long = pd.DataFrame(
        [{"image_id": f"i{k}", "key": "split", "value": "train"} for k in range(40)]
        + [{"image_id": f"i{k}", "key": "age", "value": str(20 + k)} for k in range(40)]
        + [{"image_id": f"i{k}", "key": "site", "value": "n"} for k in range(30)]
    )
    labels = pd.DataFrame({"image_id": ["i0", "i1"], "label": ["cat", "dog"]})
    columns, notes = attribute_columns(ids, long, labels)
    assert list(columns.columns) == ["age", "label", "site"]
    assert notes["age"].startswith("numeric") and columns["age"].nunique() == 5
    assert columns["label"].notna().sum() == 2
    shares = subgroup_shares(columns["site"], {"all": np.ones(40, bool)})
    assert shares.set_index("subgroup").loc[MISSING, "images"] == 10
    assert shares.set_index("subgroup").loc["n", "share"] == 1.0

    nothing, _ = attribute_columns(ids, long[long["key"] == "split"], None)
    images = pd.DataFrame(
        {
            "batch": "b",
            "split": "train",
            "include": True,
            "brightness": 0.5,
            "contrast": 0.1,
            "resolution": 32.0,
            "aspect_ratio": 1.0,
        },
        index=range(40),
    )
    report = measure_bias(images, nothing, "b", 0.05, 0.1, 0.01, 0.5)
    assert report.attributes == [] and report.no_attributes_reason == NO_ATTRIBUTES_REASON
    assert all(g.passed and g.description == NO_ATTRIBUTES_REASON for g in report.gates())


def test_blocked_nearest_neighbours_equal_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    x[5] = x[7]  # an identical pair: each is the other's nearest neighbour
    sims, index = nearest_neighbours(x, 4, block_entries=300 * 37)  # 9 uneven row blocks
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_allclose(sims, -np.sort(-full, axis=1)[:, :4], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, index, 1), sims, atol=1e-5)
    assert index[5, 0] == 7 and index[7, 0] == 5
