"""The self-supervised training loop: resumable, reproducible, single-process or DDP.

Why it is built this way:

- **Resumable by construction.** A training run is keyed by `config_hash(cfg, data_fingerprint)`;
  the caller passes a checkpoint directory named after it, so re-executing a failed run (a
  Dagster retry, a killed pod) finds its own checkpoints and resumes from the newest complete
  one, while a changed config or data snapshot starts fresh. A checkpoint is a directory
  `step_NNNNNNNNN/` holding `state.safetensors` (every tensor: model with its momentum teacher,
  MoCo queue, DINO centre, BatchNorm statistics, and the optimiser state flattened to
  `optim/<param>/<key>`) and `state.json` (step, epoch, position in the epoch, optimiser
  hyper-parameters, per-rank RNG states, metric history). Both are written into a hidden
  temporary directory, fsynced, and the directory is renamed into place, so the pair is always
  consistent and a crash mid-write leaves only a `.tmp-*` directory that resume ignores (and
  cleans up). Old checkpoints are renamed away before deletion for the same reason.
- **Exact resume.** Augmentation (and MAE's masking) draw from a generator re-seeded at every
  micro-step from `(seed, rank, step, micro-step)`, and the sampler's epoch permutation is a
  function of `(seed, epoch)`, so the random stream does not have to be replayed; the global
  torch RNG state is saved anyway. The same per-micro-step seeding lets one worker thread
  augment the next batch while the current one trains (`prefetch`) without changing values.
  With `deterministic=True` and a fixed thread count, a run killed and resumed ends with
  bit-identical weights to an uninterrupted one (tested).
- **Optimisation.** AdamW or SGD; learning rate linear warm-up then cosine decay (SimCLR,
  arXiv:2002.05709; "SGDR", Loshchilov & Hutter, arXiv:1608.03983); weight decay only on weights
  of linear / conv layers, not on biases, normalisation parameters or tokens (as DINO, MAE and
  timm do: decaying a norm's scale towards 0 fights the normalisation); gradient accumulation
  (with DDP's `no_sync` on the inner micro-steps); bf16 autocast (default on CUDA, opt-in on
  CPU); optional gradient checkpointing, channels-last and `torch.compile` of the encoder.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.atomic import file_sha256, write_atomic
from ssl_assets.ml import distributed
from ssl_assets.ml.augment import build_augmentation, normalize, to_float
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.checkpoint import (  # _write_*: until the encoder is written by encoder_io
    CHECKPOINT_FORMAT,
    _write_json,
    _write_tensors,
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
    fixed_subset,
    load_images,
    stable_seed,
)
from ssl_assets.ml.data import data_fingerprint as fingerprint_parts
from ssl_assets.ml.model import SSLModel, enable_gradient_checkpointing, load_encoder_weights
from ssl_assets.ml.monitor import collapse_metrics, knn_accuracy
from ssl_assets.ml.objectives import build_objective
from ssl_assets.ml.optim import build_optimizer, lr_at

log = logging.getLogger(__name__)

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"
#: on CUDA, decoded uint8 training data up to this size lives on the GPU (batches never cross
#: the PCIe bus); larger data stays in host memory and each batch is copied
DEVICE_DATA_MAX_BYTES = 2 * 1024**3


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


# --------------------------------------------------------------------------- training


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's running log sums
    train_seconds: float = 0.0  # this epoch's wall time in training steps (rank 0's clock)
    images: int = 0  # this epoch's global images

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device != "auto":
        device = torch.device(cfg.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _as_image_set(data: Sequence[Part] | ImageSet) -> ImageSet:
    return data if isinstance(data, ImageSet) else load_images(data)


def _fingerprint(data: Sequence[Part] | ImageSet) -> str:
    if isinstance(data, ImageSet):
        h = hashlib.sha256(data.images.cpu().numpy().tobytes())
        if data.labels is not None:
            h.update(data.labels.cpu().numpy().tobytes())
        return h.hexdigest()[:16]
    return fingerprint_parts(data)


@torch.no_grad()
def embed(
    backbone: nn.Module,
    images: Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    channels_last: bool = False,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> Tensor:
    """Backbone features (float32, CPU) of uint8 images, in eval mode (restored afterwards):
    scale to [0, 1], resize to `image_size` if needed, normalise, encode in batches."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size].to(device))
            if x.shape[-1] != image_size or x.shape[-2] != image_size:
                x = F.interpolate(
                    x,
                    size=(image_size, image_size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
            x = normalize(x, mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast or contextlib.nullcontext():
                out.append(backbone(x).float().cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out)


def _knn_two_fold(features: Tensor, labels: Tensor, k: int, temperature: float) -> float:
    """Mean kNN accuracy of the two halves of the (already fixed, shuffled) val subset, each
    classified with the other half as the labelled bank."""
    half = features.shape[0] // 2
    a, b = slice(0, half), slice(half, None)
    num_classes = int(labels.max()) + 1
    acc_ab = knn_accuracy(
        features[a], labels[a], features[b], labels[b], k, temperature, num_classes
    )
    acc_ba = knn_accuracy(
        features[b], labels[b], features[a], labels[a], k, temperature, num_classes
    )
    return 0.5 * (acc_ab + acc_ba)


def train(
    cfg: TrainConfig,
    train_data: Sequence[Part] | ImageSet,
    checkpoint_dir: str | Path,
    *,
    val_data: Sequence[Part] | ImageSet | None = None,
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
    rank, world = distributed.rank(), distributed.world_size()
    device = _resolve_device(cfg)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    # ---- data
    fingerprint = data_fingerprint or _fingerprint(train_data)
    run_hash = config_hash(cfg, fingerprint, warm_start=warm_start)
    train_set = _as_image_set(train_data)
    val_set = _as_image_set(val_data) if val_data is not None else None
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
    if device.type == "cuda" and train_set.images.numel() <= DEVICE_DATA_MAX_BYTES:
        train_set = train_set.to(device)  # else batches are copied over one at a time

    # ---- model (same init on every rank; DDP also broadcasts rank 0's weights)
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
    mask_gen = torch.Generator()  # MAE's masks: re-seeded per micro-step, like augmentation
    for module in objective.modules():
        if hasattr(module, "generator"):
            module.generator = mask_gen

    # ---- resume
    state = _State()
    resumed_from: int | None = None
    if rank == 0:
        clean_stale(checkpoint_dir)
    chosen = [max((s for s, _ in list_checkpoints(checkpoint_dir)), default=-1)]
    if distributed.is_distributed():  # every rank must load the same checkpoint
        torch.distributed.broadcast_object_list(chosen, src=0)
    loaded = load_latest_checkpoint(checkpoint_dir, max_step=chosen[0]) if chosen[0] >= 0 else None
    if loaded is not None:
        resumed_from, tensors, meta = loaded
        if meta.get("config_hash") != run_hash:
            log.warning(
                "checkpoint %s was written by config %s, this run is %s",
                resumed_from,
                meta.get("config_hash"),
                run_hash,
            )
        model.load_state_dict(
            {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
        )
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
        saved = meta["state"]
        state = _State(**saved)
        rank_states = meta.get("ranks", [])
        if len(rank_states) == world:
            set_rng_state(rank_states[rank]["rng"])
            state.sums = dict(rank_states[rank]["sums"])
        else:
            log.warning(
                "checkpoint written by %d rank(s), resuming on %d: RNG states and this epoch's "
                "running metrics are not restored (augmentation streams are per step anyway)",
                len(rank_states),
                world,
            )
        log.info("resumed from step %d (epoch %d)", state.step, state.epoch)

    # ---- DDP
    ddp: nn.Module = model
    if distributed.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        # buffers: synced once at wrap time, not at every forward (see module docstring)
        ddp_args = inspect.signature(DistributedDataParallel.__init__).parameters
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in ddp_args  # newer torch deprecates broadcast_buffers
            else {"broadcast_buffers": False}
        )
        ddp = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            **no_buffer_sync,
        )
    if cfg.compile:
        model.compile_backbone()
    autocast = _autocast(cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    freezers = [m for m in model.modules() if hasattr(m, "cancel_last_layer_gradients")]

    # ---- monitoring data (fixed subsets, chosen once)
    monitor_images: Tensor | None = None
    knn_labels: Tensor | None = None
    if rank == 0:
        if val_set is not None and len(val_set) >= 2:
            pick = fixed_subset(len(val_set), cfg.knn_samples, cfg.seed, "knn")
            pick = pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(0))]
            monitor_images = val_set.images[pick]
            if val_set.labels is not None:
                knn_labels = val_set.labels[pick]
        else:
            pick = fixed_subset(len(train_set), cfg.monitor_samples, cfg.seed, "monitor")
            monitor_images = train_set.images.cpu()[pick]

    def save(step: int) -> None:
        ranks: list[Any] = [{"rng": rng_state(), "sums": dict(state.sums)}]
        if distributed.is_distributed():  # each rank's RNG state and running metric sums
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, {"rng": rng_state(), "sums": state.sums})
        if rank != 0:
            return
        opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        tensors.update(opt_tensors)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config_hash": run_hash,
            "config": cfg.to_dict(),
            "world_size": world,
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "state": state.to_json(),
            "optimizer": opt_meta,
            "ranks": ranks,
        }
        save_checkpoint(checkpoint_dir, step, tensors, meta, cfg.keep_checkpoints)

    def finish_epoch(partial: bool) -> None:
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
            "lr": lr_at(state.step - 1, total_steps, cfg.lr, warmup, cfg.min_lr),
            "images_per_s": state.images / state.train_seconds if state.train_seconds else 0.0,
            "train_seconds": state.train_seconds,
        }
        metrics.update({k: float(v) / count for k, v in zip(keys, values[:-1], strict=True)})
        if rank == 0 and monitor_images is not None:
            started = time.perf_counter()
            feats = embed(
                backbone,
                monitor_images,
                image_size,
                prep["mean"],
                prep["std"],
                channels_last=cfg.channels_last,
                autocast=_autocast(cfg, device),
            )
            metrics.update(collapse_metrics(feats))
            if knn_labels is not None and feats.shape[0] >= 4:
                metrics["knn_accuracy"] = _knn_two_fold(
                    feats, knn_labels, cfg.knn_k, cfg.knn_temperature
                )
            metrics["monitor_seconds"] = time.perf_counter() - started
        state.history.append(metrics)
        if rank == 0 and on_epoch is not None:
            on_epoch(dict(metrics))

    # ---- loop
    end_step = total_steps if stop_after_steps is None else min(total_steps, stop_after_steps)

    def plan() -> Iterator[_MicroBatch]:
        """Every micro-batch this execution will train on, in order (from the resume point)."""
        step, epoch, k = state.step, state.epoch, state.step_in_epoch
        while step < end_step:
            indices = sampler.rank_indices(epoch)
            while k < steps_per_epoch and step < end_step:
                for m in range(cfg.accumulate):
                    first = (k * cfg.accumulate + m) * micro
                    yield _MicroBatch(step, m, indices[first : first + micro])
                step += 1
                k += 1
            epoch += 1
            k = 0

    @torch.no_grad()
    def make_views(mb: _MicroBatch) -> list[Tensor]:
        gen = torch.Generator().manual_seed(stable_seed("aug", cfg.seed, rank, mb.step, mb.micro))
        views = aug(train_set.batch(mb.indices).to(device, non_blocking=True), gen)
        if cfg.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    spare_core = device.type == "cuda" or torch.get_num_threads() < (os.cpu_count() or 1)
    source = _ViewSource(plan(), make_views, prefetch=cfg.prefetch and spare_core)
    model.train()
    try:
        while state.step < end_step:
            started = time.perf_counter()
            lr = lr_at(state.step, total_steps, cfg.lr, warmup, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logs = _train_step(
                cfg,
                state,
                ddp,
                model,
                optimizer,
                source,
                mask_gen,
                rank,
                params,
                freezers,
                autocast,
            )
            state.step += 1
            state.step_in_epoch += 1
            objective.update_teacher(backbone, state.step, total_steps)
            for key, value in logs.items():
                state.sums[key] = state.sums.get(key, 0.0) + value
            state.images += cfg.batch_size
            state.train_seconds += time.perf_counter() - started

            epoch_done = state.step_in_epoch >= steps_per_epoch
            if epoch_done or state.step >= total_steps:
                finish_epoch(partial=not epoch_done)
                if epoch_done:
                    state.epoch += 1
                    state.step_in_epoch = 0
                    state.sums, state.train_seconds, state.images = {}, 0.0, 0
            if (
                cfg.checkpoint_every > 0 and state.step % cfg.checkpoint_every == 0
            ) or state.step >= end_step:
                save(state.step)
    finally:
        source.close()

    completed = state.step >= total_steps
    result = TrainResult(
        completed=completed,
        step=state.step,
        total_steps=total_steps,
        epoch=state.epoch,
        config_hash=run_hash,
        history=list(state.history),
        resumed_from_step=resumed_from,
        model_sha256=state_digest(model.state_dict()),
    )
    if completed and rank == 0:
        result.encoder_path, result.metadata_path = _write_encoder(
            output_dir, cfg, backbone, run_hash, fingerprint, state, total_steps, warm_start
        )
    if distributed.is_distributed():
        torch.distributed.barrier()
    return result


@dataclass(frozen=True)
class _MicroBatch:
    step: int
    micro: int
    indices: Tensor


class _ViewSource:
    """Augmented views of planned micro-batches, in order; with `prefetch`, the next one is
    computed in a worker thread while the caller trains on the current one.

    Why a thread and not DataLoader workers: the work is a handful of vectorised torch ops on
    an in-memory batch, which release the GIL; a thread shares the uint8 tensor and the
    result without copies. Each micro-batch seeds its own generator, so values do not depend
    on whether (or when) it was computed ahead.
    """

    def __init__(
        self,
        plan: Iterator[_MicroBatch],
        make: Callable[[_MicroBatch], list[Tensor]],
        prefetch: bool = True,
    ) -> None:
        self._plan = plan
        self._make = make
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ssl-augment") if prefetch else None
        self._pending: tuple[_MicroBatch, Future[list[Tensor]]] | None = None

    def _submit(self) -> None:
        mb = next(self._plan, None)
        if mb is not None and self._pool is not None:
            self._pending = (mb, self._pool.submit(self._make, mb))
        else:
            self._pending = None

    def next(self, step: int, micro: int) -> list[Tensor]:
        """Views of micro-batch `micro` of optimiser step `step` (must follow the plan)."""
        if self._pool is None:
            mb = next(self._plan)
            views = self._make(mb)
        else:
            if self._pending is None:
                self._submit()
            if self._pending is None:
                raise StopIteration("the plan has no more micro-batches")
            mb, future = self._pending
            views = future.result()
            self._submit()
        if (mb.step, mb.micro) != (step, micro):
            raise RuntimeError(f"planned micro-batch {mb.step}/{mb.micro}, asked {step}/{micro}")
        return views

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _train_step(
    cfg: TrainConfig,
    state: _State,
    ddp: nn.Module,
    model: SSLModel,
    optimizer: torch.optim.Optimizer,
    source: _ViewSource,
    mask_gen: torch.Generator,
    rank: int,
    params: list[nn.Parameter],
    freezers: list[nn.Module],
    autocast: contextlib.AbstractContextManager[Any],
) -> dict[str, float]:
    """One optimiser step over `cfg.accumulate` micro-batches; returns the step's mean logs."""
    totals: dict[str, Tensor] = {}
    for m in range(cfg.accumulate):
        views = source.next(state.step, m)
        mask_gen.manual_seed(stable_seed("mask", cfg.seed, rank, state.step, m))
        last = m == cfg.accumulate - 1
        sync = contextlib.nullcontext() if last or ddp is model else ddp.no_sync()  # type: ignore[operator]
        with sync:
            with autocast:
                out = ddp(views, state.step)
            loss = out.loss / cfg.accumulate if cfg.accumulate > 1 else out.loss
            loss.backward()
        for key, value in out.logs.items():
            v = value.detach().float()
            totals[key] = totals[key] + v if key in totals else v
    for freezer in freezers:
        freezer.cancel_last_layer_gradients(state.epoch)  # type: ignore[operator]
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    logs = {k: float(v) / cfg.accumulate for k, v in totals.items()}
    loss_value = logs.get("loss")
    if loss_value is not None and not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value} at step {state.step}")
    return logs


