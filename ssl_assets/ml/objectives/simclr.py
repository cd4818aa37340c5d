"""SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi & Hinton, 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", arXiv:2002.05709).

Why: the two augmented views of an image are positives; the other 2(N-1) views in the batch are
negatives. With cosine similarity `sim` and temperature `tau`, for anchor i with positive j:
`l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau)`, averaged over all
2N anchors. SimCLR's quality grows with the number of negatives, so under data parallelism the
embeddings of all ranks are gathered with a gradient-preserving all-gather: each rank scores its
own 2n anchors against the 2N global candidates, and after DDP averages the gradients the loss
(mean over ranks) and the gradients equal those of one process on the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml import distributed
from ssl_assets.ml.heads import SimCLRProjectionHead
from ssl_assets.ml.objectives.base import Objective, ObjectiveOutput, encode_views, forward_views


def nt_xent_loss(
    z0: Tensor,
    z1: Tensor,
    temperature: float = 0.5,
    gather_distributed: bool = True,
) -> tuple[Tensor, Tensor]:
    """NT-Xent over two views; returns `(loss, top1_accuracy_of_the_positive)`.

    `z0[i]` and `z1[i]` are the embeddings of the two views of image i (N x D, unnormalised).
    With `gather_distributed` and an initialised process group of more than one rank, negatives
    come from all ranks (every rank must pass the same N).
    """
    if z0.shape != z1.shape or z0.dim() != 2:
        raise ValueError(f"expected two N x D tensors of equal shape, got {z0.shape}, {z1.shape}")
    if abs(temperature) < 1e-8:
        raise ValueError(f"illegal temperature {temperature}")
    n = z0.shape[0]
    z0 = F.normalize(z0, dim=1)
    z1 = F.normalize(z1, dim=1)
    if gather_distributed and distributed.is_distributed():
        all0, all1 = distributed.gather_with_grad(z0), distributed.gather_with_grad(z1)
        offset = distributed.rank() * n
    else:
        all0, all1, offset = z0, z1, 0
    total = all0.shape[0]

    anchors = torch.cat([z0, z1], dim=0)  # 2n local anchors
    candidates = torch.cat([all0, all1], dim=0)  # 2N global candidates
    logits = anchors @ candidates.T / temperature

    local = torch.arange(n, device=z0.device) + offset
    self_cols = torch.cat([local, local + total])
    pos_cols = torch.cat([local + total, local])
    rows = torch.arange(2 * n, device=z0.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_cols] = True
    logits = logits.masked_fill(self_mask, float("-inf"))

    loss = F.cross_entropy(logits, pos_cols)
    with torch.no_grad():
        acc = (logits.argmax(dim=1) == pos_cols).float().mean()
    return loss, acc


class NTXentLoss(nn.Module):
    """Module form of `nt_xent_loss` (same call as `lightly.loss.NTXentLoss(temperature)`)."""

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        return nt_xent_loss(z0, z1, self.temperature, self.gather_distributed)[0]


class SimCLR(Objective):
    """SimCLR: backbone -> projection head -> NT-Xent between views 0 and 1.

    - SimCLR, Chen et al., 2020, https://arxiv.org/abs/2002.05709

    The two augmented views of an image are positives, the other 2(N-1) views of the batch are
    negatives; the NT-Xent loss (`nt_xent_loss`) classifies each view's positive among all
    other views by cosine similarity / temperature. Contrastive quality grows with the number
    of negatives, hence `gather_distributed`. Default temperature 0.5 (the paper's CIFAR-10
    value; 0.1 for large ImageNet batches).

    Args:
        backbone: Encoder mapping N x C x H x W images to N x D features, D =
            `backbone.out_dim` (sizes the projection head).
        temperature: NT-Xent temperature tau.
        hidden_dim: Projection head's hidden width (default D).
        out_dim: Projection dimension, where the loss compares views.
        num_layers: Linear layers in the projection head (2 in SimCLR v1, 3 in v2).
        head_batch_norm: BatchNorm after every projection layer.
        gather_distributed: Under DDP, score against the negatives of all ranks.

    Returns:
        `forward(views, backbone, step)` (views: at least 2 batches N x C x H x W; 0 and 1 are
        used) returns `ObjectiveOutput(loss, logs)`: `loss` a 0-d tensor, `logs` the detached
        "loss" and "contrastive_acc" (top-1 accuracy of the positive among the 2N - 1 others).

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2], input_size=16)
        >>> simclr = SimCLR(backbone, temperature=0.5, hidden_dim=32, out_dim=16)
        >>> views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]  # 2 views, 4 images
        >>> out = simclr(views, backbone)
        >>> out.loss.backward()
        >>> out.loss.shape, sorted(out.logs)
        (torch.Size([]), ['contrastive_acc', 'loss'])
    """

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        temperature: float = 0.5,
        hidden_dim: int | None = None,
        out_dim: int = 128,
        num_layers: int = 2,
        head_batch_norm: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        in_dim = int(backbone.out_dim)
        self.head = SimCLRProjectionHead(
            in_dim, hidden_dim or in_dim, out_dim, num_layers, head_batch_norm
        )
        self.loss_fn = NTXentLoss(temperature, gather_distributed)

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        z0, z1 = forward_views([self.head], encode_views(backbone, views[:2]))
        loss, acc = nt_xent_loss(z0, z1, self.loss_fn.temperature, self.loss_fn.gather_distributed)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "contrastive_acc": acc})
