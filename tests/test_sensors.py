"""Sensors evaluated with build_sensor_context against a real instance and lake."""

from __future__ import annotations

from dagster import build_sensor_context, materialize

from resources.lake import READY_MARKER
from ssl_assets.assets.curation_assets import image_catalog
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.profiles import get_profile
from ssl_assets.sensors import build_sensors
from tests.factories import add_partitions, make_batch, resources_for, smooth_image

landing_sensor, curation_sensor, retrain_sensor = build_sensors(get_profile("tiny"))


def _tick(instance, lake, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake})
    return landing_sensor(context), context


def test_landing_sensor_waits_for_ready_then_requests_exactly_one_run(lake, instance):
    make_batch(lake, "half-copied", n=2, ready=False)
    result, _ = _tick(instance, lake)
    assert not result.run_requests and "no new ready batch" in str(result.skip_reason)

    (lake.landing_dir / "half-copied" / READY_MARKER).write_text("")
    result, _ = _tick(instance, lake)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("half-copied", "ingest:half-copied")
    ]
    assert result.dynamic_partitions_requests[0].partition_keys == ["half-copied"]

    # the next tick, with the cursor the daemon persisted, requests nothing
    again, _ = _tick(instance, lake, cursor=result.cursor)
    assert not again.run_requests
    # and a restart that lost the cursor still sees the partition exists already
    add_partitions(instance, "half-copied")
    restarted, _ = _tick(instance, lake, cursor=None)
    assert not restarted.run_requests


def test_ten_ready_batches_become_ten_partitions_in_one_tick(lake, instance):
    for i in range(10):
        make_batch(lake, f"b{i:02d}", n=1)
    result, _ = _tick(instance, lake)
    assert sorted(r.partition_key for r in result.run_requests) == [f"b{i:02d}" for i in range(10)]
    assert len({r.run_key for r in result.run_requests}) == 10


def test_curation_sensor_asks_once_per_snapshot_of_admitted_data(lake, store, instance):
    context = build_sensor_context(instance=instance, resources={"metadata": store})
    assert not curation_sensor(context).run_requests  # nothing catalogued yet

    batch_dir = lake.landing_dir / "b1"
    batch_dir.mkdir(parents=True)
    for s in range(3):
        smooth_image(s).save(batch_dir / f"{s}.png")
    add_partitions(instance, "b1")
    resources = resources_for(lake, store)
    assert materialize(
        [raw_images, image_catalog], partition_key="b1", instance=instance, resources=resources
    ).success
    first = curation_sensor(build_sensor_context(instance=instance, resources={"metadata": store}))
    second = curation_sensor(build_sensor_context(instance=instance, resources={"metadata": store}))
    assert len(first.run_requests) == 1
    assert first.run_requests[0].run_key == second.run_requests[0].run_key  # same snapshot


def test_retrain_sensor_follows_the_policy_and_asks_once_per_snapshot(lake, store, instance):
    import pandas as pd

    from resources.metadata import utcnow
    from ssl_assets.assets.curation_assets import curated_images, duplicates, quality_issues

    def tick():
        return retrain_sensor(
            build_sensor_context(
                instance=instance, resources={"metadata": store, "profile": get_profile("tiny")}
            )
        )

    assert "no included train images" in str(tick().skip_reason)
    batch_dir = lake.landing_dir / "b1"
    batch_dir.mkdir(parents=True)
    for s in range(60):
        smooth_image(s).save(batch_dir / f"{s:02d}.png")
    add_partitions(instance, "b1")
    resources = resources_for(lake, store)
    assert materialize(
        [raw_images, image_catalog], partition_key="b1", instance=instance, resources=resources
    ).success
    assert "await curation" in str(tick().skip_reason)
    assert materialize(
        [duplicates, quality_issues, curated_images], instance=instance, resources=resources
    ).success

    first, second = tick(), tick()
    assert len(first.run_requests) == 1  # tiny profile: 20 new train images are enough
    assert first.run_requests[0].run_key == second.run_requests[0].run_key

    # once an encoder exists, nothing new was curated since: no retrain
    store.append(
        "models",
        pd.DataFrame(
            [
                {
                    "model_id": "enc-x",
                    "kind": "encoder",
                    "status": "candidate",
                    "created_at": utcnow(),
                }
            ]
        ),
    )
    after = tick()
    assert not after.run_requests and "0 new train images" in str(after.skip_reason)
