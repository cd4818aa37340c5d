"""batch_monitoring: every newly curated batch against the champion — data drift, and the
champion (and the latest challenger) scored on the batch's new labels.

Why it runs in `curate_and_audit`, right after `curated_images`: drift is measured on what
training would read (a batch's included images, after deduplication and the quality flags; a
batch of blank frames that curation excludes is not a reason to retrain); the batch's images
have just received their splits, so no registered model has trained on them, which is what a
shadow evaluation needs; and the retrain sensor already waits for that run, so the evidence is
recorded before the retrain policy reads it. Per admitted batch, once (`batch_drift`,
`batch_scores`); the statistics are plain code (`ssl_assets.audit.drift`,
`ssl_assets.ml.evaluate.shadow`), the reference is the data the champion encoder was trained on
(the included train images split before it was created: itself or its warm-start ancestors).
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    asset,
)
from pydantic import Field

from quality import thresholds
from quality.gates import record_check
from resources.lake import LakeResource
from resources.metadata import MetadataStore, utcnow
from resources.settings import ComputeResource, ImageSpecResource
from ssl_assets.audit.drift import STATISTIC, DriftConfig, DriftResult, capped_rows, drift_verdict
from ssl_assets.curation.embedders import pinned_embeddings
from ssl_assets.ml.evaluate.shadow import ModelScore
from ssl_assets.partitions import METADATA_WRITER_POOL, OWNERS
from ssl_assets.presentation import numbers, picture
from ssl_assets.presentation import table as presentation_table
from ssl_assets.refusals import refused


class MonitoringConfig(Config):
    """The drift and decay bounds (defaults in quality/thresholds.py; the same as the plain
    `DriftConfig` and `DecayPolicy`) and the test's sizes."""

    max_effect: float = Field(
        default=thresholds.MONITOR_MAX_DRIFT_EFFECT,
        description="Drift: energy coefficient at least this (0 = same distribution) ...",
    )
    alpha: float = Field(
        default=thresholds.MONITOR_DRIFT_ALPHA, description="... with a permutation p below this"
    )
    max_ood_share: float = Field(
        default=thresholds.MONITOR_MAX_OOD_SHARE,
        description="Drift also when more of the batch is out of distribution than this.",
    )
    max_accuracy_drop: float = Field(
        default=thresholds.MONITOR_MAX_ACCURACY_DROP,
        description="Decay: the accuracy interval's upper end is this far below the reference.",
    )
    permutations: int = DriftConfig.permutations
    max_reference: int = DriftConfig.max_reference
    max_batch: int = DriftConfig.max_batch
    seed: int = DriftConfig.seed
    blocking: bool = Field(
        default=False,
        description="Failed drift/decay checks are ERROR rather than WARN. They are signals for "
        "the retrain policy, not data errors, so by default they only warn.",
    )


@dataclass
class _Model:
    """A registered fine-tuned model, loaded, with what judging it needs."""

    model_id: str
    role: str
    model: Any
    class_names: list[str]
    reference: float | None
    created_at: Any


@dataclass
class _Champion:
    """What a batch is judged against: the champion, its encoder, the latest challenger."""

    model: _Model
    encoder_id: str
    encoder: Any
    encoder_created_at: Any
    challenger: _Model | None


def _model(lake: LakeResource, row: pd.Series, role: str) -> _Model:
    from ssl_assets.ml.evaluate.model_io import load_finetuned

    model, meta = load_finetuned(lake.verified_model_path(row))
    reference = json.loads(row["metrics"] or "{}").get("accuracy")
    return _Model(
        row["model_id"],
        role,
        model,
        list(meta["class_names"]),
        float(reference) if reference is not None else None,
        row["created_at"],
    )


def _champion(
    lake: LakeResource, metadata: MetadataStore, compute: ComputeResource
) -> _Champion | None:
    """The current champion with its encoder and the latest challenger, or None (no champion
    yet: nothing to judge a batch against)."""
    row, encoder_row = metadata.current_champion(), metadata.current_champion("encoder")
    if row is None or encoder_row is None:
        return None
    from ssl_assets.ml.encoder_io import load_encoder

    weights = lake.verified_model_path(encoder_row)
    encoder, _ = load_encoder(weights.parent if weights.is_file() else weights)
    latest = metadata.latest_finetuned()
    challenger = None
    if latest is not None and latest["model_id"] != row["model_id"]:
        challenger = _model(lake, latest, "challenger")
    return _Champion(
        _model(lake, row, "champion"),
        encoder_row["model_id"],
        encoder.to(compute.torch_device()),
        encoder_row["created_at"],
        challenger,
    )


