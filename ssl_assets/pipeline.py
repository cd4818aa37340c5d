"""Run the pipeline from Python, the way the README's run command does.

Runs go through real jobs on a real Dagster instance (`$DAGSTER_HOME`, else an ephemeral one), so
what the command did is visible afterwards in `dagster dev`: the same runs, checks and metadata.
Each run is tagged with this process's pid (`ssl_assets.run_launcher`), so that if the command
is killed mid-run, run monitoring marks the run failed instead of leaving it STARTED.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagster import DagsterInstance

from resources.lake import LakeResource, unusable_batches_text
from resources.metadata import MetadataStore
from ssl_assets.data.default_dataset import write_default_dataset
from ssl_assets.partitions import batch_partitions
from ssl_assets.profiles import Profile, get_profile
from ssl_assets.run_launcher import process_tags

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
            tags=process_tags(),
        )
        runs.append(BatchRun(batch, result.run_id, result.success))
    return runs


def curate(lake: LakeResource, store: MetadataStore, instance: DagsterInstance) -> BatchRun:
    """Run `curate_and_audit` over every admitted, catalogued image (incremental by design)."""
    from ssl_assets.definitions import defs

    result = defs.resolve_job_def("curate_and_audit").execute_in_process(
        instance=instance,
        resources={"lake": lake, "metadata": store},
        run_config=QUIET,
        raise_on_error=False,
        tags=process_tags(),
    )
    return BatchRun("all admitted", result.run_id, result.success)


def maybe_retrain(
    lake: LakeResource, store: MetadataStore, instance: DagsterInstance, profile: Profile
) -> BatchRun | None:
    """Run `retrain_evaluate` when the retrain policy says the new data is worth it."""
    from ssl_assets.definitions import defs
    from ssl_assets.registry import retrain_inputs
    from ssl_assets.retrain_policy import retrain_decision

    decision = retrain_decision(
        **retrain_inputs(store), min_new_images=profile.retrain_min_new_images
    )
    print(f"retrain policy: {'retrain' if decision.retrain else 'no retrain'} ({decision.reason})")
    if not decision.retrain:
        return None
    result = defs.resolve_job_def("retrain_evaluate").execute_in_process(
        instance=instance,
        resources={"lake": lake, "metadata": store},
        run_config=QUIET,
        raise_on_error=False,
        tags=process_tags(),
    )
    return BatchRun("retrain_evaluate", result.run_id, result.success)


def audit_summary(store: MetadataStore) -> str:
    """Each audit gate's latest verdict, and why."""
    gates = store.query(
        "SELECT asset, check_name, passed, severity, details FROM gate_results "
        "WHERE asset IN ('diversity_audit', 'bias_audit', 'labeling_candidates') "
        "QUALIFY row_number() OVER (PARTITION BY asset, check_name ORDER BY recorded_at DESC) = 1 "
        "ORDER BY asset, check_name"
    )
    if gates.empty:
        return "no audits yet"
    import json

    lines = ["audits:"]
    for g in gates.itertuples():
        verdict = "pass" if g.passed else ("FAIL" if g.severity == "ERROR" else "warn")
        why = json.loads(g.details or "{}").get("description", "")
        lines.append(f"  {g.asset}.{g.check_name}: {verdict} — {why[:110]}")
    return "\n".join(lines)


def evaluation_summary(store: MetadataStore) -> str:
    """The label-efficiency table of the newest evaluated encoder and the champion's metrics."""
    table = store.query(
        "SELECT budget, method, round(avg(n_labels)) AS labels, "
        "round(avg(accuracy), 3) AS test_acc, round(coalesce(stddev_samp(accuracy), 0), 3) AS std, "
        "count(*) AS seeds FROM probes "
        "WHERE model_id = (SELECT model_id FROM probes ORDER BY recorded_at DESC LIMIT 1) "
        "GROUP BY ALL ORDER BY labels, method"
    )
    if table.empty:
        return "no evaluation yet"
    lines = ["label efficiency (test accuracy, mean ± std over label draws):"]
    lines.append(f"{'budget':<12} {'labels':>6}  {'method':<20} accuracy")
    for r in table.itertuples():
        lines.append(
            f"{r.budget:<12} {int(r.labels):>6}  {r.method:<20} {r.test_acc:.3f} ± {r.std:.3f}"
        )
    champion = store.query(
        "SELECT model_id, metrics, reason FROM models WHERE kind = 'finetuned' "
        "AND status = 'champion' ORDER BY created_at DESC LIMIT 1"
    )
    if champion.empty:
        lines.append("champion: none")
    else:
        import json

        m = json.loads(champion["metrics"].iloc[0] or "{}")
        lines.append(
            f"champion {champion['model_id'].iloc[0]}: test accuracy {m.get('accuracy', float('nan')):.3f}, "
            f"ECE {m.get('ece', float('nan')):.3f} — {champion['reason'].iloc[0]}"
        )
    decision = store.query(
        "SELECT challenger_id, promoted, reasons FROM promotions ORDER BY decided_at DESC LIMIT 1"
    )
    if len(decision):
        d = decision.iloc[0]
        verdict = "promoted" if d["promoted"] else "refused"
        lines.append(f"last decision: {d['challenger_id']} {verdict}")
    return "\n".join(lines)


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
    unusable = unusable_batches_text(lake)
    if unusable:
        print(unusable)
    curation = curate(lake, store, instance)
    runs.append(curation)
    print(
        f"curate_and_audit run {curation.run_id[:8]}: {'success' if curation.success else 'FAILED'}"
    )
    if curation.success:
        retrain = maybe_retrain(lake, store, instance, profile)
        if retrain is not None:
            runs.append(retrain)
            print(
                f"retrain_evaluate run {retrain.run_id[:8]}: "
                f"{'success' if retrain.success else 'FAILED'}"
            )
    print()
    print(f"lake: {lake.root_path}   profile: {profile.name}")
    print(batch_summary(store))
    print()
    print(curation_summary(store))
    print()
    print(audit_summary(store))
    print()
    print(evaluation_summary(store))
    return 0 if all(r.success for r in runs) else 1
