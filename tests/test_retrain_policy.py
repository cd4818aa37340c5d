"""The retrain policy: false below the new-image threshold, true above it."""

from ssl_assets.retrain_policy import retrain_decision


def test_below_the_threshold_no_retrain_above_it_retrain():
    below = retrain_decision(1000, 199, has_encoder=True, min_new_images=200)
    at = retrain_decision(1000, 200, has_encoder=True, min_new_images=200)
    assert not below.retrain and "below 200" in below.reason
    assert at.retrain and "≥ 200" in at.reason


def test_fraction_threshold_fires_first_on_a_small_split():
    d = retrain_decision(100, 30, has_encoder=True, min_new_images=200, min_new_fraction=0.25)
    assert d.retrain and "30.0%" in d.reason


def test_first_encoder_needs_enough_data_and_empty_data_never_trains():
    assert not retrain_decision(0, 0, has_encoder=False, min_new_images=1).retrain
    assert not retrain_decision(10, 10, has_encoder=False, min_new_images=20).retrain
    assert retrain_decision(20, 20, has_encoder=False, min_new_images=20).retrain
