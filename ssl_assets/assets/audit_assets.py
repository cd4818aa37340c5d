"""Audit assets: diversity, representation (bias) and labeling candidates of the curated data.

Why here and thin: audits run after curation and before pretraining spends compute, so they use
the pinned embeddings curation already stored (`<batch>.pinned.npy`), never the encoder. The
numbers come from `ssl_assets.audit` (plain functions); these assets read the inputs through the
store and the lake, record every result (audit tables, `stage_metrics`, `gate_results`), write
the PNGs and CSV under `$SSL_LAKE/reports/`, and show them in the UI. Each audit row carries its
run_id and `audit_runs` says which batch was newest then, so trends are one join away.

Gates: the diversity gates (entropy floor, largest-cluster ceiling) default to blocking (severity
ERROR), the bias gates (share floor, drift, shortcut) to warnings (WARN): a rare or shifting
group is a finding for a person, not a reason to stop. Each asset's `blocking` config flips it.
"""

import shutil
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from PIL import Image
from pydantic import Field

from quality import thresholds
from quality.gates import record_check, suite_verdict
from quality.suites import labeling_candidates_suite
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from resources.settings import ImageSpecResource
from ssl_assets.atomic import write_atomic
from ssl_assets.audit import bias, coreset, diversity, plots
from ssl_assets.curation.contact_sheet import grid_png, markdown_image
from ssl_assets.curation.embedders import pinned_embeddings
from ssl_assets.curation.image_issues import ISSUES
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS
from ssl_assets.presentation import table as presentation_table
from ssl_assets.refusals import refused

GROUP = "audits"
KINDS = {"python", "scikit-learn", "duckdb"}


def _table(df: pd.DataFrame, limit: int = 30) -> MetadataValue | str:
    """At most `limit` rows as table metadata (inline in the UI), numbers rounded."""
    return "none" if df.empty else presentation_table(df, limit=limit)


def _png_md(lake: LakeResource, png: bytes, asset_name: str, name: str, alt: str) -> str:
    """Save the PNG under reports/<asset>/ and return markdown that shows it inline."""
    path = lake.report_path(asset_name, name)
    write_atomic(path, lambda tmp: tmp.write_bytes(png))
    return markdown_image(png, alt) + f"\n\nSaved to `{path}`"


def _train_split(metadata: MetadataStore, version: str) -> tuple[pd.DataFrame, list[str]]:
    """Included train images (curation order) and the curated batches by arrival."""
    curated = metadata.curated_catalog(version)
    train = curated[curated["include"] & (curated["split"] == "train")].reset_index(drop=True)
    return train, metadata.batches_by_arrival(set(curated["batch"]))


# -- diversity_audit -----------------------------------------------------------------------------


class DiversityAuditConfig(Config):
    """Clustering of the included train split (pinned embeddings) and the diversity gates."""

    n_clusters: int = Field(
        default=0, description="k-means clusters; 0 = round(sqrt(n / 2)), between 2 and 50"
    )
    merge_similarity: float = Field(
        default=diversity.DEFAULT_MERGE_SIMILARITY,
        description="clusters whose centroids have at least this cosine similarity are one mode",
    )
    knn: int = Field(
        default=diversity.DEFAULT_KNN, description="neighbours for outlier/typicality scores"
    )
    redundancy_similarity: float = Field(
        default=diversity.DEFAULT_REDUNDANCY_SIMILARITY,
        description="an image with a neighbour at least this similar counts as redundant",
    )
    min_cluster_entropy: float = Field(
        default=thresholds.AUDIT_MIN_CLUSTER_ENTROPY,
        description="Gate: normalised cluster-size entropy at least this.",
    )
    max_largest_cluster_share: float = Field(
        default=thresholds.AUDIT_MAX_LARGEST_CLUSTER_SHARE,
        description="Gate: the largest cluster holds at most this share of the train split.",
    )
    min_images: int = Field(
        default=thresholds.AUDIT_DIVERSITY_MIN_IMAGES,
        description="With fewer train images the gates pass without judging (and say so).",
    )
    blocking: bool = Field(
        default=True, description="Failed gates are ERROR (block downstream) rather than WARN."
    )
    seed: int = 0


