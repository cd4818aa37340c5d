"""MoCo v2 (He, Fan, Wu, Xie & Girshick, 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning", arXiv:1911.05722; Chen, Fan, Girshick & He, 2020, "Improved Baselines
with Momentum Contrastive Learning", arXiv:2003.04297).

Why: contrastive learning wants many negatives, but a batch only holds a few. MoCo keeps a FIFO
queue of K keys produced by a slowly moving *key encoder* (an exponential moving average of the
query encoder, `theta_k <- m theta_k + (1 - m) theta_q`, m = 0.999) so the queued keys stay
consistent. The loss is InfoNCE with one positive key and the K queued negatives:
`-log exp(q.k+/tau) / (exp(q.k+/tau) + sum_i exp(q.queue_i/tau))`, tau = 0.2 in v2.
v2 adds the MLP head and SimCLR-style augmentation. After each step the current keys are enqueued
and the oldest dequeued; under DDP the keys of all ranks are gathered first (as the paper's
`concat_all_gather`), so every rank keeps the same queue. The queue is a registered buffer, so it
is saved and restored with the objective's `state_dict`.

Not implemented: the paper's shuffling BN across GPUs (use a BatchNorm-free or GroupNorm
backbone, or accept the small leak, under DDP).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml import distributed
from ssl_assets.ml.heads import MoCoProjectionHead
from ssl_assets.ml.objectives.base import (
    Objective,
    ObjectiveOutput,
    cosine_momentum,
    encode_views,
    make_teacher,
    update_momentum,
)

__all__ = [
    "MoCo",
    "NegativeQueue",
    "info_nce_queue_loss",
    "update_key_encoder",
    "update_momentum",
]


class NegativeQueue(nn.Module):
    """FIFO queue of `size` L2-normalised keys of dimension `dim`, stored as a ring buffer.

    `dequeue_and_enqueue(keys)` overwrites the oldest entries with `keys` (wrapping around the
    end; a batch larger than the queue keeps its last `size` keys). Initialised with random unit
    vectors, as in the paper. Both `queue` (size x dim) and `ptr` are persistent buffers.
    """

    queue: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, gather_distributed: bool = True) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got {size}, {dim}")
        self.size = size
        self.dim = dim
        self.gather_distributed = gather_distributed
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def negatives(self) -> Tensor:
        """A detached copy of the queue (safe to use in a graph before the next enqueue)."""
        return self.queue.detach().clone()

    def ordered(self) -> Tensor:
        """The queue from oldest to newest entry."""
        return torch.roll(self.queue, shifts=-int(self.ptr), dims=0)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: Tensor) -> None:
        """Enqueue `keys` (N x dim), dropping the N oldest entries."""
        if self.gather_distributed:
            keys = distributed.gather_no_grad(keys)
        keys = keys.detach().to(self.queue.dtype)
        if keys.shape[0] > self.size:
            keys = keys[-self.size :]
        n = keys.shape[0]
        idx = (int(self.ptr) + torch.arange(n, device=self.queue.device)) % self.size
        self.queue[idx] = keys
        self.ptr.fill_((int(self.ptr) + n) % self.size)

    def forward(self, keys: Tensor) -> None:
        self.dequeue_and_enqueue(keys)


def info_nce_queue_loss(
    q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2
) -> tuple[Tensor, Tensor]:
    """MoCo's InfoNCE: positive `q_i . k_i`, negatives `q_i . queue_j`; returns (loss, top1 acc).

    `q` and `k` are N x D (normalised here); `queue` is K x D, already normalised.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.T
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        acc = (logits.argmax(dim=1) == 0).float().mean()
    return loss, acc


def update_key_encoder(query: nn.Module, key: nn.Module, momentum: float = 0.999) -> None:
    """MoCo's momentum update `theta_k <- m theta_k + (1 - m) theta_q` (alias of
    `update_momentum`)."""
    update_momentum(query, key, momentum)


