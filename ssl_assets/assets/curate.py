"""Curation assets: decode once, deduplicate in three tiers, flag quality issues, split for good.

`image_catalog` is per batch (a later batch never re-decodes an earlier one); `duplicates`,
`quality_issues` and `curated_images` span every admitted batch and are incremental: new images
are compared with everything curated before, and earlier decisions (groups, splits) never move.
"""

import time
from collections.abc import Iterator

import numpy as np
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
from quality.gates import metric_gate, suite_gate
from quality.suites import curated_images_suite
from resources.lake import LakeResource
from resources.metadata import MetadataStore, registered, utcnow
from ssl_assets.assets.ingest import raw_images, staged_catalog_path
from ssl_assets.curation.contact_sheet import grid_png, markdown_image
from ssl_assets.curation.decisions import allowed_reasons, decide
from ssl_assets.curation.dedup import DedupConfig, assign_groups, find_edges, label_edges
from ssl_assets.curation.features import image_features
from ssl_assets.curation.quality import (
    ISSUES,
    QualityThresholds,
    geometry_scores,
    quality_flags,
)
from ssl_assets.curation.semantic import PINNED_EMBEDDER_VERSION
from ssl_assets.curation.splits import SplitConfig, assign_splits
from ssl_assets.data.canonical import CanonicalSpec
from ssl_assets.data.catalog import (
    build_batch_catalog,
    load_array,
    save_array_atomic,
    take_staged_catalog,
)
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS, batch_partitions
from ssl_assets.profiles import get_profile

DEFAULT_SPEC = CanonicalSpec(resolution=get_profile().catalog_resolution, aspect="pad")
DEFAULT_EXCLUDING_ISSUES = ["dark", "light", "blurry", "low_information"]
_QUALITY_DEFAULTS = QualityThresholds()


def _catalog_version_field() -> str:
    return Field(
        default=DEFAULT_SPEC.version,
        description="Canonical catalog version to curate (r<resolution>-<aspect>).",
    )


# -- shared readers ------------------------------------------------------------------------------


def admitted_catalog(metadata: MetadataStore, version: str) -> pd.DataFrame:
    """Catalogued images of admitted batches, in curation order: batches in order of arrival
    (first ingestion), then by path. Earlier images are the ones kept when copies turn up."""
    return metadata.query(
        "SELECT c.*, i.rel_path FROM image_catalog c "
        "JOIN admitted_batches a USING (batch) JOIN images i USING (image_id) "
        "JOIN (SELECT batch, min(recorded_at) AS arrived FROM batches GROUP BY batch) b "
        "USING (batch) WHERE c.version = ? ORDER BY b.arrived, c.batch, i.rel_path",
        [version],
    )


def load_rows(lake: LakeResource, catalog: pd.DataFrame, suffix: str = ".npy") -> np.ndarray:
    """Rows of the per-batch arrays (pixels, or `.pinned.npy` embeddings) for catalog rows."""
    if catalog.empty:
        return np.empty((0,))
    parts, order = [], []
    for array_path, rows in catalog.groupby("array_path", sort=False):
        array = load_array(lake.path(array_path.removesuffix(".npy") + suffix))
        parts.append(np.asarray(array[rows["array_row"].to_numpy()]))
        order.append(rows.index.to_numpy())
    stacked = np.concatenate(parts)
    out = np.empty_like(stacked)
    out[np.argsort(np.concatenate(order), kind="stable")] = stacked
    return out


def _positions(catalog: pd.DataFrame) -> pd.DataFrame:
    return catalog.reset_index(drop=True)


# -- image_catalog -------------------------------------------------------------------------------


class ImageCatalogConfig(Config):
    """How images are canonicalised (defaults from SSL_PROFILE)."""

    resolution: int = Field(default=DEFAULT_SPEC.resolution, description="square side in pixels")
    aspect: str = Field(default=DEFAULT_SPEC.aspect, description="pad | center_crop | stretch")


