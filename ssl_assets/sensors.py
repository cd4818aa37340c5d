"""Sensors: new landed batches start ingestion; newly admitted data starts curation, audits and
monitoring; the retrain policy (new data, drift, decay) starts a retrain.

All are idempotent by construction: each request carries a run key (per batch, per curated-data
snapshot) and the landing sensor keeps a persisted cursor, so a repeated tick or a restarted
`dagster dev` never starts a second run for the same thing. `build_sensors(profile)` makes the
three sensors with the profile's interval (the Definitions are built per profile).
"""

from __future__ import annotations

import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources.lake import LakeResource, unusable_batches_text
from resources.metadata import MetadataStore
from ssl_assets.jobs import curate_job, ingest_job, retrain_job
from ssl_assets.partitions import batch_partitions
from ssl_assets.profiles import Profile

#: How often the landing sensor re-requests the ingestion of a batch whose latest ingest run
#: failed before any admission decision (a killed run worker, an OOM, a restart; run monitoring
#: marks such runs failed). Three retries outlast a transient kill, and a batch that kills its
#: run every time must not hold the one-run-at-a-time queue forever: after them the sensor says
#: so on every tick and a person decides (re-execute the run in the UI once fixed).
MAX_INGEST_RETRIES = 3


def failed_ingests(
    context: SensorEvaluationContext, ready: list[str], metadata: MetadataStore
) -> tuple[list[RunRequest], list[str]]:
    """Retry requests for ready batches whose latest ingest run failed and that have no
    admission decision, and a line for each batch that ran out of retries."""
    from dagster import DagsterRunStatus, RunsFilter

    failed = context.instance.get_runs(
        RunsFilter(job_name=ingest_job.name, statuses=[DagsterRunStatus.FAILURE]), limit=500
    )
    candidates = sorted({r.tags.get("dagster/partition") for r in failed} & set(ready))
    latest = {}
    for batch in candidates:
        runs = context.instance.get_runs(  # newest first
            RunsFilter(job_name=ingest_job.name, tags={"dagster/partition": batch}),
            limit=MAX_INGEST_RETRIES + 2,
        )
        if runs and runs[0].status == DagsterRunStatus.FAILURE:
            latest[batch] = (len(runs), runs[0].run_id)
    if not latest:
        return [], []
    decided = metadata.decided_batches()
    requests, exhausted = [], []
    for batch, (attempts, run_id) in latest.items():
        if batch in decided:
            continue  # raw_images decided admission: the failure came later, not a lost run
        if attempts > MAX_INGEST_RETRIES:
            exhausted.append(
                f"The ingest of {batch!r} failed {attempts} times (last run {run_id}) and is "
                f"not retried again (at most {MAX_INGEST_RETRIES} retries)."
            )
            continue
        requests.append(
            RunRequest(
                run_key=f"ingest:{batch}:retry-{attempts}",
                partition_key=batch,
                tags={"ssl/retry-of": run_id},
            )
        )
    return requests, exhausted


def landing_tick(
    context: SensorEvaluationContext, lake: LakeResource, metadata: MetadataStore
) -> SensorResult:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    ready = lake.ready_batches()
    new = [b for b in ready if b not in seen and b not in known]
    problems = [unusable_batches_text(lake)]
    retries, exhausted = failed_ingests(context, [b for b in ready if b in known], metadata)
    problems = [p for p in (*problems, *exhausted) if p]
    for problem in problems:
        context.log.warning(problem)
    if retries:
        context.log.info(f"re-requesting failed ingests: {[r.partition_key for r in retries]}")
    if not new and not retries:
        return SensorResult(
            skip_reason=SkipReason(
                " ".join(
                    [
                        "Nothing to ingest: no new ready batch in landing/ (a batch folder is "
                        "ready once it holds a _READY file).",
                        *problems,
                    ]
                )
            )
        )
    if new:
        context.log.info(f"new ready batches: {new}")
    return SensorResult(
        run_requests=[RunRequest(run_key=f"ingest:{b}", partition_key=b) for b in new] + retries,
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(sorted(seen | set(new))),
    )


