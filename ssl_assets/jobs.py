"""Named jobs: what the CLI, the sensors and the launchpad start."""

from dagster import AssetSelection, define_asset_job

from ssl_assets.partitions import batch_partitions

# Per batch: read the landed files and gate them (curation's catalog joins this job later).
ingest_job = define_asset_job(
    "ingest_batch",
    selection=AssetSelection.groups("ingest"),
    partitions_def=batch_partitions,
    description="Ingest one landed batch: manifest, quarantine, labels/attributes, admission gate.",
)
