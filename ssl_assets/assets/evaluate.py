"""Evaluation assets: frozen features, probes and label-efficiency, fine-tuning, the champion.

All heavy lifting is in `ssl_assets.ml.evaluate` (plain PyTorch / scikit-learn); these assets
choose the data (curated, included, labeled images per split), call it, and record results in
DuckDB and the model registry. Test accuracy is reported everywhere and never used to decide.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

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
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from quality.gates import suite_gate
from quality.suites import model_metrics_suite, probes_suite
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from ssl_assets.assets.curate import DEFAULT_SPEC, load_rows
from ssl_assets.assets.pretrain import ssl_encoder
from ssl_assets.curation.contact_sheet import markdown_image
from ssl_assets.data.canonical import CanonicalSpec
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS
from ssl_assets.profiles import get_profile
from ssl_assets.registry import (
    current_champion,
    model_path,
    record_decision,
    recorded_path,
    register_model,
    set_champion,
    verified_model_path,
)

PROFILE = get_profile()
SPLITS = ("train", "val", "test")


# -- shared readers ------------------------------------------------------------------------------


def latest_encoder(metadata: MetadataStore) -> pd.Series:
    """The newest encoder that passed its collapse check."""
    df = metadata.query(
        "SELECT * FROM models WHERE kind = 'encoder' AND status <> 'rejected' "
        "ORDER BY created_at DESC LIMIT 1"
    )
    if df.empty:
        raise Failure("no usable encoder in `models`: materialize ssl_encoder first")
    return df.iloc[0]


@dataclass
class LabeledSplits:
    """Included, labeled images per split (canonical uint8 pixels), with their groups."""

    ids: dict[str, list[str]]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]  # int codes into class_names
    class_names: list[str]
    groups: dict[str, dict[str, np.ndarray]]  # split -> attribute -> values


def labeled_splits(metadata: MetadataStore, lake: LakeResource, version: str) -> LabeledSplits:
    rows = metadata.query(
        "SELECT k.image_id, k.split, c.array_path, c.array_row, l.label "
        "FROM curated_images k JOIN image_catalog c USING (image_id) "
        "JOIN current_labels l USING (image_id) "
        "WHERE k.include AND c.version = ? ORDER BY k.split, c.array_path, c.array_row",
        [version],
    )
    class_names = sorted(rows["label"].unique().tolist())
    missing = [s for s in SPLITS if (rows["split"] == s).sum() == 0]
    if missing or len(class_names) < 2:
        raise Failure(
            f"evaluation needs labeled images of at least two classes in every split; "
            f"no labeled images in {missing}"
            if missing
            else "fewer than two classes labeled"
        )
    code = {c: i for i, c in enumerate(class_names)}
    attrs = metadata.query(
        "SELECT image_id, key, value FROM attributes WHERE key <> 'split' "
        "QUALIFY row_number() OVER (PARTITION BY image_id, key ORDER BY recorded_at DESC) = 1"
    )
    wide = attrs.pivot(index="image_id", columns="key", values="value") if len(attrs) else None
    out = LabeledSplits({}, {}, {}, class_names, {})
    for split in SPLITS:
        part = rows[rows["split"] == split].reset_index(drop=True)
        out.ids[split] = part["image_id"].tolist()
        out.images[split] = load_rows(lake, part)
        out.labels[split] = part["label"].map(code).to_numpy(np.int64)
        out.groups[split] = (
            {
                key: wide.reindex(part["image_id"])[key].to_numpy(dtype=object)
                for key in wide.columns
            }
            if wide is not None
            else {}
        )
    return out


def _plot_table(table: pd.DataFrame, path, title: str) -> bytes:
    from ssl_assets.ml.evaluate.efficiency import plot_label_efficiency

    plot_label_efficiency(table, path, title=title)
    return path.read_bytes()


# -- image_embeddings ----------------------------------------------------------------------------


class EmbeddingsConfig(Config):
    catalog_version: str = DEFAULT_SPEC.version
    batch_size: int = 512


@asset(
    deps=[ssl_encoder],
    group_name="evaluation",
    pool=METADATA_WRITER_POOL,
    kinds={"pytorch", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={"dagster/table_name": "image_embeddings"},
)
def image_embeddings(
    context: AssetExecutionContext,
    config: EmbeddingsConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> MaterializeResult:
    """Frozen features of every curated image from the newest encoder that passed its collapse
    check, in embeddings/<model_id>/<version>.npy; the table maps image_id to its row."""
    from ssl_assets.data.catalog import save_array_atomic
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.evaluate.features import embed_images

    encoder = latest_encoder(metadata)
    backbone, meta = load_encoder(lake.path("models", encoder["model_id"]))
    catalog = metadata.query(
        "SELECT c.image_id, c.array_path, c.array_row FROM curated_images k "
        "JOIN image_catalog c USING (image_id) WHERE c.version = ? "
        "ORDER BY c.array_path, c.array_row",
        [config.catalog_version],
    )
    features = embed_images(
        backbone, load_rows(lake, catalog), meta["preprocessing"], batch_size=config.batch_size
    )
    rel = f"embeddings/{encoder['model_id']}/{config.catalog_version}.npy"
    save_array_atomic(features.astype(np.float32), lake.path(rel))
    rows = pd.DataFrame(
        {
            "image_id": catalog["image_id"],
            "model_id": encoder["model_id"],
            "array_path": rel,
            "array_row": np.arange(len(catalog)),
            "run_id": context.run.run_id,
            "recorded_at": utcnow(),
        }
    )
    metadata.replace_where("image_embeddings", "model_id", encoder["model_id"], rows)
    return MaterializeResult(
        metadata={
            "model_id": encoder["model_id"],
            "images": len(rows),
            "dim": int(features.shape[1]) if features.ndim == 2 else 0,
            "array_path": rel,
            "dagster/row_count": len(rows),
        }
    )


def load_embeddings(lake: LakeResource, metadata: MetadataStore, model_id: str, ids: list[str]):
    index = metadata.query(
        "SELECT image_id, array_path, array_row FROM image_embeddings WHERE model_id = ?",
        [model_id],
    ).set_index("image_id")
    if index.empty:
        raise Failure(f"no embeddings for {model_id}: materialize image_embeddings first")
    array = np.load(lake.path(index["array_path"].iloc[0]), mmap_mode="r")
    return np.asarray(array[index.loc[ids, "array_row"].to_numpy()])


# -- probes --------------------------------------------------------------------------------------


class ProbesConfig(Config):
    """Label budgets as `fraction:min_per_class` of the labeled train images, comma-separated."""

    catalog_version: str = DEFAULT_SPEC.version
    budgets: str = Field(default="0.05:2,0.25:2,1.0:1", description="fraction:k per class, ...")
    seeds: int = PROFILE.eval_seeds
    scratch_max_seconds: float = Field(
        default=PROFILE.scratch_max_seconds,
        description="the scratch baseline trains for the SSL encoder's wall time, at most this",
    )


@asset(
    deps=[image_embeddings],
    group_name="evaluation",
    pool=METADATA_WRITER_POOL,
    kinds={"pytorch", "scikitlearn", "duckdb"},
    owners=OWNERS,
    metadata={
        "dagster/table_name": "probes",
        "dagster/column_schema": TableSchema(
            columns=[
                TableColumn("model_id", "string", description="the SSL encoder evaluated"),
                TableColumn("budget", "string", description="fraction of labels, k per class"),
                TableColumn("n_labels", "int"),
                TableColumn("method", "string", description="ssl|random|scratch / probe"),
                TableColumn("seed", "int", description="label draw"),
                TableColumn("accuracy", "float", description="test accuracy"),
                TableColumn("val_accuracy", "float", description="used for model choice"),
                TableColumn("train_seconds", "float"),
            ]
        ),
    },
    check_specs=[
        AssetCheckSpec(
            "probes_suite",
            asset="probes",
            blocking=True,
            description="GX suite on the label-efficiency rows: accuracies in [0, 1], every "
            "method present, label counts positive.",
        )
    ],
)
def probes(
    context: AssetExecutionContext,
    config: ProbesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Linear and weighted-kNN probes on frozen features, per label budget and seed (model
    choices on val, scored on test), beside a randomly initialised encoder's features and the
    same backbone trained from scratch on the same labels for the same wall time."""
    from ssl_assets.ml.encoder_io import build_from_meta, load_encoder
    from ssl_assets.ml.evaluate.budgets import parse_budgets
    from ssl_assets.ml.evaluate.efficiency import (
        ScratchConfig,
        label_efficiency,
        ssl_wall_time,
        summarise,
    )
    from ssl_assets.ml.evaluate.features import embed_images

    encoder = latest_encoder(metadata)
    model_id = encoder["model_id"]
    _, meta = load_encoder(lake.path("models", model_id))
    data = labeled_splits(metadata, lake, config.catalog_version)
    ssl = tuple(load_embeddings(lake, metadata, model_id, data.ids[s]) for s in SPLITS)
    random_encoder = build_from_meta(meta)
    random = tuple(
        embed_images(random_encoder, data.images[s], meta["preprocessing"]) for s in SPLITS
    )
    wall = ssl_wall_time(meta)
    scratch_seconds = (
        min(wall, config.scratch_max_seconds) if wall > 0 else config.scratch_max_seconds
    )
    scratch = ScratchConfig(
        backbone=meta["backbone"],
        backbone_kwargs=meta.get("backbone_kwargs", {}),
        time_budget_s=scratch_seconds,
        epochs=10_000,
    )
    table = label_efficiency(
        {"ssl": ssl, "random": random},
        tuple(data.labels[s] for s in SPLITS),
        parse_budgets(
            [tuple(float(x) for x in spec.split(":")) for spec in config.budgets.split(",")]
        ),
        seeds=range(config.seeds),
        num_classes=len(data.class_names),
        scratch=scratch,
        images=tuple(data.images[s] for s in SPLITS),
        preprocessing=meta["preprocessing"],
        on_row=lambda r: context.log.info(
            f"{r['budget']} seed {r['seed']} {r['method']}: test accuracy {r['accuracy']:.3f}"
        ),
    )
    now = utcnow()
    keep = [
        c
        for c in table.columns
        if c
        in {
            "budget",
            "fraction",
            "min_per_class",
            "n_labels",
            "method",
            "encoder",
            "probe",
            "seed",
            "accuracy",
            "val_accuracy",
            "train_seconds",
        }
    ]
    rows = table[keep].assign(model_id=model_id, run_id=context.run.run_id, recorded_at=now)
    metadata.replace_where("probes", "model_id", model_id, rows)
    summary = summarise(table)
    png = _plot_table(table, lake.path("reports", f"label_efficiency_{model_id}.png"), model_id)
    headline = {f"{r.method}@{r.budget}": float(r.accuracy_mean) for r in summary.itertuples()}
    metadata.record_metrics("probes", model_id, context.run.run_id, headline)
    yield MaterializeResult(
        metadata={
            "model_id": model_id,
            "scratch_seconds": round(scratch_seconds, 2),
            "ssl_wall_seconds": round(wall, 2),
            "label_efficiency": MetadataValue.md(
                summary[["budget", "n_labels", "method", "accuracy", "seeds"]].to_markdown(
                    index=False, floatfmt=".1f"
                )
            ),
            "curve": MetadataValue.md(markdown_image(png, "label efficiency")),
            "dagster/row_count": len(rows),
        }
    )
    stored = metadata.query("SELECT * FROM probes WHERE model_id = ?", [model_id])
    yield suite_gate(
        metadata,
        stored,
        asset="probes",
        check_name="probes_suite",
        suite_name="probes",
        expectations=probes_suite(sorted(set(table["method"]))),
        partition=model_id,
        run_id=context.run.run_id,
    )