CATALOG_SCHEMA = TableSchema(
    columns=[
        TableColumn("image_id", "string"),
        TableColumn("batch", "string"),
        TableColumn("version", "string", description="canonical spec, e.g. r32-pad"),
        TableColumn("array_row", "int", description="row in catalog/<version>/<batch>.npy"),
        TableColumn("array_path", "string"),
        TableColumn("pixel_hash", "string", description="sha256 of native decoded RGB pixels"),
        TableColumn("phash", "int", description="64-bit perceptual hash"),
        TableColumn("dhash", "int", description="64-bit difference hash"),
        TableColumn("orig_width", "int"),
        TableColumn("orig_height", "int"),
        TableColumn("embedder", "string", description="pinned embedder version"),
    ]
)


@asset(
    partitions_def=batch_partitions,
    deps=[raw_images],
    group_name="curation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={"dagster/column_schema": CATALOG_SCHEMA, "dagster/table_name": "image_catalog"},
    check_specs=[
        AssetCheckSpec(
            "catalog_complete",
            asset="image_catalog",
            blocking=True,
            description="Every ok image of the batch decoded, unchanged since ingestion.",
        )
    ],
)
def image_catalog(
    context: AssetExecutionContext,
    config: ImageCatalogConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Each ok image of an admitted batch, decoded once, in catalog/<version>/<batch>.npy
    (N x R x R x 3 uint8, memory-mapped by training), with pixel/perceptual hashes, pinned
    embeddings (<batch>.pinned.npy) and quality scores computed from the same pixels.

    Ingestion's validating decode staged the default version's arrays: they are taken over
    when they hold exactly the manifest's ok rows; any other version decodes the files here."""
    batch = context.partition_key
    run_id = context.run.run_id
    status = metadata.query("SELECT admitted, reason FROM batch_status WHERE batch = ?", [batch])
    if status.empty or not bool(status["admitted"].iloc[0]):
        why = "never ingested" if status.empty else status["reason"].iloc[0]
        raise Failure(
            description=f"batch {batch} is not admitted ({why}); curation reads admitted batches only",
            metadata={"batch": batch, "reason": why},
        )
    spec = CanonicalSpec(resolution=config.resolution, aspect=config.aspect)  # type: ignore[arg-type]
    ok_rows = metadata.query(
        "SELECT image_id, rel_path, content_hash, bytes FROM images "
        "WHERE batch = ? AND status = 'ok' ORDER BY rel_path",
        [batch],
    )
    rel_array = f"catalog/{spec.version}/{batch}.npy"
    started = time.perf_counter()
    staged = staged_catalog_path(lake, spec.version, batch)
    catalog = take_staged_catalog(staged, ok_rows, lake.path(rel_array))
    decoded_at_ingest = catalog is not None
    if catalog is None:
        catalog = build_batch_catalog(lake.batch_dir(batch), ok_rows, spec)
        save_array_atomic(catalog.arrays, lake.path(rel_array))
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    sizes = catalog.index[["orig_height", "orig_width"]].to_numpy()
    features = image_features(catalog.arrays, sizes)
    features_s = time.perf_counter() - started
    save_array_atomic(
        features.embeddings, lake.path(rel_array.removesuffix(".npy") + ".pinned.npy")
    )
    now = utcnow()
    index = catalog.index.assign(
        batch=batch,
        version=spec.version,
        array_path=rel_array,
        phash=features.phash,
        dhash=features.dhash,
        embedder=PINNED_EMBEDDER_VERSION,
        run_id=run_id,
        recorded_at=now,
    )
    scores = features.scores
    scores_long = (
        scores.drop(columns=["orig_height", "orig_width"])
        .assign(image_id=index["image_id"].to_numpy())
        .melt(id_vars="image_id", var_name="score", value_name="value")
        .assign(batch=batch, version=spec.version, run_id=run_id, recorded_at=now)
        if len(scores)
        else pd.DataFrame()
    )
    failures = catalog.failures.assign(
        batch=batch, version=spec.version, run_id=run_id, recorded_at=now
    )
    with metadata.transaction() as con:
        for table, df in (
            ("image_catalog", index),
            ("catalog_failures", failures),
            ("quality_scores", scores_long),
        ):
            con.execute(
                f"DELETE FROM {table} WHERE batch = ? AND version = ?",  # noqa: S608
                [batch, spec.version],
            )
            metadata.insert(con, table, df)
    metadata.record_metrics(
        "image_catalog",
        batch,
        run_id,
        {
            "images": len(index),
            "failures": len(failures),
            "decoded_at_ingest": int(decoded_at_ingest),
            "decode_seconds": decode_s,
            "feature_seconds": features_s,
        },
    )
    sample = catalog.arrays[:16]
    yield MaterializeResult(
        metadata={
            "dagster/row_count": len(index),
            "version": spec.version,
            "array_path": rel_array,
            "array_mb": round(catalog.arrays.nbytes / 2**20, 2),
            "decoded_at_ingest": MetadataValue.bool(decoded_at_ingest),
            "decode_images_per_s": (
                None if decoded_at_ingest or not decode_s else round(len(index) / decode_s, 1)
            ),
            "feature_images_per_s": round(len(index) / features_s, 1) if features_s else 0.0,
            "failures": MetadataValue.md(
                failures[["image_id", "reason", "detail"]].to_markdown(index=False)
                if len(failures)
                else "none"
            ),
            "sample": MetadataValue.md(
                markdown_image(grid_png([(f"{batch}: first images", list(sample))]), "sample")
            ),
        }
    )
    yield metric_gate(
        metadata,
        asset="image_catalog",
        check_name="catalog_complete",
        metric="failures",
        value=len(failures),
        max_value=0,
        partition=batch,
        run_id=run_id,
    )


# -- duplicates ----------------------------------------------------------------------------------


class DuplicatesConfig(Config):
    """Deduplication thresholds, and which pinned embedder the semantic tier uses."""

    embedder: str = Field(
        default="pinned",
        description="'pinned' (the fixed cheap embedding, PINNED_EMBEDDER_VERSION) or the id of "
        "an encoder in `models` to pin instead; recorded with every group",
    )
    catalog_version: str = _catalog_version_field()
    near_max_distance: int = Field(
        default=DedupConfig.near_max_distance, description="max Hamming distance of 64-bit pHashes"
    )
    semantic_threshold: float = Field(
        default=DedupConfig.semantic_threshold,
        description="min cosine similarity (pinned embedder)",
    )
    semantic_clusters: int = Field(default=0, description="k-means clusters; 0 = ~1 per 1,000")
    seed: int = 0


def semantic_embedder(lake: LakeResource, name: str):
    """(embed(catalog rows) -> unit vectors, recorded name) for the semantic tier.

    `pinned` reads the embeddings computed once at cataloging. An encoder id pins that trained
    encoder instead: a fixed, named model, so groups still never move when training produces a
    new one (and the graph keeps no edge from training back to curation)."""
    if name == "pinned":

        def pinned(rows: pd.DataFrame) -> np.ndarray:
            if rows.empty:
                return np.zeros((0, 160), np.float32)
            stale = sorted(set(rows["embedder"]) - {PINNED_EMBEDDER_VERSION})
            if stale:
                raise Failure(
                    f"catalog rows carry pinned embedder versions {stale}, not the current "
                    f"{PINNED_EMBEDDER_VERSION}: re-materialize image_catalog for their batches "
                    "so every embedding comes from one embedder"
                )
            return load_rows(lake, rows, ".pinned.npy")

        return pinned, PINNED_EMBEDDER_VERSION
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.evaluate.features import embed_images

    model_dir = lake.path("models", name)
    if not (model_dir / "encoder.json").is_file():
        raise Failure(f"embedder {name!r} is neither 'pinned' nor an encoder in {model_dir.parent}")
    backbone, meta = load_encoder(model_dir)

    def encoder(rows: pd.DataFrame) -> np.ndarray:
        if rows.empty:
            return np.zeros((0, int(meta["out_dim"])), np.float32)
        features = embed_images(backbone, load_rows(lake, rows), meta["preprocessing"])
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)

    return encoder, f"encoder:{name}:{meta.get('weights_sha256', '')[:12]}"


