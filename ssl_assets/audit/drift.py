"""Data drift of a new batch against the data a model was trained on: a two-sample test with an
effect size, and the share of out-of-distribution images. Plain numpy, no Dagster.

Why these statistics:

- **Energy distance** (Székely & Rizzo, "Testing for equal distributions in high dimension",
  InterStat 2004; "Energy statistics: a class of statistics based on distances", J. Stat.
  Planning and Inference 143, 2013): `E = 2 E|X-Y| - E|X-X'| - E|Y-Y'|`, zero exactly when the
  two distributions are equal, for any dimension and with no bandwidth to choose. It is the
  MMD of the distance-induced kernel (Sejdinovic et al., "Equivalence of distance-based and
  RKHS-based statistics in hypothesis testing", Annals of Statistics 41, 2013), so it tests
  the same null as an RBF-kernel MMD without the median-heuristic guess. The within-sample
  means are U-statistics (the zero diagonal left out), so an in-distribution batch measures
  about 0 at any size.
- **Effect size**: the energy coefficient `H = E / (2 E|X-Y|)` in [0, 1] (Rizzo & Székely,
  "Energy distance", WIREs Computational Statistics 8, 2016): 0 for equal distributions, 1
  when every between-sample distance dwarfs the within-sample ones. Scale-free, so one bound
  serves any embedding space. A p-value alone is not a bound: with thousands of images a
  harmless shift is "significant", so drift needs both a small p-value and a large `H`.
- **Permutation test**: the pooled images' labels are shuffled `permutations` times (seeded);
  `p = (1 + #{E_perm >= E}) / (1 + permutations)`, never 0 (Phipson & Smyth, "Permutation
  p-values should never be zero", Stat. Appl. Genet. Mol. Biol. 9, 2010). All permutations are
  evaluated at once from one distance matrix (`s^T D s` per membership vector `s`).
- **Out-of-distribution share**: a batch image is out of distribution when its nearest
  reference image is farther than the reference's own `ood_quantile` (99th percentile) of
  leave-one-out nearest-neighbour distances: the deep nearest-neighbour rule of Sun et al.
  ("Out-of-distribution detection with deep nearest neighbors", ICML 2022) with k = 1 and the
  threshold set on the training data itself. About 1 % of an in-distribution batch is flagged;
  a new sub-population (a new camera for part of the batch) raises the share even when the
  whole-batch test is diluted.

Embeddings are L2-normalised first (cosine geometry, as the pinned embedder and SSL features are
compared everywhere else in this project), and both samples are capped at `max_reference` /
`max_batch` rows by a seeded draw, so the cost is bounded: one (n + m)^2 distance matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from quality import thresholds
from quality.verdict import Verdict

STATISTIC = "energy distance, permutation test"


@dataclass(frozen=True)
class DriftConfig:
    """Bounds of the drift rule (defaults in quality/thresholds.py) and the test's sizes."""

    max_effect: float = thresholds.MONITOR_MAX_DRIFT_EFFECT
    alpha: float = thresholds.MONITOR_DRIFT_ALPHA
    max_ood_share: float = thresholds.MONITOR_MAX_OOD_SHARE
    ood_quantile: float = 0.99
    permutations: int = 200
    max_reference: int = 1000
    max_batch: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class DriftResult:
    """One batch against one reference in one embedding space; `drifted` and a sentence why."""

    space: str
    batch_images: int
    reference_images: int
    energy: float | None
    effect: float | None
    p_value: float | None
    permutations: int
    ood_share: float | None
    ood_threshold: float | None
    drifted: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float64 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def capped_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """Indices of at most `cap` of `n` rows: all of them, or a seeded draw (sorted)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def pairwise_distances(z: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of `z` (N x N, zero diagonal)."""
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(np.clip(d2, 0.0, None))


def _energy(within_x: np.ndarray, total: float, row_x: np.ndarray, n: int, m: int) -> np.ndarray:
    """Energy distances for memberships given `s^T D s` (within_x), `1^T D 1` (total) and
    `s^T D 1` (row_x): the within-sample means are U-statistics."""
    between = row_x - within_x
    within_y = total - 2.0 * row_x + within_x
    return 2.0 * between / (n * m) - within_x / (n * (n - 1)) - within_y / (m * (m - 1))


