"""raw_images: the manifest of one landed batch, gated before anything downstream may read it."""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from quality import thresholds
from quality.gates import import_gx_in_background, metric_gate, suite_gate
from quality.suites import raw_images_suite
from resources.lake import LakeResource
from resources.metadata import MetadataStore
from ssl_assets.data.canonical import CanonicalSpec
from ssl_assets.data.catalog import save_staged_catalog
from ssl_assets.data.manifest import scan_and_decode
from ssl_assets.data.sidecars import read_attributes, read_labels
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS, batch_partitions
from ssl_assets.profiles import get_profile

MANIFEST_SCHEMA = TableSchema(
    columns=[
        TableColumn("image_id", "string", description="stable hash of (batch, relative path)"),
        TableColumn("batch", "string"),
        TableColumn("rel_path", "string", description="path relative to landing/<batch>/"),
        TableColumn("content_hash", "string", description="sha256 of the file's bytes"),
        TableColumn("bytes", "int"),
        TableColumn("format", "string", description="decoder's format name (PNG, JPEG, ...)"),
        TableColumn("width", "int"),
        TableColumn("height", "int"),
        TableColumn("mode", "string", description="Pillow mode (L, RGB, ...)"),
        TableColumn("status", "string", description="ok | quarantined"),
        TableColumn("reason", "string", description="why quarantined"),
        TableColumn("detail", "string", description="the decoder's message"),
        TableColumn("run_id", "string"),
        TableColumn("ingested_at", "timestamp"),
    ]
)


class RawImagesConfig(Config):
    """Ingestion settings (defaults from SSL_PROFILE and quality/thresholds.py)."""

    max_pixels: int = Field(
        default=get_profile().max_pixels,
        description="Images with more pixels are quarantined as too_many_pixels.",
    )
    max_file_bytes: int = Field(
        default=get_profile().max_file_bytes,
        description="Larger files are quarantined as file_too_large without being read.",
    )
    max_quarantine_fraction: float = Field(
        default=thresholds.RAW_MAX_QUARANTINE_FRACTION,
        description="Blocking gate: a batch with a larger quarantined share is not admitted.",
    )
    min_ok_images: int = Field(
        default=thresholds.RAW_MIN_OK_IMAGES,
        description="Blocking gate: a batch needs at least this many usable images.",
    )
    stage_catalog_version: str = Field(
        default=CanonicalSpec(get_profile().catalog_resolution, "pad").version,
        description="Validation decodes every image anyway: also stage its canonical pixels in "
        "this catalog version (r<resolution>-<aspect>, image_catalog's default) so that "
        "image_catalog does not decode the files again. Empty: validate only.",
    )


def staged_catalog_path(lake: LakeResource, version: str, batch: str) -> Path:
    """Where ingestion leaves a batch's decoded catalog for image_catalog to take over."""
    return lake.path("staging", version, f"{batch}.npy")


