"""The self-supervised training loop: resumable, reproducible, single-process or DDP.

Why it is built this way:

- **Resumable by construction.** A training run is keyed by `config_hash(cfg, data_fingerprint)`
  (`ssl_assets.ml.config`); the caller passes a checkpoint directory named after it, so
  re-executing a failed run (a Dagster retry, a killed pod) finds its own checkpoints and resumes
  from the newest complete one, while a changed config or data snapshot starts fresh.
  Checkpoints are atomic directories (`ssl_assets.ml.checkpoint`): a crash mid-write leaves
  nothing that resume would trust.
- **Exact resume.** Augmentation (and MAE's masking) draw from a generator re-seeded at every
  micro-step from `(seed, rank, step, micro-step)`, and the sampler's epoch permutation is a
  function of `(seed, epoch)`, so the random stream does not have to be replayed; the global
  torch RNG state is saved anyway. The same per-micro-step seeding lets one worker thread
  augment the next batch while the current one trains (`prefetch`, `ssl_assets.ml.views`)
  without changing values. With `deterministic=True` and a fixed thread count, a run killed and
  resumed ends with bit-identical weights to an uninterrupted one (tested).
- **Optimisation.** The schedule and parameter groups of `ssl_assets.ml.optim`; gradient
  accumulation (with DDP's `no_sync` on the inner micro-steps); bf16 autocast (default on CUDA,
  opt-in on CPU); optional gradient checkpointing, channels-last and `torch.compile` of the
  encoder (`ssl_assets.ml.model`).
- **DDP.** Under an initialised process group the *whole student* (backbone + the objective's
  trainable heads) is wrapped in one `DistributedDataParallel`, because the heads need their
  gradients averaged too, and one DDP forward per micro-step keeps multi-view / multi-crop
  objectives (which call the backbone several times) within DDP's contract. Teachers are
  built (deep-copied) before wrapping and have `requires_grad=False`, so DDP neither reduces
  nor needs them; they stay identical across ranks because every rank applies the same EMA to
  identical (all-reduced) student weights. Buffers are synced once at wrapping, not broadcast
  at every forward: the MoCo queue and DINO centre are kept in sync by the objectives' own
  collectives, and BatchNorm statistics are saved from rank 0.
- **Monitoring.** At the end of every epoch: mean loss (averaged over ranks), images/s, the
  objective's logs, collapse indicators (std of L2-normalised embeddings, RankMe effective
  rank) on a fixed subset of the val split (of train without one) and, when val has labels,
  a 2-fold weighted-kNN accuracy on it, computed on rank 0 with the encoder in eval mode, and
  handed to `on_epoch`.

How it reads: `train` calls its steps in order, each defined below it in the same order:
`_configure_process`, `_plan_run` (identity, data, step layout), `_build` (model, optimiser,
augmentation), `_resume`, `_wrap_ddp`, `_monitor_set`, `_run_steps` (the loop: `_train_step`,
`_end_epoch`, `_save`) and `_finish` (result and encoder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_assets.ml import distributed
from ssl_assets.ml.augment import MultiViewAugment, build_augmentation
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.checkpoint import (
    CHECKPOINT_FORMAT,
    clean_stale,
    flatten_optimizer_state,
    list_checkpoints,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_optimizer_state,
)
from ssl_assets.ml.config import TrainConfig, config_hash
from ssl_assets.ml.data import (
    EpochSampler,
    ImageSet,
    Part,
    StreamedImages,
    fixed_subset,
    open_images,
    stable_seed,
)
from ssl_assets.ml.data import data_fingerprint as fingerprint_parts
from ssl_assets.ml.encoder_io import ENCODER_WEIGHTS, save_encoder
from ssl_assets.ml.evaluate.features import embed_images
from ssl_assets.ml.model import SSLModel, enable_gradient_checkpointing, load_encoder_weights
from ssl_assets.ml.monitor import collapse_metrics, knn_two_fold
from ssl_assets.ml.objectives import Objective, build_objective
from ssl_assets.ml.optim import build_optimizer, lr_at
from ssl_assets.ml.views import MicroBatch, ViewSource, plan_micro_batches

log = logging.getLogger(__name__)

#: on CUDA, decoded uint8 training data up to this size lives on the GPU (batches never cross
#: the PCIe bus); larger data stays in host memory and each batch is copied
DEVICE_DATA_MAX_BYTES = 2 * 1024**3
#: the per-epoch monitor embeds at most this many bytes of images (at 32 px: every one of its
#: `knn_samples`; at 256 px: 341 images), so its memory and time do not grow with resolution
MONITOR_MAX_BYTES = 64 << 20

#: training images: in memory, or read a batch at a time from the catalog files
Images = ImageSet | StreamedImages


def state_digest(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of a state_dict (to compare ranks / runs)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class TrainResult:
    """Outcome of `train`. `completed` is False when `stop_after_steps` ended the run early;
    `encoder_path` / `metadata_path` are set on rank 0 of a completed run."""

    completed: bool
    step: int
    total_steps: int
    epoch: int
    config_hash: str
    history: list[dict[str, Any]]
    resumed_from_step: int | None
    encoder_path: Path | None = None
    metadata_path: Path | None = None
    model_sha256: str | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        """The last epoch's metrics (empty before the first epoch ends)."""
        return dict(self.history[-1]) if self.history else {}


