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


DRIFTED = {
    "batch": "b7",
    "space": "pinned",
    "effect": 0.4,
    "p_value": 0.005,
    "ood_share": 1.0,
    "drifted": True,
    "reason": "pinned: energy coefficient 0.400 (≥ 0.05), p=0.005 (< 0.01)",
}
STEADY = DRIFTED | {"effect": 0.001, "p_value": 0.6, "ood_share": 0.0, "drifted": False}
DECAYED = {
    "batch": "b8",
    "images": 20,
    "accuracy": 0.1,
    "low": 0.03,
    "high": 0.3,
    "decayed": True,
    "reason": "champion ft-1: accuracy 0.100 [0.030, 0.300] on 20 new labels; decayed",
}


def test_drift_alone_asks_for_a_retrain_below_the_count():
    d = retrain_decision(1000, 5, has_encoder=True, min_new_images=200, drift=[DRIFTED])
    assert d.retrain and d.triggers == ("drift",)
    assert d.reason.startswith("retrain: drift: batch b7 pinned: energy coefficient 0.400")
    assert "5 new train images" in d.reason  # the other signals are said too
    assert d.evidence["drift"] == [DRIFTED]
    steady = retrain_decision(1000, 5, has_encoder=True, min_new_images=200, drift=[STEADY])
    assert not steady.retrain and "no drift in b7 (b7 pinned: effect 0.001" in steady.reason


def test_decay_alone_asks_for_a_retrain_and_every_signal_can_fire_at_once():
    d = retrain_decision(1000, 5, has_encoder=True, min_new_images=200, decay=[DECAYED])
    assert d.retrain and d.triggers == ("decay",) and "decay: batch b8" in d.reason
    held = DECAYED | {"accuracy": 0.9, "low": 0.7, "high": 0.97, "decayed": False}
    assert (
        "champion holds: b8: accuracy 0.900"
        in retrain_decision(1000, 5, has_encoder=True, min_new_images=200, decay=[held]).reason
    )
    every = retrain_decision(
        1000, 300, has_encoder=True, min_new_images=200, drift=[DRIFTED], decay=[DECAYED]
    )
    assert every.triggers == ("count", "drift", "decay")


def test_without_an_encoder_only_the_count_decides_and_missing_records_are_said():
    d = retrain_decision(10, 10, has_encoder=False, min_new_images=20, drift=[DRIFTED])
    assert not d.retrain
    gap = retrain_decision(1000, 5, has_encoder=True, min_new_images=200, unmonitored=["b9"])
    assert not gap.retrain and "no monitoring record for b9" in gap.reason


def test_replay_keeps_every_new_image_and_a_stated_share_of_earlier_ones():
    import pandas as pd
    import pytest

    from ssl_assets.ml.training_set import replay_mix

    rows = pd.DataFrame(
        {
            "image_id": [f"old{i}" for i in range(40)] + [f"new{i}" for i in range(10)] + ["v"],
            "split": ["train"] * 50 + ["val"],
        }
    )
    earlier = {f"old{i}" for i in range(40)} | {"v"}
    whole, info = replay_mix(rows, earlier, None)
    assert len(whole) == 51 and info["realised_share"] == pytest.approx(0.8)
    half, info = replay_mix(rows, earlier, 0.5, seed=3)
    kept = set(half["image_id"])
    assert {f"new{i}" for i in range(10)} | {"v"} <= kept  # new images and val untouched
    assert info["replayed_images"] == 10 and info["realised_share"] == 0.5
    assert set(replay_mix(rows, earlier, 0.5, seed=3)[0]["image_id"]) == kept  # seeded
    assert set(replay_mix(rows, earlier, 0.0)[0]["image_id"]) == kept - {
        i for i in kept if i.startswith("old")
    }
    with pytest.raises(ValueError, match="replay_share"):
        replay_mix(rows, earlier, 1.5)
