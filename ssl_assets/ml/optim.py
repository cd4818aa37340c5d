"""The learning-rate schedule and the optimiser's parameter groups.

Why these choices: AdamW or SGD; learning rate linear warm-up then cosine decay (SimCLR,
arXiv:2002.05709; "SGDR", Loshchilov & Hutter, arXiv:1608.03983); weight decay only on weights
of linear / conv layers, not on biases, normalisation parameters or tokens (as DINO, MAE and
timm do: decaying a norm's scale towards 0 fights the normalisation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ssl_assets.ml.config import TrainConfig


def lr_at(
    step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up reaching `base_lr` at
    step `warmup_steps - 1`, then half-cosine from `base_lr` down towards `min_lr` at
    `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return base_lr
    t = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_NO_DECAY_NAMES = frozenset({"bias", "cls_token", "mask_token", "pos_embed", "weight_g"})


def split_decay_parameters(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of trainable parameters `(decayed, not_decayed)`: biases, parameters of
    normalisation layers, 0/1-d parameters, tokens and weight-norm gains are not decayed."""
    decay: list[str] = []
    no_decay: list[str] = []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, _NORM_TYPES) or p.ndim <= 1 or p_name in _NO_DECAY_NAMES:
                no_decay.append(full)
            else:
                decay.append(full)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups: `decay` with `weight_decay`, `no_decay` with 0."""
    params = dict(model.named_parameters())
    decay, no_decay = split_decay_parameters(model)
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": weight_decay, "group": "decay"},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0, "group": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum `cfg.momentum`) over `param_groups(model, cfg.weight_decay)`."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)