# --------------------------------------------------------------------------- the run's state


@dataclass
class _State:
    """Where a run is; saved in every checkpoint (`state.json`) and restored on resume."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's running log sums
    train_seconds: float = 0.0  # this epoch's wall time in training steps (rank 0's clock)
    images: int = 0  # this epoch's global images

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.sums, self.train_seconds, self.images = {}, 0.0, 0


@dataclass
class _Run:
    """What one execution of `train` fixed before building the model: process, data, layout."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    run_hash: str
    fingerprint: str
    checkpoint_dir: Path
    train_set: Images
    sampler: EpochSampler
    micro: int  # images per rank and micro-step
    steps_per_epoch: int
    total_steps: int
    warmup: int


@dataclass
class _Parts:
    """The trainable pieces, built identically on every rank."""

    backbone: nn.Module
    objective: Objective
    model: SSLModel
    optimizer: torch.optim.Optimizer
    aug: MultiViewAugment
    image_size: int
    mask_gen: torch.Generator  # MAE's masks: re-seeded per micro-step, like augmentation
    params: list[nn.Parameter]  # trainable, for gradient clipping
    freezers: list[nn.Module]  # heads that cancel their last layer's early gradients (DINO)
    ddp: nn.Module  # `model`, or its DistributedDataParallel wrapper once wrapped


@dataclass(frozen=True)
class _MonitorSet:
    """The fixed images (with labels: the kNN figure) the per-epoch monitor embeds on rank 0;
    `images` are N x R x R x C uint8, the catalog layout `embed_images` takes (a view)."""

    images: Tensor
    labels: Tensor | None


# --------------------------------------------------------------------------- the loop


def train(
    cfg: TrainConfig,
    train_data: Sequence[Part] | Images,
    checkpoint_dir: str | Path,
    *,
    val_data: Sequence[Part] | Images | None = None,
    warm_start: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    stop_after_steps: int | None = None,
    output_dir: str | Path | None = None,
    data_fingerprint: str | None = None,
) -> TrainResult:
    """Train (or resume training) `cfg` on `train_data`; write the encoder at the end.

    `train_data` / `val_data` are lists of `(array path, rows[, labels])` parts of catalog
    arrays (or an already loaded `ImageSet`); val parts need labels for the kNN monitor.
    Resumes from the newest complete checkpoint in `checkpoint_dir` (the caller keys that
    directory by `config_hash`). `warm_start` is an `encoder.safetensors` loaded into the
    backbone before the objective copies it into its teachers (ignored when resuming).
    `on_epoch(metrics)` is called on rank 0 after every epoch. `stop_after_steps` stops (after
    writing a checkpoint) once that many optimiser steps are done, without writing the
    encoder. The encoder goes to `output_dir` (default `checkpoint_dir/output`) on rank 0:
    `encoder.safetensors` (backbone state_dict) and `encoder.json` (how to use it, metrics).

    Under an initialised process group (see `entrypoint`), every rank calls `train` with the
    same arguments; the student is wrapped in DDP here.
    """
    checkpoint_dir = Path(checkpoint_dir)
    output_dir = Path(output_dir) if output_dir is not None else checkpoint_dir / "output"
    device = _configure_process(cfg)
    run = _plan_run(cfg, train_data, checkpoint_dir, device, data_fingerprint, warm_start)
    val_set = _as_image_set(val_data, cfg.in_memory) if val_data is not None else None
    parts = _build(cfg, device, warm_start)
    state, resumed_from = _resume(run, parts)
    parts.ddp = _wrap_ddp(parts.model, device)
    if cfg.compile:
        parts.model.compile_backbone()
    monitor = _monitor_set(cfg, run.train_set, val_set) if run.rank == 0 else None
    end_step = (
        run.total_steps if stop_after_steps is None else min(run.total_steps, stop_after_steps)
    )
    _run_steps(run, parts, state, end_step, monitor, on_epoch)
    return _finish(run, parts, state, resumed_from, output_dir, warm_start)


