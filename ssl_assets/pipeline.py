"""Run the pipeline from Python, the way the README's run command does.

Runs go through real jobs on a real Dagster instance (`$DAGSTER_HOME`, else an ephemeral one), so
what the command did is visible afterwards in `dagster dev`: the same runs, checks and metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagster import DagsterInstance

from resources.lake import LakeResource
from resources.metadata import MetadataStore
from ssl_assets.data.default_dataset import write_default_dataset
from ssl_assets.partitions import batch_partitions
from ssl_assets.profiles import Profile, get_profile

# The CLI prints its own one-line-per-run progress and summary; Dagster's step log stays in the
# instance (and in the UI), warnings and errors still reach the console.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class BatchRun:
    batch: str
    run_id: str
    success: bool


def get_instance() -> DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (the UI then shows these runs)."""
    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def land_default_data(lake: LakeResource, profile: Profile) -> list[str]:
    """Write the embedded default dataset into the landing zone unless batches are already there."""
    lake.ensure()
    if lake.ready_batches():
        return []
    return write_default_dataset(
        lake.landing_dir, profile.default_images, profile.default_label_fraction
    )


def settled_batches(store: MetadataStore) -> set[str]:
    """Batches with nothing left to do: rejected by their gate, or admitted and catalogued."""
    from ssl_assets.assets.curate import DEFAULT_SPEC

    settled = store.query(
        "SELECT batch FROM batch_status WHERE NOT admitted UNION "
        "SELECT DISTINCT batch FROM image_catalog WHERE version = ?",
        [DEFAULT_SPEC.version],
    )
    return set(settled["batch"])


def ingest_ready_batches(
    lake: LakeResource,
    store: MetadataStore,
    instance: DagsterInstance,
    reingest: bool = False,
) -> list[BatchRun]:
    """Add a partition per ready batch and run `ingest_batch` for each batch not yet ingested."""
    from ssl_assets.definitions import defs

    ready = lake.ready_batches()
    known = set(instance.get_dynamic_partitions(batch_partitions.name))
    new_keys = [b for b in ready if b not in known]
    if new_keys:
        instance.add_dynamic_partitions(batch_partitions.name, new_keys)
    done = set() if reingest else settled_batches(store)
    job = defs.resolve_job_def("ingest_batch")
    runs = []
    for batch in ready:
        if batch in done:
            continue
        result = job.execute_in_process(
            partition_key=batch,
            instance=instance,
            resources={"lake": lake, "metadata": store},
            run_config=QUIET,
            raise_on_error=False,
        )
        runs.append(BatchRun(batch, result.run_id, result.success))
    return runs


def curate(lake: LakeResource, store: MetadataStore, instance: DagsterInstance) -> BatchRun:
    """Run the `curate` job over every admitted, catalogued image (incremental by design)."""
    from ssl_assets.definitions import defs

    result = defs.resolve_job_def("curate").execute_in_process(
        instance=instance,
        resources={"lake": lake, "metadata": store},
        run_config=QUIET,
        raise_on_error=False,
    )
    return BatchRun("all admitted", result.run_id, result.success)


def curation_summary(store: MetadataStore) -> str:
    """Per batch: included per split and excluded per reason; then the curation gates."""
    curated = store.query("SELECT batch, split, include, reasons FROM curated_images")
    if curated.empty:
        return "nothing curated yet"
    lines = [f"{'batch':<16} {'train':>6} {'val':>6} {'test':>6} {'excl.':>6}  exclusion reasons"]
    for batch, part in curated.groupby("batch"):
        inc = part[part["include"]]["split"].value_counts()
        out = part[~part["include"]]
        reasons = out["reasons"].str.split(",").explode().value_counts()
        reason_text = ", ".join(f"{k}={v}" for k, v in reasons.items()) or "-"
        lines.append(
            f"{batch:<16} {inc.get('train', 0):>6} {inc.get('val', 0):>6} {inc.get('test', 0):>6} "
            f"{len(out):>6}  {reason_text}"
        )
    gates = store.query(
        "SELECT check_name, passed, details FROM gate_results WHERE asset = 'curated_images' "
        "QUALIFY row_number() OVER (PARTITION BY check_name ORDER BY recorded_at DESC) = 1 "
        "ORDER BY check_name"
    )
    lines.append(
        "gates: "
        + ", ".join(f"{g.check_name}={'pass' if g.passed else 'FAIL'}" for g in gates.itertuples())
    )
    return "\n".join(lines)


def batch_summary(store: MetadataStore) -> str:
    """Per batch: files, ok, quarantined by reason, each gate's latest outcome, admission."""
    status = store.query("SELECT * FROM batch_status ORDER BY batch")
    if status.empty:
        return "no batches ingested yet"
    reasons = store.query(
        "SELECT batch, reason, count(*) AS n FROM images WHERE status = 'quarantined' "
        "GROUP BY ALL ORDER BY batch, n DESC"
    )
    gates = store.query(
        "SELECT partition AS batch, check_name, passed FROM gate_results "
        "WHERE asset = 'raw_images' "
        "QUALIFY row_number() OVER (PARTITION BY partition, check_name ORDER BY recorded_at DESC) = 1 "
        "ORDER BY batch, check_name"
    )
    lines = [
        f"{'batch':<16} {'files':>6} {'ok':>6} {'quar.':>6}  admitted  gates / quarantine reasons"
    ]
    for row in status.itertuples():
        batch_gates = gates[gates["batch"] == row.batch]
        gate_text = ", ".join(
            f"{g.check_name}={'pass' if g.passed else 'FAIL'}" for g in batch_gates.itertuples()
        )
        batch_reasons = reasons[reasons["batch"] == row.batch]
        reason_text = ", ".join(f"{r.reason}={r.n}" for r in batch_reasons.itertuples()) or "-"
        lines.append(
            f"{row.batch:<16} {row.files:>6} {row.ok:>6} {row.quarantined:>6}  "
            f"{'yes' if row.admitted else 'NO':<8}  {gate_text}"
        )
        lines.append(f"{'':<16} {'':>6} {'':>6} {'':>6}  {'':<8}  quarantined: {reason_text}")
        if not row.admitted:
            lines.append(f"{'':<44}why not admitted: {row.reason}")
    return "\n".join(lines)


def run_pipeline(lake_root: str | None = None, profile_name: str | None = None) -> int:
    """Land the default data if the lake is empty, run every stage, print a summary.

    Returns a process exit code: 0 when every run succeeded.
    """
    profile = get_profile(profile_name)
    lake = LakeResource(root=lake_root) if lake_root else LakeResource.from_env()
    store = MetadataStore(path=str(lake.metadata_path))
    landed = land_default_data(lake, profile)
    if landed:
        print(f"landed the default dataset (sklearn digits) as batches: {', '.join(landed)}")
    instance = get_instance()
    runs = ingest_ready_batches(lake, store, instance)
    for r in runs:
        print(f"ingest_batch[{r.batch}] run {r.run_id[:8]}: {'success' if r.success else 'FAILED'}")
    curation = curate(lake, store, instance)
    runs.append(curation)
    print(f"curate run {curation.run_id[:8]}: {'success' if curation.success else 'FAILED'}")
    print()
    print(f"lake: {lake.root_path}   profile: {profile.name}")
    print(batch_summary(store))
    print()
    print(curation_summary(store))
    return 0 if all(r.success for r in runs) else 1