# -- finetuned_model -----------------------------------------------------------------------------


class FinetuneAssetConfig(Config):
    """Fine-tuning settings. Defaults measured on the default data (demo encoder): lr 3e-3 with
    the encoder at the same rate reaches the linear probe's test accuracy (0.957) in ~35 epochs
    with early stopping; the encoder at 0.1x the rate gets there too but needs all 40."""

    catalog_version: str = DEFAULT_SPEC.version
    strategy: str = Field(default="full", description="full | partial | lora")
    freeze_stages: int = Field(default=2, description="partial: leading stages kept frozen")
    lora_rank: int = 4
    epochs: int = PROFILE.finetune_epochs
    patience: int = 10
    lr: float = 3e-3
    backbone_lr_scale: float = Field(
        default=1.0, description="encoder learning rate relative to the head's"
    )
    seed: int = 0


def subgroups_beside_bias_audit(metadata: MetadataStore, subgroups: dict) -> pd.DataFrame:
    """The model's test accuracy per subgroup beside what the latest bias audit found for the
    same subgroup (its share of the included train images and of all included images): a
    subgroup that is both rare in training and worse at test is the case to look at."""
    rows = [
        {
            "attribute": attribute,
            "subgroup": subgroup,
            "test_images": stats["n"],
            "test_accuracy": round(stats["accuracy"], 4),
            "gap_to_best": round(entry["groups"][entry["best"]]["accuracy"] - stats["accuracy"], 4)
            if entry.get("best") is not None
            else None,
        }
        for attribute, entry in subgroups.items()
        for subgroup, stats in entry["groups"].items()
    ]
    table = pd.DataFrame(
        rows,
        columns=["attribute", "subgroup", "test_images", "test_accuracy", "gap_to_best"],
    )
    audit = metadata.query(
        "SELECT attribute, subgroup, scope, share FROM bias_groups WHERE run_id = "
        "(SELECT run_id FROM bias_groups ORDER BY recorded_at DESC LIMIT 1) "
        "AND scope IN ('train', 'all')"
    )
    if audit.empty or table.empty:
        return table.assign(train_share=None, share_all=None)
    shares = audit.pivot_table(
        index=["attribute", "subgroup"], columns="scope", values="share", aggfunc="first"
    ).rename(columns={"train": "train_share", "all": "share_all"})
    shares = shares.reindex(columns=["train_share", "share_all"]).round(4).reset_index()
    return table.merge(shares, on=["attribute", "subgroup"], how="left")


