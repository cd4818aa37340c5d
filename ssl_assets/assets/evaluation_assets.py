"""Evaluation assets: frozen features, probes and label-efficiency, fine-tuning, the champion.

All heavy lifting is in `ssl_assets.ml.evaluate` (plain PyTorch / scikit-learn); these assets
choose the data (curated, included, labeled images per split) through the store, call it, and
record results in DuckDB and the model registry. Test accuracy is reported everywhere and never
used to decide. Where networks run comes from the `compute` resource.
"""

import dataclasses
import hashlib
import json
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
from quality.gates import record_check, suite_verdict
from quality.suites import model_metrics_suite, probes_suite
from quality.verdict import Verdict
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from resources.settings import ComputeResource, ImageSpecResource, TrackingResource
from ssl_assets.curation.contact_sheet import markdown_image
from ssl_assets.ml.evaluate.labeled import SPLITS, LabeledSplits
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS
from ssl_assets.presentation import link, numbers, picture
from ssl_assets.presentation import table as presentation_table
from ssl_assets.profiles import Profile
from ssl_assets.refusals import refused

#: champion_model's checks, keyed by the promotion rule that decides each
CHAMPION_RULES = {
    "challenger_not_worse": "not_worse",
    "subgroup_gap_within_bound": "subgroup_gap",
    "encoder_passed_collapse_check": "collapse_check",
}


def _latest_encoder(metadata: MetadataStore) -> pd.Series:
    encoder = metadata.latest_usable_encoder()
    if encoder is None:
        raise Failure("no usable encoder in `models`: materialize ssl_encoder first")
    return encoder


def _labeled(metadata: MetadataStore, lake: LakeResource, version: str) -> LabeledSplits:
    with refused():
        return LabeledSplits.from_rows(
            metadata.labeled_rows(version), metadata.latest_attributes(), lake.read_rows
        )


def _embeddings(
    lake: LakeResource, metadata: MetadataStore, model_id: str, ids: list[str]
) -> np.ndarray:
    index = metadata.embedding_index(model_id)
    if index.empty:
        raise Failure(f"no embeddings for {model_id}: materialize image_embeddings first")
    return lake.read_rows(index.loc[ids].reset_index())


# -- image_embeddings ----------------------------------------------------------------------------


class EmbeddingsConfig(Config):
    batch_size: int = 512


@asset(
    deps=["ssl_encoder"],
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
    image_spec: ImageSpecResource,
    compute: ComputeResource,
) -> MaterializeResult:
    """Frozen features of every curated image from the newest encoder that passed its collapse
    check, in embeddings/<model_id>/<version>.npy; the table maps image_id to its row."""
    from ssl_assets.data.catalog import save_array_atomic
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.evaluate.features import embed_images

    model_id = _latest_encoder(metadata)["model_id"]
    backbone, meta = load_encoder(lake.model_dir(model_id))
    catalog = metadata.curated_rows(image_spec.version)
    features = embed_images(
        backbone.to(compute.torch_device()),
        lake.row_batches(catalog),  # a batch of pixels in memory at a time
        meta["preprocessing"],
        batch_size=config.batch_size,
    )
    rel = lake.embeddings_array(model_id, image_spec.version)
    save_array_atomic(features.astype(np.float32), lake.path(rel))
    rows = pd.DataFrame(
        {
            "image_id": catalog["image_id"],
            "model_id": model_id,
            "array_path": rel,
            "array_row": np.arange(len(catalog)),
            "run_id": context.run.run_id,
            "recorded_at": utcnow(),
        }
    )
    metadata.replace_embeddings(model_id, rows)
    return MaterializeResult(
        metadata={
            "model_id": model_id,
            "images": len(rows),
            "dim": int(features.shape[1]) if features.ndim == 2 else 0,
            "array_path": rel,
            "dagster/row_count": len(rows),
        }
    )


# -- probes --------------------------------------------------------------------------------------


class LabelBudgetConfig(Config):
    """One label budget: a share of each class's labeled train images, at least k of them."""

    fraction: float = Field(description="Share of each class's labeled train images, 0 to 1.")
    min_per_class: int = Field(default=1, description="At least this many images per class.")


