"""raw_images: the manifest of one landed batch, gated before anything downstream may read it."""

from collections.abc import Iterator

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
from quality.gates import bounds_verdict, import_gx_in_background, record_check, suite_verdict
from quality.suites import raw_images_suite
from resources.lake import LakeResource
from resources.metadata import MetadataStore
from resources.settings import ImageSpecResource
from ssl_assets.data.catalog import save_staged_catalog
from ssl_assets.data.manifest import MANIFEST_COLUMNS, QUARANTINE_REASONS, scan_and_decode
from ssl_assets.data.sidecars import read_attributes, read_labels
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS, batch_partitions
from ssl_assets.presentation import table as presentation_table
from ssl_assets.profiles import Profile

MANIFEST_SCHEMA = TableSchema(
    columns=[
        TableColumn("image_id", "string", description="stable hash of (batch, relative path)"),
        TableColumn("batch", "string"),
        TableColumn("rel_path", "string", description="path relative to the batch folder"),
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
    """Ingestion settings (a `None` takes the profile's value; gates from quality/thresholds.py)."""

    max_pixels: int | None = Field(
        default=None,
        description="Images with more pixels are quarantined as too_many_pixels "
        "(None: the profile's max_pixels).",
    )
    max_file_bytes: int | None = Field(
        default=None,
        description="Larger files are quarantined as file_too_large without being read "
        "(None: the profile's max_file_bytes).",
    )
    max_quarantine_fraction: float = Field(
        default=thresholds.RAW_MAX_QUARANTINE_FRACTION,
        description="Blocking gate: a batch with a larger quarantined share is not admitted.",
    )
    min_ok_images: int = Field(
        default=thresholds.RAW_MIN_OK_IMAGES,
        description="Blocking gate: a batch needs at least this many usable images.",
    )
    stage_catalog: bool = Field(
        default=True,
        description="Validation decodes every image anyway: also stage its canonical pixels at "
        "the image_spec resource's version, so that image_catalog does not decode the files "
        "again. False: validate only.",
    )


def _counts(stored: pd.DataFrame) -> tuple[dict[str, int], dict[str, int], float]:
    """(files/ok/quarantined counts, quarantined count by reason, quarantined share)."""
    quarantined = stored["status"] == "quarantined"
    counts = {
        "files": len(stored),
        "ok": int((~quarantined).sum()),
        "quarantined": int(quarantined.sum()),
    }
    by_reason = stored.loc[quarantined, "reason"].value_counts().to_dict()
    return counts, by_reason, (counts["quarantined"] / counts["files"] if counts["files"] else 0.0)


def _admit(
    context: AssetExecutionContext,
    metadata: MetadataStore,
    checks: list[AssetCheckResult],
    counts: dict[str, int],
) -> bool:
    """Admission is a data rule: the batch is admitted (table `batches`) only when every
    blocking gate passed, so later runs never read it otherwise."""
    failed = [c for c in checks if not c.passed]
    reason = (
        "all gates passed"
        if not failed
        else "; ".join(f"{c.check_name}: {c.description}" for c in failed)
    )
    metadata.record_admission(context.partition_key, not failed, reason, counts, context.run.run_id)
    if failed:
        context.log.warning(f"batch {context.partition_key} is NOT admitted: {reason}")
    return not failed


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
    image_spec: ImageSpecResource,
    profile: Profile,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """One manifest row per file of the batch folder: hashes, format, size, mode, and a
    quarantine reason for every file that is not a usable image. Raw files are only read.

    The batch is admitted (table `batches`) only when both blocking gates pass; later stages
    read admitted batches only."""
    batch, run_id = context.partition_key, context.run.run_id
    batch_dir = lake.batch_dir(batch)
    if not batch_dir.is_dir():
        raise Failure(f"landing/{batch}/ does not exist under {lake.landing_dir}")
    import_gx_in_background()  # overlaps the decoding below; the gates need it after
    spec = image_spec.spec if config.stage_catalog else None
    manifest, decoded = scan_and_decode(
        batch_dir,
        batch,
        config.max_pixels or profile.max_pixels,
        spec,
        max_file_bytes=config.max_file_bytes or profile.max_file_bytes,
    )
    ids = manifest["image_id"].tolist()
    labels, label_rejects = read_labels(
        batch_dir, batch, ids, lambda wanted: metadata.known_image_ids(wanted, exclude_batch=batch)
    )
    attributes, attribute_rejects = read_attributes(batch_dir, batch, ids)
    rejects = pd.concat([label_rejects, attribute_rejects], ignore_index=True)
    metadata.write_raw_batch(batch, manifest, labels, attributes, rejects, run_id)

    stored = metadata.batch_manifest(batch)
    counts, by_reason, fraction = _counts(stored)
    metadata.record_metrics(
        "raw_images",
        batch,
        run_id,
        {
            **counts,
            "quarantine_fraction": fraction,
            "labels": len(labels),
            "attribute_values": len(attributes),
            "rejected_csv_rows": len(rejects),
            **{f"quarantined_{k}": v for k, v in by_reason.items()},
        },
    )
    yield MaterializeResult(
        metadata=_manifest_metadata(
            stored, counts, by_reason, fraction, labels, attributes, rejects
        )
    )
    checks = _gates(metadata, stored, config, batch, run_id, fraction, by_reason, counts)
    yield from checks
    if _admit(context, metadata, checks, counts) and decoded is not None:
        ok = manifest.set_index("image_id").loc[decoded.index["image_id"], "content_hash"]
        save_staged_catalog(decoded, ok.tolist(), lake.staged_array(image_spec.version, batch))


def _gates(
    metadata: MetadataStore,
    stored: pd.DataFrame,
    config: RawImagesConfig,
    batch: str,
    run_id: str,
    fraction: float,
    by_reason: dict[str, int],
    counts: dict[str, int],
) -> list[AssetCheckResult]:
    verdicts = [
        suite_verdict(
            stored,
            check_name="raw_manifest_suite",
            suite_name="raw_images",
            expectations=raw_images_suite(
                config.max_quarantine_fraction, MANIFEST_COLUMNS, QUARANTINE_REASONS
            ),
            extra_details={"quarantine_fraction": fraction, "quarantined_by_reason": by_reason},
        ),
        bounds_verdict(
            check_name="raw_has_usable_images",
            metric="ok",
            value=counts["ok"],
            min_value=config.min_ok_images,
        ),
    ]
    return [
        record_check(metadata, "raw_images", v, partition=batch, run_id=run_id) for v in verdicts
    ]


def _manifest_metadata(
    stored: pd.DataFrame,
    counts: dict[str, int],
    by_reason: dict[str, int],
    fraction: float,
    labels: pd.DataFrame,
    attributes: pd.DataFrame,
    rejects: pd.DataFrame,
) -> dict:
    quarantined = stored.loc[stored["status"] == "quarantined", ["rel_path", "reason", "detail"]]
    return {
        "dagster/row_count": counts["files"],
        "ok": counts["ok"],
        "quarantined": counts["quarantined"],
        "quarantine_fraction": fraction,
        "quarantined_by_reason": MetadataValue.json(by_reason),
        "labels": len(labels),
        "attribute_values": len(attributes),
        "rejected_csv_rows": presentation_table(rejects, limit=20) if len(rejects) else "none",
        "quarantined_files": presentation_table(quarantined, limit=20)
        if len(quarantined)
        else "none",
    }
