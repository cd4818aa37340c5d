"""Monitoring on made lakes: a champion trained on a first batch, then a second batch that is
more of the same, shifted, or labeled against the champion — and what the retrain sensor
decides on each.

The images are scenes: a dark smooth background with a bright ellipse and bar whose colour is
the class (warm or cool). "Shifted" is the same kind of scene with inverted colours (a bright
background, a dark object: another camera). Every second batch holds 20 images, so fewer than
the tiny profile's 20 new train images arrive: the count alone never asks for a retrain.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from PIL import Image, ImageDraw

from quality import thresholds
from resources.curation_settings import CurationSettings
from resources.lake import READY_MARKER, LakeResource
from resources.metadata import MetadataStore
from ssl_assets.definitions import build_definitions
from ssl_assets.profiles import get_profile
from ssl_assets.sensors import build_sensors
from tests.factories import add_partitions, resources_for

pytestmark = pytest.mark.slow

defs = build_definitions("tiny")
TINY = get_profile("tiny")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CLASSES = ("warm", "cool")
SECOND_BATCH = 20


def scene(seed: int, cls: str, invert: bool = False, size: int = 32) -> Image.Image:
    """A dark smooth background with a bright object coloured by its class."""
    rng = np.random.default_rng(seed)
    base = rng.integers(25, 80, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    hot = (int(rng.integers(190, 240)), int(rng.integers(90, 150)), int(rng.integers(30, 80)))
    colour = hot if cls == "warm" else hot[::-1]
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.integers(0, size // 2, size=2)
    w, h = rng.integers(size // 3, size // 2, size=2)
    draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
    bx = int(rng.integers(0, size - 5))
    draw.rectangle((bx, 0, bx + 4, size - 1), fill=colour)
    pixels = np.asarray(image)
    return Image.fromarray(255 - pixels if invert else pixels)


def land(
    lake: LakeResource, batch: str, seeds: range, invert: bool = False, labels: str | None = None
) -> None:
    """A batch of scenes; `labels`: None (unlabeled), "true" or "flipped" (every class swapped)."""
    batch_dir = lake.landing_dir / batch
    batch_dir.mkdir(parents=True)
    rows = []
    for seed in seeds:
        cls = CLASSES[seed % 2]
        scene(seed, cls, invert).save(batch_dir / f"{seed:04d}.png")
        if labels:
            shown = cls if labels == "true" else CLASSES[1 - seed % 2]
            rows.append((f"{seed:04d}.png", shown))
    if rows:
        with (batch_dir / "labels.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([("path", "label"), *rows])
    (batch_dir / READY_MARKER).write_text("")


def ingest_and_curate(lake: LakeResource, store: MetadataStore, instance, batch: str) -> None:
    resources = resources_for(lake, store)
    add_partitions(instance, batch)
    ingest = defs.resolve_job_def("ingest_batch").execute_in_process(
        partition_key=batch, instance=instance, resources=resources, run_config=QUIET
    )
    assert ingest.success
    curate = defs.resolve_job_def("curate_and_audit").execute_in_process(
        instance=instance, resources=resources, run_config=QUIET
    )
    assert curate.success  # drift and decay warn: they never fail the run


@pytest.fixture(scope="module")
def champion_lake(tmp_path_factory) -> Path:
    """A lake whose champion was trained on 100 labeled scenes (batch `first`)."""
    root = tmp_path_factory.mktemp("monitoring") / "lake"
    lake = LakeResource(root=str(root))
    lake.ensure()
    store = MetadataStore(path=str(lake.metadata_path))
    # The scenes share one layout and their classes differ only by colour; the aligned tier
    # compares tone-normalised luminance structure, so it would merge different scenes of this
    # family. A lake of such images turns it off in its curation settings, as this one does.
    CurationSettings(aligned=False).write(lake)
    land(lake, "first", range(100), labels="true")
    assets = {a.key.to_user_string(): a for a in defs.assets if hasattr(a, "key")}
    with DagsterInstance.ephemeral() as instance:
        ingest_and_curate(lake, store, instance, "first")
        trained = materialize(
            [assets[n] for n in ("ssl_encoder", "finetuned_model", "champion_model")],
            instance=instance,
            resources=resources_for(lake, store),
            run_config={
                "ops": {"finetuned_model": {"config": {"epochs": 15, "patience": 5}}},
                **QUIET,
            },
        )
        assert trained.success
    champion = store.current_champion()
    assert json.loads(champion["metrics"])["accuracy"] >= 0.9  # the colour is easy to learn
    first = store.query("SELECT * FROM batch_drift WHERE batch = 'first'")
    assert len(first) == 2 and first["reason"].str.contains("no champion yet").all()
    return root


def second_batch(champion_lake: Path, tmp_path: Path, batch: str, **kwargs):
    """Copy the champion's lake, land `batch` (20 scenes), ingest and curate it, tick the retrain
    sensor twice; returns (store, first tick, second tick)."""
    root = tmp_path / "lake"
    shutil.copytree(champion_lake, root)
    lake = LakeResource(root=str(root))
    store = MetadataStore(path=str(lake.metadata_path))
    land(lake, batch, range(1000, 1000 + SECOND_BATCH), **kwargs)
    retrain_sensor = build_sensors(TINY)[2]
    with DagsterInstance.ephemeral() as instance:
        ingest_and_curate(lake, store, instance, batch)
        ticks = [
            retrain_sensor(
                build_sensor_context(
                    instance=instance, resources={"metadata": store, "profile": TINY}
                )
            )
            for _ in range(2)
        ]
    assert store.retrain_inputs()["new_since_last_encoder"] < TINY.retrain_min_new_images
    return store, *ticks


def _drift(store: MetadataStore, batch: str):
    rows = store.query("SELECT * FROM batch_drift WHERE batch = ? ORDER BY space", [batch])
    assert rows["space"].tolist() == ["champion", "pinned"]
    assert rows["effect"].notna().all() and (rows["reference_images"] > 50).all()
    return rows.set_index("space")


def _gate(store: MetadataStore, check: str):
    return store.query(
        "SELECT passed, severity, details FROM gate_results WHERE asset = 'batch_monitoring' "
        "AND check_name = ? ORDER BY recorded_at DESC LIMIT 1",
        [check],
    ).iloc[0]


def test_more_of_the_same_is_no_drift_and_no_retrain(champion_lake, tmp_path):
    store, tick, again = second_batch(champion_lake, tmp_path, "same", labels="true")
    drift = _drift(store, "same")
    assert not drift["drifted"].any(), drift["reason"].tolist()
    assert _gate(store, "batch_drift")["passed"]
    champion = store.query("SELECT * FROM batch_scores WHERE batch = 'same'").iloc[0]
    assert champion["role"] == "champion" and champion["images"] == SECOND_BATCH
    assert not champion["decayed"] and _gate(store, "champion_decay")["passed"]

    assert not tick.run_requests and not again.run_requests
    reason = tick.skip_reason.skip_message
    assert reason.startswith("no retrain:") and "no drift in same" in reason
    assert "below 20" in reason and "champion holds" in reason
    decisions = store.retrain_decisions()
    assert len(decisions) == 1  # two ticks, one decision
    assert not decisions["retrain"].iloc[0] and decisions["reason"].iloc[0] == reason


def test_a_shifted_batch_is_drift_and_triggers_a_retrain(champion_lake, tmp_path):
    store, tick, again = second_batch(champion_lake, tmp_path, "shifted", invert=True)
    drift = _drift(store, "shifted")
    assert drift.loc["pinned", "drifted"] and drift.loc["pinned", "p_value"] < 0.01
    assert drift.loc["pinned", "effect"] >= thresholds.MONITOR_MAX_DRIFT_EFFECT
    gate = _gate(store, "batch_drift")
    assert not gate["passed"] and gate["severity"] == "WARN"
    assert "shifted" in json.loads(gate["details"])["description"]

    assert len(tick.run_requests) == 1
    request = tick.run_requests[0]
    assert request.tags["ssl/retrain-triggers"] == "drift"
    assert request.run_key == again.run_requests[0].run_key  # one retrain per snapshot
    decision = store.retrain_decisions().iloc[-1]
    assert decision["retrain"] and json.loads(decision["triggers"]) == ["drift"]
    assert "drift: batch shifted" in decision["reason"] and "below 20" in decision["reason"]
    evidence = json.loads(decision["evidence"])
    assert {r["batch"] for r in evidence["drift"] if r["drifted"]} == {"shifted"}
    assert decision["run_key"] == request.run_key


def test_labels_the_champion_gets_wrong_are_decay_and_trigger_a_retrain(champion_lake, tmp_path):
    store, tick, _ = second_batch(champion_lake, tmp_path, "relabeled", labels="flipped")
    assert not _drift(store, "relabeled")["drifted"].any()  # the images are more of the same
    champion = store.query("SELECT * FROM batch_scores WHERE batch = 'relabeled'").iloc[0]
    drop = thresholds.MONITOR_MAX_ACCURACY_DROP
    assert champion["decayed"] and champion["high"] < champion["reference_accuracy"] - drop
    assert not _gate(store, "champion_decay")["passed"]

    assert len(tick.run_requests) == 1
    assert tick.run_requests[0].tags["ssl/retrain-triggers"] == "decay"
    decision = store.retrain_decisions().iloc[-1]
    assert decision["retrain"] and json.loads(decision["triggers"]) == ["decay"]
    assert "decay: batch relabeled" in decision["reason"]


def test_a_retrain_warm_starts_from_the_champion_and_replays_a_stated_share(
    champion_lake, tmp_path
):
    root = tmp_path / "lake"
    shutil.copytree(champion_lake, root)
    lake = LakeResource(root=str(root))
    store = MetadataStore(path=str(lake.metadata_path))
    land(lake, "later", range(2000, 2000 + SECOND_BATCH), invert=True)
    encoder = store.current_champion("encoder")
    assets = {a.key.to_user_string(): a for a in defs.assets if hasattr(a, "key")}
    with DagsterInstance.ephemeral() as instance:
        ingest_and_curate(lake, store, instance, "later")
        new_train = store.retrain_inputs()["new_since_last_encoder"]
        assert materialize(
            [assets["ssl_encoder"]],
            instance=instance,
            resources=resources_for(lake, store),
            run_config={
                "ops": {"ssl_encoder": {"config": {"epochs": 1, "replay_share": 0.5}}},
                **QUIET,
            },
        ).success
    newest = store.latest_usable_encoder()
    lineage = json.loads(newest["lineage"])
    assert lineage["warm_start"] == encoder["model_id"]
    replay = lineage["replay"]
    assert replay["replay_share"] == 0.5 and replay["new_images"] == new_train
    assert replay["replayed_images"] == new_train < replay["earlier_images"]
    assert lineage["train_images"] == 2 * new_train
