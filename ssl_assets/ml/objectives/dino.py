"""DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294).

Why: self-distillation without labels. A student and a momentum teacher (EMA of the student,
momentum 0.996 -> 1 on a cosine schedule) output K-way distributions; the student is trained by
cross-entropy to match the teacher's distribution of a *different* view. Collapse is avoided by
balancing two operations on the teacher: *centering* (subtract a running mean `c` of teacher
outputs, updated `c <- m c + (1 - m) mean(teacher)` with m = 0.9, all-reduced under DDP) and
*sharpening* (a low teacher temperature, linearly warmed up from `warmup_teacher_temp` to
`teacher_temp`; student temperature 0.1). Multi-crop: the teacher sees only the global views,
the student sees global and local views, and every (teacher view, student view) pair except the
identical view is a loss term; the loss is the mean over those terms and the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml import distributed
from ssl_assets.ml.heads import DINOProjectionHead
from ssl_assets.ml.objectives.base import (
    Objective,
    ObjectiveOutput,
    cosine_momentum,
    encode_views,
    forward_views,
    make_teacher,
    update_momentum,
)


class DINOLoss(nn.Module):
    """DINO cross-entropy with teacher centering and sharpening.

    `forward(student_out, teacher_out, step)` takes lists of N x K logits: student outputs for
    all views (global views first, in the teacher's order) and teacher outputs for the global
    views. The centre buffer (1 x K) is updated after the loss is computed.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int = 65536,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_steps = warmup_teacher_temp_steps
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, step: int) -> float:
        """Linear warmup from `warmup_teacher_temp` to `teacher_temp`, then constant."""
        if step >= self.warmup_teacher_temp_steps or self.warmup_teacher_temp_steps <= 0:
            return self.teacher_temp
        t = max(step, 0) / self.warmup_teacher_temp_steps
        return self.warmup_teacher_temp + t * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(
        self,
        student_out: Sequence[Tensor],
        teacher_out: Sequence[Tensor],
        step: int = 0,
        update_center: bool = True,
    ) -> Tensor:
        if len(teacher_out) < 1 or len(student_out) < 1:
            raise ValueError("DINO needs at least one teacher and one student view")
        temp = self.teacher_temperature(step)
        teacher = torch.stack([t.detach() for t in teacher_out])  # T x N x K
        t_prob = F.softmax((teacher - self.center) / temp, dim=-1)
        s_logp = F.log_softmax(torch.stack(list(student_out)) / self.student_temp, dim=-1)
        # ce[t, s] = sum over batch and K of -p_t log q_s
        ce = -torch.einsum("tnk,snk->ts", t_prob, s_logp)
        same_view = torch.eye(ce.shape[0], ce.shape[1], dtype=torch.bool, device=ce.device)
        n_terms = ce.numel() - int(same_view.sum())
        if n_terms == 0:
            raise ValueError("DINO needs at least two views in total (identical views are skipped)")
        loss = ce.masked_fill(same_view, 0.0).sum() / (n_terms * teacher.shape[1])
        if update_center and self.training:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """`c <- m c + (1 - m) * mean of the teacher outputs` (global mean under DDP)."""
        teacher = teacher.reshape(-1, teacher.shape[-1])
        batch_sum = distributed.all_reduce_sum(teacher.sum(dim=0, keepdim=True))
        batch_center = batch_sum / (teacher.shape[0] * distributed.world_size())
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class DINO(Objective):
    """DINO: student = backbone + DINO head on all views, teacher = EMA copy on global views.

    - DINO, Caron et al., 2021, https://arxiv.org/abs/2104.14294

    Self-distillation without labels: the student's K-way distribution of each view is trained
    by cross-entropy to match the momentum teacher's distribution of every *other* global view
    (`DINOLoss`); centring and sharpening of the teacher's outputs balance each other so that
    neither the uniform nor a one-hot distribution wins (collapse). The first
    `num_global_views` views are the global crops (all views of equal resolution are batched
    together); the rest are local crops. Call `update_teacher` after each optimiser step, and
    `self.head.cancel_last_layer_gradients(epoch)` between backward and step if you freeze the
    last layer for the first epoch (DINO's recipe).

    Args:
        backbone: Encoder mapping N x C x H x W images to N x D features, D =
            `backbone.out_dim`; deep-copied into the teacher.
        out_dim: Number K of prototypes (the distributions' size; 65536 in the paper).
        hidden_dim: DINO head's hidden width.
        bottleneck_dim: DINO head's L2-normalised bottleneck before the prototypes.
        head_batch_norm: BatchNorm in the DINO head (off for ViTs).
        norm_last_layer: Fix the prototypes' weight-norm gains at 1 (more stable).
        num_global_views: How many leading views are global crops (seen by the teacher).
        teacher_temp: Teacher temperature after warm-up (sharpening).
        warmup_teacher_temp: Teacher temperature at step 0.
        warmup_teacher_temp_steps: Steps of the linear teacher-temperature warm-up.
        student_temp: Student temperature (0.1).
        center_momentum: Momentum of the teacher-output centre (0.9).
        momentum_base: Teacher EMA momentum at step 0 (0.996).
        momentum_final: Teacher EMA momentum at the last step (1.0).

    Returns:
        `forward(views, backbone, step)` (views: `num_global_views` global batches
        N x C x H x W, then any local crops N x C x h x w) returns `ObjectiveOutput(loss,
        logs)`: `loss` a 0-d tensor, `logs` the detached "loss", "teacher_temp" and
        "teacher_entropy" (log K: uniform teacher, near 0: one-hot). In training mode it also
        moves the centre. `update_teacher` returns `{"momentum": m}`.

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2], input_size=16)
        >>> dino = DINO(backbone, out_dim=64, hidden_dim=32, bottleneck_dim=16)
        >>> global_views = [torch.randn(4, 3, 16, 16) for _ in range(2)]
        >>> local_views = [torch.randn(4, 3, 8, 8) for _ in range(2)]
        >>> out = dino(global_views + local_views, backbone)
        >>> out.loss.backward()
        >>> sorted(out.logs)
        ['loss', 'teacher_entropy', 'teacher_temp']
        >>> dino.update_teacher(backbone, step=10, max_steps=10)
        {'momentum': 1.0}
    """

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        num_global_views: int = 2,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        momentum_base: float = 0.996,
        momentum_final: float = 1.0,
    ) -> None:
        super().__init__()
        in_dim = int(backbone.out_dim)
        self.num_global_views = num_global_views
        self.momentum_base = momentum_base
        self.momentum_final = momentum_final
        self.head = DINOProjectionHead(
            in_dim, hidden_dim, bottleneck_dim, out_dim, head_batch_norm, norm_last_layer
        )
        self.teacher_backbone = make_teacher(backbone)
        self.teacher_head = make_teacher(self.head)
        self.loss_fn = DINOLoss(
            out_dim,
            teacher_temp,
            warmup_teacher_temp,
            warmup_teacher_temp_steps,
            student_temp,
            center_momentum,
        )

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        global_views = views[: self.num_global_views]
        with torch.no_grad():
            teacher_out = forward_views([self.teacher_backbone, self.teacher_head], global_views)
            # entropy of the centred, sharpened teacher distribution (before the centre moves):
            # log(K) means uniform (centering won), ~0 means one-hot (sharpening won)
            t = torch.cat(teacher_out)
            p = F.softmax((t - self.loss_fn.center) / self.loss_fn.teacher_temperature(step), -1)
            entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
        student_out = forward_views([self.head], encode_views(backbone, views))
        loss = self.loss_fn(student_out, teacher_out, step)
        return ObjectiveOutput(
            loss,
            {
                "loss": loss.detach(),
                "teacher_temp": torch.tensor(self.loss_fn.teacher_temperature(step)),
                "teacher_entropy": entropy,
            },
        )

    def update_teacher(self, backbone: nn.Module, step: int, max_steps: int) -> dict[str, float]:
        m = cosine_momentum(step, max_steps, self.momentum_base, self.momentum_final)
        update_momentum(backbone, self.teacher_backbone, m)
        update_momentum(self.head, self.teacher_head, m)
        return {"momentum": m}
