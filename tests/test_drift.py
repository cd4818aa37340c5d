"""Drift statistics as plain functions: the energy test, its effect size, the OOD share."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_assets.audit.drift import (
    DriftConfig,
    drift_verdict,
    energy_test,
    measure_drift,
    pairwise_distances,
    unit_rows,
)


def _cloud(rng: np.random.Generator, n: int, centre: float = 0.0, d: int = 16) -> np.ndarray:
    mean = np.zeros(d)
    mean[0] = 3.0 + centre  # away from the origin, so unit-normalising keeps the shift
    return rng.normal(size=(n, d)) + mean


def test_energy_distance_matches_its_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.5
    d = pairwise_distances(np.concatenate([x, y]))
    energy, effect, p = energy_test(d, 7, permutations=50, seed=0)

    def mean(a, b, same):  # U-statistic within a sample: the zero diagonal left out
        total = sum(np.linalg.norm(u - v) for u in a for v in b)
        return total / (len(a) * (len(a) - 1) if same else len(a) * len(b))

    between = mean(x, y, False)
    expected = 2 * between - mean(x, x, True) - mean(y, y, True)
    assert energy == pytest.approx(expected)
    assert effect == pytest.approx(expected / (2 * between))
    assert 1 / 51 <= p <= 1  # (1 + exceedances) / (1 + permutations): never zero


def test_a_sample_from_the_same_distribution_is_not_drift_a_shifted_one_is():
    rng = np.random.default_rng(1)
    reference = _cloud(rng, 300)
    same = measure_drift(_cloud(rng, 40), reference, "pinned")
    assert not same.drifted and same.p_value > 0.05 and abs(same.effect) < DriftConfig().max_effect
    assert same.ood_share <= 0.1
    shifted = measure_drift(_cloud(rng, 40, centre=-6.0), reference, "pinned")
    assert shifted.drifted and shifted.effect >= DriftConfig().max_effect
    assert shifted.p_value == pytest.approx(1 / (1 + DriftConfig().permutations))
    assert shifted.ood_share == 1.0
    assert f"≥ {DriftConfig().max_effect:g}" in shifted.reason and "p=0.00498" in shifted.reason


def test_a_new_sub_population_shows_in_the_ood_share():
    rng = np.random.default_rng(2)
    reference = _cloud(rng, 300)
    batch = np.concatenate([_cloud(rng, 30), _cloud(rng, 10, centre=-6.0)])
    result = measure_drift(batch, reference, "champion", DriftConfig(max_effect=1.0))
    assert result.ood_share == pytest.approx(0.25, abs=0.05)
    assert result.drifted and "out of distribution (> 20%)" in result.reason


def test_samples_are_capped_by_a_seeded_draw_and_tiny_ones_are_not_tested():
    rng = np.random.default_rng(3)
    capped = measure_drift(
        _cloud(rng, 50), _cloud(rng, 80), "pinned", DriftConfig(max_batch=20, max_reference=30)
    )
    assert (capped.batch_images, capped.reference_images) == (20, 30)
    lone = measure_drift(_cloud(rng, 1), _cloud(rng, 80), "pinned")
    assert not lone.drifted and lone.p_value is None and "too few images" in lone.reason


def test_unit_rows_make_the_test_blind_to_scale():
    rng = np.random.default_rng(4)
    x, y = _cloud(rng, 20), _cloud(rng, 30)
    assert np.allclose(unit_rows(3 * x), unit_rows(x))
    a, b = measure_drift(x, y, "s"), measure_drift(10 * x, y, "s")
    assert a.effect == pytest.approx(b.effect) and a.p_value == b.p_value


def test_the_drift_gate_names_the_batches_that_drifted():
    rng = np.random.default_rng(5)
    reference = _cloud(rng, 200)
    ok = measure_drift(_cloud(rng, 30), reference, "pinned")
    bad = measure_drift(_cloud(rng, 30, centre=-6.0), reference, "pinned")
    assert drift_verdict([("b1", ok)], DriftConfig()).passed
    verdict = drift_verdict([("b1", ok), ("b2", bad)], DriftConfig())
    assert not verdict.passed and verdict.details["drifted"] == [{"batch": "b2", "space": "pinned"}]
    assert verdict.description.startswith("drift: b2 pinned:")
    assert drift_verdict([], DriftConfig()).passed