@asset(
    partitions_def=batch_partitions,
    group_name="ingest",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "duckdb", "great-expectations"},
    owners=OWNERS,
    metadata={"dagster/column_schema": MANIFEST_SCHEMA, "dagster/table_name": "raw_images"},
    check_specs=[
        AssetCheckSpec(
            "raw_manifest_suite",
            asset="raw_images",
            blocking=True,
            description="GX suite: required columns, unique image_id, positive sizes for ok "
            "rows, known quarantine reasons, quarantine rate at most max_quarantine_fraction.",
        ),
        AssetCheckSpec(
            "raw_has_usable_images",
            asset="raw_images",
            blocking=True,
            description="At least min_ok_images files of the batch are usable images.",
        ),
    ],
)
def raw_images(
    context: AssetExecutionContext,
    config: RawImagesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """One manifest row per file of `landing/<batch>/`: hashes, format, size, mode, and a
    quarantine reason for every file that is not a usable image. Raw files are only read.

    The batch is admitted (table `batches`) only when both blocking gates pass; later stages
    read admitted batches only.
    """
    batch = context.partition_key
    run_id = context.run.run_id
    batch_dir = lake.batch_dir(batch)
    if not batch_dir.is_dir():
        raise Failure(f"landing/{batch}/ does not exist under {lake.landing_dir}")

    import_gx_in_background()  # overlaps the decoding below; the gates need it after
    spec = (
        CanonicalSpec.from_version(config.stage_catalog_version)
        if config.stage_catalog_version
        else None
    )
    manifest, decoded = scan_and_decode(
        batch_dir, batch, config.max_pixels, spec, max_file_bytes=config.max_file_bytes
    )
    ids = manifest["image_id"].tolist()
    labels, label_rejects = read_labels(
        batch_dir, batch, ids, lambda wanted: metadata.known_image_ids(wanted, exclude_batch=batch)
    )
    attributes, attribute_rejects = read_attributes(batch_dir, batch, ids)
    rejects = pd.concat([label_rejects, attribute_rejects], ignore_index=True)
    metadata.write_raw_batch(batch, manifest, labels, attributes, rejects, run_id)

    stored = metadata.query("SELECT * FROM images WHERE batch = ? ORDER BY rel_path", [batch])
    counts = {
        "files": len(stored),
        "ok": int((stored["status"] == "ok").sum()),
        "quarantined": int((stored["status"] == "quarantined").sum()),
    }
    by_reason = stored.loc[stored["status"] == "quarantined", "reason"].value_counts().to_dict()
    quarantine_fraction = counts["quarantined"] / counts["files"] if counts["files"] else 0.0
    metadata.record_metrics(
        "raw_images",
        batch,
        run_id,
        {
            **counts,
            "quarantine_fraction": quarantine_fraction,
            "labels": len(labels),
            "attribute_values": len(attributes),
            "rejected_csv_rows": len(rejects),
            **{f"quarantined_{k}": v for k, v in by_reason.items()},
        },
    )
    quarantined_preview = stored.loc[
        stored["status"] == "quarantined", ["rel_path", "reason", "detail"]
    ].head(20)
    yield MaterializeResult(
        metadata={
            "dagster/row_count": counts["files"],
            "ok": counts["ok"],
            "quarantined": counts["quarantined"],
            "quarantine_fraction": quarantine_fraction,
            "quarantined_by_reason": MetadataValue.json(by_reason),
            "labels": len(labels),
            "attribute_values": len(attributes),
            "rejected_csv_rows": MetadataValue.md(
                rejects.to_markdown(index=False) if len(rejects) else "none"
            ),
            "quarantined_files": MetadataValue.md(
                quarantined_preview.to_markdown(index=False) if len(quarantined_preview) else "none"
            ),
            "query": MetadataValue.md(
                f"```sql\nselect * from raw_images where batch = '{batch}'\n```"
            ),
        }
    )

    suite_result = suite_gate(
        metadata,
        stored,
        asset="raw_images",
        check_name="raw_manifest_suite",
        suite_name="raw_images",
        expectations=raw_images_suite(config.max_quarantine_fraction),
        partition=batch,
        run_id=run_id,
        extra_details={
            "quarantine_fraction": quarantine_fraction,
            "quarantined_by_reason": by_reason,
        },
    )
    yield suite_result
    usable_result = metric_gate(
        metadata,
        asset="raw_images",
        check_name="raw_has_usable_images",
        metric="ok",
        value=counts["ok"],
        min_value=config.min_ok_images,
        partition=batch,
        run_id=run_id,
    )
    yield usable_result

    failed = [r for r in (suite_result, usable_result) if not r.passed]
    reason = (
        "all gates passed"
        if not failed
        else "; ".join(f"{r.check_name}: {r.description}" for r in failed)
    )
    metadata.record_admission(batch, not failed, reason, counts, run_id)
    if failed:
        context.log.warning(f"batch {batch} is NOT admitted: {reason}")
    elif decoded is not None:
        ok = manifest.set_index("image_id").loc[decoded.index["image_id"], "content_hash"]
        save_staged_catalog(
            decoded, ok.tolist(), staged_catalog_path(lake, config.stage_catalog_version, batch)
        )
