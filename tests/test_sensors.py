"""Sensors evaluated with build_sensor_context against a real instance and lake."""

from __future__ import annotations

import os

from dagster import build_sensor_context, materialize

from resources.lake import READY_MARKER
from resources.metadata import MetadataStore
from ssl_assets.assets.curation_assets import image_catalog
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.profiles import get_profile
from ssl_assets.sensors import build_sensors
from tests.factories import add_partitions, make_batch, resources_for, smooth_image

landing_sensor, curation_sensor, retrain_sensor = build_sensors(get_profile("tiny"))


def _tick(instance, lake, cursor=None):
    store = MetadataStore(path=str(lake.metadata_path))
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": lake, "metadata": store}
    )
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


def test_ready_folders_that_cannot_be_batches_are_reported_not_dropped(
    lake, store, instance, tmp_path, capsys
):
    from ssl_assets.cli import main as cli

    make_batch(lake, "fine-1", n=1)
    for name in ("my batch", ".hidden", "-dash", "x" * 129):
        make_batch(lake, name, n=1)
    undecodable = lake.landing_dir / os.fsdecode(b"caf\xffe")  # not UTF-8
    undecodable.mkdir()
    (undecodable / READY_MARKER).write_text("")
    elsewhere = make_batch(lake, "fine-2", n=1).rename(tmp_path / "elsewhere")
    (lake.landing_dir / "linked").symlink_to(elsewhere)
    make_batch(lake, "bad name but not ready", n=1, ready=False)  # still being copied: quiet

    import logging

    context = build_sensor_context(instance=instance, resources={"lake": lake, "metadata": store})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    context.log.addHandler(handler)
    result = landing_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["fine-1"]
    logged = "\n".join(r.getMessage() for r in records if r.levelno >= logging.WARNING)
    assert "6 ready folder(s) in landing/ will not be ingested" in logged
    for shown in ("'my batch'", "'.hidden'", "'-dash'", "'caf\\udcffe'", "'linked' is a link"):
        assert shown in logged
    assert "not ready" not in logged
    # with nothing new to ingest, the tick's skip reason (shown in the UI) says it too
    again, _ = _tick(instance, lake, cursor=result.cursor)
    assert "'my batch' name not allowed" in str(again.skip_reason)

    # and a person sees them in the summary
    assert cli(["--lake", lake.root, "summary"]) == 0
    assert "'my batch' name not allowed" in capsys.readouterr().out


def test_an_ingest_whose_run_was_killed_is_requested_again_a_few_times(lake, store, instance):
    """A run whose worker was killed is marked failed by run monitoring; the landing sensor then
    asks for the batch again (a new run key per attempt), at most MAX_INGEST_RETRIES times, and
    never for a batch whose ingestion got as far as an admission decision."""
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    from ssl_assets.sensors import MAX_INGEST_RETRIES

    make_batch(lake, "killed", n=2)
    first, _ = _tick(instance, lake)
    add_partitions(instance, "killed")

    def failed_run():  # what run monitoring leaves behind when the run worker was killed
        return create_run_for_test(
            instance,
            job_name="ingest_batch",
            status=DagsterRunStatus.FAILURE,
            tags={"dagster/partition": "killed"},
        ).run_id

    keys = []
    for _ in range(MAX_INGEST_RETRIES):
        lost = failed_run()
        result, _ = _tick(instance, lake, cursor=first.cursor)
        assert [(r.partition_key, r.tags["ssl/retry-of"]) for r in result.run_requests] == [
            ("killed", lost)
        ]
        keys.append(result.run_requests[0].run_key)
    assert len(set(keys)) == MAX_INGEST_RETRIES  # a new run key per attempt

    failed_run()  # the last retry failed too: the sensor gives up, and says so
    gave_up, _ = _tick(instance, lake, cursor=first.cursor)
    assert not gave_up.run_requests
    assert f"failed {MAX_INGEST_RETRIES + 1} times" in str(gave_up.skip_reason)

    # a batch whose run failed after raw_images decided admission (here: not admitted) is a
    # decision, not a lost run: nothing to retry
    rejected = make_batch(lake, "rejected", n=1)
    for i in range(3):
        (rejected / f"broken_{i}.png").write_bytes(b"not a png")
    add_partitions(instance, "rejected")
    run = materialize(
        [raw_images, image_catalog],
        partition_key="rejected",
        instance=instance,
        resources=resources_for(lake, store),
        raise_on_error=False,
    )
    assert (
        not run.success and store.query("SELECT * FROM batches WHERE batch = 'rejected'").shape[0]
    )
    after, _ = _tick(instance, lake, cursor=first.cursor)
    assert "rejected" not in [r.partition_key for r in after.run_requests]
