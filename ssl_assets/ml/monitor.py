"""Collapse indicators and a kNN monitor for self-supervised training.

Why: an SSL loss going down does not mean the representation is good; the classic failure is
*collapse*, where the encoder maps every image to (nearly) the same point or to a low-dimensional
subspace. Cheap label-free signals catch it during training:

- `embedding_std`: per-dimension standard deviation of L2-normalised embeddings, averaged over
  dimensions (SimSiam, Chen & He, 2021, arXiv:2011.10566, Sec. 4.1): 0 for a collapsed encoder,
  about 1/sqrt(d) for embeddings spread over the sphere.
- `effective_rank`: RankMe (Garrido, Balestriero, Najman & LeCun, 2023, "RankMe: Assessing the
  Downstream Performance of Pretrained Self-Supervised Representations by Their Rank",
  arXiv:2210.02885): `exp(entropy(p))`, p = singular values / their L1 norm (+ eps); 1 for a
  rank-one (collapsed) embedding matrix, up to min(N, d).

With a few labels, the weighted kNN classifier of InstDisc (Wu et al., 2018, arXiv:1805.01978)
as used by DINO (arXiv:2104.14294) tracks downstream quality without training a probe: cosine
similarities to the k nearest training features, votes weighted by `exp(sim / T)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def embedding_std(embeddings: Tensor) -> float:
    """Mean over dimensions of the std over samples of L2-normalised embeddings (N x d)."""
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"expected N x d embeddings with N >= 2, got {tuple(embeddings.shape)}")
    z = F.normalize(embeddings.float(), dim=1)
    return float(z.std(dim=0).mean())


@torch.no_grad()
def effective_rank(embeddings: Tensor, eps: float = 1e-7) -> float:
    """RankMe: `exp(-sum p_k log p_k)` with `p_k = sigma_k / ||sigma||_1 + eps` (N x d input)."""
    if embeddings.dim() != 2:
        raise ValueError(f"expected N x d embeddings, got {tuple(embeddings.shape)}")
    s = torch.linalg.svdvals(embeddings.double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def collapse_metrics(embeddings: Tensor) -> dict[str, float]:
    """Both indicators plus the healthy reference `1/sqrt(d)` for the std."""
    d = embeddings.shape[1]
    return {
        "embedding_std": embedding_std(embeddings),
        "embedding_std_reference": 1.0 / math.sqrt(d),
        "effective_rank": effective_rank(embeddings),
        "embedding_dim": float(d),
    }


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int | None = None,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted kNN labels for `query_features` (DINO's `knn_classifier`).

    Features are L2-normalised; for each query the k most cosine-similar training features vote
    for their label with weight `exp(sim / temperature)`; the class with the largest total wins.
    Queries are processed in chunks of `chunk_size` to bound memory.
    """
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError("train_features and train_labels differ in length")
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long().to(train.device)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    k = min(k, train.shape[0])
    preds = []
    for start in range(0, query_features.shape[0], chunk_size):
        q = F.normalize(query_features[start : start + chunk_size].float().to(train.device), dim=1)
        sim, idx = (q @ train.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy of `knn_predict` on the validation features."""
    if num_classes is None:
        num_classes = int(max(int(train_labels.max()), int(val_labels.max()))) + 1
    preds = knn_predict(train_features, train_labels, val_features, num_classes, k, temperature)
    return float((preds.cpu() == val_labels.long().cpu()).float().mean())


def knn_two_fold(features: Tensor, labels: Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """Mean `knn_accuracy` of the two halves of a fixed, shuffled labelled subset, each half
    classified with the other as the labelled bank (the training loop's per-epoch kNN figure:
    no separate bank split is needed)."""
    half = features.shape[0] // 2
    a, b = slice(0, half), slice(half, None)
    num_classes = int(labels.max()) + 1
    acc_ab = knn_accuracy(
        features[a], labels[a], features[b], labels[b], k, temperature, num_classes
    )
    acc_ba = knn_accuracy(
        features[b], labels[b], features[a], labels[a], k, temperature, num_classes
    )
    return 0.5 * (acc_ab + acc_ba)
