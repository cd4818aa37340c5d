"""BYOL (Grill et al., 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", arXiv:2006.07733).

Why: BYOL learns without negatives. An online network (backbone -> projector -> predictor)
regresses the projection of the other view produced by a *target* network, an exponential moving
average of the online backbone and projector. The loss is the normalised MSE
`||p/||p|| - z'/||z'|| ||^2 = 2 - 2 cos(p, z')`, symmetrised over the two views
(`L = mean(2 - 2cos(p0, z1')) + mean(2 - 2cos(p1, z0'))`), and the target momentum rises from
`tau_base = 0.996` to 1 along `tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`. The predictor and
the slow target are what prevent collapse.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml.heads import BYOLPredictionHead, BYOLProjectionHead
from ssl_assets.ml.objectives.base import (
    Objective,
    ObjectiveOutput,
    cosine_momentum,
    encode_views,
    forward_views,
    make_teacher,
    update_momentum,
)

__all__ = ["BYOL", "byol_loss", "cosine_momentum", "normalized_mse", "update_momentum"]


def normalized_mse(p: Tensor, z: Tensor) -> Tensor:
    """Batch mean of `2 - 2 cos(p_i, z_i)` (z is treated as a constant target)."""
    p = F.normalize(p, dim=-1)
    z = F.normalize(z.detach(), dim=-1)
    return (2.0 - 2.0 * (p * z).sum(dim=-1)).mean()


def byol_loss(p0: Tensor, p1: Tensor, z0_target: Tensor, z1_target: Tensor) -> Tensor:
    """Symmetric BYOL loss: `normalized_mse(p0, z1') + normalized_mse(p1, z0')` (range [0, 8])."""
    return normalized_mse(p0, z1_target) + normalized_mse(p1, z0_target)


class BYOL(Objective):
    """BYOL with a projector + predictor and a cosine-scheduled momentum target.

    - BYOL, Grill et al., 2020, https://arxiv.org/abs/2006.07733

    Learning without negatives: the online network (backbone -> projector -> predictor)
    regresses the target network's projection of the other view (`byol_loss`, symmetrised
    normalised MSE); the target is an EMA of the online backbone and projector whose momentum
    rises from `momentum_base` to `momentum_final` along a cosine. The predictor and the slow
    target are what prevent collapse.

    Args:
        backbone: Encoder mapping N x C x H x W images to N x D features, D =
            `backbone.out_dim`; deep-copied into the target.
        hidden_dim: Hidden width of projector and predictor (4096 in the paper).
        out_dim: Projection dimension (256 in the paper).
        momentum_base: Target momentum at step 0 (0.996).
        momentum_final: Target momentum at the last step (1.0).
        head_batch_norm: BatchNorm in projector and predictor.

    Returns:
        `forward(views, backbone, step)` (views: at least 2 batches N x C x H x W) returns
        `ObjectiveOutput(loss, logs)`: `loss` a 0-d tensor in [0, 8], `logs` the detached
        "loss" and "cosine" (mean cosine of prediction and target). `update_teacher` returns
        `{"momentum": m}`.

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2], input_size=16)
        >>> byol = BYOL(backbone, hidden_dim=32, out_dim=16)
        >>> views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        >>> out = byol(views, backbone)
        >>> out.loss.backward()
        >>> out.loss.shape, sorted(out.logs)
        (torch.Size([]), ['cosine', 'loss'])
        >>> round(byol.update_teacher(backbone, step=0, max_steps=10)["momentum"], 6)
        0.996
    """

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        momentum_base: float = 0.996,
        momentum_final: float = 1.0,
        head_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        in_dim = int(backbone.out_dim)
        self.momentum_base = momentum_base
        self.momentum_final = momentum_final
        self.projector = BYOLProjectionHead(in_dim, hidden_dim, out_dim, head_batch_norm)
        self.predictor = BYOLPredictionHead(out_dim, hidden_dim, out_dim, head_batch_norm)
        self.target_backbone = make_teacher(backbone)
        self.target_projector = make_teacher(self.projector)

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        p0, p1 = forward_views([self.projector, self.predictor], encode_views(backbone, views[:2]))
        with torch.no_grad():
            z0t, z1t = forward_views([self.target_backbone, self.target_projector], views[:2])
        loss = byol_loss(p0, p1, z0t, z1t)
        with torch.no_grad():
            cos = 0.5 * (F.cosine_similarity(p0, z1t).mean() + F.cosine_similarity(p1, z0t).mean())
        return ObjectiveOutput(loss, {"loss": loss.detach(), "cosine": cos})

    def update_teacher(self, backbone: nn.Module, step: int, max_steps: int) -> dict[str, float]:
        m = cosine_momentum(step, max_steps, self.momentum_base, self.momentum_final)
        update_momentum(backbone, self.target_backbone, m)
        update_momentum(self.projector, self.target_projector, m)
        return {"momentum": m}
