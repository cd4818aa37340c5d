"""Label budgets, linear / kNN probes, frozen embeddings and the label-efficiency table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.evaluate import (
    LabelBudget,
    embed_images,
    encode_labels,
    fit_knn_probe,
    fit_linear_probe,
    label_efficiency,
    plot_label_efficiency,
    sample_label_budget,
    summarise,
)

TINY_CNN = {"widths": (8, 16, 32), "strides": (2, 2, 2)}


def blobs(n: int, classes: int = 3, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: well separated class means, unit noise."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0.0, 4.0, (classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(0.0, 1.0, (n, dim)), y


def colour_images(n: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32x32 uint8 images whose dominant colour is the class (plus a class-dependent square)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])[:classes]
    y = rng.integers(0, classes, n)
    img = palette[y][:, None, None, :] + rng.normal(0.0, 25.0, (n, 32, 32, 3))
    for i, c in enumerate(y):
        img[i, 4 + 6 * c : 12 + 6 * c, 8:16] = 255
    return np.clip(img, 0, 255).astype(np.uint8), y


def split(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int) -> tuple:
    return (
        (x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :]),
        (y[:n_train], y[n_train : n_train + n_val], y[n_train + n_val :]),
    )


# --------------------------------------------------------------------------- budgets


def test_budget_takes_max_of_fraction_and_k_per_class() -> None:
    labels = np.array([0] * 100 + [1] * 30 + [2] * 4)
    budget = LabelBudget(fraction=0.1, min_per_class=5)
    idx = sample_label_budget(labels, budget, seed=0)
    counts = np.bincount(labels[idx], minlength=3)
    # class 0: 10% of 100 = 10 > 5; class 1: ceil(3) < 5 -> 5; class 2: only 4 exist
    assert counts.tolist() == [10, 5, 4]
    assert [budget.per_class(n) for n in (100, 30, 4)] == [10, 5, 4]
    assert len(np.unique(idx)) == idx.size


def test_budget_sampling_respects_seeds_and_is_nested() -> None:
    labels = np.repeat(np.arange(4), 50)
    small, large = LabelBudget(0.1, 2), LabelBudget(0.5, 2)
    a = sample_label_budget(labels, small, seed=3)
    assert np.array_equal(a, sample_label_budget(labels, small, seed=3))
    assert not np.array_equal(a, sample_label_budget(labels, small, seed=4))
    assert set(a) <= set(sample_label_budget(labels, large, seed=3))
    with pytest.raises(ValueError):
        LabelBudget(1.5)


def test_encode_labels_is_sorted_and_stable() -> None:
    codes, names = encode_labels(["dog", "cat", "dog", "bird"])
    assert names == ["bird", "cat", "dog"]
    assert codes.tolist() == [2, 1, 2, 0]


# --------------------------------------------------------------------------- probes


def test_probes_separate_blobs_and_fall_to_chance_on_shuffled_labels() -> None:
    x, y = blobs(600, classes=3)
    (tr, va, te), (ytr, yva, yte) = split(x, y, 300, 150)
    linear = fit_linear_probe(tr, ytr, va, yva, Cs=(0.01, 1.0))
    knn = fit_knn_probe(tr, ytr, va, yva, ks=(5, 20), temperatures=(0.07,))
    assert (linear.predict(te) == yte).mean() > 0.95
    assert (knn.predict(te) == yte).mean() > 0.95
    assert linear.C in (0.01, 1.0) and set(linear.val_scores) == {0.01, 1.0}
    proba = linear.predict_proba(te)
    assert proba.shape == (te.shape[0], 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.allclose(knn.predict_proba(te).sum(axis=1), 1.0)

    shuffled = np.random.default_rng(1).permutation(ytr)
    chance_linear = fit_linear_probe(tr, shuffled, va, yva, Cs=(0.01, 1.0))
    chance_knn = fit_knn_probe(tr, shuffled, va, yva, ks=(5, 20), temperatures=(0.07,))
    assert (chance_linear.predict(te) == yte).mean() < 1 / 3 + 0.15
    assert (chance_knn.predict(te) == yte).mean() < 1 / 3 + 0.15


def test_random_encoder_features_of_colour_images_are_probe_separable() -> None:
    torch.manual_seed(0)
    encoder = build_backbone("small_cnn", **TINY_CNN)
    x, y = colour_images(240, classes=3)
    feats = embed_images(encoder, x, batch_size=64)
    assert feats.shape == (240, 32) and feats.dtype == np.float32
    assert encoder.training  # mode restored (it was a freshly built module in train mode)
    assert np.allclose(feats[:10], embed_images(encoder, x[:10]), atol=1e-5)  # batch-independent
    (tr, va, te), (ytr, yva, yte) = split(feats, y, 120, 60)
    assert (fit_linear_probe(tr, ytr, va, yva).predict(te) == yte).mean() > 0.9
    shuffled = np.random.default_rng(0).permutation(ytr)
    assert (fit_linear_probe(tr, shuffled, va, yva).predict(te) == yte).mean() < 1 / 3 + 0.2


def test_label_efficiency_table_summary_and_plot(tmp_path: Path) -> None:
    x, y = blobs(400, classes=3)
    (tr, va, te), labels = split(x, y, 200, 100)
    noise = np.random.default_rng(0).normal(size=x.shape)
    (ntr, nva, nte), _ = split(noise, y, 200, 100)
    budgets = [LabelBudget(0.05, 2), LabelBudget(0.5, 2)]
    rows: list[dict] = []
    table = label_efficiency(
        {"ssl": (tr, va, te), "random": (ntr, nva, nte)},
        labels,
        budgets,
        seeds=(0, 1),
        probe_grids={"linear": {"Cs": (0.1, 1.0)}, "knn": {"ks": (5,), "temperatures": (0.1,)}},
        on_row=rows.append,
    )
    assert len(table) == len(rows) == 2 * 2 * 2 * 2  # budgets x seeds x encoders x probes
    assert set(table["method"]) == {"ssl/linear", "ssl/knn", "random/linear", "random/knn"}
    n_train_per_class = np.bincount(labels[0])
    expected = sum(budgets[0].per_class(int(n)) for n in n_train_per_class)
    assert (table[table["budget"] == budgets[0].name]["n_labels"] == expected).all()
    ssl = table[table["encoder"] == "ssl"]["accuracy"]
    rnd = table[table["encoder"] == "random"]["accuracy"]
    assert ssl.min() > 0.9 and rnd.max() < 0.6

    summary = summarise(table)
    assert len(summary) == 2 * 4 and (summary["seeds"] == 2).all()
    assert all("±" in s for s in summary["accuracy"])
    png = plot_label_efficiency(table, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not math.isnan(float(summary["accuracy_std"].iloc[0]))


def test_label_efficiency_with_random_encoder_and_scratch_baseline(tmp_path: Path) -> None:
    from ssl_assets.ml.evaluate import ScratchConfig

    torch.manual_seed(0)
    encoder = build_backbone("small_cnn", **TINY_CNN)
    x, y = colour_images(150, classes=3, seed=5)
    (itr, iva, ite), labels = split(x, y, 90, 30)
    feats = tuple(embed_images(encoder, part) for part in (itr, iva, ite))
    scratch = ScratchConfig(backbone="small_cnn", backbone_kwargs=TINY_CNN, epochs=3, batch_size=16)
    table = label_efficiency(
        {"random": feats},  # type: ignore[dict-item]
        labels,
        [LabelBudget(0.2, 4), LabelBudget(1.0, 1)],
        seeds=(0,),
        probes=("linear",),
        scratch=scratch,
        images=(itr, iva, ite),
        preprocessing=encoder.preprocessing,
    )
    scratch_rows = table[table["method"] == "scratch/supervised"]
    assert len(scratch_rows) == 2 and len(table) == 4
    assert (scratch_rows["steps"] > 0).all()
    assert (scratch_rows["loss_end"] < scratch_rows["loss_start"]).all()
    assert table[table["method"] == "random/linear"]["accuracy"].min() > 0.8
    assert plot_label_efficiency(table, tmp_path / "c.png").stat().st_size > 1000
