"""Curation assets: decode once, deduplicate in four tiers, flag quality issues, split for good.

`image_catalog` is per batch (a later batch never re-decodes an earlier one); `duplicates`,
`quality_issues` and `curated_images` span every admitted batch and are incremental: new images
are compared with everything curated before, and earlier decisions (groups, splits) never move.
Every catalog version comes from the `image_spec` resource, so all four read the same arrays.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

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
from quality.gates import bounds_verdict, record_check, suite_verdict
from quality.suites import curated_images_suite
from resources.curation_settings import CurationSettings
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from resources.settings import ImageSpecResource
from ssl_assets.curation.contact_sheet import (
    captioned_sheet,
    grid_png,
    markdown_image,
    pair_sheet,
    pairs_png,
)
from ssl_assets.curation.decisions import (
    allowed_reasons,
    decide,
    read_overrides_csv,
    summarise,
)
from ssl_assets.curation.dedup import (
    TIERS,
    assign_groups,
    find_edges,
    group_tables,
    new_and_old,
)
from ssl_assets.curation.features import catalog_tables, image_features
from ssl_assets.curation.image_issues import (
    ISSUES,
    REGISTRY,
    default_excluding,
    default_thresholds,
    issue_table,
)
from ssl_assets.curation.leaks import HELD_OUT, leak_summary, leak_verdicts, sample_pairs
from ssl_assets.curation.semantic import PINNED_EMBEDDER_VERSION
from ssl_assets.curation.splits import SplitConfig, assign_splits, prepare_pending
from ssl_assets.data.catalog import (
    BatchCatalog,
    build_batch_catalog,
    save_array_atomic,
    take_staged_catalog,
)
from ssl_assets.ml.evaluate.features import semantic_embedder
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS, batch_partitions
from ssl_assets.presentation import picture
from ssl_assets.presentation import table as presentation_table
from ssl_assets.refusals import refused

# -- image_catalog -------------------------------------------------------------------------------

CATALOG_SCHEMA = TableSchema(
    columns=[
        TableColumn("image_id", "string"),
        TableColumn("batch", "string"),
        TableColumn("version", "string", description="canonical spec, e.g. r32-pad"),
        TableColumn(
            "array_row",
            "int",
            description="row of the batch's catalog array (catalog/VERSION/BATCH.npy)",
        ),
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
    deps=["raw_images"],
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
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Each ok image of an admitted batch, decoded once, in catalog/<version>/<batch>.npy
    (N x R x R x 3 uint8, memory-mapped by training), with pixel/perceptual hashes, pinned
    embeddings (<batch>.pinned.npy) and quality scores computed from the same pixels.

    Ingestion's validating decode staged the arrays of the image_spec's version: they are
    taken over when they hold exactly the manifest's ok rows; otherwise the files are decoded
    here."""
    batch, run_id = context.partition_key, context.run.run_id
    admitted, why = metadata.batch_admission(batch)
    if not admitted:
        raise Failure(
            description=f"batch {batch} is not admitted ({why}); curation reads admitted batches only",
            metadata={"batch": batch, "reason": why},
        )
    version = image_spec.version
    array_path = lake.catalog_array(version, batch)
    started = time.perf_counter()
    catalog, decoded_at_ingest = _decoded(lake, metadata, image_spec, batch, array_path)
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    index, failures = _describe(lake, metadata, catalog, batch, version, array_path, run_id)
    features_s = time.perf_counter() - started
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
    yield MaterializeResult(
        metadata=_catalog_metadata(catalog, index, failures, version, array_path, batch)
        | {
            "decoded_at_ingest": MetadataValue.bool(decoded_at_ingest),
            "decode_images_per_s": (
                None if decoded_at_ingest or not decode_s else round(len(index) / decode_s, 1)
            ),
            "feature_images_per_s": round(len(index) / features_s, 1) if features_s else 0.0,
        }
    )
    verdict = bounds_verdict(
        check_name="catalog_complete", metric="failures", value=len(failures), max_value=0
    )
    yield record_check(metadata, "image_catalog", verdict, partition=batch, run_id=run_id)


