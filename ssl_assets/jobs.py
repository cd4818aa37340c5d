"""Named jobs: what the CLI, the sensors and the launchpad start.

Per-batch work is partitioned by batch (`ingest_batch`); everything after it spans all admitted
batches. Dagster jobs cannot mix the two, so "the whole pipeline" after ingestion is `pipeline`.
"""

from dagster import AssetSelection, define_asset_job

CURATION = AssetSelection.assets("duplicates", "quality_issues", "curated_images")
AUDITS = AssetSelection.groups("audits")
# Each newly curated batch against the champion: drift, decay; read by the retrain policy.
MONITORING = AssetSelection.groups("monitoring")
TRAINING = AssetSelection.groups("pretraining", "evaluation")

# Per batch: read the landed files, gate them, decode the admitted ones into the catalog.
ingest_job = define_asset_job(
    "ingest_batch",
    selection=AssetSelection.assets("raw_images", "image_catalog"),
    description="Ingest one landed batch: manifest, quarantine, admission gate, then decode it "
    "once into the catalog (skipped when the batch is not admitted).",
)

# Across all admitted batches: curation, then the audits that run before compute is spent,
# and the monitoring of each newly curated batch (before the retrain policy reads it).
curate_job = define_asset_job(
    "curate_and_audit",
    selection=CURATION | AUDITS | MONITORING,
    description="Curate every admitted, catalogued image (duplicates in three tiers, quality "
    "issues, append-only splits, include decisions), then audit diversity and bias, pick "
    "labeling candidates, and monitor each newly curated batch against the champion (drift, "
    "decay on its new labels).",
)

# Pretrain an encoder on the curated train split, then evaluate it and judge the champion.
retrain_job = define_asset_job(
    "retrain_evaluate",
    selection=TRAINING,
    description="ssl_encoder, then frozen embeddings, probes and label-efficiency, a fine-tuned "
    "model, and the champion decision.",
)

# Everything after ingestion, in one run.
pipeline_job = define_asset_job(
    "pipeline",
    selection=CURATION | AUDITS | MONITORING | TRAINING,
    description="curate_and_audit followed by retrain_evaluate, in one run (the retrain policy "
    "is the sensors' and the CLI's business; this job always retrains).",
)