def _write_encoder(
    output_dir: Path,
    cfg: TrainConfig,
    backbone: nn.Module,
    run_hash: str,
    fingerprint: str,
    state: _State,
    total_steps: int,
    warm_start: str | Path | None,
) -> tuple[Path, Path]:
    """`encoder.safetensors` then `encoder.json` (each temp file + rename; the JSON last, so
    its presence means the weights beside it are complete)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / ENCODER_WEIGHTS
    meta_path = output_dir / ENCODER_META
    write_atomic(weights, lambda p: _write_tensors(p, backbone.state_dict()))
    meta = {
        "backbone": cfg.backbone,
        "backbone_kwargs": cfg.backbone_kwargs,
        "out_dim": int(backbone.out_dim),
        "preprocessing": backbone.preprocessing,
        "method": cfg.method,
        "objective": cfg.objective,
        "config_hash": run_hash,
        "data_fingerprint": fingerprint,
        "warm_start": str(warm_start) if warm_start is not None else None,
        "steps": state.step,
        "total_steps": total_steps,
        "epochs": state.epoch,
        "metrics": state.history[-1] if state.history else {},
        "history": state.history,
        "config": cfg.to_dict(),
        "weights_sha256": file_sha256(weights),
    }
    write_atomic(meta_path, lambda p: _write_json(p, meta))
    return weights, meta_path