def _configure_process(cfg: TrainConfig) -> torch.device:
    """The device to train on; torch's thread count and determinism flags as `cfg` asks."""
    device = _resolve_device(cfg)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return device


def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device != "auto":
        device = torch.device(cfg.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _plan_run(
    cfg: TrainConfig,
    train_data: Sequence[Part] | Images,
    checkpoint_dir: Path,
    device: torch.device,
    data_fingerprint: str | None,
    warm_start: str | Path | None,
) -> _Run:
    """The run's identity, its training images (on the GPU when they fit) and how they split
    into micro-batches, optimiser steps and epochs on this rank."""
    rank, world = distributed.rank(), distributed.world_size()
    fingerprint = data_fingerprint or _fingerprint(train_data)
    run_hash = config_hash(cfg, fingerprint, warm_start=warm_start)
    train_set = _as_image_set(train_data, cfg.in_memory)
    per_rank = world * cfg.accumulate
    if cfg.batch_size % per_rank:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by world_size x accumulate = {per_rank}"
        )
    micro = cfg.batch_size // per_rank
    sampler = EpochSampler(len(train_set), micro, cfg.seed, rank, world)
    steps_per_epoch = sampler.batches_per_epoch // cfg.accumulate
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} images give no full step of batch {cfg.batch_size}")
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    warmup = (
        cfg.warmup_steps
        if cfg.warmup_steps is not None
        else round(cfg.warmup_epochs * steps_per_epoch)
    )
    if (
        device.type == "cuda"
        and isinstance(train_set, ImageSet)
        and train_set.nbytes <= DEVICE_DATA_MAX_BYTES
    ):
        train_set = train_set.to(device)  # else batches are copied over one at a time
    return _Run(
        cfg=cfg,
        rank=rank,
        world=world,
        device=device,
        run_hash=run_hash,
        fingerprint=fingerprint,
        checkpoint_dir=checkpoint_dir,
        train_set=train_set,
        sampler=sampler,
        micro=micro,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup=warmup,
    )


def _as_image_set(data: Sequence[Part] | Images, in_memory: bool | None) -> Images:
    if isinstance(data, ImageSet | StreamedImages):
        return data
    return open_images(data, in_memory)


def _fingerprint(data: Sequence[Part] | Images) -> str:
    if isinstance(data, StreamedImages):
        raise ValueError("pass data_fingerprint with an already opened StreamedImages")
    if isinstance(data, ImageSet):
        h = hashlib.sha256(data.images.cpu().numpy().tobytes())
        if data.labels is not None:
            h.update(data.labels.cpu().numpy().tobytes())
        return h.hexdigest()[:16]
    return fingerprint_parts(data)


