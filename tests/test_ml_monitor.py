"""Collapse indicators (embedding std, RankMe) and the weighted kNN monitor."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_assets.ml.monitor import (
    collapse_metrics,
    effective_rank,
    embedding_std,
    knn_accuracy,
    knn_predict,
)


class _ConstantEncoder(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], -1)


def test_constant_encoder_is_flagged_as_collapsed() -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        z = _ConstantEncoder(16)(torch.randn(64, 3, 8, 8))
    assert embedding_std(z) == pytest.approx(0.0, abs=1e-6)
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-3)


def test_gaussian_features_are_healthy_and_high_rank() -> None:
    torch.manual_seed(0)
    d = 32
    z = torch.randn(1024, d)
    assert embedding_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert effective_rank(z) > 0.9 * d
    metrics = collapse_metrics(z)
    assert metrics["embedding_std_reference"] == pytest.approx(1 / math.sqrt(d))


def test_effective_rank_counts_the_used_dimensions() -> None:
    torch.manual_seed(0)
    low_rank = torch.randn(512, 3) @ torch.randn(3, 64)  # rank 3 in 64 dimensions
    assert 2.0 < effective_rank(low_rank) <= 3.0 + 1e-3
    # RankMe by hand: singular values (3, 1) -> p = (0.75, 0.25)
    diag = torch.diag(torch.tensor([3.0, 1.0]))
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(diag, eps=0.0) == pytest.approx(expected, rel=1e-9)
    assert effective_rank(torch.zeros(4, 4)) == 0.0


def test_knn_separates_clusters() -> None:
    torch.manual_seed(0)
    centers = torch.randn(3, 16) * 5
    labels = torch.arange(3).repeat_interleave(20)
    train = centers[labels] + 0.1 * torch.randn(60, 16)
    val_labels = torch.arange(3).repeat(5)
    val = centers[val_labels] + 0.1 * torch.randn(15, 16)
    assert knn_accuracy(train, labels, val, val_labels, k=5) == 1.0
    assert knn_accuracy(train, labels, val, (val_labels + 1) % 3, k=5) == 0.0


def test_knn_votes_are_weighted_by_exp_similarity_over_temperature() -> None:
    # one very close neighbour of class 1 against two farther neighbours of class 0
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[0.9, 0.1]])
    sims = (
        torch.nn.functional.normalize(train, dim=1) @ torch.nn.functional.normalize(query, dim=1).T
    )
    for temperature in (0.07, 10.0):
        w = torch.exp(sims.squeeze(1) / temperature)
        expected = 1 if w[0] > w[1] + w[2] else 0
        got = knn_predict(train, labels, query, num_classes=2, k=3, temperature=temperature)
        assert got.tolist() == [expected]
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.07).item() == 1  # weighted
    assert knn_predict(train, labels, query, 2, k=3, temperature=10.0).item() == 0  # ~majority