def _capped(rows: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    return rows.iloc[capped_rows(len(rows), cap, seed)].reset_index(drop=True)


def _drift(
    lake: LakeResource,
    metadata: MetadataStore,
    version: str,
    batch: str,
    champ: _Champion | None,
    cfg: DriftConfig,
) -> list[tuple[str | None, DriftResult]]:
    """(embedder, result) in the pinned space and the champion encoder's space."""
    from ssl_assets.audit.drift import measure_drift

    included = metadata.batch_included(batch, version)
    if champ is None:
        why = "no champion yet: nothing to compare the batch with"
        return [
            (None, DriftResult(s, len(included), 0, None, None, None, 0, None, None, False, why))
            for s in ("pinned", "champion")
        ]
    rows = _capped(included, cfg.max_batch, cfg.seed)
    ref = metadata.trained_reference(champ.encoder_created_at, version, batch)
    ref = _capped(ref, cfg.max_reference, cfg.seed + 1)
    with refused():
        (x, embedder), (y, ref_embedder) = (
            pinned_embeddings(rows, lake.read_rows),
            pinned_embeddings(ref, lake.read_rows),
        )
        if len(ref) and len(rows) and embedder != ref_embedder:
            raise ValueError(
                f"batch {batch} was embedded by {embedder}, the reference by {ref_embedder}: "
                "re-catalog the older batches so every embedding comes from one embedder"
            )
    results = [(embedder, measure_drift(x, y, "pinned", cfg))]
    features = [_features(champ, lake, part) for part in (rows, ref)]
    results.append((champ.encoder_id, measure_drift(*features, "champion", cfg)))
    return results


def _features(champ: _Champion, lake: LakeResource, rows: pd.DataFrame) -> np.ndarray:
    from ssl_assets.ml.evaluate.features import embed_images

    if rows.empty:
        return np.zeros((0, 1), np.float32)
    return embed_images(champ.encoder, lake.read_rows(rows))


def _drift_config(config: MonitoringConfig) -> DriftConfig:
    return DriftConfig(
        max_effect=config.max_effect,
        alpha=config.alpha,
        max_ood_share=config.max_ood_share,
        permutations=config.permutations,
        max_reference=config.max_reference,
        max_batch=config.max_batch,
        seed=config.seed,
    )


def _scores(
    lake: LakeResource,
    metadata: MetadataStore,
    version: str,
    batch: str,
    champ: _Champion,
    config: MonitoringConfig,
) -> list[tuple[ModelScore, dict]]:
    """The champion and the latest challenger on the batch's new labels that each has never
    trained on (split after it was created), side by side; the challenger's extras carry the
    paired-bootstrap interval of challenger - champion on the images both were scored on."""
    from ssl_assets.ml.evaluate.promotion import paired_bootstrap
    from ssl_assets.ml.evaluate.shadow import DecayPolicy, correct_predictions, judge

    labels = metadata.batch_new_labels(batch, version)
    if labels.empty:
        return []  # the batch brought no labels: nothing to score
    pixels = lake.read_rows(labels)
    policy = DecayPolicy(max_accuracy_drop=config.max_accuracy_drop)
    scored, correct = [], {}
    for m in [champ.model] + ([champ.challenger] if champ.challenger else []):
        unseen = (labels["split_at"].isna() | (labels["split_at"] > m.created_at)).to_numpy()
        ok, unknown = np.zeros(0, bool), 0
        if unseen.any():
            ok, unknown = correct_predictions(
                m.model, m.class_names, pixels[unseen], labels.loc[unseen, "label"].tolist()
            )
        correct[m.role] = (unseen, ok)
        score = judge(m.model_id, m.role, ok, unknown, m.reference, policy)
        scored.append((score, {"max_accuracy_drop": config.max_accuracy_drop}))
    if champ.challenger is not None and correct["challenger"][1].size:
        both = correct["challenger"][0]  # the challenger is newer: its unseen images are a subset
        champ_ok = np.zeros(len(labels), bool)
        champ_ok[correct["champion"][0]] = correct["champion"][1]
        boot = paired_bootstrap(champ_ok[both], correct["challenger"][1], seed=config.seed)
        scored[-1][1].update(delta_low=boot.low, delta_high=boot.high)
    return scored


def _monitor(
    context: AssetExecutionContext,
    config: MonitoringConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    version: str,
    batch: str,
    champ: _Champion | None,
) -> tuple[list[DriftResult], list[ModelScore]]:
    """Judge one batch and record it (`batch_drift`, `batch_scores`, `stage_metrics`)."""
    cfg = _drift_config(config)
    drift = _drift(lake, metadata, version, batch, champ, cfg)
    scored = _scores(lake, metadata, version, batch, champ, config) if champ else []
    stamp = {"batch": batch, "run_id": context.run.run_id, "recorded_at": utcnow()}
    judged_against = {
        "champion_id": champ.model.model_id if champ else None,
        "statistic": STATISTIC,
        "max_effect": cfg.max_effect,
        "alpha": cfg.alpha,
        "max_ood_share": cfg.max_ood_share,
    }
    drift_rows = [r.to_dict() | {"embedder": e} | judged_against | stamp for e, r in drift]
    score_rows = [s.to_dict() | extra | stamp for s, extra in scored]
    metadata.replace_batch_monitoring(batch, pd.DataFrame(drift_rows), pd.DataFrame(score_rows))
    numbers = {
        f"{r.space}_{k}": getattr(r, k)
        for _, r in drift
        for k in ("effect", "p_value", "ood_share")
    }
    numbers |= {f"{s.role}_accuracy": s.accuracy for s, _ in scored}
    metadata.record_metrics(
        "batch_monitoring",
        batch,
        context.run.run_id,
        {k: v for k, v in numbers.items() if v is not None},
    )
    for _, r in drift:
        context.log.info(f"{batch} {r.reason}")
    return [r for _, r in drift], [s for s, _ in scored]


@asset(
    deps=["curated_images"],
    group_name="monitoring",
    pool=METADATA_WRITER_POOL,
    kinds={"pytorch", "numpy", "duckdb"},
    owners=OWNERS,
    metadata={"dagster/table_name": "batch_drift"},
    check_specs=[
        AssetCheckSpec(
            "batch_drift",
            asset="batch_monitoring",
            blocking=False,
            description="No newly curated batch drifted from the champion's training data: "
            "energy coefficient below max_effect or permutation p at least alpha, and at most "
            "max_ood_share out of distribution, in the pinned and the champion encoder's space.",
        ),
        AssetCheckSpec(
            "champion_decay",
            asset="batch_monitoring",
            blocking=False,
            description="On every new batch's labels, the champion's accuracy (95 % Wilson "
            "interval, upper end) is within max_accuracy_drop of its reference accuracy.",
        ),
    ],
)
def batch_monitoring(
    context: AssetExecutionContext,
    config: MonitoringConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
    compute: ComputeResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Each admitted batch curated since the last run, against the data the champion encoder
    was trained on: a two-sample test (energy distance, permutation p-value, energy
    coefficient as effect size) and the out-of-distribution share, in the pinned embedding
    space and in the champion encoder's; and, when the batch brings labels, the champion and
    the latest challenger scored on them side by side with 95 % intervals. Recorded per batch
    in `batch_drift` and `batch_scores`; read by the retrain policy."""
    from ssl_assets.ml.evaluate.shadow import decay_verdict

    batches = metadata.unmonitored_batches()
    champ = _champion(lake, metadata, compute) if batches else None
    version = image_spec.version
    judged = {b: _monitor(context, config, lake, metadata, version, b, champ) for b in batches}
    yield MaterializeResult(metadata=_metadata(metadata, config, judged, champ))
    drift = [(b, r) for b, (results, _) in judged.items() for r in results]
    champion = [(b, s) for b, (_, scores) in judged.items() for s in scores if s.role == "champion"]
    for verdict in (drift_verdict(drift, _drift_config(config)), decay_verdict(champion)):
        yield record_check(
            metadata,
            "batch_monitoring",
            verdict,
            partition=",".join(batches) or None,
            run_id=context.run.run_id,
            blocking=config.blocking,
        )


def _metadata(
    metadata: MetadataStore,
    config: MonitoringConfig,
    judged: dict[str, tuple[list[DriftResult], list[ModelScore]]],
    champ: _Champion | None,
) -> dict:
    """What the UI shows: this run's batches, the scores side by side, the plot over batches."""
    from ssl_assets.audit.monitoring_plots import drift_over_batches_png

    history = metadata.drift_history()
    drift_cols = ["batch", "space", "batch_images", "reference_images", "effect", "p_value"]
    drift_cols += ["ood_share", "drifted"]
    scores = metadata.scores_history()
    score_cols = ["batch", "role", "model_id", "images", "accuracy", "low", "high"]
    score_cols += ["reference_accuracy", "decayed", "delta_low", "delta_high"]
    latest = {
        f"{r.space}_{k}": float(getattr(r, k))
        for results, _ in judged.values()
        for r in results
        for k in ("effect", "p_value", "ood_share")
        if getattr(r, k) is not None
    }
    plotted = history.dropna(subset=["effect"]) if len(history) else history
    png = (
        drift_over_batches_png(plotted, config.max_effect, config.max_ood_share)
        if len(plotted)
        else None
    )
    return {
        # the picture and the tables first, then the numbers the Plots tab draws over runs
        "drift_over_batches": picture(
            png, "drift over batches", "nothing measured yet (no champion)"
        ),
        "drift": presentation_table(history[drift_cols], digits=3) if len(history) else "none",
        "scores_side_by_side": presentation_table(scores[score_cols], digits=3)
        if len(scores)
        else "no batch brought labels yet",
        **numbers(latest),
        "batches_monitored": ", ".join(judged) or "none",
        "champion": champ.model.model_id if champ else "none yet",
        "challenger": champ.challenger.model_id if champ and champ.challenger else "none",
    }
