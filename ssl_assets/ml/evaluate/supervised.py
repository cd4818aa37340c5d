"""Supervised training of an encoder + linear head: the loop behind fine-tuning and the
from-scratch baseline.

Why one loop for both: the from-scratch baseline is only a fair reference for self-supervised
pre-training if it sees the same labels, the same augmentation, the same optimiser and (by
default) the same wall time as the SSL run; sharing the loop with fine-tuning guarantees the
only difference is the initialisation (and which parameters train).

The loop is deliberately simple: AdamW at a constant learning rate (a time budget has no known
end for a schedule to aim at), batched random-resized-crop + horizontal flip on uint8 batches
(`ssl_assets.ml.augment`, no per-image Python), seeded data order and augmentation, and after
every epoch a val pass that drives early stopping and "keep the best epoch". Only time spent in
training steps counts against `time_budget_s` (as `train_seconds` in the SSL trainer), so a
slow val pass does not shorten training.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml.augment import random_resized_crop
from ssl_assets.ml.evaluate.features import as_nchw_uint8, map_batches, preprocess


class Classifier(nn.Module):
    """`head(backbone(x))`: an encoder with a linear classification head.

    Carries the `preprocessing` its inputs need (the backbone's, unless given), so evaluation,
    saving and serving all read it from one place.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        preprocessing: Mapping[str, Any] | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        with torch.random.fork_rng(devices=[]):  # seeded head init without touching global RNG
            if seed is not None:
                torch.manual_seed(seed)
            self.head = nn.Linear(int(backbone.out_dim), int(num_classes))  # type: ignore[arg-type]
        prep = preprocessing if preprocessing is not None else backbone.preprocessing
        self.preprocessing: dict[str, Any] = dict(prep)  # type: ignore[arg-type]
        self.num_classes = int(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def predict_logits(model: Classifier, images: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
    """Logits (N x classes, CPU float32) of canonical uint8 images, eval mode, no gradients."""
    return map_batches(model, images, model.preprocessing, batch_size)


def predict_proba(
    model: Classifier, images: np.ndarray | Tensor, batch_size: int = 256
) -> np.ndarray:
    """Softmax probabilities (N x classes numpy) of canonical uint8 N x R x R x 3 images."""
    return torch.softmax(predict_logits(model, images, batch_size), dim=1).numpy()


def predict_labels(
    model: Classifier, images: np.ndarray | Tensor, batch_size: int = 256
) -> np.ndarray:
    """Predicted class indices (argmax of the logits)."""
    return predict_logits(model, images, batch_size).argmax(dim=1).numpy().astype(np.int64)


@dataclass
class SupervisedConfig:
    """Settings of `train_classifier`.

    `epochs` caps the number of passes; `time_budget_s` (training-step seconds) and
    `max_steps` stop earlier when set. `patience`: stop after that many epochs without a val
    improvement (None: never stop early). `restore_best`: end with the weights of the best val
    epoch. `backbone_lr_scale` multiplies `lr` for encoder parameters (the head uses `lr`).
    `val_every`: validate every that many epochs (and after the last): with a few dozen
    labels an epoch is one step, and a val pass after every step would cost more than the
    training.
    """

    epochs: int = 30
    time_budget_s: float | None = None
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    patience: int | None = 5
    restore_best: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    flip: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    val_every: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.val_every < 1:
            raise ValueError("epochs must be >= 1, batch_size >= 2 and val_every >= 1")
        self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))


@dataclass
class TrainLog:
    """What `train_classifier` did: per-epoch history, every step's loss, why it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    stop_reason: str = "epochs"

    def _window(self) -> int:
        return max(1, len(self.step_losses) // 10)

    @property
    def loss_start(self) -> float:
        """Mean loss of the first 10% of steps (at least one)."""
        return float(np.mean(self.step_losses[: self._window()])) if self.step_losses else math.nan

    @property
    def loss_end(self) -> float:
        """Mean loss of the last 10% of steps (at least one)."""
        return float(np.mean(self.step_losses[-self._window() :])) if self.step_losses else math.nan

    @property
    def loss_dropped(self) -> bool:
        """Whether training made progress at all (the end loss is below the start loss)."""
        return bool(self.step_losses) and self.loss_end < self.loss_start

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "stop_reason": self.stop_reason,
            "loss_start": self.loss_start,
            "loss_end": self.loss_end,
            "loss_dropped": self.loss_dropped,
        }


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _optimizer(model: Classifier, cfg: SupervisedConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay only on >= 2-d weights (not biases / norms), as the SSL trainer."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    head_ids = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        lr = cfg.lr if id(p) in head_ids else cfg.lr * cfg.backbone_lr_scale
        wd = cfg.weight_decay if p.ndim > 1 else 0.0
        groups.setdefault((lr, wd), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    )


def _set_train(model: nn.Module, frozen: Iterable[nn.Module]) -> None:
    """Train mode, except frozen modules, kept in eval mode so their BatchNorm running
    statistics (buffers, part of the weights) are not updated by the batches they see."""
    model.train()
    for module in frozen:
        module.eval()


def _val_pass(
    model: Classifier, images: Any, labels: Tensor, batch_size: int
) -> tuple[float, float]:
    logits = predict_logits(model, images, batch_size)
    loss = float(F.cross_entropy(logits, labels))
    acc = float((logits.argmax(dim=1) == labels).float().mean())
    return acc, loss


def train_classifier(
    model: Classifier,
    train_images: np.ndarray | Tensor,
    train_labels: np.ndarray | Tensor,
    cfg: SupervisedConfig | None = None,
    val_images: np.ndarray | Tensor | None = None,
    val_labels: np.ndarray | Tensor | None = None,
    frozen_modules: Iterable[nn.Module] = (),
) -> TrainLog:
    """Train `model` in place with cross-entropy on canonical uint8 N x R x R x 3 images.

    Parameters with `requires_grad=False` are not optimised; `frozen_modules` additionally stay
    in eval mode (frozen BatchNorm statistics). With val data, every epoch ends with a val pass
    (early stopping, best-epoch restore). Returns the `TrainLog`.
    """
    cfg = cfg or SupervisedConfig()
    frozen = list(frozen_modules)
    device = _resolve_device(cfg.device)
    model.to(device)
    images = as_nchw_uint8(train_images).contiguous()
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    n = images.shape[0]
    if n < 2:
        raise ValueError("need at least 2 training images")
    val_y = (
        torch.as_tensor(np.asarray(val_labels), dtype=torch.long)
        if val_labels is not None
        else None
    )
    has_val = val_images is not None and val_y is not None and len(val_y) > 0
    batch = min(cfg.batch_size, n)
    prep = model.preprocessing
    size = int(prep["input_size"])
    optimizer = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = TrainLog()
    best_state: dict[str, Tensor] | None = None
    best_key: tuple[float, float] | None = None
    since_best = 0

    for epoch in range(cfg.epochs):
        _set_train(model, frozen)
        perm = torch.randperm(n, generator=gen)
        starts = list(range(0, n, batch))
        if n - starts[-1] < 2:  # a 1-image batch breaks BatchNorm in train mode
            starts.pop()
        epoch_losses: list[float] = []
        stop: str | None = None
        for start in starts:
            if cfg.max_steps is not None and log.steps >= cfg.max_steps:
                stop = "max_steps"
                break
            if cfg.time_budget_s is not None and log.train_seconds >= cfg.time_budget_s:
                stop = "time_budget"
                break
            t0 = time.perf_counter()
            idx = perm[start : start + batch]
            x = random_resized_crop(
                images[idx].to(device),
                size,
                scale=cfg.crop_scale,
                flip_prob=0.5 if cfg.flip else 0.0,
                generator=gen,
            )
            x = preprocess(x, prep)
            loss = F.cross_entropy(
                model(x), labels[idx].to(device), label_smoothing=cfg.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {log.steps}")
            log.steps += 1
            log.step_losses.append(value)
            epoch_losses.append(value)
            log.train_seconds += time.perf_counter() - t0
        last = (
            stop is not None
            or epoch == cfg.epochs - 1
            or (cfg.max_steps is not None and log.steps >= cfg.max_steps)
        )
        if epoch_losses:
            record: dict[str, float] = {
                "epoch": float(epoch),
                "loss": float(np.mean(epoch_losses)),
                "train_seconds": log.train_seconds,
            }
            if has_val and ((epoch + 1) % cfg.val_every == 0 or last):
                acc, vloss = _val_pass(model, val_images, val_y, cfg.eval_batch_size)  # type: ignore[arg-type]
                record.update(val_accuracy=acc, val_loss=vloss)
                key = (acc, -vloss)
                if best_key is None or key > best_key:
                    best_key, since_best = key, 0
                    log.best_epoch, log.best_val_accuracy = epoch, acc
                    if cfg.restore_best:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
            log.history.append(record)
        if stop is not None:
            log.stop_reason = stop
            break
        if cfg.patience is not None and has_val and since_best >= cfg.patience:
            log.stop_reason = "early_stopping"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return log