def flat_metrics(report: dict, prefix: str = "") -> pd.DataFrame:
    """The numeric leaves of an evaluation report that are probabilities (accuracies, ECE),
    long form, for the metrics suite."""
    rows = []
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.append(flat_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "accuracy" in name or name.endswith("ece") or name.startswith("robustness."):
                rows.append(pd.DataFrame([{"metric": name, "value": float(value)}]))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["metric", "value"])


@asset(
    deps=[ssl_encoder],
    group_name="evaluation",
    pool=METADATA_WRITER_POOL,
    kinds={"pytorch", "duckdb", "great-expectations"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "finetune_metrics_suite",
            asset="finetuned_model",
            blocking=True,
            description="GX suite on the model's metrics: accuracies, ECE and robustness are "
            "probabilities, the headline metrics are present.",
        )
    ],
)
def finetuned_model(
    context: AssetExecutionContext,
    config: FinetuneAssetConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The newest encoder fine-tuned with a linear head on the labeled train split (early
    stopping on val; full, partial or LoRA), with test accuracy, per-class and per-subgroup
    accuracy, calibration (ECE) and robustness to noise, blur and brightness."""
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.evaluate.finetuning import FinetuneConfig, finetune
    from ssl_assets.ml.evaluate.metrics import evaluate_classifier
    from ssl_assets.ml.evaluate.model_io import save_finetuned

    encoder = latest_encoder(metadata)
    backbone, meta = load_encoder(lake.path("models", encoder["model_id"]))
    data = labeled_splits(metadata, lake, config.catalog_version)
    cfg = FinetuneConfig(
        strategy=config.strategy,
        freeze_stages=config.freeze_stages,
        lora_rank=config.lora_rank,
        epochs=config.epochs,
        patience=config.patience,
        lr=config.lr,
        backbone_lr_scale=config.backbone_lr_scale,
        seed=config.seed,
    )
    result = finetune(
        backbone,
        len(data.class_names),
        data.images["train"],
        data.labels["train"],
        data.images["val"],
        data.labels["val"],
        cfg,
        preprocessing=meta["preprocessing"],
    )
    report = evaluate_classifier(
        result.deploy_model,
        data.images["test"],
        data.labels["test"],
        data.class_names,
        groups=data.groups["test"] or None,
    )
    # The id names everything that made the model: encoder, settings, labeled data.
    key = json.dumps(
        {
            "encoder": encoder["model_id"],
            "config": config.model_dump(),
            "classes": data.class_names,
            "train": data.ids["train"],
        },
        sort_keys=True,
    )
    model_id = "ft-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    out_dir = lake.path("models", model_id)
    spec = CanonicalSpec(
        resolution=int(config.catalog_version.split("-")[0][1:]),
        aspect=config.catalog_version.split("-", 1)[1],  # type: ignore[arg-type]
    )
    headline = {
        "test_accuracy": report.get("accuracy"),
        "ece": report.get("ece"),
        "max_subgroup_gap": report.get("max_subgroup_gap"),
        "val_accuracy": result.log.best_val_accuracy
        if hasattr(result.log, "best_val_accuracy")
        else None,
    }
    save_finetuned(
        result.deploy_model,
        out_dir,
        backbone=meta["backbone"],
        backbone_kwargs=meta.get("backbone_kwargs", {}),
        class_names=data.class_names,
        canonical=spec,
        metrics=report,
        info={"encoder": encoder["model_id"], "finetune": cfg.describe()},
    )
    register_model(
        metadata,
        model_id=model_id,
        kind="finetuned",
        path=recorded_path(lake, out_dir),
        content_hash=json.loads((out_dir / "model.json").read_text()).get("weights_sha256"),
        config=cfg.describe(),
        metrics=report,
        lineage={"encoder": encoder["model_id"], "run_id": context.run.run_id},
        status="candidate",
        reason="awaiting champion comparison",
        run_id=context.run.run_id,
    )
    metadata.record_metrics(
        "finetuned_model",
        model_id,
        context.run.run_id,
        {k: float(v) for k, v in headline.items() if isinstance(v, int | float)},
    )
    robustness = report.get("robustness") or {}
    beside = subgroups_beside_bias_audit(metadata, report.get("subgroups") or {})
    yield MaterializeResult(
        metadata={
            "model_id": model_id,
            "encoder": encoder["model_id"],
            "strategy": config.strategy,
            "test_accuracy": float(report.get("accuracy", float("nan"))),
            "ece": float(report.get("ece", float("nan"))),
            "per_class_accuracy": MetadataValue.json(report.get("per_class_accuracy", {})),
            "subgroups": MetadataValue.json(report.get("subgroups", {})),
            "subgroups_beside_bias_audit": MetadataValue.md(
                beside.to_markdown(index=False)
                if len(beside)
                else "no subgroup attributes on the test images (metadata.csv)"
            ),
            "robustness": MetadataValue.json(robustness),
            "training": MetadataValue.json(result.log.summary()),
            "path": str(out_dir),
        }
    )
    yield suite_gate(
        metadata,
        flat_metrics(report),
        asset="finetuned_model",
        check_name="finetune_metrics_suite",
        suite_name="model_metrics",
        expectations=model_metrics_suite(),
        partition=model_id,
        run_id=context.run.run_id,
    )


# -- champion_model ------------------------------------------------------------------------------


class ChampionConfig(Config):
    catalog_version: str = DEFAULT_SPEC.version
    tolerance: float = Field(
        default=0.01, description="how much worse (val accuracy) the bootstrap may allow"
    )
    max_subgroup_gap: float = 0.15
    min_group_size: int = 10
    bootstrap_resamples: int = 1000


def model_card_info(metadata: MetadataStore, model: pd.Series, reasons: list[str]) -> dict:
    """What the model card says: lineage down to the curated data, metrics, the decision."""
    lineage = json.loads(model["lineage"] or "{}")
    encoder = metadata.query("SELECT * FROM models WHERE model_id = ?", [lineage.get("encoder")])
    encoder_lineage = json.loads(encoder["lineage"].iloc[0] or "{}") if len(encoder) else {}
    curated = metadata.query(
        "SELECT split, count(*) FILTER (WHERE include) AS included, count(*) AS images "
        "FROM curated_images GROUP BY split ORDER BY split"
    )
    gates = metadata.query(
        "SELECT asset, count(*) FILTER (WHERE passed) AS passed, count(*) AS gates "
        "FROM gate_results GROUP BY asset ORDER BY asset"
    )
    return {
        "title": f"ssl-assets champion {model['model_id']}",
        "summary": model["reason"],
        "model": {"fine-tuned": model["model_id"], "encoder": lineage.get("encoder")},
        "data": {**encoder_lineage, "curated_images": curated.to_dict("records")},
        "audits": {"gates (passed / total) per asset": gates.to_dict("records")},
        "metrics": {
            k: v
            for k, v in json.loads(model["metrics"] or "{}").items()
            if isinstance(v, int | float | str)
        },
        "promotion": reasons,
    }


@asset(
    deps=[finetuned_model, probes],
    group_name="evaluation",
    pool=METADATA_WRITER_POOL,
    kinds={"pytorch", "duckdb"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "challenger_not_worse",
            asset="champion_model",
            blocking=True,
            description="Paired bootstrap on val: the challenger is not worse than the champion "
            "beyond the tolerance.",
        ),
        AssetCheckSpec(
            "subgroup_gap_within_bound",
            asset="champion_model",
            blocking=True,
            description="The challenger's largest accuracy gap between subgroups is in bounds.",
        ),
        AssetCheckSpec(
            "encoder_passed_collapse_check",
            asset="champion_model",
            blocking=True,
            description="The challenger's encoder passed ssl_encoder's collapse check.",
        ),
    ],
)
def champion_model(
    context: AssetExecutionContext,
    config: ChampionConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The registry's promotion step: the newest fine-tuned model (challenger) and the current
    champion are re-scored side by side on the same val images; the challenger replaces the
    champion only when every rule passes. Every decision and its reasons land in `promotions`
    and `models`; a model card is written beside the champion's weights."""
    from ssl_assets.ml.evaluate.model_card import write_model_card
    from ssl_assets.ml.evaluate.model_io import load_finetuned
    from ssl_assets.ml.evaluate.promotion import PromotionPolicy, compare_models

    challenger_row = metadata.query(
        "SELECT * FROM models WHERE kind = 'finetuned' ORDER BY created_at DESC LIMIT 1"
    )
    if challenger_row.empty:
        raise Failure("no fine-tuned model to judge: materialize finetuned_model first")
    challenger_row = challenger_row.iloc[0]
    challenger_id = challenger_row["model_id"]
    champion_row = current_champion(metadata)
    data = labeled_splits(metadata, lake, config.catalog_version)
    challenger, chal_meta = load_finetuned(verified_model_path(lake, challenger_row))
    champion, champ_meta = (None, None)
    same = champion_row is not None and champion_row["model_id"] == challenger_id
    if champion_row is not None and not same:
        champion, champ_meta = load_finetuned(verified_model_path(lake, champion_row))
        if list(champ_meta["class_names"]) != list(chal_meta["class_names"]):
            champion = None  # a new label set: compare against no champion, say so below
    encoder_id = json.loads(challenger_row["lineage"] or "{}").get("encoder")
    encoder_status = metadata.query("SELECT status FROM models WHERE model_id = ?", [encoder_id])
    collapse_ok = not encoder_status.empty and encoder_status["status"].iloc[0] != "rejected"
    policy = PromotionPolicy(
        tolerance=config.tolerance,
        max_subgroup_gap=config.max_subgroup_gap,
        min_group_size=config.min_group_size,
        n_resamples=config.bootstrap_resamples,
    )
    test_acc = json.loads(challenger_row["metrics"] or "{}").get("accuracy")
    decision = compare_models(
        challenger,
        champion,
        data.images["val"],
        data.labels["val"],
        collapse_ok=collapse_ok,
        groups=data.groups["val"] or None,
        policy=policy,
        reported={"test_accuracy": test_acc},
    )
    reasons = list(decision.reasons)
    if champion_row is not None and champion is None and not same:
        reasons.append(
            f"the champion {champion_row['model_id']} predicts another class list; compared "
            "against no champion"
        )
    run_id = context.run.run_id
    boot = decision.bootstrap
    if same:
        promoted, previous = True, None
        reasons = [f"{challenger_id} is already the champion", *reasons]
    elif decision.promote:
        previous = set_champion(metadata, challenger_id, "pipeline", reasons, run_id)
        promoted = True
    else:
        promoted, previous = False, None
        with metadata.transaction() as con:
            con.execute(
                "UPDATE models SET status = 'rejected', reason = ? WHERE model_id = ?",
                [reasons[0], challenger_id],
            )
            record_decision(
                con,
                metadata,
                challenger_id=challenger_id,
                champion_id=champion_row["model_id"] if champion_row is not None else None,
                promoted=False,
                reasons=reasons,
                decided_by="pipeline",
                run_id=run_id,
            )
    if boot is not None:
        metadata.execute(
            "UPDATE promotions SET challenger_val = ?, champion_val = ?, delta_low = ?, "
            "delta_high = ? WHERE challenger_id = ? AND run_id = ?",
            [
                decision.challenger_val_accuracy,
                decision.champion_val_accuracy,
                boot.low,
                boot.high,
                challenger_id,
                run_id,
            ],
        )
    champ_now = current_champion(metadata)
    card_md = None
    if champ_now is not None:
        card = write_model_card(
            model_path(lake, champ_now["path"]), model_card_info(metadata, champ_now, reasons)
        )
        card_md = card.read_text()
    yield MaterializeResult(
        metadata={
            "challenger": challenger_id,
            "champion": champ_now["model_id"] if champ_now is not None else "none",
            "promoted": promoted,
            "previous_champion": previous or "none",
            "challenger_val_accuracy": float(decision.challenger_val_accuracy),
            "champion_val_accuracy": float(decision.champion_val_accuracy)
            if decision.champion_val_accuracy is not None
            else float("nan"),
            "challenger_test_accuracy (reported, not used)": float(test_acc)
            if test_acc is not None
            else float("nan"),
            "reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
            "model_card": MetadataValue.md(card_md) if card_md else "no champion yet",
        }
    )
    # decision.reasons: [summary, not-worse rule, subgroup rule, collapse rule]
    rule_lines = dict(
        zip(("not_worse", "subgroup_gap", "collapse_check"), decision.reasons[1:], strict=False)
    )
    for name, key in (
        ("challenger_not_worse", "not_worse"),
        ("subgroup_gap_within_bound", "subgroup_gap"),
        ("encoder_passed_collapse_check", "collapse_check"),
    ):
        passed = same or bool(decision.checks.get(key, True))
        why = rule_lines.get(key, reasons[0])
        metadata.record_gate(
            "champion_model",
            name,
            challenger_id,
            passed,
            "ERROR",
            {"rule": why, "reasons": reasons},
            run_id,
        )
        yield AssetCheckResult(
            check_name=name,
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            description=why,
            metadata={"challenger": challenger_id},
        )


# -- embedding_audit -----------------------------------------------------------------------------


@asset(
    deps=[image_embeddings, "diversity_audit"],
    group_name="evaluation",
    pool=METADATA_WRITER_POOL,
    kinds={"python", "scikitlearn", "duckdb"},
    owners=OWNERS,
)
def embedding_audit(
    context: AssetExecutionContext, lake: LakeResource, metadata: MetadataStore
) -> MaterializeResult:
    """The diversity statistics of the included train split re-run in the *trained* encoder's
    embedding space, beside the pinned-embedder figures of diversity_audit. Report only: it
    never re-splits or re-deduplicates (curation stays on its pinned embedder)."""
    from ssl_assets.audit.diversity import diversity_audit as run_diversity
    from ssl_assets.audit.plots import projection_png

    encoder = latest_encoder(metadata)
    model_id = encoder["model_id"]
    ids = metadata.query(
        "SELECT k.image_id FROM curated_images k JOIN image_embeddings e USING (image_id) "
        "WHERE k.include AND k.split = 'train' AND e.model_id = ? ORDER BY e.array_row",
        [model_id],
    )["image_id"].tolist()
    if len(ids) < 2:
        raise Failure("fewer than two embedded train images: nothing to audit")
    report = run_diversity(load_embeddings(lake, metadata, model_id, ids))
    pinned = metadata.query(
        "SELECT metric, value FROM stage_metrics WHERE asset = 'diversity_audit' "
        "QUALIFY row_number() OVER (PARTITION BY metric ORDER BY recorded_at DESC) = 1"
    )
    pinned_metrics = dict(zip(pinned["metric"], pinned["value"], strict=True))
    compare = pd.DataFrame(
        [
            {
                "metric": k,
                "trained encoder": v,
                "pinned embedder": pinned_metrics.get(k, float("nan")),
            }
            for k, v in report.metrics.items()
            if isinstance(v, int | float)
        ]
    )
    metadata.record_metrics(
        "embedding_audit",
        model_id,
        context.run.run_id,
        {k: float(v) for k, v in report.metrics.items() if isinstance(v, int | float)},
    )
    png = projection_png(
        report.per_image[["x", "y"]].to_numpy(),
        report.per_image["cluster"].to_numpy(),
        f"train split in {model_id}'s embedding space (PCA)",
    )
    return MaterializeResult(
        metadata={
            "model_id": model_id,
            "train_images": len(ids),
            "trained_vs_pinned": MetadataValue.md(compare.to_markdown(index=False, floatfmt=".3f")),
            "projection": MetadataValue.md(markdown_image(png, "trained-encoder projection")),
        }
    )
