"""Linear and weighted-kNN probes on frozen features, hyper-parameters chosen on val.

Why both: the linear probe (logistic regression on frozen features) is the standard SSL
protocol (SimCLR, arXiv:2002.05709; MoCo, arXiv:1911.05722) and measures linear separability;
the weighted kNN (InstDisc, arXiv:1805.01978, as used by DINO, arXiv:2104.14294) needs no
training at all and measures the neighbourhood structure. Hyper-parameters (C; k and the
temperature) are selected on the val split only; the test split is scored once with the chosen
setting, so test accuracy stays an unbiased estimate.

Features are standardised for the logistic regression (fit on the probe's own training
features), which makes one C grid work across encoders whose feature scales differ by orders of
magnitude; the kNN uses cosine similarity, like the training monitor (`ssl_assets.ml.monitor`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssl_assets.ml.monitor import knn_predict

DEFAULT_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
DEFAULT_KS = (5, 10, 20, 50)
DEFAULT_TEMPERATURES = (0.03, 0.07, 0.2)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of `pred == labels` (0.0 for no samples)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float((pred == labels).mean()) if labels.size else 0.0


@dataclass
class LinearProbe:
    """A fitted standardise + logistic-regression probe; `C` was chosen on val."""

    C: float
    val_accuracy: float
    mean: np.ndarray
    scale: np.ndarray
    model: Any
    num_classes: int
    val_scores: dict[float, float] = field(default_factory=dict)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """N x num_classes probabilities (classes unseen in training get 0)."""
        p = self.model.predict_proba(self._z(x))
        out = np.zeros((p.shape[0], self.num_classes))
        out[:, self.model.classes_] = p
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self._z(x)), dtype=np.int64)

    @property
    def params(self) -> dict[str, Any]:
        return {"C": self.C}


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 1000,
    num_classes: int | None = None,
) -> LinearProbe:
    """Fit one logistic regression per C on train, keep the one with the best val accuracy
    (ties: the smaller C, i.e. the stronger regularisation)."""
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_x, dtype=np.float64)
    train_y = np.asarray(train_y, dtype=np.int64)
    if num_classes is None:
        num_classes = int(max(train_y.max(), np.asarray(val_y).max())) + 1
    mean = train_x.mean(axis=0)
    scale = train_x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (train_x - mean) / scale
    best: LinearProbe | None = None
    scores: dict[float, float] = {}
    for C in sorted(Cs):
        model: Any
        if np.unique(train_y).size < 2:  # one class: nothing to fit, predict it
            from sklearn.dummy import DummyClassifier

            model = DummyClassifier(strategy="most_frequent").fit(z, train_y)
        else:
            model = LogisticRegression(C=C, max_iter=max_iter)
            with warnings.catch_warnings():  # tiny budgets may stop early: still a valid probe
                warnings.simplefilter("ignore")
                model.fit(z, train_y)
        probe = LinearProbe(C, 0.0, mean, scale, model, num_classes)
        probe.val_accuracy = accuracy(probe.predict(val_x), val_y)
        scores[C] = probe.val_accuracy
        if best is None or probe.val_accuracy > best.val_accuracy:
            best = probe
    assert best is not None, "Cs is empty"
    best.val_scores = scores
    return best


@dataclass
class KNNProbe:
    """Weighted kNN over a bank of training features; `k` and `temperature` chosen on val."""

    k: int
    temperature: float
    val_accuracy: float
    bank: torch.Tensor
    bank_labels: torch.Tensor
    num_classes: int
    val_scores: dict[str, float] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        q = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        pred = knn_predict(
            self.bank, self.bank_labels, q, self.num_classes, self.k, self.temperature
        )
        return pred.numpy().astype(np.int64)

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Normalised weighted votes (what `predict` takes the argmax of)."""
        bank = F.normalize(self.bank.float(), dim=1)
        q = F.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float32), dim=1)
        k = min(self.k, bank.shape[0])
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], self.num_classes)
        votes.scatter_add_(1, self.bank_labels.long()[idx], (sim / self.temperature).exp())
        return (votes / votes.sum(dim=1, keepdim=True)).numpy()

    @property
    def params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature}


def fit_knn_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    num_classes: int | None = None,
) -> KNNProbe:
    """Grid over `ks` (capped at the bank size) x `temperatures`, best val accuracy wins
    (ties: the first in grid order, i.e. smaller k, lower temperature)."""
    bank = torch.as_tensor(np.asarray(train_x), dtype=torch.float32)
    bank_labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    if num_classes is None:
        num_classes = int(max(int(bank_labels.max()), int(np.asarray(val_y).max()))) + 1
    grid_ks = sorted({min(int(k), bank.shape[0]) for k in ks})
    best: KNNProbe | None = None
    scores: dict[str, float] = {}
    for k in grid_ks:
        for t in temperatures:
            probe = KNNProbe(k, float(t), 0.0, bank, bank_labels, num_classes)
            probe.val_accuracy = accuracy(probe.predict(val_x), val_y)
            scores[f"k={k},T={t:g}"] = probe.val_accuracy
            if best is None or probe.val_accuracy > best.val_accuracy:
                best = probe
    assert best is not None, "empty k / temperature grid"
    best.val_scores = scores
    return best


PROBES = ("linear", "knn")


def fit_probe(
    kind: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int | None = None,
    **grid: Any,
) -> LinearProbe | KNNProbe:
    """`fit_linear_probe` (`kind="linear"`, grid `Cs`) or `fit_knn_probe` (`"knn"`, grids
    `ks`, `temperatures`)."""
    if kind == "linear":
        return fit_linear_probe(train_x, train_y, val_x, val_y, num_classes=num_classes, **grid)
    if kind == "knn":
        return fit_knn_probe(train_x, train_y, val_x, val_y, num_classes=num_classes, **grid)
    raise ValueError(f"unknown probe {kind!r}; choose from {PROBES}")
