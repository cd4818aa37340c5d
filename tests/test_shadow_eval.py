"""Shadow evaluation as plain functions: the Wilson interval, the decay rule, unknown labels."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_assets.ml.evaluate.shadow import DecayPolicy, decay_verdict, judge, wilson_interval


def test_wilson_interval_stays_in_bounds_and_matches_known_values():
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson_interval(10, 20)
    assert (low, high) == (pytest.approx(0.2993, abs=1e-4), pytest.approx(0.7007, abs=1e-4))
    assert wilson_interval(20, 20)[1] == 1.0


def test_decay_needs_the_whole_interval_below_the_reference():
    policy = DecayPolicy(max_accuracy_drop=0.05)
    fell = judge("m", "champion", np.array([False] * 18 + [True] * 2), 0, 0.95, policy)
    assert fell.decayed and "decayed" in fell.reason and fell.accuracy == 0.1
    # 4 of 5 right: worse on its face, but 5 images cannot tell: no decay
    noisy = judge("m", "champion", np.array([True, True, True, True, False]), 0, 0.95, policy)
    assert not noisy.decayed and noisy.high > 0.9
    unseen = judge("m", "champion", np.zeros(0, bool), 0, 0.95, policy)
    assert unseen.images == 0 and not unseen.decayed
    verdict = decay_verdict([("b1", noisy), ("b2", fell)])
    assert not verdict.passed and verdict.details["decayed_on"] == ["b2"]
    assert decay_verdict([("b1", unseen)]).description == "no new labels to judge the champion on"


def test_labels_a_model_does_not_know_count_as_errors():
    import torch

    from ssl_assets.ml.backbones import build_backbone
    from ssl_assets.ml.evaluate.shadow import correct_predictions
    from ssl_assets.ml.evaluate.supervised import Classifier

    torch.manual_seed(0)
    backbone = build_backbone("small_cnn")
    model = Classifier(backbone, 2, backbone.preprocessing, seed=0)
    images = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    ok, unknown = correct_predictions(model, ["a", "b"], images, ["a", "b", "zebra"] * 2)
    assert unknown == 2 and not ok[2] and not ok[5]
