"""Sensors: new landed batches start ingestion; newly admitted data starts curation and audits;
enough newly curated data starts a retrain.

Both are idempotent by construction: each request carries a run key (per batch, per curated-data
snapshot) and the landing sensor keeps a persisted cursor, so a repeated tick or a restarted
`dagster dev` never starts a second run for the same thing.
"""

from __future__ import annotations

import hashlib
import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources.lake import LakeResource, unusable_batches_text
from resources.metadata import MetadataStore
from ssl_assets.jobs import curate_job, ingest_job, retrain_job
from ssl_assets.partitions import batch_partitions
from ssl_assets.profiles import get_profile

INTERVAL_S = get_profile().sensor_interval_s


@sensor(
    job=ingest_job,
    minimum_interval_seconds=INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches landing/: a batch folder with a _READY marker becomes a partition and "
    "one ingest_batch run (run key = batch). Folders without _READY are still being copied.",
)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new = [b for b in lake.ready_batches() if b not in seen and b not in known]
    unusable = unusable_batches_text(lake)
    if unusable:
        context.log.warning(unusable)
    if not new:
        return SensorResult(
            skip_reason=SkipReason(
                "no new ready batch in landing/" + (f"; {unusable}" if unusable else "")
            )
        )
    context.log.info(f"new ready batches: {new}")
    return SensorResult(
        run_requests=[RunRequest(run_key=f"ingest:{b}", partition_key=b) for b in new],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)],
        cursor=json.dumps(sorted(seen | set(new))),
    )


def curated_snapshot(metadata: MetadataStore) -> tuple[str, list[str], int]:
    """(key, admitted catalogued batches, images not yet curated) of the data curation sees."""
    catalogued = metadata.query(
        "SELECT c.batch, c.version, count(*) AS n FROM image_catalog c "
        "JOIN admitted_batches USING (batch) GROUP BY ALL ORDER BY ALL"
    )
    pending = metadata.query(
        "SELECT count(*) AS n FROM image_catalog c JOIN admitted_batches USING (batch) "
        "WHERE c.image_id NOT IN (SELECT image_id FROM splits)"
    )["n"].iloc[0]
    text = ";".join(f"{r.batch}@{r.version}:{r.n}" for r in catalogued.itertuples())
    return (
        hashlib.sha256(text.encode()).hexdigest()[:16],
        catalogued["batch"].tolist(),
        int(pending),
    )


@sensor(
    job=curate_job,
    minimum_interval_seconds=INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts one curate run per snapshot of admitted, catalogued data (run key = a "
    "hash of batches, versions and counts), when some catalogued image is not yet curated.",
)
def curation_sensor(context: SensorEvaluationContext, metadata: MetadataStore) -> SensorResult:
    key, batches, pending = curated_snapshot(metadata)
    if not pending:
        return SensorResult(skip_reason=SkipReason("every admitted, catalogued image is curated"))
    return SensorResult(
        run_requests=[RunRequest(run_key=f"curate:{key}", tags={"ssl/snapshot": key})],
        cursor=key,
    )


@sensor(
    job=retrain_job,
    minimum_interval_seconds=INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts one retrain_evaluate run per train-split snapshot when the retrain "
    "policy says enough new curated train images arrived since the last encoder, curation is "
    "up to date and no curation/audit run is in flight (their gates are checked again by "
    "ssl_encoder when it runs).",
)
def retrain_sensor(context: SensorEvaluationContext, metadata: MetadataStore) -> SensorResult:
    from dagster import DagsterRunStatus, RunsFilter

    from ssl_assets.registry import retrain_inputs, train_snapshot
    from ssl_assets.retrain_policy import retrain_decision

    busy = context.instance.get_runs(
        RunsFilter(
            job_name=curate_job.name,
            statuses=[
                DagsterRunStatus.QUEUED,
                DagsterRunStatus.NOT_STARTED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if busy:
        return SensorResult(skip_reason=SkipReason("curation or audits are running"))
    _, _, pending = curated_snapshot(metadata)
    if pending:
        return SensorResult(skip_reason=SkipReason(f"{pending} catalogued images await curation"))
    decision = retrain_decision(
        **retrain_inputs(metadata), min_new_images=get_profile().retrain_min_new_images
    )
    if not decision.retrain:
        return SensorResult(skip_reason=SkipReason(decision.reason))
    snapshot = train_snapshot(metadata)
    context.log.info(f"retrain: {decision.reason}")
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"retrain:{snapshot}",
                tags={"ssl/snapshot": snapshot, "ssl/retrain-reason": decision.reason[:200]},
            )
        ],
        cursor=snapshot,
    )
