"""Label-efficiency study: accuracy vs number of labels, SSL vs baselines, over seeds.

Why: the point of self-supervised pre-training is needing fewer labels, so the headline result
is a curve, not one number: for each label budget (see `budgets.py`) and seed, probes on the
SSL encoder's frozen features are compared with two baselines on the *same* labelled subset:

- a randomly initialised encoder of the same architecture (frozen, probed the same way): what
  the architecture gives for free, so the gap above it is what pre-training learnt;
- the same backbone trained from scratch with cross-entropy on the subset, with simple
  crops/flips, for a fixed number of optimizer steps (`ScratchConfig.max_steps`; the pipeline
  takes it from the profile): what spending compute on the labels alone gives. Steps, not
  seconds, so the baseline computes the same thing on a busy machine as on a quiet one; its
  seconds are recorded beside (`train_seconds`; `ssl_wall_time` gives the SSL run's), and so is
  its loss trace (`loss_start`, `loss_end`), so a table can show it really trained.
  (`time_budget_s` still bounds it by wall time where equal seconds are the point.)

Probe hyper-parameters are chosen on the full val split, the test split is scored once per
(budget, seed, method). The result is a long table `(budget, n_labels, method, seed,
accuracy, ...)`; `summarise` gives mean +- std over seeds and `plot_label_efficiency` the
curve (matplotlib's Agg canvas, imported lazily, no pyplot global state).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.evaluate.budgets import LabelBudget, sample_label_budget
from ssl_assets.ml.evaluate.probes import accuracy, fit_probe
from ssl_assets.ml.evaluate.supervised import (
    Classifier,
    SupervisedConfig,
    TrainLog,
    predict_labels,
    train_classifier,
)

#: (train, val, test) arrays: features (N x D) or canonical images (N x R x R x 3 uint8)
Splits = tuple[np.ndarray, np.ndarray, np.ndarray]

TABLE_COLUMNS = [
    "budget",
    "fraction",
    "min_per_class",
    "n_labels",
    "method",
    "encoder",
    "probe",
    "seed",
    "accuracy",
    "val_accuracy",
    "params",
    "steps",
    "train_seconds",
    "loss_start",
    "loss_end",
]


@dataclass
class ScratchConfig(SupervisedConfig):
    """The from-scratch supervised baseline: `backbone` / `backbone_kwargs` as the SSL encoder,
    `max_steps` its optimizer steps (or `time_budget_s` its training-step seconds; with neither,
    `epochs` decides). No early stopping by default (the point is a fixed amount of training);
    the best val epoch is kept."""

    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    patience: int | None = None


def ssl_wall_time(encoder_meta: Mapping[str, Any]) -> float:
    """Training-step seconds of an SSL run, summed over the epochs in `encoder.json`'s
    history (the trainer's `train_seconds` excludes monitoring and checkpoint time)."""
    history = encoder_meta.get("history") or []
    return float(sum(float(h.get("train_seconds", 0.0)) for h in history))


def train_scratch_baseline(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    num_classes: int,
    cfg: ScratchConfig | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> tuple[Classifier, TrainLog]:
    """Train a freshly initialised (seeded) `cfg.backbone` + linear head with cross-entropy.

    `preprocessing`: pass the SSL encoder's, so both see identically normalised inputs.
    """
    cfg = cfg or ScratchConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
    model = Classifier(backbone, num_classes, preprocessing, seed=cfg.seed)
    log = train_classifier(model, train_images, train_labels, cfg, val_images, val_labels)
    return model, log


def _row(budget: LabelBudget, n_labels: int, seed: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: math.nan for c in TABLE_COLUMNS}
    row.update(
        budget=budget.name,
        fraction=budget.fraction,
        min_per_class=budget.min_per_class,
        n_labels=n_labels,
        seed=seed,
    )
    row.update(values)
    return row


def label_efficiency(
    features: Mapping[str, Splits],
    labels: Splits,
    budgets: Sequence[LabelBudget],
    seeds: Sequence[int] = (0, 1, 2),
    probes: Sequence[str] = ("linear", "knn"),
    num_classes: int | None = None,
    probe_grids: Mapping[str, Mapping[str, Any]] | None = None,
    scratch: ScratchConfig | None = None,
    images: Splits | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """The label-efficiency table (columns `TABLE_COLUMNS`, one row per budget x seed x method).

    `features`: per encoder name (e.g. "ssl", "random"), the frozen features of the
    (train, val, test) splits; `labels`: their int labels. Every probe in `probes` is fitted on
    the budget's subset of train for each encoder (`method = "<encoder>/<probe>"`), grids from
    `probe_grids[probe]`. With `scratch` (and the canonical `images` of the three splits), the
    supervised baseline is trained on the same subset too (`method = "scratch/supervised"`,
    seeded by the budget seed). `on_row` sees each row as it is produced (progress logging).
    """
    train_y, val_y, test_y = (np.asarray(y, dtype=np.int64) for y in labels)
    if num_classes is None:
        num_classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    if scratch is not None and images is None:
        raise ValueError("the scratch baseline needs the (train, val, test) images")
    grids = probe_grids or {}
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(dict(row))

    for budget in budgets:
        for seed in seeds:
            idx = sample_label_budget(train_y, budget, seed)
            for encoder, (f_train, f_val, f_test) in features.items():
                for probe_kind in probes:
                    probe = fit_probe(
                        probe_kind,
                        np.asarray(f_train)[idx],
                        train_y[idx],
                        f_val,
                        val_y,
                        num_classes=num_classes,
                        **dict(grids.get(probe_kind, {})),
                    )
                    emit(
                        _row(
                            budget,
                            idx.size,
                            seed,
                            method=f"{encoder}/{probe_kind}",
                            encoder=encoder,
                            probe=probe_kind,
                            accuracy=accuracy(probe.predict(f_test), test_y),
                            val_accuracy=probe.val_accuracy,
                            params=json.dumps(probe.params),
                        )
                    )
            if scratch is not None and images is not None:
                i_train, i_val, i_test = images
                cfg = _for_draw(scratch, seed, idx.size)
                model, log = train_scratch_baseline(
                    np.asarray(i_train)[idx],
                    train_y[idx],
                    i_val,
                    val_y,
                    num_classes,
                    cfg,
                    preprocessing,
                )
                emit(
                    _row(
                        budget,
                        idx.size,
                        seed,
                        method="scratch/supervised",
                        encoder="scratch",
                        probe="supervised",
                        accuracy=accuracy(predict_labels(model, i_test), test_y),
                        val_accuracy=log.best_val_accuracy,
                        params=json.dumps(
                            {"stop_reason": log.stop_reason, "epochs": len(log.history)}
                        ),
                        steps=log.steps,
                        train_seconds=log.train_seconds,
                        loss_start=log.loss_start,
                        loss_end=log.loss_end,
                    )
                )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


#: val passes of a scratch run bounded by `max_steps` (evenly spaced; the best is kept)
SCRATCH_VAL_PASSES = 10


def _for_draw(cfg: ScratchConfig, seed: int, n_labels: int) -> ScratchConfig:
    """The scratch config of one label draw: seeded by it, and with a step budget, validated
    about `SCRATCH_VAL_PASSES` times however few labels make an epoch (21 labels are one step
    per epoch: a val pass after each would cost more than the training)."""
    val_every = cfg.val_every
    if cfg.max_steps is not None:
        steps_per_epoch = max(1, n_labels // min(cfg.batch_size, max(n_labels, 2)))
        epochs = -(-cfg.max_steps // steps_per_epoch)
        val_every = max(1, epochs // SCRATCH_VAL_PASSES)
    return dataclasses.replace(cfg, seed=int(seed), val_every=val_every)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (over seeds; 0 for a single seed) of accuracy per budget and method."""
    keys = ["budget", "fraction", "min_per_class", "method"]
    g = table.groupby(keys, sort=False)
    out = g.agg(
        n_labels=("n_labels", "mean"),
        accuracy_mean=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        seeds=("seed", "nunique"),
    ).reset_index()
    out["accuracy_std"] = out["accuracy_std"].fillna(0.0)
    out["accuracy"] = [
        f"{m:.3f} ± {s:.3f}" for m, s in zip(out["accuracy_mean"], out["accuracy_std"], strict=True)
    ]
    return out


def efficiency_wide(summary: pd.DataFrame) -> pd.DataFrame:
    """`summarise`'s output one row per budget (smallest first): the budget, its labels and one
    column per method holding "mean ± std" test accuracy, SSL methods first."""
    order = summary.sort_values(["n_labels", "fraction"])["budget"].drop_duplicates().tolist()
    methods = sorted(
        summary["method"].unique(), key=lambda m: (not str(m).startswith("ssl"), str(m))
    )
    rows = []
    for budget in order:
        part = summary[summary["budget"] == budget].set_index("method")
        row: dict[str, Any] = {"budget": budget, "labels": int(round(part["n_labels"].mean()))}
        row.update({m: part["accuracy"].get(m, "") for m in methods})
        rows.append(row)
    return pd.DataFrame(rows, columns=["budget", "labels", *methods])


_FAMILY_COLOURS = {"ssl": "tab:blue", "scratch": "tab:red", "random": "tab:gray"}
_PROBE_STYLES = {"linear": "-", "knn": "--", "supervised": ":"}


def plot_label_efficiency(table: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Accuracy (mean +- std over seeds) vs number of labels, one line per method, as a PNG.

    SSL lines are blue, scratch red, random grey (other encoders get the default cycle);
    linear probes solid, kNN dashed, supervised dotted. The x axis is logarithmic.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = summarise(table)
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for method, part in summary.groupby("method", sort=True):
        part = part.sort_values("n_labels")
        encoder, _, probe = str(method).partition("/")
        ax.errorbar(
            part["n_labels"],
            part["accuracy_mean"],
            yerr=part["accuracy_std"],
            label=str(method),
            color=_FAMILY_COLOURS.get(encoder),
            linestyle=_PROBE_STYLES.get(probe, "-"),
            marker="o",
            markersize=4,
            capsize=3,
        )
    if (summary["n_labels"] > 0).all() and summary["n_labels"].nunique() > 1:
        ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "Label efficiency (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
