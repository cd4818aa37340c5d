"""Run the pipeline from Python, the way the README's run command does.

Runs go through real jobs on a real Dagster instance (`$DAGSTER_HOME`, else an ephemeral one), so
what the command did is visible afterwards in `dagster dev`: the same runs, checks and metadata.
The Definitions are built for the chosen profile (`build_definitions`), so `--profile X` runs
exactly what `SSL_PROFILE=X dagster dev` would.
Each run is tagged with this process's pid (`ssl_assets.run_launcher`), so that if the command
is killed mid-run, run monitoring marks the run failed instead of leaving it STARTED.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dagster import DagsterInstance, Definitions

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


def _run(defs: Definitions, job: str, instance: DagsterInstance, label: str, **kwargs) -> BatchRun:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False, tags=process_tags(), **kwargs
    )
    return BatchRun(label, result.run_id, result.success)


def ingest_ready_batches(
    defs: Definitions, instance: DagsterInstance, reingest: bool = False
) -> list[BatchRun]:
    """Add a partition per ready batch and run `ingest_batch` for each batch not yet ingested."""
    resources = defs.resources
    lake, store = resources["lake"], resources["metadata"]
    ready = lake.ready_batches()
    known = set(instance.get_dynamic_partitions(batch_partitions.name))
    new_keys = [b for b in ready if b not in known]
    if new_keys:
        instance.add_dynamic_partitions(batch_partitions.name, new_keys)
    done = set() if reingest else store.settled_batches(resources["image_spec"].version)
    return [
        _run(defs, "ingest_batch", instance, batch, partition_key=batch)
        for batch in ready
        if batch not in done
    ]


def maybe_retrain(defs: Definitions, instance: DagsterInstance) -> BatchRun | None:
    """Run `retrain_evaluate` when the retrain policy (new data, drift, decay) says so; the
    decision is recorded in `retrain_decisions` like the sensor's."""
    from ssl_assets.retrain_policy import decide_and_record

    store, profile = defs.resources["metadata"], defs.resources["profile"]
    decision, _ = decide_and_record(store, profile.retrain_min_new_images, "ssl-assets run")
    print(f"The retrain policy says {decision.reason}.")
    if not decision.retrain:
        return None
    return _run(defs, "retrain_evaluate", instance, "retrain_evaluate")


def _verdict(passed: bool, severity: str) -> str:
    return "pass" if passed else ("FAIL" if severity == "ERROR" else "warn")


def audit_summary(store: MetadataStore) -> str:
    """Each audit gate's latest verdict, and why."""
    gates = store.latest_gate_verdicts(
        ["diversity_audit", "bias_audit", "labeling_candidates"], per_partition=False
    )
    if gates.empty:
        return "no audits yet"
    lines = ["audits:"]
    for g in gates.itertuples():
        why = json.loads(g.details or "{}").get("description", "")
        lines.append(f"  {g.asset}.{g.check_name}: {_verdict(g.passed, g.severity)} — {why[:110]}")
    return "\n".join(lines)


def evaluation_summary(store: MetadataStore) -> str:
    """The label-efficiency table of the newest evaluated encoder and the champion's metrics."""
    table = store.latest_probe_summary()
    if table.empty:
        return "no evaluation yet"
    lines = ["label efficiency (test accuracy, mean ± std over label draws):"]
    lines.append(f"{'budget':<12} {'labels':>6}  {'method':<20} accuracy")
    for r in table.itertuples():
        lines.append(
            f"{r.budget:<12} {int(r.labels):>6}  {r.method:<20} {r.test_acc:.3f} ± {r.std:.3f}"
        )
    champion = store.current_champion()
    if champion is None:
        lines.append("champion: none")
    else:
        m = json.loads(champion["metrics"] or "{}")
        lines.append(
            f"champion {champion['model_id']}: test accuracy {m.get('accuracy', float('nan')):.3f}, "
            f"ECE {m.get('ece', float('nan')):.3f} — {champion['reason']}"
        )
    decisions = store.promotions()
    if len(decisions):
        d = decisions.iloc[-1]
        verdict = "promoted" if d["promoted"] else "refused"
        lines.append(f"last decision: {d['challenger_id']} {verdict}")
    return "\n".join(lines)


def curation_summary(store: MetadataStore) -> str:
    """Per batch: included per split and excluded per reason; then the curation gates."""
    curated = store.curated_images()
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
    gates = store.latest_gate_verdicts(["curated_images"], per_partition=False)
    lines.append(
        "gates: "
        + ", ".join(f"{g.check_name}={'pass' if g.passed else 'FAIL'}" for g in gates.itertuples())
    )
    return "\n".join(lines)


def batch_summary(store: MetadataStore) -> str:
    """Per batch: files, ok, quarantined by reason, each gate's latest outcome, admission."""
    status = store.batch_status()
    if status.empty:
        return "no batches ingested yet"
    reasons = store.quarantine_counts()
    gates = store.latest_gate_verdicts(["raw_images"]).rename(columns={"partition": "batch"})
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
    from ssl_assets.definitions import build_definitions

    profile = get_profile(profile_name)
    defs = build_definitions(profile, lake_root)
    lake, store = defs.resources["lake"], defs.resources["metadata"]
    landed = land_default_data(lake, profile)
    if landed:
        print(f"landed the default dataset (sklearn digits) as batches: {', '.join(landed)}")
    instance = get_instance()
    runs = ingest_ready_batches(defs, instance)
    for r in runs:
        print(f"ingest_batch[{r.batch}] run {r.run_id[:8]}: {'success' if r.success else 'FAILED'}")
    unusable = unusable_batches_text(lake)
    if unusable:
        print(unusable)
    curation = _run(defs, "curate_and_audit", instance, "all admitted")
    runs.append(curation)
    print(
        f"curate_and_audit run {curation.run_id[:8]}: {'success' if curation.success else 'FAILED'}"
    )
    if curation.success:
        retrain = maybe_retrain(defs, instance)
        if retrain is not None:
            runs.append(retrain)
            print(
                f"retrain_evaluate run {retrain.run_id[:8]}: "
                f"{'success' if retrain.success else 'FAILED'}"
            )
    print()
    print(f"lake: {lake.root_path}   profile: {profile.name}")
    for summary in (batch_summary, curation_summary, audit_summary, evaluation_summary):
        print(summary(store))
        print()
    return 0 if all(r.success for r in runs) else 1