class ProbesConfig(Config):
    """Label budgets (each a fraction of the labeled train images with at least
    min_per_class per class), label draws, and the scratch baseline's step budget."""

    budgets: list[LabelBudgetConfig] = Field(
        default=[
            {"fraction": 0.05, "min_per_class": 2},
            {"fraction": 0.25, "min_per_class": 2},
            {"fraction": 1.0, "min_per_class": 1},
        ],
        description="The label budgets of the label-efficiency table, smallest first.",
    )
    seeds: int | None = Field(default=None, description="label draws; None: the profile's")
    scratch_steps: int | None = Field(
        default=None,
        description="Optimizer steps of the from-scratch baseline at every budget and seed "
        "(None: the profile's scratch_steps). Steps, not seconds, so results repeat on a busy "
        "machine; its seconds are reported beside.",
    )


def _budgets(config: ProbesConfig) -> list:
    """The configured budgets as `LabelBudget`s (a default arrives as plain dicts)."""
    from ssl_assets.ml.evaluate.budgets import LabelBudget

    specs = [b if isinstance(b, dict) else b.model_dump() for b in config.budgets]
    with refused():
        return [LabelBudget(float(b["fraction"]), int(b.get("min_per_class", 1))) for b in specs]


PROBE_COLUMNS = [
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
]
PROBES_SCHEMA = TableSchema(
    columns=[
        TableColumn("model_id", "string", description="the SSL encoder evaluated"),
        TableColumn("budget", "string", description="share of labels, at least k per class"),
        TableColumn("n_labels", "int"),
        TableColumn(
            "method",
            "string",
            description="the features (ssl, random or scratch), then the probe (linear, knn or "
            "supervised)",
        ),
        TableColumn("seed", "int", description="label draw"),
        TableColumn("accuracy", "float", description="test accuracy"),
        TableColumn("val_accuracy", "float", description="used for model choice"),
        TableColumn("train_seconds", "float"),
    ]
)


def _label_efficiency(
    context: AssetExecutionContext,
    config: ProbesConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    compute: ComputeResource,
    profile: Profile,
    model_id: str,
    meta: dict,
    data: LabeledSplits,
):
    """The label-efficiency table: SSL and random-init features probed per budget and seed,
    beside the scratch baseline trained for a fixed number of steps; returns (table, steps)."""
    from ssl_assets.ml.encoder_io import build_from_meta
    from ssl_assets.ml.evaluate.efficiency import ScratchConfig, label_efficiency
    from ssl_assets.ml.evaluate.features import embed_images

    random_encoder = build_from_meta(meta)
    scratch = ScratchConfig(
        backbone=meta["backbone"],
        backbone_kwargs=meta.get("backbone_kwargs", {}),
        max_steps=config.scratch_steps or profile.scratch_steps,
        epochs=10_000,  # the step budget decides
        device=compute.torch_device(),
    )
    table = label_efficiency(
        {
            "ssl": tuple(_embeddings(lake, metadata, model_id, data.ids[s]) for s in SPLITS),
            "random": tuple(
                embed_images(random_encoder, data.images[s], meta["preprocessing"]) for s in SPLITS
            ),
        },
        tuple(data.labels[s] for s in SPLITS),
        _budgets(config),
        seeds=range(config.seeds or profile.eval_seeds),
        num_classes=len(data.class_names),
        scratch=scratch,
        images=tuple(data.images[s] for s in SPLITS),
        preprocessing=meta["preprocessing"],
        on_row=lambda r: context.log.info(
            f"{r['budget']} seed {r['seed']} {r['method']}: test accuracy {r['accuracy']:.3f}"
        ),
    )
    return table, scratch.max_steps


