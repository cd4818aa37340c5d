"""ssl_encoder: self-supervised pretraining on the curated train split, launched through Pipes.

The asset is thin: it turns the curated train split into a training job (which catalog rows,
which labels for the online kNN monitor), keys the checkpoint directory by the config and the
data snapshot (so re-executing a failed run resumes it), starts `ssl_assets.ml.entrypoint` as
one process or under `torchrun` through Dagster Pipes, and registers what came back in `models`.
Where and how it computes comes from the `compute` resource; which arrays it reads from the
`image_spec` resource; how long it trains, when the config leaves it open, from the `profile`.
"""

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
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
from quality.gates import floors_verdict, record_check
from quality.verdict import Verdict
from resources.lake import LakeResource
from resources.metadata import MetadataStore
from resources.settings import ComputeResource, ImageSpecResource, TrackingResource
from ssl_assets.ml.report import training_curves_png
from ssl_assets.ml.training_set import TrainingSet, replay_mix, training_set
from ssl_assets.partitions import OWNERS
from ssl_assets.presentation import link, numbers, picture
from ssl_assets.presentation import table as presentation_table
from ssl_assets.profiles import Profile
from ssl_assets.provenance import code_version
from ssl_assets.refusals import refused

#: gates whose latest failure keeps pretraining from spending compute (a data rule)
GATES_BEFORE_PRETRAINING = ["curated_images", "diversity_audit", "bias_audit"]


class PretrainConfig(Config):
    """Self-supervised pretraining (a `None` takes the profile's value; every field editable per
    run). Defaults equal `ssl_assets.ml.train.TrainConfig`'s (a test holds them equal)."""

    method: str | None = Field(
        default=None,
        description="simclr | moco | byol | vicreg | dino | mae | hybrid | distill (a frozen "
        "teacher: objective {teacher: any init_from source}) "
        "(None: the profile's pretrain_method)",
    )
    objective: dict[str, Any] = Field(
        default={},
        description="Keyword arguments of the objective, e.g. temperature: 0.2; a hybrid "
        "takes components: a list of method, weight and kwargs.",
    )
    backbone: str | None = Field(
        default=None,
        description="small_cnn | resnet18 | resnet50 | vit | auto (resnet50 on CUDA, resnet18 "
        "on CPU); None: the profile's pretrain_backbone",
    )
    backbone_kwargs: dict[str, Any] = Field(
        default={}, description="Keyword arguments of the backbone, e.g. width: 64."
    )
    max_steps: int | None = Field(
        default=None,
        description="The training budget in optimizer steps (None: the profile's "
        "pretrain_steps). Steps, not seconds, so a busy machine trains the same model.",
    )
    epochs: int | None = Field(
        default=None,
        description="Train whole passes over the data instead of max_steps (None: the step "
        "budget decides).",
    )
    batch_size: int | None = Field(
        default=None, description="global batch; None: the profile's pretrain_batch_size"
    )
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    accumulate: int = 1
    channels_last: bool = Field(
        default=False, description="also on when the compute resource says so (CUDA)"
    )
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    processes: int = Field(default=1, description="processes (torchrun ranks) on this machine")
    launcher: str = Field(default="subprocess", description="subprocess | k8s (PipesK8sClient)")
    warm_start_from_champion: bool = Field(
        default=True, description="start from the current champion encoder when there is one"
    )
    init_from: str | None = Field(
        default=None,
        description="start from these weights instead (continual pretraining): a torchvision "
        "weights name such as ResNet50_Weights.IMAGENET1K_V2 (from the local torch hub cache, "
        "never downloaded), a .pth/.safetensors file, or a registered model id",
    )
    replay_share: float | None = Field(
        default=None,
        description="warm start only: earlier train images (those the champion encoder was "
        "trained on) make up at most this share of the set, every new image kept (0.5: as many "
        "earlier as new). None: the whole train split (every earlier image replayed).",
    )
    min_std_ratio: float = thresholds.ENCODER_MIN_STD_RATIO
    min_effective_rank: float = thresholds.ENCODER_MIN_EFFECTIVE_RANK