def _describe(
    lake: LakeResource,
    metadata: MetadataStore,
    catalog: BatchCatalog,
    batch: str,
    version: str,
    array_path: str,
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hashes, pinned embeddings and quality scores from the same pixels, stored beside the
    array and in the store; returns the catalog index and failures as recorded."""
    sizes = catalog.index[["orig_height", "orig_width"]].to_numpy()
    features = image_features(catalog.arrays, sizes)
    save_array_atomic(features.embeddings, lake.path(lake.pinned_array(array_path)))
    index, scores, failures = catalog_tables(
        catalog.index,
        catalog.failures,
        features,
        batch=batch,
        version=version,
        array_path=array_path,
        embedder=PINNED_EMBEDDER_VERSION,
        stamp={"run_id": run_id, "recorded_at": utcnow()},
    )
    metadata.write_catalog(batch, version, index, failures, scores)
    return index, failures


def _decoded(
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
    batch: str,
    array_path: str,
) -> tuple[BatchCatalog, bool]:
    """The batch's canonical pixels: ingestion's staged arrays when they hold exactly the
    manifest's ok rows, else decoded from the files now; and whether they were staged."""
    ok_rows = metadata.ok_images(batch)
    staged = lake.staged_array(image_spec.version, batch)
    catalog = take_staged_catalog(staged, ok_rows, lake.path(array_path))
    if catalog is not None:
        return catalog, True
    catalog = build_batch_catalog(lake.batch_dir(batch), ok_rows, image_spec.spec)
    save_array_atomic(catalog.arrays, lake.path(array_path))
    return catalog, False


def _catalog_metadata(catalog, index, failures, version: str, array_path: str, batch: str) -> dict:
    return {
        "dagster/row_count": len(index),
        "version": version,
        "array_path": array_path,
        "array_mb": round(catalog.arrays.nbytes / 2**20, 2),
        "failures": presentation_table(failures[["image_id", "reason", "detail"]], limit=20)
        if len(failures)
        else "none",
        "sample": MetadataValue.md(
            markdown_image(
                grid_png([(f"{batch}: first images", list(catalog.arrays[:16]))]), "sample"
            )
        ),
    }


# -- duplicates ----------------------------------------------------------------------------------


DUPLICATES_SCHEMA = TableSchema(
    columns=[
        TableColumn("seq", "int", description="curation order"),
        TableColumn("image_id", "string"),
        TableColumn("group_id", "string", description="the kept representative's id"),
        TableColumn("role", "string", description="representative | member"),
        TableColumn("tier", "string", description="exact | near | semantic | aligned"),
        TableColumn("matched_id", "string", description="the image it matched"),
        TableColumn("score", "float", description="Hamming distance, cosine or gradient cosine"),
        TableColumn("linked_groups", "string", description="earlier groups touched"),
        TableColumn("embedder", "string", description="semantic tier's embedder"),
        TableColumn("settings", "string", description="the lake's curation settings (JSON)"),
    ]
)


def _groups(
    curation: CurationSettings,
    lake: LakeResource,
    metadata: MetadataStore,
    new: pd.DataFrame,
    old: pd.DataFrame,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str]:
    """Edges of the four tiers from the new images to each other and to the old ones, and the
    groups they form (an unmerged image stays alone); (None, None, embedder) when none is new."""
    with refused():
        embed, embedder = semantic_embedder(curation.embedder, lake.read_rows, lake.model_dir)
        if new.empty:
            return None, None, embedder
        cfg = curation.dedup_config()
        edges = find_edges(new, embed(new), old, embed(old), cfg, read_pixels=lake.read_rows)
    unmerged = metadata.overridden("unmerge")
    return assign_groups(new["image_id"].tolist(), old, edges, unmerged), edges, embedder


@asset(
    deps=["image_catalog"],
    group_name="curation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={"dagster/table_name": "duplicates", "dagster/column_schema": DUPLICATES_SCHEMA},
)
def duplicates(
    context: AssetExecutionContext,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
    curation: CurationSettings,
) -> MaterializeResult:
    """Duplicate groups in four tiers — exact (identical decoded pixels), near (pHash within
    a Hamming distance, pigeonhole index), semantic (pinned-embedding cosine similarity within
    k-means clusters, SemDeDup) and aligned (an embedding neighbour confirmed by its pixels under
    the best small shift, crop and tone change) — for images not deduplicated before, searched
    against each other and everything already curated, under the lake's curation settings
    (recorded with every decision). Each group keeps its first image."""
    catalog = metadata.admitted_catalog(image_spec.version)
    done = metadata.deduplicated()
    new, old = new_and_old(catalog, done)
    started = time.perf_counter()
    groups, edges, embedder = _groups(curation, lake, metadata, new, old)
    seconds = time.perf_counter() - started
    per_tier = dict.fromkeys(TIERS, 0)
    pairs = None
    stamp = {"run_id": context.run.run_id, "recorded_at": utcnow(), "settings": curation.record()}
    if groups is not None:
        rows, pairs = group_tables(
            groups,
            edges,
            new,
            old,
            next_seq=int(done["seq"].max()) + 1 if len(done) else 0,
            embedder=embedder,
            stamp=stamp,
        )
        metadata.append_duplicates(rows, pairs)
        members = groups[groups["role"] == "member"]
        per_tier = {t: int((members["tier"] == t).sum()) for t in per_tier}
    metadata.record_metrics(
        "duplicates",
        None,
        context.run.run_id,
        {"new_images": len(new), "old_images": len(old), "seconds": seconds, **per_tier},
    )
    return MaterializeResult(
        metadata=_duplicates_metadata(curation, lake, catalog, pairs, per_tier)
        | {
            "new_images": len(new),
            "compared_with_existing": len(old),
            "new_groups": int((groups["role"] == "representative").sum())
            if groups is not None
            else 0,
            "curation_settings": MetadataValue.json(json.loads(stamp["settings"])),
            "embedder": embedder,
            "seconds": round(seconds, 3),
        }
    )


#: how each tier's score reads under a pair, and the rule that made the pair
_TIER_SCORE = {
    "exact": lambda score: "identical pixels",
    "near": lambda score: f"pHash distance {score:g} bits",
    "semantic": lambda score: f"cosine {score:.3f}",
    "aligned": lambda score: f"gradient cosine {score:.3f}",
}


def _duplicates_metadata(
    config: CurationSettings,
    lake: LakeResource,
    catalog: pd.DataFrame,
    pairs: pd.DataFrame | None,
    per_tier: dict[str, int],
) -> dict:
    """Per tier a sheet of up to 24 of the new pairs found, 96 px, with both ids and the score
    (named, first); then the counts per tier and the rule of each (a table, inline)."""
    rules = {
        "exact": "same decoded pixels",
        "near": f"pHash Hamming distance at most {config.near_max_distance}",
        "semantic": f"pinned-embedding cosine at least {config.semantic_threshold}",
        "aligned": f"ZNCC at least {config.aligned_min_ncc} and gradient cosine at least "
        f"{config.aligned_min_gradient} at the best shift, crop and tone",
    }
    pictures, found = {}, {}
    for tier in per_tier:
        part = pairs[pairs["tier"] == tier] if pairs is not None else pd.DataFrame()
        part = part.sort_values("score", ascending=tier == "near") if len(part) else part
        found[tier] = len(part)
        sheet = (
            pair_sheet(
                part,
                catalog,
                lake.read_rows,
                f"{tier} duplicates: {min(len(part), 24)} of {len(part)} new pairs ({rules[tier]})",
                _TIER_SCORE[tier],
            )
            if len(part)
            else None
        )
        pictures[f"{tier}_pairs"] = picture(
            sheet, f"{tier} duplicate pairs", f"no new {tier} pairs"
        )
    counts = pd.DataFrame(
        [
            {"tier": t, "excluded copies": per_tier[t], "pairs found": found[t], "rule": rules[t]}
            for t in per_tier
        ]
    )
    return {
        **pictures,
        "duplicates_by_tier": presentation_table(counts),
        **{f"{t}_duplicates": n for t, n in per_tier.items()},
        "near_max_distance": config.near_max_distance,
        "semantic_threshold": config.semantic_threshold,
    }


# -- quality_issues ------------------------------------------------------------------------------


class QualityIssuesConfig(Config):
    """cleanvision-style thresholds (flag when score < threshold) and which flags exclude; the
    defaults and the list of issues come from the registry in `curation/image_issues.py`."""

    thresholds: dict[str, float] = Field(
        default_factory=default_thresholds,
        description="Per issue, a threshold: an image is flagged when its score is below it.",
    )
    exclude: list[str] | None = Field(
        default=None,
        description="issues that exclude an image; the others only annotate (None: each "
        "issue's own default: dark, light, blurry and low_information exclude)",
    )


QUALITY_SCHEMA = TableSchema(
    columns=[
        TableColumn("image_id", "string"),
        TableColumn("batch", "string"),
        TableColumn("issue", "string", description="dark, light, blurry, ..."),
        TableColumn("score", "float", description="low means more of the issue"),
        TableColumn(
            "threshold", "float", description="an image is flagged when its score is below this"
        ),
        TableColumn("excludes", "bool", description="exclude, or only annotate"),
    ]
)


@asset(
    deps=["image_catalog"],
    group_name="curation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={"dagster/table_name": "quality_issues", "dagster/column_schema": QUALITY_SCHEMA},
)
def quality_issues(
    context: AssetExecutionContext,
    config: QualityIssuesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> MaterializeResult:
    """cleanvision's issue set — dark, light, blurry, low information, grayscale, odd size, odd
    aspect ratio — flagged from the scores computed at cataloging, against configurable
    thresholds; odd size/aspect are judged against every admitted image."""
    exclude = default_excluding() if config.exclude is None else config.exclude
    unknown = (set(exclude) | set(config.thresholds)) - set(ISSUES)
    if unknown:
        raise Failure(f"config names unknown issues {sorted(unknown)}; known: {list(ISSUES)}")
    catalog = metadata.admitted_catalog(image_spec.version)
    scores = metadata.admitted_quality_scores(image_spec.version)
    limits = {**default_thresholds(), **config.thresholds}
    table = issue_table(catalog, scores, limits, exclude)
    metadata.replace_quality_issues(table.assign(run_id=context.run.run_id, recorded_at=utcnow()))
    per_issue = {i: int((table["issue"] == i).sum()) for i in ISSUES}
    metadata.record_metrics(
        "quality_issues",
        None,
        context.run.run_id,
        {f"flagged_{k}": v for k, v in per_issue.items()},
    )
    return MaterializeResult(
        metadata=_issue_pictures(lake, table, catalog, scores, limits, exclude)
        | {
            "flagged_by_issue": presentation_table(
                pd.DataFrame(
                    [
                        {
                            "issue": name,
                            "flagged": per_issue[name],
                            "threshold": limits[name],
                            "action": "excludes" if name in exclude else "annotates",
                            "what it means": issue.description,
                        }
                        for name, issue in REGISTRY.items()
                    ]
                )
            ),
            **{f"flagged_{k}": v for k, v in per_issue.items()},
            "images": len(catalog),
            "dagster/row_count": len(table),
        }
    )


def _issue_pictures(
    lake: LakeResource,
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    scores: pd.DataFrame,
    limits: dict[str, float],
    exclude: list[str],
) -> dict:
    """Per issue, up to 16 flagged images (lowest scores first) at 96 px with id and score; for
    an issue nothing is flagged for, the 8 lowest-scoring images, to judge the threshold by."""
    out = {}
    for name in ISSUES:
        action = "excludes" if name in exclude else "annotates"
        flagged = table[table["issue"] == name].sort_values("score").head(16)
        if len(flagged):
            count = int((table["issue"] == name).sum())
            title = f"{name}: {count} flagged ({action}), score below {limits[name]:g}"
            rows = flagged
        else:
            rows = (
                scores[scores["score"] == f"{name}_score"]
                .nsmallest(8, "value")
                .rename(columns={"score": "score_name", "value": "score"})
            )
            title = f"{name}: none flagged (threshold {limits[name]:g}); the lowest scores"
        sheet = captioned_sheet(
            rows[["image_id", "score"]],
            catalog,
            lake.read_rows,
            title,
            lambda r: [r.image_id[:12], f"score {r.score:.3f}"],
        )
        out[f"{name}_samples"] = picture(sheet, f"{name} samples", f"{name}: nothing to show")
    return out


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
    max_leak_rate: float = Field(
        default=thresholds.CURATION_MAX_LEAK_RATE,
        description="Blocking gate, per held-out split: share of its images duplicating train.",
    )
    max_included_leaks: int = Field(
        default=thresholds.CURATION_MAX_INCLUDED_LEAKS,
        description="Blocking gate, per held-out split: images still included beside a "
        "training image they duplicate.",
    )


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


def _split_and_decide(
    config: CuratedImagesConfig, lake: LakeResource, metadata: MetadataStore, run_id: str
) -> tuple[int, pd.DataFrame]:
    """Import new overrides, give new images their split once, and rebuild the include
    decision of every image; returns (overrides imported, the new split rows)."""
    overrides_csv = lake.path("overrides.csv")
    with refused():
        overrides = read_overrides_csv(overrides_csv) if overrides_csv.is_file() else None
    imported = metadata.import_overrides(overrides) if overrides is not None else 0
    split_cfg = SplitConfig(config.train, config.val, config.test, config.split_seed)
    new_splits = assign_splits(
        prepare_pending(metadata.unsplit_images()), metadata.group_splits(), split_cfg
    )
    if len(new_splits):
        metadata.append_splits(new_splits.assign(run_id=run_id, assigned_at=utcnow()))
    curated = decide(
        metadata.split_images(),
        metadata.image_issues(),
        metadata.current_overrides(),
        set(metadata.admitted_batches()),
    )
    metadata.replace_curated(curated.assign(run_id=run_id, updated_at=utcnow()))
    return imported, new_splits


def _curation_verdicts(stored: pd.DataFrame, summary, config: CuratedImagesConfig) -> list:
    """The GX suite, the excluded share of the worst batch and the leak count."""
    worst = summary.worst_batch
    return [
        suite_verdict(
            stored,
            check_name="curated_images_suite",
            suite_name="curated_images",
            expectations=curated_images_suite(allowed_reasons(ISSUES)),
        ),
        bounds_verdict(
            check_name="excluded_fraction_per_batch",
            metric=f"excluded_fraction[{worst}]" if worst else "excluded_fraction",
            value=summary.excluded_fraction_by_batch.get(worst, 0.0) if worst else 0.0,
            max_value=config.max_excluded_fraction,
        ),
        bounds_verdict(
            check_name="no_group_across_splits",
            metric="groups_with_included_images_in_two_splits",
            value=summary.groups_across_splits,
            max_value=config.max_groups_across_splits,
        ),
    ]


@dataclass
class _Leaks:
    verdicts: list
    metadata: dict
    metrics: dict


def _leak_report(
    config: CuratedImagesConfig, lake: LakeResource, metadata: MetadataStore, version: str
) -> _Leaks:
    """The held-out splits' leak rates (gates and metrics) and a picture of sample leak pairs:
    held-out image, then its training match, with both ids and the scores that linked them."""
    found = metadata.split_leaks()
    table = leak_summary(found, metadata.split_sizes())
    pairs = sample_pairs(found)
    picture = "no held-out image duplicates a training image"
    if len(pairs):
        ids = [*pairs["held_out_id"], *pairs["train_id"]]
        rows = metadata.catalog_rows(version, ids).set_index("image_id").loc[ids]
        pixels = dict(zip(ids, lake.read_rows(rows.reset_index()), strict=True))
        tiles = [
            (_pair_caption(r), pixels[r.held_out_id], pixels[r.train_id])
            for r in pairs.itertuples()
        ]
        picture = markdown_image(
            pairs_png([("held-out image, then its training match", tiles)]), "leaks"
        )
    return _Leaks(
        verdicts=leak_verdicts(table, config.max_leak_rate, config.max_included_leaks),
        metadata={
            "split_leaks": MetadataValue.md(picture),
            "leak_rates": MetadataValue.json(table.set_index("split").to_dict("index")),
        },
        metrics={
            f"{m}_{r.split}": getattr(r, m)
            for r in table.itertuples()
            for m in ("leak_rate", "leaked", "included_leaks")
        },
    )


def _pair_caption(pair) -> tuple[str, ...]:
    """Both ids (shortened), the tier with its score, and the pixel scores when measured."""
    tier = pair.tier + {"near": f" d={pair.score:.0f}", "semantic": f" {pair.score:.3f}"}.get(
        pair.tier, ""
    )
    lines = (f"{pair.held_out_split} {pair.held_out_id[:6]}~{pair.train_id[:6]}", tier)
    if pair.pixel_ncc == pair.pixel_ncc and pair.tier != "exact":  # measured (not NaN)
        lines += (f"ncc {pair.pixel_ncc:.2f} grad {pair.pixel_gradient:.2f}",)
    return lines


@asset(
    deps=["duplicates", "quality_issues"],
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
        *[
            AssetCheckSpec(
                f"leak_rate_{split}",
                asset="curated_images",
                blocking=True,
                description=f"No {split} image still included beside a training image it "
                f"duplicates (blocks), and at most max_leak_rate of {split} duplicating training "
                "images (warns): split_leaks.",
            )
            for split in HELD_OUT
        ],
    ],
)
def curated_images(
    context: AssetExecutionContext,
    config: CuratedImagesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """One row per image: include flag, exclusion reasons and a split. Splits are assigned once
    (append-only `splits`): a new group by its representative's pin or pixel hash, a member by its
    group; an image whose duplicates span splits, or whose pin contradicts its group, is excluded
    as cross_split_duplicate. Overrides (overrides.csv or the `overrides` table) always win. The
    leak report (`split_leaks`) gates each held-out split's leak rate."""
    run_id = context.run.run_id
    imported, new_splits = _split_and_decide(config, lake, metadata, run_id)
    stored = metadata.curated_images()
    summary = summarise(stored)
    leaks = _leak_report(config, lake, metadata, image_spec.version)
    metadata.record_metrics(
        "curated_images",
        None,
        run_id,
        {
            "images": len(stored),
            "included": int(stored["include"].sum()),
            "new_images": len(new_splits),
            "cross_split_duplicates": len(summary.cross_split),
            **{f"included_{k}": v for k, v in summary.included_by_split.items()},
            **{f"excluded_{k}": v for k, v in summary.excluded_by_reason.items()},
            **leaks.metrics,
        },
    )
    yield MaterializeResult(
        metadata={
            "dagster/row_count": len(stored),
            "included": int(stored["include"].sum()),
            "included_by_split": MetadataValue.json(summary.included_by_split),
            "excluded_by_reason": MetadataValue.json(summary.excluded_by_reason),
            "excluded_fraction_by_batch": MetadataValue.json(
                {k: round(v, 4) for k, v in summary.excluded_fraction_by_batch.items()}
            ),
            "new_images_split": len(new_splits),
            "overrides_imported": imported,
            "cross_split_duplicates": presentation_table(
                summary.cross_split[["image_id", "batch", "split", "group_id"]], limit=20
            )
            if len(summary.cross_split)
            else "none",
        }
        | leaks.metadata
    )
    gates = [(v, True) for v in _curation_verdicts(stored, summary, config)] + leaks.verdicts
    for verdict, blocking in gates:
        yield record_check(
            metadata, "curated_images", verdict, partition=None, run_id=run_id, blocking=blocking
        )
