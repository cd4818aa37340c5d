"""Label budgets: which labelled training images a label-efficiency run may use.

Why per class: a uniformly sampled 1% of a skewed data set can miss a class entirely, and then
the "accuracy at 1% labels" measures luck, not the representation. A budget therefore takes,
from every class c with n_c labelled training images, `max(ceil(fraction * n_c), min_per_class)`
images (capped at n_c). Why nested: for a given seed the images of a smaller budget are a prefix
of the same per-class permutation as those of a larger one, so the curve over budgets is not
jagged by re-sampling noise; different seeds give independent draws (mean +- std over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssl_assets.ml.data import stable_seed


@dataclass(frozen=True)
class LabelBudget:
    """`fraction` of each class's labelled training images, at least `min_per_class`."""

    fraction: float
    min_per_class: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.min_per_class < 0 or (self.fraction == 0 and self.min_per_class == 0):
            raise ValueError("a budget needs fraction > 0 or min_per_class > 0")

    @property
    def name(self) -> str:
        """Stable label for tables, plots and metadata keys, e.g. `10% (k≥5)`: no `|`, which
        would split a markdown table's cells, and no `<`/`>`, which a UI may read as HTML."""
        return f"{self.fraction * 100:g}% (k≥{self.min_per_class})"

    def per_class(self, n_class: int) -> int:
        """How many of a class's `n_class` images this budget takes."""
        return min(n_class, max(math.ceil(self.fraction * n_class - 1e-9), self.min_per_class))


def sample_label_budget(
    labels: Sequence[int] | np.ndarray, budget: LabelBudget, seed: int
) -> np.ndarray:
    """Indices (sorted) into `labels` selected by `budget` for `seed` (see module docstring)."""
    y = np.asarray(labels)
    chosen: list[np.ndarray] = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        rng = np.random.default_rng(stable_seed("label-budget", seed, str(cls)))
        order = members[rng.permutation(members.size)]
        chosen.append(order[: budget.per_class(members.size)])
    if not chosen:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def parse_budgets(
    specs: Sequence[float | tuple[float, int]], min_per_class: int = 1
) -> list[LabelBudget]:
    """Config-friendly budgets: a fraction (with the default `min_per_class`) or a
    `(fraction, min_per_class)` pair."""
    out = []
    for spec in specs:
        if isinstance(spec, (tuple, list)):
            out.append(LabelBudget(float(spec[0]), int(spec[1])))
        else:
            out.append(LabelBudget(float(spec), min_per_class))
    return out