def _group_sheet(
    groups: pd.DataFrame, catalog: pd.DataFrame, lake: LakeResource, limit: int = 6
) -> bytes:
    """A few groups per tier, kept image first; reads only the pixels it shows."""
    members = groups[groups["role"] == "member"]
    picked: list[tuple[str, list[str]]] = []
    for tier in ("exact", "near", "semantic"):
        for group_id, part in list(members[members["tier"] == tier].groupby("group_id"))[:2]:
            picked.append((tier, [group_id, *part["image_id"].tolist()][:limit]))
    wanted = {i for _, ids in picked for i in ids}
    shown = catalog[catalog["image_id"].isin(wanted)].reset_index(drop=True)
    pixels = load_rows(lake, shown) if len(shown) else np.empty((0,))
    pos = {image_id: k for k, image_id in enumerate(shown["image_id"])}
    rows = [
        (f"{tier}: kept first, then excluded copies", [pixels[pos[i]] for i in ids if i in pos])
        for tier, ids in picked
    ]
    return grid_png(rows or [("no duplicate groups", [])])


@asset(
    deps=[image_catalog],
    group_name="curation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={
        "dagster/table_name": "duplicates",
        "dagster/column_schema": TableSchema(
            columns=[
                TableColumn("seq", "int", description="curation order"),
                TableColumn("image_id", "string"),
                TableColumn("group_id", "string", description="the kept representative's id"),
                TableColumn("role", "string", description="representative | member"),
                TableColumn("tier", "string", description="exact | near | semantic"),
                TableColumn("matched_id", "string", description="the image it matched"),
                TableColumn("score", "float", description="Hamming distance or cosine"),
                TableColumn("linked_groups", "string", description="earlier groups touched"),
                TableColumn("embedder", "string", description="semantic tier's embedder"),
            ]
        ),
    },
)
def duplicates(
    context: AssetExecutionContext,
    config: DuplicatesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> MaterializeResult:
    """Duplicate groups in three tiers — exact (identical decoded pixels), near (pHash within
    a Hamming distance, pigeonhole index) and semantic (pinned-embedding cosine similarity
    within k-means clusters, SemDeDup) — for images not deduplicated before, searched against
    each other and everything already curated. Each group keeps its first image."""
    run_id = context.run.run_id
    catalog = _positions(admitted_catalog(metadata, config.catalog_version))
    done = metadata.query(
        "SELECT d.image_id, coalesce(c.group_id, d.group_id) AS group_id, d.seq "
        "FROM duplicates d LEFT JOIN curated_images c USING (image_id) ORDER BY d.seq"
    )
    is_old = catalog["image_id"].isin(done["image_id"])
    new = catalog[~is_old].reset_index(drop=True)
    old = (
        catalog[is_old]
        .merge(done, on="image_id")
        .sort_values("seq", kind="stable")
        .reset_index(drop=True)
    )
    unmerged = set(
        metadata.query("SELECT image_id FROM current_overrides WHERE action = 'unmerge'")[
            "image_id"
        ]
    )
    cfg = DedupConfig(
        near_max_distance=config.near_max_distance,
        semantic_threshold=config.semantic_threshold,
        semantic_clusters=config.semantic_clusters or None,
        seed=config.seed,
    )
    started = time.perf_counter()
    embed, embedder = semantic_embedder(lake, config.embedder)
    new_emb, old_emb = embed(new), embed(old)
    edges = find_edges(new, new_emb, old, old_emb, cfg) if len(new) else pd.DataFrame()
    groups = (
        assign_groups(new["image_id"].tolist(), old, edges, unmerged)
        if len(new)
        else pd.DataFrame(columns=["image_id", "group_id", "role", "tier"])
    )
    seconds = time.perf_counter() - started
    now = utcnow()
    if len(new):
        next_seq = int(done["seq"].max()) + 1 if len(done) else 0
        rows = groups.assign(
            seq=np.arange(next_seq, next_seq + len(groups)),
            embedder=embedder,
            run_id=run_id,
            recorded_at=now,
        )
        labelled = label_edges(
            edges, new["image_id"].to_numpy(object), old["image_id"].to_numpy(object)
        )
        pairs = pd.DataFrame(
            {
                "image_id": labelled["left_id"],
                "other_id": labelled["right_id"],
                "tier": labelled["tier"],
                "score": labelled["score"].astype(float),
                "run_id": run_id,
                "recorded_at": now,
            }
        )
        with metadata.transaction() as con:
            metadata.insert(con, "duplicates", rows)
            metadata.insert(con, "duplicate_pairs", pairs)
    members = groups[groups["role"] == "member"]
    per_tier = {t: int((members["tier"] == t).sum()) for t in ("exact", "near", "semantic")}
    metadata.record_metrics(
        "duplicates",
        None,
        run_id,
        {"new_images": len(new), "old_images": len(old), "seconds": seconds, **per_tier},
    )
    sheet = _group_sheet(groups, catalog, lake) if len(members) else None
    return MaterializeResult(
        metadata={
            "new_images": len(new),
            "compared_with_existing": len(old),
            "duplicates_by_tier": MetadataValue.json(per_tier),
            "new_groups": int((groups["role"] == "representative").sum()),
            "near_max_distance": config.near_max_distance,
            "semantic_threshold": config.semantic_threshold,
            "embedder": embedder,
            "seconds": round(seconds, 3),
            "sample_groups": MetadataValue.md(
                markdown_image(sheet, "duplicate groups") if sheet else "no duplicates found"
            ),
        }
    )


# -- quality_issues ------------------------------------------------------------------------------


class QualityIssuesConfig(Config):
    """cleanvision-style thresholds (flag when score < threshold) and which flags exclude."""

    catalog_version: str = _catalog_version_field()
    dark: float = _QUALITY_DEFAULTS.dark
    light: float = _QUALITY_DEFAULTS.light
    blurry: float = _QUALITY_DEFAULTS.blurry
    low_information: float = _QUALITY_DEFAULTS.low_information
    grayscale: float = _QUALITY_DEFAULTS.grayscale
    odd_size: float = _QUALITY_DEFAULTS.odd_size
    odd_aspect_ratio: float = _QUALITY_DEFAULTS.odd_aspect_ratio
    exclude: list[str] = Field(
        default=DEFAULT_EXCLUDING_ISSUES,
        description="issues that exclude an image; the others only annotate",
    )


@asset(
    deps=[image_catalog],
    group_name="curation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={
        "dagster/table_name": "quality_issues",
        "dagster/column_schema": TableSchema(
            columns=[
                TableColumn("image_id", "string"),
                TableColumn("batch", "string"),
                TableColumn("issue", "string", description="dark, light, blurry, ..."),
                TableColumn("score", "float", description="low means more of the issue"),
                TableColumn("threshold", "float", description="flagged when score < threshold"),
                TableColumn("excludes", "bool", description="exclude, or only annotate"),
            ]
        ),
    },
)
def quality_issues(
    context: AssetExecutionContext,
    config: QualityIssuesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> MaterializeResult:
    """cleanvision's issue set — dark, light, blurry, low information, grayscale, odd size, odd
    aspect ratio — flagged from the scores computed at cataloging, against configurable
    thresholds; odd size/aspect are judged against every admitted image."""
    unknown = set(config.exclude) - set(ISSUES)
    if unknown:
        raise Failure(f"exclude names unknown issues {sorted(unknown)}; known: {list(ISSUES)}")
    run_id = context.run.run_id
    catalog = _positions(admitted_catalog(metadata, config.catalog_version))
    scores = metadata.query(
        "SELECT s.image_id, s.score, s.value FROM quality_scores s "
        "JOIN admitted_batches USING (batch) WHERE s.version = ?",
        [config.catalog_version],
    )
    wide = (
        scores.pivot(index="image_id", columns="score", values="value")
        .reindex(catalog["image_id"])
        .reset_index()
        if len(scores)
        else pd.DataFrame({"image_id": catalog["image_id"]})
    )
    wide["orig_height"] = catalog["orig_height"].to_numpy()
    wide["orig_width"] = catalog["orig_width"].to_numpy()
    if len(wide):
        geometry = geometry_scores(wide[["orig_height", "orig_width"]].to_numpy())
        for column in geometry:
            wide[column] = geometry[column].to_numpy()
    limits = QualityThresholds(**{k: getattr(config, k) for k in ISSUES})
    flags = quality_flags(wide, limits) if len(wide) else pd.DataFrame()
    rows = []
    for issue in ISSUES:
        if flags.empty:
            break
        hit = flags[f"is_{issue}"].to_numpy()
        score_col = f"{issue}_score"
        rows.append(
            pd.DataFrame(
                {
                    "image_id": catalog["image_id"].to_numpy()[hit],
                    "batch": catalog["batch"].to_numpy()[hit],
                    "issue": issue,
                    "score": wide[score_col].to_numpy()[hit] if score_col in wide else np.nan,
                    "threshold": getattr(limits, issue),
                    "excludes": issue in config.exclude,
                }
            )
        )
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    table = table.assign(run_id=run_id, recorded_at=utcnow()) if len(table) else table
    with metadata.transaction() as con:
        con.execute("DELETE FROM quality_issues")
        metadata.insert(con, "quality_issues", table)
    per_issue = {i: int((table["issue"] == i).sum()) if len(table) else 0 for i in ISSUES}
    metadata.record_metrics(
        "quality_issues", None, run_id, {f"flagged_{k}": v for k, v in per_issue.items()}
    )
    sheet_rows = []
    if len(table):
        pixels_needed = catalog[catalog["image_id"].isin(table["image_id"])].reset_index(drop=True)
        pixels = load_rows(lake, pixels_needed)
        pos = {i: k for k, i in enumerate(pixels_needed["image_id"])}
        for issue in ISSUES:
            ids = table.loc[table["issue"] == issue, "image_id"].head(8)
            if len(ids):
                action = "excludes" if issue in config.exclude else "annotates"
                sheet_rows.append((f"{issue} ({action})", [pixels[pos[i]] for i in ids]))
    return MaterializeResult(
        metadata={
            "images": len(catalog),
            "flagged_by_issue": MetadataValue.json(per_issue),
            "excluding_issues": MetadataValue.json(sorted(config.exclude)),
            "annotating_issues": MetadataValue.json(sorted(set(ISSUES) - set(config.exclude))),
            "thresholds": MetadataValue.json(limits.as_dict()),
            "flagged_samples": MetadataValue.md(
                markdown_image(grid_png(sheet_rows), "flagged images")
                if sheet_rows
                else "no image flagged"
            ),
            "dagster/row_count": len(table),
        }
    )


# -- curated_images ------------------------------------------------------------------------------


class CuratedImagesConfig(Config):
    """Split fractions (used only for groups seen for the first time) and curation gates."""

    train: float = SplitConfig.train
    val: float = SplitConfig.val
    test: float = SplitConfig.test
    split_seed: str = SplitConfig.seed
    max_excluded_fraction: float = Field(
        default=thresholds.CURATION_MAX_EXCLUDED_FRACTION,
        description="Blocking gate: largest excluded share of any batch.",
    )
    max_groups_across_splits: int = thresholds.CURATION_MAX_GROUPS_ACROSS_SPLITS


def import_overrides_csv(lake: LakeResource, metadata: MetadataStore) -> int:
    """Append new rows of `$SSL_LAKE/overrides.csv` (image_id, action, who, why) to `overrides`."""
    path = lake.path("overrides.csv")
    if not path.is_file():
        return 0
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"image_id", "action"} - set(rows.columns)
    if missing:
        raise Failure(
            f"overrides.csv needs columns image_id, action[, who, why]: missing {missing}"
        )
    bad = sorted(set(rows["action"]) - {"include", "exclude", "unmerge"})
    if bad:
        raise Failure(f"overrides.csv has unknown actions {bad}; use include, exclude or unmerge")
    rows = rows.reindex(columns=["image_id", "action", "who", "why"]).fillna("")
    with metadata.transaction() as con:
        with registered(con, "_overrides", rows):
            added = con.execute(
                "INSERT INTO overrides SELECT o.image_id, o.action, o.who, o.why, now()::TIMESTAMP "
                "FROM _overrides o WHERE NOT EXISTS (SELECT 1 FROM overrides x WHERE "
                "x.image_id = o.image_id AND x.action = o.action AND x.who IS NOT DISTINCT FROM o.who "
                "AND x.why IS NOT DISTINCT FROM o.why)"
            ).fetchone()
    return int(added[0]) if added else 0