def _probes_metadata(
    lake: LakeResource, model_id: str, meta: dict, table: pd.DataFrame, steps: int
) -> dict:
    """The curve (named, first), the label-efficiency table one row per budget (inline in the
    UI), and each method's mean test accuracy per budget as a number with a stable key (the
    Plots tab draws it across materializations)."""
    from ssl_assets.ml.evaluate.efficiency import (
        efficiency_wide,
        plot_label_efficiency,
        ssl_wall_time,
        summarise,
    )

    summary = summarise(table)
    png_path = lake.report_path(f"label_efficiency_{model_id}.png")
    plot_label_efficiency(table, png_path, title=f"label efficiency of {model_id}")
    wide = efficiency_wide(summary)
    smallest = summary.sort_values("n_labels").iloc[0]["budget"]
    at_smallest = summary[summary["budget"] == smallest].set_index("method")["accuracy_mean"]
    scratch = table[table["method"] == "scratch/supervised"]
    return {
        "label_efficiency_curve": picture(png_path.read_bytes(), "label efficiency curve"),
        "label_efficiency": presentation_table(
            wide,
            {
                "labels": "labeled train images used (mean over draws)",
                **{m: "test accuracy, mean ± std over label draws" for m in wide.columns[2:]},
            },
        ),
        **numbers(
            {f"{r.method} accuracy @ {r.budget}": r.accuracy_mean for r in summary.itertuples()}
        ),
        **numbers(
            {
                f"ssl/linear minus scratch @ {smallest}": at_smallest.get("ssl/linear", np.nan)
                - at_smallest.get("scratch/supervised", np.nan),
                "scratch_steps": steps,
                "scratch_seconds (mean per run)": scratch["train_seconds"].mean(),
                "ssl_train_seconds": ssl_wall_time(meta),
            }
        ),
        "model_id": model_id,
        "curve_png": MetadataValue.path(str(png_path)),
        "dagster/row_count": len(table),
    }