def curation_tick(context: SensorEvaluationContext, metadata: MetadataStore) -> SensorResult:
    key, batches, pending = metadata.curation_snapshot()
    if not pending:
        return SensorResult(
            skip_reason=SkipReason(
                "Nothing to curate: every catalogued image of the admitted batches is curated."
            )
        )
    return SensorResult(
        run_requests=[RunRequest(run_key=f"curate:{key}", tags={"ssl/snapshot": key})],
        cursor=key,
    )


def _in_flight(context: SensorEvaluationContext, job_name: str) -> bool:
    from dagster import DagsterRunStatus, RunsFilter

    return bool(
        context.instance.get_runs(
            RunsFilter(
                job_name=job_name,
                statuses=[
                    DagsterRunStatus.QUEUED,
                    DagsterRunStatus.NOT_STARTED,
                    DagsterRunStatus.STARTING,
                    DagsterRunStatus.STARTED,
                ],
            ),
            limit=1,
        )
    )


def retrain_tick(
    context: SensorEvaluationContext, metadata: MetadataStore, profile: Profile
) -> SensorResult:
    from ssl_assets.retrain_policy import decide_and_record

    if _in_flight(context, curate_job.name):
        return SensorResult(
            skip_reason=SkipReason("Waiting: a curation, audit or monitoring run is in progress.")
        )
    if _in_flight(context, ingest_job.name):
        return SensorResult(skip_reason=SkipReason("Waiting: a batch is being ingested."))
    _, _, pending = metadata.curation_snapshot()
    if pending:
        return SensorResult(
            skip_reason=SkipReason(
                f"Waiting: {pending} catalogued images await curation, which the curation "
                "sensor starts first."
            )
        )
    decision, run_key = decide_and_record(
        metadata, profile.retrain_min_new_images, decided_by="retrain_sensor"
    )
    if not decision.retrain:
        return SensorResult(skip_reason=SkipReason(decision.reason))
    snapshot = run_key.removeprefix("retrain:")
    context.log.info(decision.reason)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=run_key,
                tags={
                    "ssl/snapshot": snapshot,
                    "ssl/retrain-triggers": ",".join(decision.triggers),
                    "ssl/retrain-reason": decision.reason[:200],
                },
            )
        ],
        cursor=snapshot,
    )


DESCRIPTIONS = {
    "landing_sensor": "Watches landing/: a batch folder with a _READY marker becomes a partition "
    "and one ingest_batch run (run key = batch). Folders without _READY are still being copied. "
    "A batch whose ingest run failed before an admission decision (e.g. a killed run) is "
    f"requested again, at most {MAX_INGEST_RETRIES} times. Ready folders that cannot be batches "
    "(a name not allowed, a link) are reported in the log.",
    "curation_sensor": "Starts one curate run per snapshot of admitted, catalogued data (run key "
    "= a hash of batches, versions and counts), when some catalogued image is not yet curated.",
    "retrain_sensor": "Starts one retrain_evaluate run per train-split snapshot when the retrain "
    "policy says so: enough new curated train images since the last encoder, a new batch that "
    "drifted from the champion's training data, or the champion decayed on a batch's new labels "
    "(batch_monitoring). Decides only when curation is up to date and no ingest or "
    "curate_and_audit run is in flight; every decision, retrain or not, is recorded in "
    "retrain_decisions with its evidence, and a no is the tick's skip reason, in plain words.",
}


def build_sensors(profile: Profile) -> list[SensorDefinition]:
    """The three sensors, ticking at the profile's interval and running by default."""
    return [
        sensor(
            name=tick.__name__.replace("_tick", "_sensor"),
            job=job,
            minimum_interval_seconds=profile.sensor_interval_s,
            default_status=DefaultSensorStatus.RUNNING,
            description=DESCRIPTIONS[tick.__name__.replace("_tick", "_sensor")],
        )(tick)
        for tick, job in (
            (landing_tick, ingest_job),
            (curation_tick, curate_job),
            (retrain_tick, retrain_job),
        )
    ]