CURATED_SCHEMA = TableSchema(
    columns=[
        TableColumn("image_id", "string"),
        TableColumn("batch", "string"),
        TableColumn("group_id", "string", description="duplicate group (its kept image's id)"),
        TableColumn("split", "string", description="train | val | test, assigned once"),
        TableColumn("include", "bool"),
        TableColumn("reasons", "string", description="comma-separated exclusion reasons"),
        TableColumn("annotations", "string", description="flags that only annotate, overrides"),
    ]
)


@asset(
    deps=[duplicates, quality_issues],
    group_name="curation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "duckdb", "great-expectations"},
    owners=OWNERS,
    metadata={"dagster/column_schema": CURATED_SCHEMA, "dagster/table_name": "curated_images"},
    check_specs=[
        AssetCheckSpec(
            "curated_images_suite",
            asset="curated_images",
            blocking=True,
            description="GX suite: unique image_id, splits in train/val/test, known reasons.",
        ),
        AssetCheckSpec(
            "excluded_fraction_per_batch",
            asset="curated_images",
            blocking=True,
            description="No batch loses more than max_excluded_fraction of its images.",
        ),
        AssetCheckSpec(
            "no_group_across_splits",
            asset="curated_images",
            blocking=True,
            description="No duplicate group has included images in two splits (no leak).",
        ),
    ],
)
def curated_images(
    context: AssetExecutionContext,
    config: CuratedImagesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """One row per image: include flag, exclusion reasons and a split. Splits are assigned once
    (append-only `splits`): a new group by its representative's pin or pixel hash, a member by its
    group; an image whose duplicates span splits, or whose pin contradicts its group, is excluded
    as cross_split_duplicate. Overrides (overrides.csv or the `overrides` table) always win."""
    run_id = context.run.run_id
    imported = import_overrides_csv(lake, metadata)
    split_cfg = SplitConfig(config.train, config.val, config.test, config.split_seed)
    pending = metadata.query(
        "SELECT d.image_id, d.group_id, d.role, d.linked_groups, c.pixel_hash, "
        "  (SELECT any_value(a.value) FROM attributes a "
        "   WHERE a.image_id = d.image_id AND a.key = 'split') AS pin "
        "FROM duplicates d JOIN (SELECT DISTINCT image_id, pixel_hash FROM image_catalog) c "
        "USING (image_id) WHERE d.image_id NOT IN (SELECT image_id FROM splits) ORDER BY d.seq"
    )
    group_splits = dict(
        metadata.query(
            "SELECT group_id, any_value(split) AS split FROM splits "
            "WHERE NOT cross_split GROUP BY group_id"
        ).itertuples(index=False)
    )
    pending["linked_groups"] = pending["linked_groups"].apply(
        lambda v: list(v) if v is not None else []
    )
    new_splits = assign_splits(pending, group_splits, split_cfg)
    if len(new_splits):
        metadata.append("splits", new_splits.assign(run_id=run_id, assigned_at=utcnow()))

    images = metadata.query(
        "SELECT s.image_id, c.batch, s.group_id, s.split, d.role, d.tier, s.cross_split "
        "FROM splits s JOIN duplicates d USING (image_id) "
        "JOIN (SELECT DISTINCT image_id, batch FROM image_catalog) c USING (image_id) "
        "ORDER BY d.seq"
    )
    flags = metadata.query("SELECT image_id, issue, excludes FROM quality_issues")
    overrides = metadata.query("SELECT image_id, action FROM current_overrides")
    admitted = set(metadata.admitted_batches())
    curated = decide(images, flags, overrides, admitted)
    with metadata.transaction() as con:
        con.execute("DELETE FROM curated_images")
        metadata.insert(con, "curated_images", curated.assign(run_id=run_id, updated_at=utcnow()))

    stored = metadata.query("SELECT * FROM curated_images")
    excluded = stored[~stored["include"]]
    reason_counts = (
        excluded["reasons"].str.split(",").explode().value_counts().to_dict()
        if len(excluded)
        else {}
    )
    split_counts = stored[stored["include"]]["split"].value_counts().to_dict()
    per_batch = stored.groupby("batch")["include"].agg(lambda s: 1.0 - s.mean()).to_dict()
    leaks = (
        stored[stored["include"]].groupby("group_id")["split"].nunique().gt(1).sum()
        if len(stored)
        else 0
    )
    cross_split = stored[stored["reasons"].str.contains("cross_split_duplicate", regex=False)]
    metadata.record_metrics(
        "curated_images",
        None,
        run_id,
        {
            "images": len(stored),
            "included": int(stored["include"].sum()),
            "new_images": len(new_splits),
            "cross_split_duplicates": len(cross_split),
            **{f"included_{k}": v for k, v in split_counts.items()},
            **{f"excluded_{k}": v for k, v in reason_counts.items()},
        },
    )
    yield MaterializeResult(
        metadata={
            "dagster/row_count": len(stored),
            "included": int(stored["include"].sum()),
            "included_by_split": MetadataValue.json(split_counts),
            "excluded_by_reason": MetadataValue.json(reason_counts),
            "excluded_fraction_by_batch": MetadataValue.json(
                {k: round(v, 4) for k, v in per_batch.items()}
            ),
            "new_images_split": len(new_splits),
            "overrides_imported": imported,
            "cross_split_duplicates": MetadataValue.md(
                cross_split[["image_id", "batch", "split", "group_id"]]
                .head(20)
                .to_markdown(index=False)
                if len(cross_split)
                else "none"
            ),
        }
    )
    yield suite_gate(
        metadata,
        stored,
        asset="curated_images",
        check_name="curated_images_suite",
        suite_name="curated_images",
        expectations=curated_images_suite(allowed_reasons(ISSUES)),
        partition=None,
        run_id=run_id,
    )
    worst_batch = max(per_batch, key=per_batch.get) if per_batch else None
    yield metric_gate(
        metadata,
        asset="curated_images",
        check_name="excluded_fraction_per_batch",
        metric=f"excluded_fraction[{worst_batch}]" if worst_batch else "excluded_fraction",
        value=per_batch.get(worst_batch, 0.0) if worst_batch else 0.0,
        max_value=config.max_excluded_fraction,
        partition=None,
        run_id=run_id,
    )
    yield metric_gate(
        metadata,
        asset="curated_images",
        check_name="no_group_across_splits",
        metric="groups_with_included_images_in_two_splits",
        value=int(leaks),
        max_value=config.max_groups_across_splits,
        partition=None,
        run_id=run_id,
    )
