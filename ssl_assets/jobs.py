"""Named jobs: what the CLI, the sensors and the launchpad start."""

from dagster import AssetSelection, define_asset_job

from ssl_assets.partitions import batch_partitions

# Per batch: read the landed files, gate them, decode the admitted ones into the catalog.
ingest_job = define_asset_job(
    "ingest_batch",
    selection=AssetSelection.assets("raw_images", "image_catalog"),
    partitions_def=batch_partitions,
    description="Ingest one landed batch: manifest, quarantine, admission gate, then decode it "
    "once into the catalog (skipped when the batch is not admitted).",
)

# Across all admitted batches: deduplicate, flag quality issues, assign splits, include or not.
curate_job = define_asset_job(
    "curate",
    selection=AssetSelection.assets("duplicates", "quality_issues", "curated_images"),
    description="Curate every admitted, catalogued image: duplicates (exact, near, semantic), "
    "quality issues, append-only splits, include decisions and their gates.",
)