class MoCo(Objective):
    """MoCo v2: query = head(backbone(view0)), key = key_head(key_backbone(view1)).

    - MoCo, He et al., 2020, https://arxiv.org/abs/1911.05722
    - MoCo v2, Chen et al., 2020, https://arxiv.org/abs/2003.04297

    Contrastive learning with many more negatives than a batch holds: the keys of past batches
    wait in a FIFO queue, produced by a slowly moving key encoder (an EMA of the query encoder)
    so that they stay consistent; InfoNCE scores each query's key against the queue.
    `symmetric=True` also scores view1 against view0's key and enqueues both key batches (as in
    MoCo v3 / solo-learn); the paper's v2 loss is the asymmetric one (default). The key encoder
    is a deep copy of the backbone and head made here, so build the objective before wrapping the
    backbone in DDP. Momentum is constant (`momentum_final=None`, the paper) or cosine-increasing.
    Default queue of 4096 keys suits small data sets (the paper uses 65536 on ImageNet).

    Args:
        backbone: Encoder mapping N x C x H x W images to N x D features, D =
            `backbone.out_dim`; deep-copied into the key encoder.
        temperature: InfoNCE temperature (0.2 in v2).
        queue_size: Number K of queued negative keys, each `out_dim`-dimensional.
        momentum: EMA momentum m of the key encoder (start value when `momentum_final` is set).
        momentum_final: If set, m rises to it along BYOL's cosine schedule.
        hidden_dim: Projection head's hidden width (default D).
        out_dim: Key / query dimension.
        num_layers: Linear layers in the projection head.
        head_batch_norm: BatchNorm in the projection head (off in v2).
        symmetric: Also score view1's query against view0's key.
        gather_distributed: Under DDP, enqueue the keys of all ranks (one queue everywhere).

    Returns:
        `forward(views, backbone, step)` (views: at least 2 batches N x C x H x W) returns
        `ObjectiveOutput(loss, logs)`: `loss` a 0-d tensor, `logs` the detached "loss" and
        "contrastive_acc" (top-1 accuracy of the key among the K + 1 candidates). In training
        mode with gradients on, it also enqueues this batch's keys. `update_teacher` returns
        `{"momentum": m}`.

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2], input_size=16)
        >>> moco = MoCo(backbone, queue_size=16, hidden_dim=32, out_dim=16)
        >>> views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        >>> out = moco(views, backbone)
        >>> out.loss.backward()
        >>> sorted(out.logs), int(moco.queue.ptr)  # 4 keys enqueued
        (['contrastive_acc', 'loss'], 4)
        >>> moco.update_teacher(backbone, step=1, max_steps=10)
        {'momentum': 0.999}
    """

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum: float = 0.999,
        momentum_final: float | None = None,
        hidden_dim: int | None = None,
        out_dim: int = 128,
        num_layers: int = 2,
        head_batch_norm: bool = False,
        symmetric: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        in_dim = int(backbone.out_dim)
        self.temperature = temperature
        self.momentum = momentum
        self.momentum_final = momentum_final
        self.symmetric = symmetric
        self.head = MoCoProjectionHead(
            in_dim, hidden_dim or in_dim, out_dim, num_layers, head_batch_norm
        )
        self.key_backbone = make_teacher(backbone)
        self.key_head = make_teacher(self.head)
        self.queue = NegativeQueue(queue_size, out_dim, gather_distributed)

    @torch.no_grad()
    def _keys(self, x: Tensor) -> Tensor:
        return F.normalize(self.key_head(self.key_backbone(x)), dim=1)

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        negatives = self.queue.negatives()
        q0 = self.head(encode_views(backbone, views[:1])[0])
        k1 = self._keys(views[1])
        loss, acc = info_nce_queue_loss(q0, k1, negatives, self.temperature)
        keys = [k1]
        if self.symmetric:
            q1 = self.head(encode_views(backbone, views[1:2])[0])
            k0 = self._keys(views[0])
            loss1, acc1 = info_nce_queue_loss(q1, k0, negatives, self.temperature)
            loss, acc = 0.5 * (loss + loss1), 0.5 * (acc + acc1)
            keys.append(k0)
        if self.training and torch.is_grad_enabled():
            for k in keys:
                self.queue.dequeue_and_enqueue(k)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "contrastive_acc": acc})

    def update_teacher(self, backbone: nn.Module, step: int, max_steps: int) -> dict[str, float]:
        m = self.momentum
        if self.momentum_final is not None:
            m = cosine_momentum(step, max_steps, self.momentum, self.momentum_final)
        update_momentum(backbone, self.key_backbone, m)
        update_momentum(self.head, self.key_head, m)
        return {"momentum": m}