@asset(
    deps=["image_embeddings"],
    group_name="evaluation",
    pool=METADATA_WRITER_POOL,
    kinds={"pytorch", "scikitlearn", "duckdb"},
    owners=OWNERS,
    metadata={"dagster/table_name": "probes", "dagster/column_schema": PROBES_SCHEMA},
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
    image_spec: ImageSpecResource,
    compute: ComputeResource,
    profile: Profile,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Linear and weighted-kNN probes on frozen features, per label budget and seed (model
    choices on val, scored on test), beside a randomly initialised encoder's features and the
    same backbone trained from scratch on the same labels for a fixed number of optimizer
    steps (its seconds reported beside)."""
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.evaluate.efficiency import summarise

    model_id = _latest_encoder(metadata)["model_id"]
    _, meta = load_encoder(lake.model_dir(model_id))
    data = _labeled(metadata, lake, image_spec.version)
    table, steps = _label_efficiency(
        context, config, lake, metadata, compute, profile, model_id, meta, data
    )
    rows = table[[c for c in PROBE_COLUMNS if c in table.columns]]
    metadata.replace_probes(
        model_id, rows.assign(model_id=model_id, run_id=context.run.run_id, recorded_at=utcnow())
    )
    summary = summarise(table)
    headline = {f"{r.method}@{r.budget}": float(r.accuracy_mean) for r in summary.itertuples()}
    metadata.record_metrics("probes", model_id, context.run.run_id, headline)
    yield MaterializeResult(metadata=_probes_metadata(lake, model_id, meta, table, steps))
    verdict = suite_verdict(
        metadata.probes(model_id),
        check_name="probes_suite",
        suite_name="probes",
        expectations=probes_suite(sorted(set(table["method"]))),
    )
    yield record_check(metadata, "probes", verdict, partition=model_id, run_id=context.run.run_id)


# -- finetuned_model -----------------------------------------------------------------------------


class FinetuneAssetConfig(Config):
    """Fine-tuning settings. Defaults measured on the default data (demo encoder): lr 3e-3 with
    the encoder at the same rate reaches the linear probe's test accuracy (0.957) in ~35 epochs
    with early stopping; the encoder at 0.1x the rate gets there too but needs all 40. They equal
    `ssl_assets.ml.evaluate.finetuning.FinetuneConfig`'s (a test holds them equal)."""

    strategy: str = Field(default="full", description="full | partial | lora")
    freeze_stages: int = Field(default=2, description="partial: leading stages kept frozen")
    lora_rank: int = 4
    epochs: int | None = Field(default=None, description="None: the profile's finetune_epochs")
    patience: int = 10
    lr: float = 3e-3
    backbone_lr_scale: float = Field(
        default=1.0, description="encoder learning rate relative to the head's"
    )
    seed: int = 0
    init_from: str | None = Field(
        default=None,
        description="fine-tune these weights instead of the newest SSL encoder: a torchvision "
        "weights name such as ResNet50_Weights.IMAGENET1K_V2 (local torch hub cache), a "
        ".pth/.safetensors file, or a registered model id. Promotion still needs an encoder "
        "that passed the collapse check (a registered encoder id)",
    )


def _finetune(
    config: FinetuneAssetConfig,
    profile: Profile,
    compute: ComputeResource,
    backbone,
    meta: dict,
    data: LabeledSplits,
):
    """Fine-tune the encoder and evaluate it on test; returns (result, cfg, report)."""
    from ssl_assets.ml.evaluate.finetuning import FinetuneConfig, finetune
    from ssl_assets.ml.evaluate.metrics import evaluate_classifier

    cfg = FinetuneConfig(
        strategy=config.strategy,
        freeze_stages=config.freeze_stages,
        lora_rank=config.lora_rank,
        epochs=config.epochs or profile.finetune_epochs,
        patience=config.patience,
        lr=config.lr,
        backbone_lr_scale=config.backbone_lr_scale,
        seed=config.seed,
        device=compute.torch_device(),
    )
    images, labels = data.images, data.labels
    result = finetune(
        backbone,
        len(data.class_names),
        images["train"],
        labels["train"],
        images["val"],
        labels["val"],
        cfg,
        preprocessing=meta["preprocessing"],
    )
    report = evaluate_classifier(
        result.deploy_model,
        images["test"],
        labels["test"],
        data.class_names,
        groups=data.groups["test"] or None,
    )
    return result, cfg, report


def _encoder_to_tune(config: FinetuneAssetConfig, lake: LakeResource, metadata: MetadataStore):
    """(encoder id or None, encoder, its meta, the start's lineage or None): the newest usable
    SSL encoder, or the `init_from` start (its id when it is a registered encoder)."""
    from ssl_assets.ml.encoder_io import load_encoder
    from ssl_assets.ml.init_from import resolve_start, start_encoder

    if not config.init_from:
        encoder_id = _latest_encoder(metadata)["model_id"]
        return (encoder_id, *load_encoder(lake.model_dir(encoder_id)), None)
    with refused():
        start = resolve_start(
            config.init_from, lambda mid: lake.weights_file(metadata.model(mid), mid)
        )
        backbone, meta = start_encoder(start)
    row = metadata.model(start.source) if start.kind == "model" else None
    encoder_id = start.source if row is not None and row["kind"] == "encoder" else None
    return encoder_id, backbone, meta, start.lineage()


def _finetuned_id(
    config: FinetuneAssetConfig, version: str, encoder_id: str, data: LabeledSplits
) -> str:
    """The id names everything that made the model: encoder, settings, catalog, labeled data."""
    key = {
        "encoder": encoder_id,
        "config": config.model_dump(),
        "catalog_version": version,
        "classes": data.class_names,
        "train": data.ids["train"],
    }
    return "ft-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _save_and_register(
    context: AssetExecutionContext,
    config: FinetuneAssetConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
    encoder_id: str | None,
    meta: dict,
    data: LabeledSplits,
    result,
    cfg,
    report: dict,
    start: dict | None = None,
) -> str:
    """Write the fine-tuned model beside its preprocessing, register it as a candidate and
    record its headline metrics; returns its id, which names everything that made it."""
    from ssl_assets.ml.evaluate.model_io import MODEL_META, save_finetuned

    model_id = _finetuned_id(config, image_spec.version, encoder_id, data)
    out_dir = lake.model_dir(model_id)
    save_finetuned(
        result.deploy_model,
        out_dir,
        backbone=meta["backbone"],
        backbone_kwargs=meta.get("backbone_kwargs", {}),
        class_names=data.class_names,
        canonical=image_spec.spec,
        metrics=report,
        info={"encoder": encoder_id, "finetune": cfg.describe()},
    )
    metadata.register_model(
        model_id=model_id,
        kind="finetuned",
        path=lake.model_rel(model_id),
        content_hash=json.loads((out_dir / MODEL_META).read_text()).get("weights_sha256"),
        config=cfg.describe(),
        metrics=report,
        lineage={"encoder": encoder_id, "init_from": start, "run_id": context.run.run_id},
        status="candidate",
        reason="awaiting champion comparison",
        run_id=context.run.run_id,
    )
    headline = {
        "test_accuracy": report.get("accuracy"),
        "ece": report.get("ece"),
        "max_subgroup_gap": report.get("max_subgroup_gap"),
        "val_accuracy": getattr(result.log, "best_val_accuracy", None),
    }
    numbers = {k: float(v) for k, v in headline.items() if isinstance(v, int | float)}
    metadata.record_metrics("finetuned_model", model_id, context.run.run_id, numbers)
    return model_id