def _train_config(
    config: PretrainConfig, profile: Profile, compute: ComputeResource, n_train: int
) -> Any:
    """The plain `TrainConfig` of this run (torch is imported here, not at load time)."""
    from ssl_assets.ml.backbones import resolve_backbone_name
    from ssl_assets.ml.config import TrainConfig

    ranks = config.processes * config.accumulate
    batch = config.batch_size or profile.pretrain_batch_size
    steps = config.max_steps or profile.pretrain_steps
    return TrainConfig(
        method=config.method or profile.pretrain_method,
        objective=dict(config.objective),
        backbone=resolve_backbone_name(
            config.backbone or profile.pretrain_backbone, compute.torch_device()
        ),
        backbone_kwargs=dict(config.backbone_kwargs),
        # a step budget unless the run asks for whole epochs
        epochs=config.epochs or TrainConfig.epochs,
        max_steps=None if config.epochs and not config.max_steps else steps,
        # a global batch no larger than the data, divisible by ranks x accumulation steps
        batch_size=max(ranks, min(batch, n_train) // ranks * ranks),
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        precision=compute.precision,
        device=compute.device,
        num_threads=compute.threads,
        accumulate=config.accumulate,
        channels_last=config.channels_last or compute.use_channels_last(),
        compile=config.compile,
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
    )


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


def _train(
    context: AssetExecutionContext,
    config: PretrainConfig,
    lake: LakeResource,
    data: TrainingSet,
    cfg: Any,
    run_hash: str,
    warm_start: Path | None,
) -> tuple[dict, int]:
    """Write the job, run the trainer through Pipes; returns (what it reported, epoch reports)."""
    from ssl_assets.ml.entrypoint import TrainJob

    model_id = f"enc-{run_hash}"
    job = TrainJob(
        config=cfg,
        train=data.train,
        val=data.val,
        checkpoint_dir=str(lake.checkpoint_dir(run_hash)),
        output_dir=str(lake.model_dir(model_id)),
        warm_start=str(warm_start) if warm_start else None,
        data_fingerprint=data.fingerprint,
        extra_metadata={"model_id": model_id, "classes": json.dumps(data.classes)},
    )
    job_path = job.write(lake.job_file(run_hash))
    if config.launcher == "k8s":
        raise Failure(
            "launcher=k8s runs through PipesK8sClient on a cluster (deploy/k8s/pretrain-pipes.yaml); "
            "this deployment has no cluster configured"
        )
    env = {k: v for k, v in os.environ.items() if k.startswith(("SSL_", "OMP_", "MKL_"))}
    invocation = PipesSubprocessClient(env=env).run(
        command=_launch_command(config.processes, job_path), context=context
    )
    reported = invocation.get_materialize_result().metadata or {}
    epochs = [
        m for m in invocation.get_custom_messages() if (m or {}).get("kind") == "epoch_metrics"
    ]
    return dict(reported), len(epochs)


def _inputs(
    config: PretrainConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    image_spec: ImageSpecResource,
) -> tuple[TrainingSet, Any, dict]:
    """What a run trains on and from: the curated train split (refused while a blocking
    curation or audit gate's latest verdict is a failure: a data rule, like admission) and the
    champion's encoder row when warm-starting, with the earlier images replayed beside the new
    ones (`replay_share`, `ssl_assets.ml.training_set.replay_mix`; what was replayed is returned
    for the lineage)."""
    blocked = metadata.blocking_failures(GATES_BEFORE_PRETRAINING)
    if blocked:
        raise Failure(
            description="pretraining is blocked by failed gates: " + "; ".join(blocked),
            metadata={"failed_gates": MetadataValue.json(blocked)},
        )
    # a pretrained start (init_from) replaces the champion, and replays nothing
    use_champion = config.warm_start_from_champion and not config.init_from
    warm = metadata.current_champion("encoder") if use_champion else None
    earlier = metadata.trained_image_ids(warm["created_at"]) if warm is not None else set()
    with refused():
        rows, replay = replay_mix(
            metadata.training_rows(image_spec.version), earlier, config.replay_share, config.seed
        )
        data = training_set(rows, image_spec.version, lake.path)
    return data, warm, replay


def _resolve(source: str, lake: LakeResource, metadata: MetadataStore) -> Any:
    """The `Start` a source names; a registered model id resolves to its verified weights."""
    from ssl_assets.ml.init_from import resolve_start

    with refused():
        return resolve_start(source, lambda mid: lake.weights_file(metadata.model(mid), mid))


def _start(
    config: PretrainConfig, lake: LakeResource, metadata: MetadataStore, cfg: Any, warm: Any
) -> tuple[Path | None, dict]:
    """The weights training starts from and what the lineage records about them and about a
    distillation teacher. The start: `init_from` when set, else the champion's encoder row `warm`
    (its weights verified against the registry) when warm-starting from it, else none. A teacher
    (`objective.teacher` of method distill, any init_from source) is pinned in the run's
    config by path and SHA-256, so the trainer needs no registry and another teacher is
    another run."""
    from ssl_assets.ml.init_from import check_backbone

    lineage: dict = {"warm_start": None, "init_from": None, "teacher": None}
    if cfg.method == "distill":
        if not cfg.objective.get("teacher"):
            raise Failure('method distill needs objective {"teacher": any init_from source}')
        teacher = _resolve(str(cfg.objective["teacher"]), lake, metadata)
        cfg.objective.update(teacher=str(teacher.path), teacher_sha256=teacher.sha256)
        if teacher.backbone:  # a torchvision name's architecture, once it is only a path
            cfg.objective.setdefault("teacher_backbone", teacher.backbone)
        lineage["teacher"] = teacher.lineage()
    if config.init_from:
        start = _resolve(config.init_from, lake, metadata)
        with refused():
            check_backbone(start, cfg.backbone)
        return start.path, {**lineage, "init_from": start.lineage()}
    if warm is None:
        return None, lineage
    return lake.verified_model_path(warm), {**lineage, "warm_start": warm["model_id"]}


def _weights_path(lake: LakeResource, model_id: str) -> str:
    from ssl_assets.ml.encoder_io import ENCODER_WEIGHTS

    return f"{lake.model_rel(model_id)}/{ENCODER_WEIGHTS}"


def _register(
    context: AssetExecutionContext,
    config: PretrainConfig,
    lake: LakeResource,
    metadata: MetadataStore,
    model_id: str,
    cfg: Any,
    lineage: dict,
) -> tuple[Verdict, list[dict]]:
    """Read what the trainer wrote, record its epochs, judge collapse and register the encoder
    (rejected when collapsed); returns the verdict and the per-epoch history."""
    from ssl_assets.ml.encoder_io import ENCODER_META

    meta_path = lake.model_dir(model_id) / ENCODER_META
    if not meta_path.is_file():
        raise Failure(f"training finished without writing {meta_path}")
    encoder_meta = json.loads(meta_path.read_text())
    history = encoder_meta.get("history") or []
    final = history[-1] if history else {}
    for epoch in history:
        numbers = {
            k: v for k, v in epoch.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        metadata.record_metrics(
            "ssl_encoder",
            model_id,
            context.run.run_id,
            {f"epoch_{k}": v for k, v in numbers.items()},
        )
    std_ratio = float(final.get("embedding_std", 0.0)) / float(
        final.get("embedding_std_reference", 1.0) or 1.0
    )
    verdict = floors_verdict(
        check_name="encoder_not_collapsed",
        values={
            "embedding_std_ratio": (std_ratio, config.min_std_ratio),
            "effective_rank": (float(final.get("effective_rank", 0.0)), config.min_effective_rank),
        },
    )
    metadata.register_model(
        model_id=model_id,
        kind="encoder",
        path=_weights_path(lake, model_id),
        content_hash=encoder_meta.get("weights_sha256"),
        config=cfg.to_dict(),
        metrics={k: v for k, v in final.items() if isinstance(v, int | float | str)},
        lineage=lineage,
        status="candidate" if verdict.passed else "rejected",
        reason="passed the collapse check" if verdict.passed else "collapsed",
        run_id=context.run.run_id,
    )
    return verdict, history


@asset(
    deps=["curated_images", "diversity_audit", "bias_audit"],
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
    image_spec: ImageSpecResource,
    compute: ComputeResource,
    profile: Profile,
    tracking: TrackingResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """A self-supervised encoder (SimCLR, MoCo v2, BYOL, VICReg, DINO or MAE) trained on the
    included train split of curated_images, from the decoded catalog arrays. Weights and config
    land in models/<model_id>/ and the `models` registry with lineage (data snapshot, code
    version, warm start). Resumes from its own checkpoints when re-executed."""
    from ssl_assets.ml.config import config_hash

    data, warm, replay = _inputs(config, lake, metadata, image_spec)
    cfg = _train_config(config, profile, compute, data.images)
    warm_path, start = _start(config, lake, metadata, cfg, warm)
    # The world size changes how batches are split (and BatchNorm statistics), so a checkpoint
    # only resumes under the same number of processes.
    run_hash = config_hash(
        cfg, f"{data.fingerprint}|world={config.processes}", warm_start=warm_path
    )
    model_id = f"enc-{run_hash}"
    context.log.info(
        f"training {model_id}: {cfg.method} on {data.images} images, {config.processes} "
        f"process(es), from {(start['init_from'] or {}).get('source') or start['warm_start']}"
    )
    reported, epoch_reports = _train(context, config, lake, data, cfg, run_hash, warm_path)
    lineage = {
        "data_fingerprint": data.fingerprint,
        "catalog_version": image_spec.version,
        "train_images": data.images,
        "code_version": code_version(),
        **start,
        "replay": replay,
        "run_id": context.run.run_id,
    }
    verdict, history = _register(context, config, lake, metadata, model_id, cfg, lineage)
    shown = _encoder_metadata(lake, model_id, cfg, config, history, reported, verdict)
    yield MaterializeResult(
        metadata=shown
        | _track(tracking, lake, model_id, cfg, lineage, history, shown, context.run.run_id)
        | {
            "train_images": data.images,
            "epoch_reports": epoch_reports,
            "lineage": MetadataValue.json(lineage),
        }
    )
    yield record_check(
        metadata, "ssl_encoder", verdict, partition=model_id, run_id=context.run.run_id
    )


def _track(
    tracking: TrackingResource,
    lake: LakeResource,
    model_id: str,
    cfg: Any,
    lineage: dict,
    history: list[dict],
    shown: dict,
    run_id: str,
) -> dict:
    """Log the run to MLflow (params, per-epoch metrics, curves and the encoder's model card)
    and return the metadata that links to it."""
    from ssl_assets.ml.evaluate.model_card import write_model_card

    headline = {k: v for k, v in shown.items() if isinstance(v, int | float)}
    card = write_model_card(
        lake.model_dir(model_id),
        {
            "title": f"ssl-assets encoder {model_id}",
            "summary": f"A {cfg.backbone} encoder pretrained with {cfg.method} for "
            f"{headline.get('steps')} optimizer steps on {lineage['train_images']} curated, "
            "unlabeled train images. It has no classification head: the fine-tuned models "
            "and the probes built on it carry the evaluation.",
            "data": {k: v for k, v in lineage.items() if k != "run_id"},
            "training": headline,
        },
    )
    tracked, why_not = tracking.log(
        str(lake.root_path),
        model_id,
        tags={"dagster_run_id": run_id, "asset": "ssl_encoder", "model_id": model_id},
        params=cfg.to_dict(),
        epochs=history,
        summary=headline,
        artifacts={"training_curves.png": training_curves_png(history) or b"", "card": card},
    )
    if tracked is None:
        return {"mlflow": why_not}
    return {"mlflow_run": link(tracked.link), "mlflow_run_id": tracked.run_id}


#: what the trainer reported that is worth a line in the UI (the rest: raw lists, absolute
#: paths, unrounded floats, stays in encoder.json)
REPORTED_KEPT = ("steps", "epochs_completed", "resumed_from_step", "world_size", "config_hash")
#: per-epoch columns of the epochs table, in order
EPOCH_COLUMNS = ("epoch", "step", "loss", "knn_accuracy", "effective_rank", "images_per_s", "lr")


def _epochs_table(history: list[dict], rows: int = 12) -> pd.DataFrame:
    """At most `rows` epochs, evenly spaced, the first and the last always among them."""
    if not history:
        return pd.DataFrame(columns=list(EPOCH_COLUMNS))
    picks = sorted({round(i * (len(history) - 1) / max(rows - 1, 1)) for i in range(rows)})
    frame = pd.DataFrame([history[i] for i in picks])
    return frame[[c for c in EPOCH_COLUMNS if c in frame.columns]]


def _encoder_metadata(
    lake: LakeResource,
    model_id: str,
    cfg: Any,
    config: PretrainConfig,
    history: list[dict],
    reported: dict,
    verdict: Verdict,
) -> dict:
    """The curves (named, first), a one-row result table and a sampled per-epoch table (both
    inline in the UI), the headline numbers under stable keys, and what identifies the run."""
    final = history[-1] if history else {}
    seconds = sum(float(h.get("train_seconds", 0.0)) for h in history)
    std_ratio = float(final.get("embedding_std", 0.0)) / float(
        final.get("embedding_std_reference", 1.0) or 1.0
    )
    headline = {
        "steps": int(final.get("step", reported.get("steps", 0)) or 0),
        "train_seconds": seconds,
        "images_per_s": final.get("images_per_s"),
        "final_loss": final.get("loss"),
        "knn_accuracy": final.get("knn_accuracy"),
        "embedding_std_ratio": std_ratio,
        "effective_rank": final.get("effective_rank"),
    }
    result = pd.DataFrame(
        [{**headline, "collapse_check": "passed" if verdict.passed else "FAILED"}]
    )
    return {
        "training_curves": picture(training_curves_png(history), "training curves", "no epochs"),
        "training": presentation_table(
            result,
            {
                "steps": "optimizer steps (the budget)",
                "train_seconds": "seconds spent in training steps",
                "knn_accuracy": "online kNN accuracy on val (labeled images)",
                "embedding_std_ratio": "std of normalised embeddings times sqrt(dim)",
            },
        ),
        "epochs": presentation_table(_epochs_table(history)),
        **numbers(headline),
        "model_id": model_id,
        "method": cfg.method,
        "backbone": cfg.backbone,  # resolved: the profile's, and auto made concrete
        "batch_size": cfg.batch_size,
        "processes": config.processes,
        "weights": _weights_path(lake, model_id),
        **{k: reported[k] for k in REPORTED_KEPT if k in reported},
    }