def _build(cfg: TrainConfig, device: torch.device, warm_start: str | Path | None) -> _Parts:
    """Backbone (warm-started if asked) and objective, as one model with its optimiser, and
    the augmentation. Seeded first, so every rank builds the same initial weights (DDP also
    broadcasts rank 0's); the order of construction fixes the RNG stream and must not change."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
    if warm_start is not None:
        load_encoder_weights(backbone, warm_start, cfg.backbone)
    objective = build_objective(cfg.method, backbone=backbone, **cfg.objective)
    model = SSLModel(backbone, objective).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    if cfg.grad_checkpointing:
        enable_gradient_checkpointing(backbone)
    optimizer = build_optimizer(cfg, model)

    prep = backbone.preprocessing
    image_size = cfg.image_size or int(prep["input_size"])
    aug = build_augmentation(
        cfg.augmentation_preset, image_size, mean=prep["mean"], std=prep["std"], **cfg.augment
    )
    if len(aug.views) < objective.num_views:
        raise ValueError(
            f"augmentation {cfg.augmentation_preset!r} makes {len(aug.views)} views, "
            f"{cfg.method} needs {objective.num_views}"
        )
    mask_gen = torch.Generator()
    for module in objective.modules():
        if hasattr(module, "generator"):
            module.generator = mask_gen
    return _Parts(
        backbone=backbone,
        objective=objective,
        model=model,
        optimizer=optimizer,
        aug=aug,
        image_size=image_size,
        mask_gen=mask_gen,
        params=[p for p in model.parameters() if p.requires_grad],
        freezers=[m for m in model.modules() if hasattr(m, "cancel_last_layer_gradients")],
        ddp=model,
    )


def _resume(run: _Run, parts: _Parts) -> tuple[_State, int | None]:
    """Load the newest complete checkpoint (the same one on every rank) into the model and
    optimiser; returns the state to continue from and the step resumed from (None: fresh)."""
    if run.rank == 0:
        clean_stale(run.checkpoint_dir)
    chosen = [max((s for s, _ in list_checkpoints(run.checkpoint_dir)), default=-1)]
    if distributed.is_distributed():  # every rank must load the same checkpoint
        torch.distributed.broadcast_object_list(chosen, src=0)
    if chosen[0] < 0:
        return _State(), None
    loaded = load_latest_checkpoint(run.checkpoint_dir, max_step=chosen[0])
    if loaded is None:
        return _State(), None
    resumed_from, tensors, meta = loaded
    if meta.get("config_hash") != run.run_hash:
        log.warning(
            "checkpoint %s was written by config %s, this run is %s",
            resumed_from,
            meta.get("config_hash"),
            run.run_hash,
        )
    parts.model.load_state_dict(
        {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    )
    parts.optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
    state = _State(**meta["state"])
    rank_states = meta.get("ranks", [])
    if len(rank_states) == run.world:
        set_rng_state(rank_states[run.rank]["rng"])
        state.sums = dict(rank_states[run.rank]["sums"])
    else:
        log.warning(
            "checkpoint written by %d rank(s), resuming on %d: RNG states and this epoch's "
            "running metrics are not restored (augmentation streams are per step anyway)",
            len(rank_states),
            run.world,
        )
    log.info("resumed from step %d (epoch %d)", state.step, state.epoch)
    return state, resumed_from


def _wrap_ddp(model: SSLModel, device: torch.device) -> nn.Module:
    """`model` in one `DistributedDataParallel` under a process group, else `model` itself."""
    if not distributed.is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    # buffers: synced once at wrap time, not at every forward (see module docstring)
    ddp_args = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in ddp_args  # newer torch deprecates broadcast_buffers
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        **no_buffer_sync,
    )


def _monitor_set(cfg: TrainConfig, train_set: Images, val_set: Images | None) -> _MonitorSet:
    """The monitor's fixed subset, chosen once: of val (shuffled, so both kNN folds mix
    classes) when there is one, else of train; at most `MONITOR_MAX_BYTES` of images."""
    per_image = max(1, train_set.nbytes // max(len(train_set), 1))
    cap = max(4, MONITOR_MAX_BYTES // per_image)
    if val_set is not None and len(val_set) >= 2:
        pick = fixed_subset(len(val_set), min(cfg.knn_samples, cap), cfg.seed, "knn")
        pick = pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(0))]
        labels = val_set.labels[pick] if val_set.labels is not None else None
        return _MonitorSet(val_set.nhwc(pick), labels)
    pick = fixed_subset(len(train_set), min(cfg.monitor_samples, cap), cfg.seed, "monitor")
    return _MonitorSet(train_set.nhwc(pick), None)


def _run_steps(
    run: _Run,
    parts: _Parts,
    state: _State,
    end_step: int,
    monitor: _MonitorSet | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Optimiser steps from the resume point up to `end_step`: after each, the teacher update
    and running sums; at the end of an epoch (or of the run) its metrics; then a checkpoint
    every `checkpoint_every` steps and at `end_step`."""
    cfg = run.cfg
    autocast = _autocast(cfg, run.device)
    plan = plan_micro_batches(
        run.sampler,
        step=state.step,
        epoch=state.epoch,
        step_in_epoch=state.step_in_epoch,
        end_step=end_step,
        steps_per_epoch=run.steps_per_epoch,
        accumulate=cfg.accumulate,
        micro_size=run.micro,
    )
    spare_core = run.device.type == "cuda" or torch.get_num_threads() < (os.cpu_count() or 1)
    source = ViewSource(plan, partial(_make_views, run, parts), cfg.prefetch and spare_core)
    parts.model.train()
    try:
        while state.step < end_step:
            started = time.perf_counter()
            lr = lr_at(state.step, run.total_steps, cfg.lr, run.warmup, cfg.min_lr)
            for group in parts.optimizer.param_groups:
                group["lr"] = lr
            logs = _train_step(run, parts, state, source, autocast)
            state.step += 1
            state.step_in_epoch += 1
            parts.objective.update_teacher(parts.backbone, state.step, run.total_steps)
            for key, value in logs.items():
                state.sums[key] = state.sums.get(key, 0.0) + value
            state.images += cfg.batch_size
            state.train_seconds += time.perf_counter() - started

            epoch_done = state.step_in_epoch >= run.steps_per_epoch
            if epoch_done or state.step >= run.total_steps:
                _end_epoch(run, parts, state, monitor, on_epoch, partial=not epoch_done)
                if epoch_done:
                    state.next_epoch()
            if (
                cfg.checkpoint_every > 0 and state.step % cfg.checkpoint_every == 0
            ) or state.step >= end_step:
                _save(run, parts, state)
    finally:
        source.close()


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def _make_views(run: _Run, parts: _Parts, mb: MicroBatch) -> list[Tensor]:
    """The augmented views of one micro-batch, from a generator seeded by its position."""
    cfg = run.cfg
    gen = torch.Generator().manual_seed(stable_seed("aug", cfg.seed, run.rank, mb.step, mb.micro))
    views = parts.aug(run.train_set.batch(mb.indices).to(run.device, non_blocking=True), gen)
    if cfg.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


