"""VICReg (Bardes, Ponce & LeCun, 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, arXiv:2105.04906).

Why: VICReg avoids collapse with explicit regularisers instead of negatives or a teacher:

- invariance `s(Z, Z') = mean ||z_i - z'_i||^2 / D` (MSE between the two views' embeddings);
- variance `v(Z) = mean_j relu(1 - sqrt(Var(z^j) + eps))`, a hinge keeping every dimension's
  standard deviation at least 1 (averaged over both branches);
- covariance `c(Z) = sum_{i != j} Cov(Z)_{ij}^2 / D`, decorrelating the dimensions (summed over
  both branches).

`L = lambda s + mu v + nu c` with lambda = mu = 25, nu = 1 (paper defaults). Under DDP, with
`gather_distributed`, variance and covariance are computed over the global batch through a
gradient-preserving all-gather, as in the authors' code (the invariance term stays local).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml import distributed
from ssl_assets.ml.heads import VICRegProjectionHead
from ssl_assets.ml.objectives.base import Objective, ObjectiveOutput, encode_views, forward_views


def invariance_loss(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Mean squared error between the two branches."""
    return F.mse_loss(z_a, z_b)


def variance_loss(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Hinge on the per-dimension standard deviation (unbiased variance), target 1."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances, divided by the dimension."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off_diag = cov - torch.diag(torch.diagonal(cov))
    return off_diag.pow(2).sum() / d


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    lambda_param: float = 25.0,
    mu_param: float = 25.0,
    nu_param: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg loss and its three (unweighted) terms."""
    if z_a.shape != z_b.shape or z_a.dim() != 2 or z_a.shape[0] < 2:
        raise ValueError(f"expected two N x D tensors with N > 1, got {z_a.shape}, {z_b.shape}")
    inv = invariance_loss(z_a, z_b)
    if gather_distributed and distributed.is_distributed():
        z_a, z_b = distributed.gather_with_grad(z_a), distributed.gather_with_grad(z_b)
    var = 0.5 * (variance_loss(z_a, eps) + variance_loss(z_b, eps))
    cov = covariance_loss(z_a) + covariance_loss(z_b)
    loss = lambda_param * inv + mu_param * var + nu_param * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


class VICRegLoss(nn.Module):
    """Module form of `vicreg_loss` (same call as `lightly.loss.VICRegLoss`)."""

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.lambda_param = lambda_param
        self.mu_param = mu_param
        self.nu_param = nu_param
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return self.terms(z_a, z_b)[0]

    def terms(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return vicreg_loss(
            z_a,
            z_b,
            self.lambda_param,
            self.mu_param,
            self.nu_param,
            self.eps,
            self.gather_distributed,
        )


class VICReg(Objective):
    """VICReg: backbone -> expander -> VICReg loss between views 0 and 1.

    - VICReg, Bardes, Ponce & LeCun, 2022, https://arxiv.org/abs/2105.04906

    No negatives and no teacher: collapse is prevented by explicit regularisers on the
    expander's outputs, `lambda * invariance + mu * variance + nu * covariance` (`vicreg_loss`):
    the two views' embeddings agree, every dimension keeps a standard deviation of at least 1,
    and dimensions are decorrelated.

    Args:
        backbone: Encoder mapping N x C x H x W images to N x D features, D =
            `backbone.out_dim`.
        lambda_param: Weight of the invariance term (25).
        mu_param: Weight of the variance term (25).
        nu_param: Weight of the covariance term (1).
        hidden_dim: Expander hidden width (8192 in the paper).
        out_dim: Expander output dimension (8192 in the paper).
        num_layers: Linear layers in the expander.
        head_batch_norm: BatchNorm in the expander.
        eps: Added to the variance before the square root.
        gather_distributed: Under DDP, variance and covariance over the global batch.

    Returns:
        `forward(views, backbone, step)` (views: at least 2 batches N x C x H x W, N > 1)
        returns `ObjectiveOutput(loss, logs)`: `loss` a 0-d tensor, `logs` the detached "loss"
        and the unweighted "invariance", "variance" and "covariance" terms.

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2], input_size=16)
        >>> vicreg = VICReg(backbone, hidden_dim=32, out_dim=32)
        >>> views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        >>> out = vicreg(views, backbone)
        >>> out.loss.backward()
        >>> sorted(out.logs)
        ['covariance', 'invariance', 'loss', 'variance']
    """

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        hidden_dim: int = 8192,
        out_dim: int = 8192,
        num_layers: int = 3,
        head_batch_norm: bool = True,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        in_dim = int(backbone.out_dim)
        self.head = VICRegProjectionHead(in_dim, hidden_dim, out_dim, num_layers, head_batch_norm)
        self.loss_fn = VICRegLoss(lambda_param, mu_param, nu_param, eps, gather_distributed)

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        z0, z1 = forward_views([self.head], encode_views(backbone, views[:2]))
        loss, terms = self.loss_fn.terms(z0, z1)
        return ObjectiveOutput(loss, {"loss": loss.detach(), **terms})