def _finetuned_metadata(
    lake: LakeResource,
    model_id: str,
    encoder_id: str,
    config: FinetuneAssetConfig,
    result,
    report: dict,
    beside: pd.DataFrame,
) -> dict:
    """The curves (named, first), the test result with its interval, per class, per subgroup
    beside the bias audit and under corruptions (tables, inline in the UI), and the headline
    numbers under stable keys."""
    from ssl_assets.ml.evaluate.model_card import metrics_rows, per_class_rows, robustness_rows
    from ssl_assets.ml.report import FINETUNE_CURVE_KEYS, training_curves_png

    log = result.log.summary()
    training = {k: log.get(k) for k in ("epochs", "steps", "train_seconds", "best_epoch")}
    curves = training_curves_png(result.log.history, FINETUNE_CURVE_KEYS)
    return {
        "training_curves": picture(curves, "fine-tuning curves", "no epochs"),
        "test_result": presentation_table(pd.DataFrame(metrics_rows(report))),
        "per_class": presentation_table(pd.DataFrame(per_class_rows(report))),
        "subgroups_beside_bias_audit": presentation_table(beside)
        if len(beside)
        else "no subgroup attributes on the test images (metadata.csv)",
        "robustness": presentation_table(pd.DataFrame(robustness_rows(report))),
        **numbers(
            {
                "test_accuracy": report.get("accuracy"),
                "ece": report.get("ece"),
                "val_accuracy": log.get("best_val_accuracy"),
                "max_subgroup_gap": report.get("max_subgroup_gap"),
                "mean_corrupted_accuracy": (report.get("robustness") or {}).get(
                    "mean_corrupted_accuracy"
                ),
                **training,
            }
        ),
        "stop_reason": str(log.get("stop_reason")),
        "model_id": model_id,
        "encoder": encoder_id,
        "strategy": config.strategy,
        "path": lake.model_rel(model_id),
    }


def _track_finetune(
    tracking: TrackingResource,
    lake: LakeResource,
    model_id: str,
    encoder_id: str,
    cfg,
    result,
    report: dict,
    context: AssetExecutionContext,
) -> dict:
    """Write the candidate's model card, log the run to MLflow (params, per-epoch loss and val
    accuracy, curves, the card) and return the metadata that links to it."""
    from ssl_assets.ml.evaluate.model_card import (
        metrics_rows,
        per_class_rows,
        robustness_rows,
        subgroup_rows,
        write_model_card,
    )
    from ssl_assets.ml.report import FINETUNE_CURVE_KEYS, training_curves_png

    card = write_model_card(
        lake.model_dir(model_id),
        {
            "title": f"ssl-assets candidate {model_id}",
            "summary": f"A candidate classifier: encoder {encoder_id} fine-tuned "
            f"({cfg.strategy}), awaiting the champion comparison (champion_model rewrites "
            "this card when it is promoted).",
            "metrics": metrics_rows(report),
            "per_class": per_class_rows(report),
            "subgroups": subgroup_rows(report),
            "robustness": robustness_rows(report),
        },
    )
    log = result.log.summary()
    tracked, why_not = tracking.log(
        str(lake.root_path),
        model_id,
        tags={
            "dagster_run_id": context.run.run_id,
            "asset": "finetuned_model",
            "model_id": model_id,
            "encoder": encoder_id,
        },
        params={**dataclasses.asdict(cfg), "encoder": encoder_id},
        epochs=result.log.history,
        summary={**log, "test_accuracy": report.get("accuracy"), "ece": report.get("ece")},
        artifacts={
            "training_curves.png": training_curves_png(result.log.history, FINETUNE_CURVE_KEYS)
            or b"",
            "card": card,
        },
    )
    if tracked is None:
        return {"mlflow": why_not}
    return {"mlflow_run": link(tracked.link), "mlflow_run_id": tracked.run_id}


