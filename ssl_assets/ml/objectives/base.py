"""Shared interface and helpers for self-supervised objectives.

Why one small interface: the training loop (and a weighted hybrid of several methods) must drive
SimCLR, MoCo, BYOL, VICReg, DINO and MAE the same way. Every objective is an `nn.Module` that owns
its heads (and, for momentum methods, the teacher copies and buffers such as MoCo's queue or
DINO's centre, so they are part of its `state_dict`), takes a list of augmented views plus the
student backbone, and returns an `ObjectiveOutput(loss, logs)`.

The momentum helpers follow MoCo (He et al., 2020, arXiv:1911.05722: exponential moving average of
the query encoder into the key encoder) and BYOL (Grill et al., 2020, arXiv:2006.07733: the EMA
coefficient rises from `base` to 1 along a cosine schedule); DINO (arXiv:2104.14294) reuses both.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn


class ObjectiveOutput(NamedTuple):
    """A scalar loss to backpropagate and detached 0-d tensors to log (call `.item()` lazily)."""

    loss: Tensor
    logs: dict[str, Tensor]


class Objective(nn.Module):
    """The interface of every self-supervised objective: views in, `ObjectiveOutput` out.

    - Methods: SimCLR https://arxiv.org/abs/2002.05709, MoCo v2 https://arxiv.org/abs/2003.04297,
      BYOL https://arxiv.org/abs/2006.07733, VICReg https://arxiv.org/abs/2105.04906,
      DINO https://arxiv.org/abs/2104.14294, MAE https://arxiv.org/abs/2111.06377.

    Why one interface: the training loop and a weighted `Hybrid` drive every method the same
    way. An objective owns its heads and, for momentum methods, its teachers and buffers (MoCo's
    queue, DINO's centre), so all of them are in its `state_dict` and checkpointed with it.
    Objectives with a teacher override `update_teacher(backbone, step, max_steps)`, which the
    training loop calls after each optimiser step (the default does nothing and returns `{}`).

    Args:
        views: Image batches, each N x C x H x W, already augmented and normalised; at least
            `num_views` of them (DINO reads all it is given, global crops first).
        backbone: The student encoder, mapping a batch to N x D features (D =
            `backbone.out_dim`). It may be a compiled or caching proxy: call it, do not keep it.
        step: The global optimisation step, used by schedules inside the loss (DINO's
            teacher-temperature warm-up).

    Returns:
        `ObjectiveOutput(loss, logs)`: `loss` is a 0-d tensor to backpropagate, `logs` maps
        names (always including "loss") to detached 0-d tensors.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Alignment(Objective):  # pulls the views together; collapses, as SSL warns
        ...     def forward(self, views, backbone, step=0):
        ...         self._check_views(views)
        ...         z0, z1 = encode_views(backbone, views[:2])
        ...         loss = (z0 - z1).pow(2).sum(dim=1).mean()
        ...         return ObjectiveOutput(loss, {"loss": loss.detach()})
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> views = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)]
        >>> out = Alignment()(views, backbone)
        >>> out.loss.shape, list(out.logs)
        (torch.Size([]), ['loss'])
    """

    #: how many views `forward` reads (at least); DINO reads all it is given.
    num_views: int = 2

    def forward(  # pragma: no cover - interface
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        raise NotImplementedError

    def update_teacher(self, backbone: nn.Module, step: int, max_steps: int) -> dict[str, float]:
        """EMA-update teacher weights after an optimiser step; returns values to log."""
        return {}

    def _check_views(self, views: Sequence[Tensor]) -> None:
        if len(views) < self.num_views:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.num_views} views, got {len(views)}"
            )


def make_teacher(module: nn.Module) -> nn.Module:
    """Deep copy of `module` with gradients switched off (a momentum / EMA teacher)."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_momentum(model: nn.Module, ema_model: nn.Module, m: float) -> None:
    """`ema = m * ema + (1 - m) * online` for every parameter (buffers are left to the teacher).

    This is MoCo's momentum update of the key encoder (Eq. 2 of arXiv:1911.05722) and BYOL's /
    DINO's teacher update. Both modules must have the same parameter order (a deep copy does).
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    ema_params = [p.data for p in ema_model.parameters()]
    params = [p.data for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("model and ema_model have a different number of parameters")
    torch._foreach_mul_(ema_params, m)
    torch._foreach_add_(ema_params, params, alpha=1.0 - m)


def cosine_momentum(step: int, max_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's schedule: `final - (final - base) * (cos(pi * step / max_steps) + 1) / 2`.

    Equals `base` at step 0 and rises to `final` at `max_steps` (clamped beyond it).
    """
    if max_steps <= 0:
        return final
    t = min(max(step, 0), max_steps) / max_steps
    return final - (final - base) * (math.cos(math.pi * t) + 1.0) / 2.0


def forward_views(modules: Sequence[nn.Module], views: Sequence[Tensor]) -> list[Tensor]:
    """Run `views` through `modules` in sequence, one call per run of same-shaped views.

    Views of equal resolution are concatenated along the batch (as DINO's MultiCropWrapper does),
    which is faster and gives BatchNorm statistics over all of them; the output is split back.
    """
    outputs: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[1:] == views[start].shape[1:]:
            end += 1
        x = torch.cat(list(views[start:end]), dim=0) if end - start > 1 else views[start]
        for module in modules:
            x = module(x)
        outputs.extend(x.split([v.shape[0] for v in views[start:end]], dim=0))
        start = end
    return outputs


class ViewCache:
    """Backbone proxy that remembers the features of each view tensor during one forward.

    `encode_views(cache, views)` computes the missing views in one batched pass and reuses
    earlier results, so a hybrid objective runs the backbone once per view. Any other attribute
    (e.g. a ViT's `forward_encoder`) is passed through to the backbone.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone
        self._features: dict[int, tuple[Tensor, Tensor]] = {}

    def encode(self, views: Sequence[Tensor]) -> list[Tensor]:
        missing = [v for v in views if self._lookup(v) is None]
        if missing:
            for v, out in zip(missing, forward_views([self.backbone], missing), strict=True):
                self._features[id(v)] = (v, out)
        found = [self._lookup(v) for v in views]
        return [f for f in found if f is not None]

    def _lookup(self, view: Tensor) -> Tensor | None:
        hit = self._features.get(id(view))
        return hit[1] if hit is not None and hit[0] is view else None

    def __call__(self, x: Tensor) -> Tensor:
        return self.encode([x])[0]

    def __getattr__(self, name: str) -> object:
        return getattr(self.backbone, name)


def encode_views(backbone: nn.Module | ViewCache, views: Sequence[Tensor]) -> list[Tensor]:
    """Backbone features of each view (batched per resolution; cached under a `ViewCache`)."""
    if isinstance(backbone, ViewCache):
        return backbone.encode(views)
    return forward_views([backbone], views)