def _train_step(
    run: _Run,
    parts: _Parts,
    state: _State,
    source: ViewSource,
    autocast: contextlib.AbstractContextManager[Any],
) -> dict[str, float]:
    """One optimiser step over `cfg.accumulate` micro-batches; returns the step's mean logs."""
    cfg = run.cfg
    totals: dict[str, Tensor] = {}
    for m in range(cfg.accumulate):
        views = source.next(state.step, m)
        parts.mask_gen.manual_seed(stable_seed("mask", cfg.seed, run.rank, state.step, m))
        last = m == cfg.accumulate - 1
        ddp = parts.ddp
        sync = contextlib.nullcontext() if last or ddp is parts.model else ddp.no_sync()  # type: ignore[operator]
        with sync:
            with autocast:
                out = ddp(views, state.step)
            loss = out.loss / cfg.accumulate if cfg.accumulate > 1 else out.loss
            loss.backward()
        for key, value in out.logs.items():
            v = value.detach().float()
            totals[key] = totals[key] + v if key in totals else v
    for freezer in parts.freezers:
        freezer.cancel_last_layer_gradients(state.epoch)  # type: ignore[operator]
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(parts.params, cfg.grad_clip)
    parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    logs = {k: float(v) / cfg.accumulate for k, v in totals.items()}
    loss_value = logs.get("loss")
    if loss_value is not None and not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value} at step {state.step}")
    return logs


def _end_epoch(
    run: _Run,
    parts: _Parts,
    state: _State,
    monitor: _MonitorSet | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    partial: bool,
) -> None:
    """Append the epoch's metrics to the history (every rank: the sums are all-reduced) and
    hand them to `on_epoch` on rank 0."""
    metrics = _epoch_metrics(run, state, partial)
    if monitor is not None:
        metrics.update(_monitor_metrics(run, parts, monitor))
    state.history.append(metrics)
    if run.rank == 0 and on_epoch is not None:
        on_epoch(dict(metrics))


def _epoch_metrics(run: _Run, state: _State, partial: bool) -> dict[str, Any]:
    """Position, learning rate, throughput and the objective's logs averaged over the epoch's
    steps and over ranks (a collective: every rank must call it)."""
    cfg = run.cfg
    keys = sorted(state.sums)
    values = torch.tensor(
        [state.sums[k] for k in keys] + [float(state.step_in_epoch)], dtype=torch.float64
    )
    values = distributed.all_reduce_sum(values)
    count = max(float(values[-1]), 1.0)
    metrics: dict[str, Any] = {
        "epoch": state.epoch,
        "step": state.step,
        "partial_epoch": partial,
        "lr": lr_at(state.step - 1, run.total_steps, cfg.lr, run.warmup, cfg.min_lr),
        "images_per_s": state.images / state.train_seconds if state.train_seconds else 0.0,
        "train_seconds": state.train_seconds,
    }
    metrics.update({k: float(v) / count for k, v in zip(keys, values[:-1], strict=True)})
    return metrics