@asset(
    deps=["ssl_encoder"],
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
    image_spec: ImageSpecResource,
    compute: ComputeResource,
    profile: Profile,
    tracking: TrackingResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The newest encoder fine-tuned with a linear head on the labeled train split (early
    stopping on val; full, partial or LoRA), with test accuracy, per-class and per-subgroup
    accuracy, calibration (ECE) and robustness to noise, blur and brightness."""
    from ssl_assets.ml.evaluate.metrics import flat_metrics, subgroups_beside

    encoder_id, backbone, meta, start = _encoder_to_tune(config, lake, metadata)
    data = _labeled(metadata, lake, image_spec.version)
    result, cfg, report = _finetune(config, profile, compute, backbone, meta, data)
    model_id = _save_and_register(
        context,
        config,
        lake,
        metadata,
        image_spec,
        encoder_id,
        meta,
        data,
        result,
        cfg,
        report,
        start,
    )
    beside = subgroups_beside(report.get("subgroups") or {}, metadata.latest_bias_shares())
    source = encoder_id or (start or {}).get("source")  # the encoder, or a pretrained start
    shown = _finetuned_metadata(lake, model_id, source, config, result, report, beside)
    yield MaterializeResult(
        metadata=shown
        | _track_finetune(tracking, lake, model_id, source, cfg, result, report, context)
    )
    verdict = suite_verdict(
        flat_metrics(report),
        check_name="finetune_metrics_suite",
        suite_name="model_metrics",
        expectations=model_metrics_suite(),
    )
    yield record_check(
        metadata, "finetuned_model", verdict, partition=model_id, run_id=context.run.run_id
    )


# -- champion_model ------------------------------------------------------------------------------


class ChampionConfig(Config):
    """The promotion rule's limits (defaults in quality/thresholds.py)."""

    tolerance: float = Field(
        default=thresholds.CHAMPION_TOLERANCE,
        description="how much worse (val accuracy) the bootstrap may allow",
    )
    max_subgroup_gap: float = thresholds.CHAMPION_MAX_SUBGROUP_GAP
    min_group_size: int = thresholds.CHAMPION_MIN_GROUP_SIZE
    bootstrap_resamples: int = thresholds.CHAMPION_BOOTSTRAP_RESAMPLES


def _contenders(lake: LakeResource, metadata: MetadataStore):
    """(challenger row, challenger, champion row, champion or None, note): the champion is left
    out (None) when it is the challenger itself or predicts another class list."""
    from ssl_assets.ml.evaluate.model_io import load_finetuned

    challenger_row = metadata.latest_finetuned()
    if challenger_row is None:
        raise Failure("no fine-tuned model to judge: materialize finetuned_model first")
    challenger, chal_meta = load_finetuned(lake.verified_model_path(challenger_row))
    champion_row = metadata.current_champion()
    champion, note = None, None
    if champion_row is not None and champion_row["model_id"] != challenger_row["model_id"]:
        champion, champ_meta = load_finetuned(lake.verified_model_path(champion_row))
        if list(champ_meta["class_names"]) != list(chal_meta["class_names"]):
            champion = None
            note = (
                f"the champion {champion_row['model_id']} predicts another class list; compared "
                "against no champion"
            )
    return challenger_row, challenger, champion_row, champion, note


def _judge(
    config: ChampionConfig,
    metadata: MetadataStore,
    challenger_row: pd.Series,
    challenger,
    champion,
    data: LabeledSplits,
):
    """Re-score challenger and champion side by side on the same val images and apply the
    promotion rule (the challenger's test accuracy is carried along, never used)."""
    from ssl_assets.ml.evaluate.promotion import PromotionPolicy, compare_models

    encoder = metadata.model(json.loads(challenger_row["lineage"] or "{}").get("encoder"))
    test_acc = json.loads(challenger_row["metrics"] or "{}").get("accuracy")
    decision = compare_models(
        challenger,
        champion,
        data.images["val"],
        data.labels["val"],
        collapse_ok=encoder is not None and encoder["status"] != "rejected",
        groups=data.groups["val"] or None,
        policy=PromotionPolicy(
            tolerance=config.tolerance,
            max_subgroup_gap=config.max_subgroup_gap,
            min_group_size=config.min_group_size,
            n_resamples=config.bootstrap_resamples,
        ),
        reported={"test_accuracy": test_acc},
    )
    return decision


@asset(
    deps=["finetuned_model", "probes"],
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
    image_spec: ImageSpecResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The registry's promotion step: the newest fine-tuned model (challenger) and the current
    champion are re-scored side by side on the same val images; the challenger replaces the
    champion only when every rule passes. Every decision and its reasons land in `promotions`
    and `models`; a model card is written beside the champion's weights."""
    run_id = context.run.run_id
    challenger_row, challenger, champion_row, champion, note = _contenders(lake, metadata)
    challenger_id = challenger_row["model_id"]
    same = champion_row is not None and champion_row["model_id"] == challenger_id
    data = _labeled(metadata, lake, image_spec.version)
    decision = _judge(config, metadata, challenger_row, challenger, champion, data)
    reasons = [*decision.reasons, *([note] if note else [])]
    boot = decision.bootstrap
    scores = {
        "challenger_val": decision.challenger_val_accuracy,
        "champion_val": decision.champion_val_accuracy,
        "delta_low": boot.low if boot else None,
        "delta_high": boot.high if boot else None,
    }
    previous = None
    champion_id = champion_row["model_id"] if champion_row is not None else None
    if same:
        reasons = [f"{challenger_id} is already the champion", *reasons]
    elif decision.promote:
        previous = metadata.set_champion(challenger_id, "pipeline", reasons, run_id, scores)
        _export_champion(context, lake, challenger_row)
    else:
        metadata.refuse_challenger(challenger_id, champion_id, reasons, run_id, scores)
    yield MaterializeResult(
        metadata=_decision_metadata(lake, metadata, decision, reasons, challenger_row, previous)
        | {"promoted": same or decision.promote}
    )
    for check_name, rule in CHAMPION_RULES.items():
        verdict = Verdict(
            check_name=check_name,
            passed=same or bool(decision.checks.get(rule, True)),
            metric=None,
            value=None,
            description=decision.rule_reasons.get(rule, reasons[0]),
            details={"challenger": challenger_id, **_rule_details(decision, rule)},
        )
        yield record_check(
            metadata, "champion_model", verdict, partition=challenger_id, run_id=run_id
        )


def _export_champion(context: AssetExecutionContext, lake: LakeResource, row: pd.Series) -> None:
    """Write the new champion as ONNX beside its weights (`ssl_assets.ml.export`). A model that
    cannot be exported is still the better model: the promotion stands, with a warning."""
    from ssl_assets.ml.export import export_onnx

    try:
        path = export_onnx(lake.verified_model_path(row))
    except Exception as exc:  # an exporter limit must not undo a decided promotion
        context.log.warning(f"champion {row['model_id']} was not exported to ONNX: {exc}")
        return
    context.log.info(f"champion {row['model_id']} exported to ONNX: {lake.recorded(path)}")


def _rule_details(decision, rule: str) -> dict:
    """What a person needs beside a champion check to see why: the interval and tolerance and
    both accuracies, the subgroup gap and its bound, or the collapse verdict."""
    from ssl_assets.presentation import plain

    policy, boot = decision.policy, decision.bootstrap
    if rule == "not_worse":
        details = {
            "challenger_val_accuracy": decision.challenger_val_accuracy,
            "champion_val_accuracy": decision.champion_val_accuracy,
            "tolerance": policy.tolerance,
        }
        if boot is not None:
            details |= {
                "difference": boot.mean_diff,
                "interval_low": boot.low,
                "interval_high": boot.high,
                "confidence": boot.confidence,
                "resamples": boot.n_resamples,
            }
    elif rule == "subgroup_gap":
        details = {
            "largest_subgroup_gap": decision.challenger_subgroup_gap,
            "max_subgroup_gap": policy.max_subgroup_gap,
        }
    else:
        details = {"encoder_passed": bool(decision.checks.get(rule, True))}
    return {k: plain(v) for k, v in details.items() if v is not None}


def _decision_metadata(
    lake: LakeResource,
    metadata: MetadataStore,
    decision,
    reasons: list[str],
    challenger_row: pd.Series,
    previous: str | None,
) -> dict:
    """The decision as a table (inline in the UI) with its numbers under stable keys, the
    reasons, and the champion's model card (written beside its weights)."""
    from ssl_assets.ml.evaluate.metrics import accuracy_interval
    from ssl_assets.ml.evaluate.model_card import decision_rows

    report = json.loads(challenger_row["metrics"] or "{}")
    test_acc = decision.reported.get("test_accuracy")
    interval = accuracy_interval(float(test_acc), int(report.get("n") or 0)) if test_acc else None
    champ_now = metadata.current_champion()
    own = champ_now is not None and champ_now["model_id"] == challenger_row["model_id"]
    card_md = _model_card(lake, metadata, champ_now, decision if own else None, reasons)
    boot = decision.bootstrap
    return {
        "decision": presentation_table(pd.DataFrame(decision_rows(decision, interval))),
        **numbers(
            {
                "challenger_val_accuracy": decision.challenger_val_accuracy,
                "champion_val_accuracy": decision.champion_val_accuracy,
                "val_difference_low": boot.low if boot else None,
                "val_difference_high": boot.high if boot else None,
                "tolerance": decision.policy.tolerance,
                "challenger_test_accuracy": test_acc,
                "challenger_test_low": interval[0] if interval else None,
                "challenger_test_high": interval[1] if interval else None,
            }
        ),
        "challenger": challenger_row["model_id"],
        "champion": champ_now["model_id"] if champ_now is not None else "none",
        "previous_champion": previous or "none",
        "reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
        "model_card": MetadataValue.md(card_md) if card_md else "no champion yet",
    }


def _model_card(lake: LakeResource, metadata: MetadataStore, champ_now, decision, reasons):
    """Write the champion's model card beside its weights; returns its text (None: none)."""
    from ssl_assets.ml.evaluate.efficiency import efficiency_wide, summarise
    from ssl_assets.ml.evaluate.model_card import card_info, write_model_card

    if champ_now is None:
        return None
    encoder_id = json.loads(champ_now["lineage"] or "{}").get("encoder")
    encoder = metadata.model(encoder_id)
    probes = metadata.probes(encoder_id) if encoder_id else pd.DataFrame()
    info = card_info(
        champ_now,
        json.loads(encoder["lineage"] or "{}") if encoder is not None else {},
        metadata.curated_split_counts().to_dict("records"),
        metadata.gate_counts().to_dict("records"),
        reasons,
        decision=decision,
        label_efficiency=efficiency_wide(summarise(probes)) if len(probes) else None,
    )
    return write_model_card(lake.model_path(champ_now["path"]), info).read_text()


# -- embedding_audit -----------------------------------------------------------------------------


@asset(
    deps=["image_embeddings", "diversity_audit"],
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
    from ssl_assets.audit.diversity import measure_diversity
    from ssl_assets.audit.plots import projection_png

    model_id = _latest_encoder(metadata)["model_id"]
    ids = metadata.embedded_train_ids(model_id)
    if len(ids) < 2:
        raise Failure("fewer than two embedded train images: nothing to audit")
    report = measure_diversity(_embeddings(lake, metadata, model_id, ids))
    pinned = metadata.latest_metrics("diversity_audit")
    numbers = {k: float(v) for k, v in report.metrics.items() if isinstance(v, int | float)}
    compare = pd.DataFrame(
        [
            {"metric": k, "trained encoder": v, "pinned embedder": pinned.get(k, float("nan"))}
            for k, v in numbers.items()
        ]
    )
    metadata.record_metrics("embedding_audit", model_id, context.run.run_id, numbers)
    png = projection_png(
        report.per_image[["x", "y"]].to_numpy(),
        report.per_image["cluster"].to_numpy(),
        f"train split in {model_id}'s embedding space (PCA)",
    )
    return MaterializeResult(
        metadata={
            "model_id": model_id,
            "train_images": len(ids),
            "trained_vs_pinned": presentation_table(compare),
            "projection": MetadataValue.md(markdown_image(png, "trained-encoder projection")),
        }
    )