def energy_test(
    distances: np.ndarray, n: int, permutations: int, seed: int
) -> tuple[float, float, float]:
    """(energy distance, energy coefficient, permutation p-value) of the first `n` rows of the
    pooled distance matrix against the rest."""
    size = len(distances)
    m = size - n
    row = distances.sum(axis=1)
    total = float(row.sum())
    member = np.zeros(size)
    member[:n] = 1.0
    within = float(member @ distances @ member)
    row_x = float(member @ row)
    observed = float(_energy(np.array([within]), total, np.array([row_x]), n, m)[0])
    mean_between = (row_x - within) / (n * m)
    effect = observed / (2.0 * mean_between) if mean_between > 0 else 0.0
    rng = np.random.default_rng(seed)
    exceed, chunk = 0, 64
    for start in range(0, permutations, chunk):
        k = min(chunk, permutations - start)
        picks = np.argsort(rng.random((k, size)), axis=1)[:, :n]
        s = np.zeros((k, size))
        np.put_along_axis(s, picks, 1.0, axis=1)
        perm = _energy(np.einsum("ij,ij->i", s @ distances, s), total, s @ row, n, m)
        exceed += int((perm >= observed - 1e-12).sum())
    return observed, float(effect), (1 + exceed) / (1 + permutations)


def ood_share(distances: np.ndarray, n: int, quantile: float) -> tuple[float, float]:
    """(share of the first `n` rows whose nearest reference row is farther than the reference's
    own `quantile` of leave-one-out nearest-neighbour distances, that threshold)."""
    reference = distances[n:, n:].copy()
    np.fill_diagonal(reference, np.inf)
    threshold = float(np.quantile(reference.min(axis=1), quantile))
    nearest = distances[:n, n:].min(axis=1)
    return float((nearest > threshold).mean()), threshold


def measure_drift(
    batch: np.ndarray, reference: np.ndarray, space: str, config: DriftConfig | None = None
) -> DriftResult:
    """Drift of `batch` (N x d embeddings) from `reference` (M x d) in one embedding space.

    `drifted` when the energy coefficient is at least `max_effect` with a p-value below
    `alpha`, or when more than `max_ood_share` of the batch is out of distribution. With fewer
    than two images on either side nothing can be tested: not drifted, and the reason says so.
    """
    cfg = config or DriftConfig()
    x = unit_rows(batch)[capped_rows(len(batch), cfg.max_batch, cfg.seed)]
    y = unit_rows(reference)[capped_rows(len(reference), cfg.max_reference, cfg.seed + 1)]
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        why = f"too few images to test ({n} in the batch, {m} in the reference)"
        return DriftResult(space, n, m, None, None, None, 0, None, None, False, why)
    distances = pairwise_distances(np.concatenate([x, y]))
    energy, effect, p_value = energy_test(distances, n, cfg.permutations, cfg.seed)
    share, threshold = ood_share(distances, n, cfg.ood_quantile)
    shifted = effect >= cfg.max_effect and p_value < cfg.alpha
    too_many_ood = share > cfg.max_ood_share
    reason = (
        f"{space}: energy coefficient {effect:.3f} "
        f"({'≥' if effect >= cfg.max_effect else '<'} {cfg.max_effect:g}), "
        f"p={p_value:.3g} ({'<' if p_value < cfg.alpha else '≥'} {cfg.alpha:g}), "
        f"{share:.0%} out of distribution "
        f"({'>' if too_many_ood else '≤'} {cfg.max_ood_share:.0%}); "
        f"{n} images against {m} training images"
    )
    return DriftResult(
        space,
        n,
        m,
        energy,
        effect,
        p_value,
        cfg.permutations,
        share,
        threshold,
        shifted or too_many_ood,
        reason,
    )


def drift_verdict(results: Sequence[tuple[str, DriftResult]], config: DriftConfig) -> Verdict:
    """The `batch_drift` gate over (batch, result) pairs: passed when no batch drifted in any
    embedding space. The largest effect judged is the verdict's value."""
    drifted = [(b, r) for b, r in results if r.drifted]
    effects = [r.effect for _, r in results if r.effect is not None]
    if not results:
        description = "no newly curated batch to monitor"
    elif drifted:
        description = "drift: " + "; ".join(f"{b} {r.reason}" for b, r in drifted)
    else:
        batches = sorted({b for b, _ in results})
        description = f"no drift in {', '.join(batches)}: " + "; ".join(
            r.reason for _, r in results
        )
    return Verdict(
        check_name="batch_drift",
        passed=not drifted,
        metric="energy_coefficient",
        value=max(effects) if effects else None,
        description=description,
        details={
            "max_effect": config.max_effect,
            "alpha": config.alpha,
            "max_ood_share": config.max_ood_share,
            "drifted": [{"batch": b, "space": r.space} for b, r in drifted],
        },
    )