@asset(
    deps=["curated_images"],
    group_name=GROUP,
    pool=METADATA_WRITER_POOL,
    kinds=KINDS,
    owners=OWNERS,
    metadata={"dagster/table_name": "diversity_scores"},
    check_specs=[
        AssetCheckSpec(
            "cluster_entropy_floor",
            asset="diversity_audit",
            blocking=True,
            description="Normalised cluster-size entropy of the train split is at least a floor "
            "(blocks only when the run's `blocking` config makes failures ERROR).",
        ),
        AssetCheckSpec(
            "largest_cluster_ceiling",
            asset="diversity_audit",
            blocking=True,
            description="The largest cluster holds at most a ceiling share of the train split.",
        ),
    ],
)
def diversity_audit(
    context: AssetExecutionContext,
    config: DiversityAuditConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Coverage of the included train split in pinned-embedding space: k-means clusters (clusters
    with near-identical centroids merged), normalised cluster-size entropy, largest-cluster share,
    effective number of clusters, kNN outlier and typicality scores per image and redundancy,
    with a PCA projection, a cluster-size chart and sample images of the largest and smallest
    clusters."""
    run_id = context.run.run_id
    train, batches = _train_split(metadata, image_spec.version)
    started = time.perf_counter()
    with refused():
        embeddings, embedder = pinned_embeddings(train, lake.read_rows)
    report = diversity.measure_diversity(
        embeddings,
        n_clusters=config.n_clusters or None,
        merge_similarity=config.merge_similarity,
        knn=config.knn,
        redundancy_similarity=config.redundancy_similarity,
        seed=config.seed,
    )
    seconds = time.perf_counter() - started
    scores, clusters = diversity.score_tables(
        report, train, {"run_id": run_id, "recorded_at": utcnow()}
    )
    newest = batches[-1] if batches else None
    metadata.write_diversity(run_id, scores, clusters, newest, len(batches), embedder)
    metadata.record_metrics("diversity_audit", None, run_id, {**report.metrics, "seconds": seconds})
    yield MaterializeResult(
        metadata=_diversity_metadata(lake, report, train, clusters, embedder, seconds)
    )
    for verdict in diversity.diversity_gates(
        report, config.min_cluster_entropy, config.max_largest_cluster_share, config.min_images
    ):
        yield record_check(
            metadata,
            "diversity_audit",
            verdict,
            partition=None,
            run_id=run_id,
            blocking=config.blocking,
        )


def _diversity_pictures(
    lake: LakeResource, report: diversity.DiversityReport, train: pd.DataFrame
) -> dict:
    """The projection, the cluster sizes and sample images, saved under reports/ and shown."""
    n = len(train)
    none = "no included train images"
    title = f"{n} included train images, {int(report.metrics['clusters'])} clusters"
    per_image = report.per_image
    sample_rows = diversity.sample_rows(report, lambda pos: lake.read_rows(train.iloc[pos]))
    return {
        "projection": MetadataValue.md(
            _png_md(
                lake,
                plots.projection_png(
                    per_image[["x", "y"]].to_numpy(), per_image["cluster"].to_numpy(), title
                ),
                "diversity_audit",
                "projection.png",
                "PCA projection coloured by cluster",
            )
            if n
            else none
        ),
        "cluster_sizes": MetadataValue.md(
            _png_md(
                lake,
                plots.cluster_sizes_png(report.clusters["images"].to_numpy(), "cluster sizes"),
                "diversity_audit",
                "cluster_sizes.png",
                "cluster sizes",
            )
            if n
            else none
        ),
        "cluster_samples": MetadataValue.md(
            _png_md(
                lake,
                grid_png(sample_rows),
                "diversity_audit",
                "cluster_samples.png",
                "most typical images of the largest and smallest clusters",
            )
            if sample_rows
            else none
        ),
    }


def _diversity_metadata(
    lake: LakeResource,
    report: diversity.DiversityReport,
    train: pd.DataFrame,
    clusters: pd.DataFrame,
    embedder: str,
    seconds: float,
) -> dict:
    n = len(train)
    return {
        "dagster/row_count": n,
        "images": n,
        "cluster_entropy": round(report.metrics["cluster_entropy"], 4),
        "largest_cluster_share": round(report.metrics["largest_cluster_share"], 4),
        "effective_clusters": round(report.metrics["effective_clusters"], 2),
        "clusters": int(report.metrics["clusters"]),
        "clusters_requested": int(report.metrics["clusters_requested"]),
        "redundancy": round(report.metrics["redundancy"], 4),
        "outlier_score_median": round(report.metrics["outlier_score_median"], 4),
        "embedder": embedder,
        "projection_method": "PCA (scikit-learn), 2 components",
        "seconds": round(seconds, 3),
        **_diversity_pictures(lake, report, train),
        "clusters_table": _table(
            clusters[["cluster", "images", "share", "kmeans_clusters", "mean_outlier"]]
        ),
    }


# -- bias_audit ----------------------------------------------------------------------------------


class BiasAuditConfig(Config):
    """Which columns are audited and the representation gates."""

    include_labels: bool = Field(
        default=True, description="Audit the current label as a column, where labels exist."
    )
    min_subgroup_share: float = Field(
        default=thresholds.AUDIT_MIN_SUBGROUP_SHARE,
        description="Gate: every subgroup holds at least this share of included images.",
    )
    max_drift_tv: float = Field(
        default=thresholds.AUDIT_MAX_DRIFT_TV,
        description="Gate: newest batch vs earlier, total-variation distance at most this ...",
    )
    drift_alpha: float = Field(
        default=thresholds.AUDIT_DRIFT_ALPHA,
        description="... unless the chi-square p-value is at least this (then it may be chance).",
    )
    max_shortcut_lift: float = Field(
        default=thresholds.AUDIT_MAX_SHORTCUT_LIFT,
        description="Gate: probe lift over chance from image statistics below this.",
    )
    blocking: bool = Field(
        default=False, description="Failed gates are ERROR (block downstream) rather than WARN."
    )
    seed: int = 0


@asset(
    deps=["curated_images"],
    group_name=GROUP,
    pool=METADATA_WRITER_POOL,
    kinds=KINDS,
    owners=OWNERS,
    metadata={"dagster/table_name": "bias_groups"},
    check_specs=[
        AssetCheckSpec(
            "subgroup_share_floor",
            asset="bias_audit",
            blocking=True,
            description="Every subgroup of every attribute holds at least a floor share.",
        ),
        AssetCheckSpec(
            "subgroup_drift",
            asset="bias_audit",
            blocking=True,
            description="The newest batch's subgroup shares match earlier batches (TV + chi2).",
        ),
        AssetCheckSpec(
            "attribute_shortcut",
            asset="bias_audit",
            blocking=True,
            description="No attribute is predictable from brightness/contrast/resolution alone.",
        ),
    ],
)
def bias_audit(
    context: AssetExecutionContext,
    config: BiasAuditConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Representation per attribute column of metadata.csv (not the split pin) and the label:
    subgroup counts and shares per split, the smallest share against a floor, drift of the
    newest batch against all earlier ones (TV distance, chi-square), per-subgroup image
    statistics (brightness, contrast, resolution, issue rates) and a shortcut probe. With no
    attributes it says so and passes."""
    run_id = context.run.run_id
    curated = metadata.curated_catalog(image_spec.version)
    batches = metadata.batches_by_arrival(set(curated.loc[curated["include"], "batch"]))
    newest = batches[-1] if batches else None
    started = time.perf_counter()
    pixels = lake.read_rows(curated) if len(curated) else np.empty(0)
    images = bias.audit_frame(curated, pixels, metadata.issue_pairs(), list(ISSUES))
    labels = metadata.current_labels() if config.include_labels else None
    columns, notes = bias.attribute_columns(curated["image_id"], metadata.attributes(), labels)
    report = bias.measure_bias(
        images,
        columns,
        newest_batch=newest,
        min_subgroup_share=config.min_subgroup_share,
        max_drift_tv=config.max_drift_tv,
        drift_alpha=config.drift_alpha,
        max_shortcut_lift=config.max_shortcut_lift,
        notes=notes,
        seed=config.seed,
    )
    seconds = time.perf_counter() - started
    included = int(curated["include"].sum())
    metadata.write_bias(run_id, bias.report_tables(report), newest, len(batches), included)
    metadata.record_metrics("bias_audit", None, run_id, {**report.metrics, "seconds": seconds})
    yield MaterializeResult(
        metadata={
            "images": included,
            "attributes": MetadataValue.json(report.attributes),
            "newest_batch": newest or "-",
            "seconds": round(seconds, 3),
            **_bias_metadata(lake, report, config.min_subgroup_share),
        }
    )
    for verdict in report.gates():
        yield record_check(
            metadata, "bias_audit", verdict, partition=None, run_id=run_id, blocking=config.blocking
        )


def _bias_metadata(lake: LakeResource, report: bias.BiasReport, floor: float) -> dict:
    if report.no_attributes_reason:
        return {"status": MetadataValue.md(f"**{report.no_attributes_reason}**")}
    overall = report.shares[report.shares["scope"] == "all"]
    wide = report.stats.pivot_table(
        index=["attribute", "subgroup"], columns="statistic", values="value", aggfunc="first"
    ).reset_index()
    keep = ["attribute", "subgroup", "images", "excluded_rate", "brightness", "contrast"]
    keep += ["resolution", "issue_rate"]
    shares_png = plots.subgroup_shares_png(report.shares, floor, "subgroup shares")
    return {
        "how_columns_were_read": MetadataValue.json(report.notes),
        "shares": _table(overall[["attribute", "subgroup", "images", "share"]], 60),
        "shares_plot": MetadataValue.md(
            _png_md(
                lake,
                shares_png,
                "bias_audit",
                "subgroup_shares.png",
                "subgroup shares per split and batch",
            )
        ),
        "drift": _table(
            report.drift[
                ["attribute", "newest_batch", "tv_distance", "p_value", "drifted"]
                + ["skipped_reason"]
            ]
        ),
        "subgroup_statistics": _table(wide[[c for c in keep if c in wide.columns]], 60),
        "shortcut_probe": _table(
            report.probes[
                ["attribute", "balanced_accuracy", "chance", "lift", "top_feature"]
                + ["shortcut", "skipped_reason"]
            ]
        ),
    }


# -- labeling_candidates -------------------------------------------------------------------------


class LabelingCandidatesConfig(Config):
    """The labeling budget and the near-duplicate level that is never worth a second label."""

    budget: int = Field(default=coreset.DEFAULT_BUDGET, description="K: how many images to propose")
    near_duplicate_similarity: float = Field(
        default=coreset.DEFAULT_NEAR_DUPLICATE_SIMILARITY,
        description="skip images at least this similar to a labeled or already picked image",
    )
    thumbnail_size: int = Field(default=96, description="thumbnail side in pixels")


def _write_candidates(
    lake: LakeResource, chosen: pd.DataFrame, pixels: np.ndarray, run_id: str, size: int
) -> tuple[pd.DataFrame, str, str]:
    """Thumbnails and the CSV a labeling tool reads (image_id, path, thumbnail), under
    reports/labeling_candidates/<run_id>/ and copied to latest.csv."""
    out_dir = lake.report_path("labeling_candidates", run_id, "thumbs", "x").parent
    thumbs = []
    for k, image_id in enumerate(chosen["image_id"]):
        path = out_dir / f"{image_id}.png"
        Image.fromarray(np.asarray(pixels[k], np.uint8)).resize(
            (size, size), Image.Resampling.NEAREST
        ).save(path)
        thumbs.append(str(path))
    landed = [
        str(lake.batch_dir(b) / rel)
        for b, rel in zip(chosen["batch"], chosen["rel_path"], strict=True)
    ]
    table = pd.DataFrame(
        {"image_id": chosen["image_id"].astype(str), "path": landed, "thumbnail": thumbs},
        columns=["image_id", "path", "thumbnail"],
    )
    csv_path = out_dir.parent / "candidates.csv"
    write_atomic(csv_path, lambda tmp: table.to_csv(tmp, index=False))
    latest = lake.report_path("labeling_candidates", "latest.csv")
    shutil.copyfile(csv_path, latest)
    return table, str(csv_path), str(latest)


def _candidates_metadata(
    metadata: MetadataStore,
    run_id: str,
    config: LabelingCandidatesConfig,
    picked: pd.DataFrame,
    chosen: pd.DataFrame,
    pixels: np.ndarray,
    labeled: np.ndarray,
    table: pd.DataFrame,
    csv_path: str,
    latest: str,
    why: str,
    embedder: str,
    seconds: float,
) -> dict:
    """Record the run's metrics and return what the UI shows of the picks."""
    distances = picked["distance"].dropna()
    metadata.record_metrics(
        "labeling_candidates",
        None,
        run_id,
        {
            "budget": config.budget,
            "selected": len(picked),
            "unlabeled_pool": int((~labeled).sum()),
            "labeled_train": int(labeled.sum()),
            "last_pick_distance": float(distances.iloc[-1]) if len(distances) else 0.0,
            "seconds": seconds,
        },
    )
    grid = [
        (f"picks {s + 1}-{min(s + 8, len(chosen))}", list(pixels[s : s + 8]))
        for s in range(0, min(len(chosen), 64), 8)
    ]
    return {
        "dagster/row_count": len(table),
        "budget": config.budget,
        "selected": len(table),
        "why": why,
        "unlabeled_pool": int((~labeled).sum()),
        "labeled_train_images": int(labeled.sum()),
        "embedder": embedder,
        "method": "k-center greedy (coreset), cosine geometry, labeled images as centres",
        "csv": MetadataValue.path(csv_path),
        "latest_csv": MetadataValue.path(latest),
        "how_to_return_labels": "add a label column to the CSV and drop it as labels.csv "
        "(columns image_id,label) into a later batch folder",
        "thumbnails": MetadataValue.md(
            markdown_image(grid_png(grid), "labeling candidates") if grid else "nothing to propose"
        ),
        "seconds": round(seconds, 3),
    }


@asset(
    deps=["curated_images"],
    group_name=GROUP,
    pool=METADATA_WRITER_POOL,
    kinds=KINDS,
    owners=OWNERS,
    metadata={"dagster/table_name": "labeling_candidates"},
    check_specs=[
        AssetCheckSpec(
            "labeling_candidates_suite",
            asset="labeling_candidates",
            blocking=True,
            description="GX suite on the CSV: image_id, path, thumbnail; unique, complete, at most K rows.",
        )
    ],
)
def labeling_candidates(
    context: AssetExecutionContext,
    config: LabelingCandidatesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The K unlabeled included train images whose labels would help most: k-center greedy over
    the pinned embeddings, starting from the labeled images and skipping near-duplicates.
    Written as reports/labeling_candidates/<run_id>/candidates.csv (image_id, path, thumbnail;
    also copied to latest.csv). Report only: it feeds nothing back into training. Return labels
    in a later batch's labels.csv keyed by image_id."""
    run_id = context.run.run_id
    train, batches = _train_split(metadata, image_spec.version)
    labeled = train["image_id"].isin(set(metadata.current_labels()["image_id"])).to_numpy()
    started = time.perf_counter()
    with refused():
        embeddings, embedder = pinned_embeddings(train, lake.read_rows)
    picked, why = coreset.select_labeling_candidates(
        embeddings, labeled, config.budget, config.near_duplicate_similarity
    )
    seconds = time.perf_counter() - started
    chosen = train.iloc[picked["position"].to_numpy()].reset_index(drop=True)
    pixels = lake.read_rows(chosen) if len(chosen) else np.empty(0)
    table, csv_path, latest = _write_candidates(lake, chosen, pixels, run_id, config.thumbnail_size)
    rows = table.assign(
        rank=picked["rank"].to_numpy(),
        batch=chosen["batch"].to_numpy(object),
        distance=picked["distance"].to_numpy(),
        embedder=embedder,
        csv_path=csv_path,
        run_id=run_id,
        recorded_at=utcnow(),
    )
    newest = batches[-1] if batches else None
    metadata.write_labeling_candidates(run_id, rows, newest, len(batches), len(train), embedder)
    shown = (picked, chosen, pixels, labeled, table, csv_path, latest, why, embedder, seconds)
    yield MaterializeResult(metadata=_candidates_metadata(metadata, run_id, config, *shown))
    verdict = suite_verdict(
        table,
        check_name="labeling_candidates_suite",
        suite_name="labeling_candidates",
        expectations=labeling_candidates_suite(config.budget),
        extra_details={"csv_path": csv_path},
    )
    yield record_check(metadata, "labeling_candidates", verdict, partition=None, run_id=run_id)
