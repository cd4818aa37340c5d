"""ssl_encoder: self-supervised pretraining on the curated train split, launched through Pipes.

The asset is thin: it turns curated_images into a training job (which catalog rows, which
labels for the online kNN monitor), keys the checkpoint directory by the config and the data
snapshot (so re-executing a failed run resumes it), starts `ssl_assets.ml.entrypoint` as one
process or under `torchrun` through Dagster Pipes, and registers what came back in `models`.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    asset,
)
from pydantic import Field

from quality import thresholds
from quality.gates import floors_gate
from resources.lake import LakeResource
from resources.metadata import MetadataStore
from ssl_assets.assets.audit import bias_audit, diversity_audit
from ssl_assets.assets.curate import DEFAULT_SPEC, curated_images
from ssl_assets.curation.contact_sheet import markdown_image
from ssl_assets.partitions import OWNERS
from ssl_assets.profiles import get_profile
from ssl_assets.registry import recorded_path, register_model, verified_model_path

PROFILE = get_profile()


class PretrainConfig(Config):
    """Self-supervised pretraining (defaults from SSL_PROFILE; every field editable per run)."""

    method: str = Field(
        default=PROFILE.pretrain_method,
        description="simclr | moco | byol | vicreg | dino | mae | hybrid",
    )
    objective_json: str = Field(
        default="{}", description="objective keyword arguments as JSON (hybrid: components)"
    )
    backbone: str = Field(default="small_cnn", description="small_cnn | resnet18 | resnet50 | vit")
    backbone_json: str = Field(default="{}", description="backbone keyword arguments as JSON")
    epochs: int = PROFILE.pretrain_epochs
    batch_size: int = PROFILE.pretrain_batch_size
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    precision: str = Field(default="auto", description="auto (bf16 on CUDA) | fp32 | bf16")
    accumulate: int = 1
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    catalog_version: str = Field(
        default=DEFAULT_SPEC.version, description="catalog arrays to train on (r<res>-<aspect>)"
    )
    processes: int = Field(default=1, description="processes (torchrun ranks) on this machine")
    launcher: str = Field(default="subprocess", description="subprocess | k8s (PipesK8sClient)")
    warm_start_from_champion: bool = Field(
        default=True, description="start from the current champion encoder when there is one"
    )
    min_std_ratio: float = thresholds.ENCODER_MIN_STD_RATIO
    min_effective_rank: float = thresholds.ENCODER_MIN_EFFECTIVE_RANK


def training_data(
    metadata: MetadataStore, lake: LakeResource, version: str
) -> tuple[list[list], list[list] | None, dict[str, int], str, int]:
    """(train parts, val parts with labels, label→index, data fingerprint, train images)."""
    rows = metadata.query(
        "SELECT k.image_id, k.split, c.array_path, c.array_row, l.label "
        "FROM curated_images k JOIN image_catalog c USING (image_id) "
        "LEFT JOIN current_labels l USING (image_id) "
        "WHERE k.include AND k.split IN ('train', 'val') AND c.version = ? "
        "ORDER BY c.array_path, c.array_row",
        [version],
    )
    train = rows[rows["split"] == "train"]
    if train.empty:
        raise Failure("no included train images in curated_images: curate some data first")
    parts = [
        [str(lake.path(path)), g["array_row"].astype(int).tolist()]
        for path, g in train.groupby("array_path", sort=True)
    ]
    labeled_val = rows[(rows["split"] == "val") & rows["label"].notna()]
    classes = {c: i for i, c in enumerate(sorted(rows["label"].dropna().unique()))}
    val = [
        [
            str(lake.path(path)),
            g["array_row"].astype(int).tolist(),
            g["label"].map(classes).astype(int).tolist(),
        ]
        for path, g in labeled_val.groupby("array_path", sort=True)
    ] or None
    ids = "\n".join(sorted(train["image_id"]))
    fingerprint = hashlib.sha256(f"{version}\n{ids}".encode()).hexdigest()[:16]
    return parts, val, classes, fingerprint, len(train)


def code_version() -> str:
    """The git commit of the code that trained (or the package version outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    from importlib.metadata import version

    return f"ssl-assets {version('ssl-assets')}"


def champion_encoder(metadata: MetadataStore, lake: LakeResource) -> tuple[str, str] | None:
    """(model_id, weights path in this lake) of the encoder behind the current champion, if
    any; the weights are verified against the registry's content_hash."""
    df = metadata.query(
        "SELECT model_id, path, content_hash FROM models "
        "WHERE kind = 'encoder' AND status = 'champion' ORDER BY created_at DESC LIMIT 1"
    )
    if df.empty:
        return None
    return df["model_id"].iloc[0], str(verified_model_path(lake, df.iloc[0]))


def _curves_png(history: list[dict]) -> bytes | None:
    if not history:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        k for k in ("loss", "embedding_std", "effective_rank", "knn_accuracy") if k in history[0]
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6))
    axes = [axes] if len(keys) == 1 else list(axes)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(epochs, [h.get(key) for h in history], marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _launch_command(processes: int, job_path: Path) -> list[str]:
    entry = ["-m", "ssl_assets.ml.entrypoint", "--job", str(job_path)]
    if processes <= 1:
        command = [sys.executable, *entry]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        command = [torchrun, "--standalone", f"--nproc_per_node={processes}", "--max-restarts=0"]
        command += entry
    # through the launcher: the trainer dies with this step's process (ssl_assets.ml.launch)
    launch = [sys.executable, "-m", "ssl_assets.ml.launch", "--parent", str(os.getpid()), "--"]
    return [*launch, *command]


def blocking_audit_failures(metadata: MetadataStore) -> list[str]:
    """Blocking (ERROR) audit gates whose latest evaluation failed: they keep compute unspent.

    Dagster's blocking checks stop steps only within one run; this is the same rule as data,
    so a pretraining run launched later is refused too."""
    failed = metadata.query(
        "SELECT asset, check_name, details FROM gate_results "
        "WHERE asset IN ('curated_images', 'diversity_audit', 'bias_audit') "
        "QUALIFY row_number() OVER (PARTITION BY asset, check_name ORDER BY recorded_at DESC) = 1 "
        "AND NOT passed AND severity = 'ERROR'"
    )
    return [
        f"{r.asset}.{r.check_name}: {json.loads(r.details or '{}').get('description', '')}"
        for r in failed.itertuples()
    ]


@asset(
    deps=[curated_images, diversity_audit, bias_audit],
    group_name="pretraining",
    kinds={"pytorch", "duckdb"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "encoder_not_collapsed",
            asset="ssl_encoder",
            blocking=True,
            description="Std of L2-normalised embeddings (relative to 1/sqrt(d)) and effective "
            "rank (RankMe) on held-out images are above their floors.",
        )
    ],
)
def ssl_encoder(
    context: AssetExecutionContext,
    config: PretrainConfig,
    lake: LakeResource,
    metadata: MetadataStore,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """A self-supervised encoder (SimCLR, MoCo v2, BYOL, VICReg, DINO or MAE) trained on the
    included train split of curated_images, from the decoded catalog arrays. Weights and config
    land in models/<model_id>/ and the `models` registry with lineage (data snapshot, code
    version, warm start). Resumes from its own checkpoints when re-executed."""
    from ssl_assets.ml.entrypoint import TrainJob
    from ssl_assets.ml.train import TrainConfig, config_hash

    blocked = blocking_audit_failures(metadata)
    if blocked:
        raise Failure(
            description="pretraining is blocked by failed gates: " + "; ".join(blocked),
            metadata={"failed_gates": MetadataValue.json(blocked)},
        )
    train_parts, val_parts, classes, fingerprint, n_train = training_data(
        metadata, lake, config.catalog_version
    )
    warm = champion_encoder(metadata, lake) if config.warm_start_from_champion else None
    cfg = TrainConfig(
        method=config.method,
        objective=json.loads(config.objective_json),
        backbone=config.backbone,
        backbone_kwargs=json.loads(config.backbone_json),
        epochs=config.epochs,
        # a global batch no larger than the data, divisible by ranks x accumulation steps
        batch_size=max(
            config.processes * config.accumulate,
            min(config.batch_size, n_train)
            // (config.processes * config.accumulate)
            * (config.processes * config.accumulate),
        ),
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        precision=config.precision,
        accumulate=config.accumulate,
        channels_last=config.channels_last,
        compile=config.compile,
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
    )
    # The world size changes how batches are split (and BatchNorm statistics), so a checkpoint
    # only resumes under the same number of processes.
    run_hash = config_hash(
        cfg, f"{fingerprint}|world={config.processes}", warm_start=warm[1] if warm else None
    )
    model_id = f"enc-{run_hash}"
    checkpoint_dir = lake.path("checkpoints", run_hash)
    output_dir = lake.path("models", model_id)
    job = TrainJob(
        config=cfg,
        train=train_parts,
        val=val_parts,
        checkpoint_dir=str(checkpoint_dir),
        output_dir=str(output_dir),
        warm_start=warm[1] if warm else None,
        data_fingerprint=fingerprint,
        extra_metadata={"model_id": model_id, "classes": json.dumps(classes)},
    )
    job_path = job.write(lake.path("jobs", f"{run_hash}.json"))
    context.log.info(
        f"training {model_id}: {config.method} on {n_train} images, {config.processes} process(es), "
        f"checkpoints in {checkpoint_dir}" + (f", warm start from {warm[0]}" if warm else "")
    )
    if config.launcher == "k8s":
        raise Failure(
            "launcher=k8s runs through PipesK8sClient on a cluster (deploy/k8s/pretrain-pipes.yaml); "
            "this deployment has no cluster configured"
        )
    env = {k: v for k, v in os.environ.items() if k.startswith(("SSL_", "OMP_", "MKL_"))}
    invocation = PipesSubprocessClient(env=env).run(
        command=_launch_command(config.processes, job_path), context=context
    )
    reported = invocation.get_materialize_result()
    epoch_reports = [
        m for m in invocation.get_custom_messages() if (m or {}).get("kind") == "epoch_metrics"
    ]
    meta_path = output_dir / "encoder.json"
    if not meta_path.is_file():
        raise Failure(f"training finished without writing {meta_path}")
    encoder_meta = json.loads(meta_path.read_text())
    history = encoder_meta.get("history") or []
    final = history[-1] if history else {}
    for epoch_metrics in history:
        metadata.record_metrics(
            "ssl_encoder",
            model_id,
            context.run.run_id,
            {
                f"epoch_{k}": v
                for k, v in epoch_metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        )
    std_ratio = float(final.get("embedding_std", 0.0)) / float(
        final.get("embedding_std_reference", 1.0) or 1.0
    )
    rank = float(final.get("effective_rank", 0.0))
    collapsed = std_ratio < config.min_std_ratio or rank < config.min_effective_rank
    weights = output_dir / "encoder.safetensors"
    lineage = {
        "data_fingerprint": fingerprint,
        "catalog_version": config.catalog_version,
        "train_images": n_train,
        "code_version": code_version(),
        "warm_start": warm[0] if warm else None,
        "run_id": context.run.run_id,
    }
    metrics = {k: v for k, v in final.items() if isinstance(v, int | float | str)}
    register_model(
        metadata,
        model_id=model_id,
        kind="encoder",
        path=recorded_path(lake, weights),
        content_hash=encoder_meta.get("weights_sha256")
        or hashlib.sha256(weights.read_bytes()).hexdigest(),
        config=cfg.to_dict(),
        metrics=metrics,
        lineage=lineage,
        status="rejected" if collapsed else "candidate",
        reason="collapsed" if collapsed else "passed the collapse check",
        run_id=context.run.run_id,
    )
    curves = _curves_png(history)
    yield MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            "model_id": model_id,
            "method": config.method,
            "backbone": config.backbone,
            "train_images": n_train,
            "processes": config.processes,
            "epoch_reports": len(epoch_reports),
            "weights": str(weights),
            "lineage": MetadataValue.json(lineage),
            "curves": MetadataValue.md(markdown_image(curves, "training curves"))
            if curves
            else "no epochs recorded",
        }
    )
    yield floors_gate(
        metadata,
        asset="ssl_encoder",
        check_name="encoder_not_collapsed",
        values={
            "embedding_std_ratio": (std_ratio, config.min_std_ratio),
            "effective_rank": (rank, config.min_effective_rank),
        },
        partition=model_id,
        run_id=context.run.run_id,
    )
