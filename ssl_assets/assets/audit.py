"""Audit assets: diversity, representation (bias) and labeling candidates of the curated data.

Why here and thin: audits run after curation and before pretraining spends compute, so they use
the pinned embeddings curation already stored (`<batch>.pinned.npy`), never the encoder. The
numbers come from `ssl_assets.audit` (plain functions); these assets read the inputs from DuckDB
and the lake, record every result (audit tables, `stage_metrics`, `gate_results`), write the PNGs
and CSV under `$SSL_LAKE/reports/`, and show them in the UI. Each audit row carries its run_id and
`audit_runs` says which batch was newest then, so trends across batches are one join away.

Gates: the diversity gates (entropy floor, largest-cluster ceiling) default to blocking (severity
ERROR), the bias gates (share floor, drift, shortcut) to warnings (WARN): a rare or shifting
group is a finding for a person, not a reason to stop. Each asset's `blocking` config flips it.
"""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from PIL import Image
from pydantic import Field

from quality import thresholds
from quality.gates import suite_gate
from quality.suites import labeling_candidates_suite
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from ssl_assets.assets.curate import DEFAULT_SPEC, admitted_catalog, curated_images, load_rows
from ssl_assets.atomic import write_atomic
from ssl_assets.audit import bias, coreset, diversity, plots
from ssl_assets.audit.outcome import Outcome
from ssl_assets.curation.contact_sheet import grid_png, markdown_image
from ssl_assets.curation.image_issues import ISSUES
from ssl_assets.curation.semantic import EMBEDDING_DIM, PINNED_EMBEDDER_VERSION
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS

GROUP = "audits"
KINDS = {"python", "scikit-learn", "duckdb"}


def _catalog_version_field() -> Any:
    return Field(
        default=DEFAULT_SPEC.version,
        description="Canonical catalog version whose pinned embeddings/pixels are audited.",
    )


# -- shared readers and writers ------------------------------------------------------------------


def curated_catalog(metadata: MetadataStore, version: str) -> pd.DataFrame:
    """Catalog rows of every curated image of admitted batches (curation order), with split,
    include and reasons; positions 0..n-1."""
    catalog = admitted_catalog(metadata, version)
    curated = metadata.query("SELECT image_id, split, include, reasons FROM curated_images")
    return catalog.merge(curated, on="image_id", how="inner").reset_index(drop=True)


def batches_by_arrival(metadata: MetadataStore, batches: set[str]) -> list[str]:
    """The given admitted batches in order of arrival (first admission-log row), oldest first."""
    order = metadata.query(
        "SELECT batch, min(recorded_at) AS arrived FROM batches "
        "WHERE batch IN (SELECT batch FROM admitted_batches) GROUP BY batch ORDER BY arrived, batch"
    )
    return [b for b in order["batch"] if b in batches]