def _monitor_metrics(run: _Run, parts: _Parts, monitor: _MonitorSet) -> dict[str, Any]:
    """Collapse indicators and, with labels, the two-fold kNN accuracy of the encoder on the
    monitor's fixed subset, and the seconds that took. The features come from evaluation's
    `embed_images` (eval mode, the encoder's preprocessing at the training `image_size`), so
    the figures watched during training are computed like those reported after it."""
    cfg = run.cfg
    started = time.perf_counter()
    prep = {**parts.backbone.preprocessing, "input_size": parts.image_size}
    with _autocast(cfg, run.device):
        feats = torch.from_numpy(embed_images(parts.backbone, monitor.images, prep))
    metrics: dict[str, Any] = dict(collapse_metrics(feats))
    if monitor.labels is not None and feats.shape[0] >= 4:
        metrics["knn_accuracy"] = knn_two_fold(
            feats, monitor.labels, cfg.knn_k, cfg.knn_temperature
        )
    metrics["monitor_seconds"] = time.perf_counter() - started
    return metrics


def _save(run: _Run, parts: _Parts, state: _State) -> None:
    """A checkpoint of the current step: every rank's RNG state and running sums are gathered,
    rank 0 writes model, optimiser and state."""
    ranks: list[Any] = [{"rng": rng_state(), "sums": dict(state.sums)}]
    if distributed.is_distributed():  # each rank's RNG state and running metric sums
        ranks = [None] * run.world
        torch.distributed.all_gather_object(ranks, {"rng": rng_state(), "sums": state.sums})
    if run.rank != 0:
        return
    opt_tensors, opt_meta = flatten_optimizer_state(parts.optimizer.state_dict())
    tensors = {f"model/{k}": v for k, v in parts.model.state_dict().items()}
    tensors.update(opt_tensors)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config_hash": run.run_hash,
        "config": run.cfg.to_dict(),
        "world_size": run.world,
        "total_steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch,
        "state": state.to_json(),
        "optimizer": opt_meta,
        "ranks": ranks,
    }
    save_checkpoint(run.checkpoint_dir, state.step, tensors, meta, run.cfg.keep_checkpoints)


def _finish(
    run: _Run,
    parts: _Parts,
    state: _State,
    resumed_from: int | None,
    output_dir: Path,
    warm_start: str | Path | None,
) -> TrainResult:
    """The run's result; on rank 0 of a completed run, the encoder written to `output_dir`."""
    completed = state.step >= run.total_steps
    result = TrainResult(
        completed=completed,
        step=state.step,
        total_steps=run.total_steps,
        epoch=state.epoch,
        config_hash=run.run_hash,
        history=list(state.history),
        resumed_from_step=resumed_from,
        model_sha256=state_digest(parts.model.state_dict()),
    )
    if completed and run.rank == 0:
        meta = _encoder_meta(run, state, warm_start)
        result.metadata_path = save_encoder(parts.backbone, meta, output_dir)
        result.encoder_path = output_dir / ENCODER_WEIGHTS
    if distributed.is_distributed():
        torch.distributed.barrier()
    return result


def _encoder_meta(run: _Run, state: _State, warm_start: str | Path | None) -> dict[str, Any]:
    """What `encoder.json` records about the run (`save_encoder` adds the module's `out_dim`
    and `preprocessing` and the weights' SHA-256)."""
    cfg = run.cfg
    return {
        "backbone": cfg.backbone,
        "backbone_kwargs": cfg.backbone_kwargs,
        "method": cfg.method,
        "objective": cfg.objective,
        "config_hash": run.run_hash,
        "data_fingerprint": run.fingerprint,
        "warm_start": str(warm_start) if warm_start is not None else None,
        "steps": state.step,
        "total_steps": run.total_steps,
        "epochs": state.epoch,
        "metrics": state.history[-1] if state.history else {},
        "history": state.history,
        "config": cfg.to_dict(),
    }