def _embeddings(lake: LakeResource, rows: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Pinned embeddings of the rows and their embedder version (one version, or a Failure:
    embeddings of two embedder versions are not comparable)."""
    if rows.empty:
        return np.zeros((0, EMBEDDING_DIM), np.float32), PINNED_EMBEDDER_VERSION
    versions = sorted(set(rows["embedder"]))
    if len(versions) > 1:
        raise Failure(
            f"catalog rows carry {len(versions)} pinned embedder versions {versions}; re-catalog "
            "the older batches so every embedding comes from one embedder"
        )
    emb = np.asarray(load_rows(lake, rows.reset_index(drop=True), ".pinned.npy"), np.float32)
    return emb, versions[0]


def _pixels(lake: LakeResource, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(load_rows(lake, rows.reset_index(drop=True))) if len(rows) else np.empty(0)


def _report_path(lake: LakeResource, *parts: str) -> Path:
    path = lake.path("reports", *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _record_run(
    metadata: MetadataStore,
    con: Any,
    asset_name: str,
    run_id: str,
    newest: str | None,
    batches: int,
    images: int,
    embedder: str | None,
) -> None:
    row = {
        "run_id": run_id,
        "asset": asset_name,
        "newest_batch": newest,
        "batches": batches,
        "images": images,
        "embedder": embedder,
        "recorded_at": utcnow(),
    }
    metadata.insert(con, "audit_runs", pd.DataFrame([row]))


def audit_gate(
    metadata: MetadataStore, asset_name: str, outcome: Outcome, blocking: bool, run_id: str
) -> AssetCheckResult:
    """Record an audit `Outcome` in `gate_results` and return it as an `AssetCheckResult`
    (severity ERROR when `blocking`, else WARN)."""
    severity = AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN
    details = {
        "metric": outcome.metric,
        "value": outcome.value,
        **outcome.details,
        "description": outcome.description,
    }
    metadata.record_gate(
        asset_name, outcome.check_name, None, outcome.passed, severity.value, details, run_id
    )
    meta: dict[str, Any] = {"metric": outcome.metric}
    if outcome.value is not None:
        meta["value"] = float(outcome.value)
    for key, value in outcome.details.items():
        if isinstance(value, bool | int | float | str):
            meta[key] = value
        elif isinstance(value, list):
            meta[key] = MetadataValue.json(value)
    return AssetCheckResult(
        check_name=outcome.check_name,
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata=meta,
    )


def _table_md(df: pd.DataFrame, limit: int = 30) -> str:
    if df.empty:
        return "none"
    return df.head(limit).to_markdown(index=False, floatfmt=".4g")


def _png_md(lake: LakeResource, png: bytes, asset_name: str, name: str, alt: str) -> str:
    path = _report_path(lake, asset_name, name)
    _write_bytes(path, png)
    return markdown_image(png, alt) + f"\n\nSaved to `{path}`"


# -- diversity_audit -----------------------------------------------------------------------------


class DiversityAuditConfig(Config):
    """Clustering of the included train split (pinned embeddings) and the diversity gates."""

    catalog_version: str = _catalog_version_field()
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
    deps=[curated_images],
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
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Coverage of the included train split in pinned-embedding space: k-means clusters (clusters
    with near-identical centroids merged), normalised cluster-size entropy, largest-cluster share,
    effective number of clusters, kNN outlier and typicality scores per image and redundancy,
    with a PCA projection, a cluster-size chart and sample images of the largest and smallest
    clusters."""
    run_id = context.run.run_id
    curated = curated_catalog(metadata, config.catalog_version)
    train = curated[curated["include"] & (curated["split"] == "train")].reset_index(drop=True)
    batches = batches_by_arrival(metadata, set(curated["batch"]))
    started = time.perf_counter()
    embeddings, embedder = _embeddings(lake, train)
    report = diversity.diversity_audit(
        embeddings,
        n_clusters=config.n_clusters or None,
        merge_similarity=config.merge_similarity,
        knn=config.knn,
        redundancy_similarity=config.redundancy_similarity,
        seed=config.seed,
    )
    seconds = time.perf_counter() - started
    per_image = report.per_image
    ids = train["image_id"].to_numpy(object)
    now = utcnow()
    scores = pd.DataFrame(
        {
            "image_id": ids,
            "batch": train["batch"].to_numpy(object),
            "cluster": per_image["cluster"].to_numpy(),
            "kmeans_cluster": per_image["kmeans_cluster"].to_numpy(),
            "outlier_score": per_image["outlier_score"].to_numpy(),
            "typicality": per_image["typicality"].to_numpy(),
            "nn_similarity": per_image["nn_similarity"].to_numpy(),
            "nn_image_id": [ids[i] if i >= 0 else None for i in per_image["nn_index"]],
            "redundant": per_image["redundant"].to_numpy(),
            "x": per_image["x"].to_numpy(),
            "y": per_image["y"].to_numpy(),
            "run_id": run_id,
            "recorded_at": now,
        }
    )
    clusters = report.clusters.assign(
        run_id=run_id,
        medoid_id=[ids[i] for i in report.clusters["medoid"]],
        recorded_at=now,
    ).drop(columns="medoid")
    with metadata.transaction() as con:
        con.execute("DELETE FROM diversity_scores")
        metadata.insert(con, "diversity_scores", scores)
        metadata.insert(con, "diversity_clusters", clusters)
        _record_run(
            metadata,
            con,
            "diversity_audit",
            run_id,
            batches[-1] if batches else None,
            len(batches),
            len(train),
            embedder,
        )
    metrics = {**report.metrics, "seconds": seconds}
    metadata.record_metrics("diversity_audit", None, run_id, metrics)

    n = len(train)
    title = f"{n} included train images, {int(report.metrics['clusters'])} clusters"
    projection = (
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
        else "no included train images"
    )
    sizes = (
        _png_md(
            lake,
            plots.cluster_sizes_png(report.clusters["images"].to_numpy(), "cluster sizes"),
            "diversity_audit",
            "cluster_sizes.png",
            "cluster sizes",
        )
        if n
        else "no included train images"
    )
    largest = report.examples("largest")
    shown = {cluster for cluster, _, _ in largest}
    smallest = [
        e for e in report.examples("smallest", clusters=3 + len(shown)) if e[0] not in shown
    ]
    examples = [("largest", e) for e in largest] + [("smallest", e) for e in smallest[:3]]
    outliers = per_image["outlier_score"].dropna().sort_values(ascending=False).index[:8]
    wanted = sorted({int(p) for _, e in examples for p in e[2]} | {int(p) for p in outliers})
    sample_rows = []
    if wanted:
        pixels = _pixels(lake, train.iloc[wanted])
        where = {p: k for k, p in enumerate(wanted)}
        for which, (cluster, size, positions) in examples:
            caption = f"{which}: cluster {cluster} ({size} images, {size / n:.1%})"
            sample_rows.append((caption, [pixels[where[int(p)]] for p in positions]))
        sample_rows.append(("highest outlier scores", [pixels[where[int(p)]] for p in outliers]))
    samples = (
        _png_md(
            lake,
            grid_png(sample_rows),
            "diversity_audit",
            "cluster_samples.png",
            "most typical images of the largest and smallest clusters",
        )
        if sample_rows
        else "no included train images"
    )
    yield MaterializeResult(
        metadata={
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
            "projection": MetadataValue.md(projection),
            "cluster_sizes": MetadataValue.md(sizes),
            "cluster_samples": MetadataValue.md(samples),
            "clusters_table": MetadataValue.md(
                _table_md(
                    clusters[["cluster", "images", "share", "kmeans_clusters", "mean_outlier"]]
                )
            ),
        }
    )
    for outcome in diversity.diversity_gates(
        report, config.min_cluster_entropy, config.max_largest_cluster_share, config.min_images
    ):
        yield audit_gate(metadata, "diversity_audit", outcome, config.blocking, run_id)


# -- bias_audit ----------------------------------------------------------------------------------


class BiasAuditConfig(Config):
    """Which columns are audited and the representation gates."""

    catalog_version: str = _catalog_version_field()
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


def _issue_flags(metadata: MetadataStore, image_ids: pd.Series) -> pd.DataFrame:
    issues = metadata.query("SELECT DISTINCT image_id, issue FROM quality_issues")
    flags = pd.DataFrame(index=pd.Index(image_ids.astype(str)))
    for issue in ISSUES:
        hit = set(issues.loc[issues["issue"] == issue, "image_id"])
        flags[f"is_{issue}"] = flags.index.isin(hit)
    return flags.reset_index(drop=True)


@asset(
    deps=[curated_images],
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
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Representation per attribute column of metadata.csv (not the split pin) and the label:
    subgroup counts and shares per split, the smallest share against a floor, drift of the
    newest batch against all earlier ones (TV distance, chi-square), per-subgroup image
    statistics (brightness, contrast, resolution, issue rates) and a shortcut probe. With no
    attributes it says so and passes."""
    run_id = context.run.run_id
    curated = curated_catalog(metadata, config.catalog_version)
    batches = batches_by_arrival(metadata, set(curated.loc[curated["include"], "batch"]))
    newest = batches[-1] if batches else None
    started = time.perf_counter()
    stats = bias.image_statistics(
        _pixels(lake, curated), curated[["orig_height", "orig_width"]].to_numpy()
    )
    images = pd.concat(
        [
            curated[["image_id", "batch", "split", "include"]],
            stats,
            _issue_flags(metadata, curated["image_id"]),
        ],
        axis=1,
    )
    attributes = metadata.query("SELECT image_id, key, value FROM attributes")
    labels = (
        metadata.query("SELECT image_id, label FROM current_labels")
        if config.include_labels
        else None
    )
    columns, notes = bias.attribute_columns(curated["image_id"], attributes, labels)
    report = bias.bias_audit(
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
    now = utcnow()
    stamp = {"run_id": run_id, "recorded_at": now}
    drift_columns = [
        "attribute",
        "newest_batch",
        "newest_images",
        "earlier_images",
        "tv_distance",
        "chi2",
        "dof",
        "p_value",
        "drifted",
        "skipped_reason",
    ]
    probe_columns = [
        "attribute",
        "images",
        "classes",
        "chance",
        "balanced_accuracy",
        "lift",
        "top_feature",
        "shortcut",
        "skipped_reason",
    ]
    with metadata.transaction() as con:
        if report.attributes:
            metadata.insert(con, "bias_groups", report.shares.assign(**stamp))
            metadata.insert(con, "bias_drift", report.drift[drift_columns].assign(**stamp))
            metadata.insert(con, "bias_group_stats", report.stats.assign(**stamp))
            metadata.insert(con, "bias_shortcuts", report.probes[probe_columns].assign(**stamp))
        _record_run(
            metadata,
            con,
            "bias_audit",
            run_id,
            newest,
            len(batches),
            int(curated["include"].sum()),
            None,
        )
    metadata.record_metrics("bias_audit", None, run_id, {**report.metrics, "seconds": seconds})

    meta: dict[str, Any] = {
        "images": int(curated["include"].sum()),
        "attributes": MetadataValue.json(report.attributes),
        "newest_batch": newest or "-",
        "seconds": round(seconds, 3),
    }
    if report.no_attributes_reason:
        meta["status"] = MetadataValue.md(f"**{report.no_attributes_reason}**")
    else:
        overall = report.shares[report.shares["scope"] == "all"]
        wide = report.stats.pivot_table(
            index=["attribute", "subgroup"], columns="statistic", values="value", aggfunc="first"
        ).reset_index()
        keep = ["attribute", "subgroup", "images", "excluded_rate", "brightness", "contrast"]
        keep += ["resolution", "issue_rate"]
        meta.update(
            {
                "how_columns_were_read": MetadataValue.json(report.notes),
                "shares": MetadataValue.md(
                    _table_md(overall[["attribute", "subgroup", "images", "share"]], 60)
                ),
                "shares_plot": MetadataValue.md(
                    _png_md(
                        lake,
                        plots.subgroup_shares_png(
                            report.shares, config.min_subgroup_share, "subgroup shares"
                        ),
                        "bias_audit",
                        "subgroup_shares.png",
                        "subgroup shares per split and batch",
                    )
                ),
                "drift": MetadataValue.md(
                    _table_md(
                        report.drift[
                            ["attribute", "newest_batch", "tv_distance", "p_value", "drifted"]
                            + ["skipped_reason"]
                        ]
                    )
                ),
                "subgroup_statistics": MetadataValue.md(
                    _table_md(wide[[c for c in keep if c in wide.columns]], 60)
                ),
                "shortcut_probe": MetadataValue.md(
                    _table_md(
                        report.probes[
                            ["attribute", "balanced_accuracy", "chance", "lift", "top_feature"]
                            + ["shortcut", "skipped_reason"]
                        ]
                    )
                ),
            }
        )
    yield MaterializeResult(metadata=meta)
    for outcome in report.gates():
        yield audit_gate(metadata, "bias_audit", outcome, config.blocking, run_id)


# -- labeling_candidates -------------------------------------------------------------------------


class LabelingCandidatesConfig(Config):
    """The labeling budget and the near-duplicate level that is never worth a second label."""

    catalog_version: str = _catalog_version_field()
    budget: int = Field(default=coreset.DEFAULT_BUDGET, description="K: how many images to propose")
    near_duplicate_similarity: float = Field(
        default=coreset.DEFAULT_NEAR_DUPLICATE_SIMILARITY,
        description="skip images at least this similar to a labeled or already picked image",
    )
    thumbnail_size: int = Field(default=96, description="thumbnail side in pixels")


@asset(
    deps=[curated_images],
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
            description="GX suite on the CSV: image_id, path, thumbnail; unique, complete, <= K.",
        )
    ],
)
def labeling_candidates(
    context: AssetExecutionContext,
    config: LabelingCandidatesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The K unlabeled included train images whose labels would help most: k-center greedy over
    the pinned embeddings, starting from the labeled images and skipping near-duplicates.
    Written as reports/labeling_candidates/<run_id>/candidates.csv (image_id, path, thumbnail;
    also copied to latest.csv). Report only: it feeds nothing back into training. Return labels
    in a later batch's labels.csv keyed by image_id."""
    run_id = context.run.run_id
    curated = curated_catalog(metadata, config.catalog_version)
    train = curated[curated["include"] & (curated["split"] == "train")].reset_index(drop=True)
    labeled_ids = set(metadata.query("SELECT image_id FROM current_labels")["image_id"])
    labeled = train["image_id"].isin(labeled_ids).to_numpy()
    batches = batches_by_arrival(metadata, set(curated["batch"]))
    started = time.perf_counter()
    embeddings, embedder = _embeddings(lake, train)
    picked, why = coreset.select_labeling_candidates(
        embeddings, labeled, config.budget, config.near_duplicate_similarity
    )
    seconds = time.perf_counter() - started
    chosen = train.iloc[picked["position"].to_numpy()].reset_index(drop=True)
    out_dir = _report_path(lake, "labeling_candidates", run_id, "thumbs", "x").parent
    pixels = _pixels(lake, chosen)
    thumbs = []
    for k, image_id in enumerate(chosen["image_id"]):
        path = out_dir / f"{image_id}.png"
        Image.fromarray(np.asarray(pixels[k], np.uint8)).resize(
            (config.thumbnail_size, config.thumbnail_size), Image.Resampling.NEAREST
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
    latest = _report_path(lake, "labeling_candidates", "latest.csv")
    shutil.copyfile(csv_path, latest)
    now = utcnow()
    rows = table.assign(
        rank=picked["rank"].to_numpy(),
        batch=chosen["batch"].to_numpy(object),
        distance=picked["distance"].to_numpy(),
        embedder=embedder,
        csv_path=str(csv_path),
        run_id=run_id,
        recorded_at=now,
    )
    with metadata.transaction() as con:
        metadata.insert(con, "labeling_candidates", rows)
        _record_run(
            metadata,
            con,
            "labeling_candidates",
            run_id,
            batches[-1] if batches else None,
            len(batches),
            len(train),
            embedder,
        )
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
    yield MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "budget": config.budget,
            "selected": len(table),
            "why": why,
            "unlabeled_pool": int((~labeled).sum()),
            "labeled_train_images": int(labeled.sum()),
            "embedder": embedder,
            "method": "k-center greedy (coreset), cosine geometry, labeled images as centres",
            "csv": MetadataValue.path(str(csv_path)),
            "latest_csv": MetadataValue.path(str(latest)),
            "how_to_return_labels": "add a label column to the CSV and drop it as labels.csv "
            "(columns image_id,label) into a later batch folder",
            "thumbnails": MetadataValue.md(
                markdown_image(grid_png(grid), "labeling candidates")
                if grid
                else "nothing to propose"
            ),
            "seconds": round(seconds, 3),
        }
    )
    yield suite_gate(
        metadata,
        table,
        asset="labeling_candidates",
        check_name="labeling_candidates_suite",
        suite_name="labeling_candidates",
        expectations=labeling_candidates_suite(config.budget),
        partition=None,
        run_id=run_id,
        extra_details={"csv_path": str(csv_path)},
    )
