"""Feature distillation from a frozen teacher (Beyer et al., 2022, "Knowledge distillation: A
good teacher is patient and consistent", arXiv:2106.05237).

Why: a large encoder pretrained elsewhere (a torchvision ImageNet ResNet-50, an encoder we
trained) often knows more than a small one can learn from a few thousand images on its own,
yet the small one is what serves on a CPU or a phone. Distillation trains the small student to
reproduce the teacher's features: the teacher is frozen (eval mode, no gradients, its
BatchNorm statistics untouched), both see *the same* augmented view (the paper's "consistent"
teaching: function matching on exactly the crops the student sees), and a linear map from the
student's features to the teacher's is trained with them, so the student's own features must
carry the teacher's linearly, which is what a linear probe reads afterwards. The loss is the
normalised MSE `2 - 2 cos(W s, t)` averaged over views, as LightlyTrain distils DINOv2
features into a student of another architecture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml.objectives.base import Objective, ObjectiveOutput, encode_views

__all__ = ["Distillation", "distillation_loss"]


def distillation_loss(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """(mean of `2 - 2 cos(s_i, t_i)`, mean cosine), the teacher treated as a constant."""
    cos = F.cosine_similarity(student, teacher.detach(), dim=-1)
    return (2.0 - 2.0 * cos).mean(), cos.mean().detach()


class Distillation(Objective):
    """A student trained to reproduce a frozen teacher's features on the same views.

    - Knowledge distillation: A good teacher is patient and consistent, Beyer et al., 2022,
      https://arxiv.org/abs/2106.05237

    The teacher is any `init_from` start (a torchvision weights name from the local hub cache,
    a `.pth`/`.safetensors` file, an encoder directory or its weights; the training asset
    resolves a registered model id to its verified weights) or a module. It stays in eval
    mode without gradients. Views normalised for the student are re-normalised for the
    teacher, and resized when the teacher expects another input size.

    Args:
        backbone: The student encoder (N x C x H x W -> N x D_s, D_s = `backbone.out_dim`).
        teacher: The teacher, a module with `out_dim` (and optionally `preprocessing`), or a
            start string as above.
        teacher_backbone: The teacher's architecture when a weights file does not say
            (a bare `.pth`); `teacher_backbone_kwargs` its constructor arguments.
        teacher_sha256: When given, the teacher's weights file must have this SHA-256.
        hidden_dim: 0 (default) for a linear map from student to teacher features, else the
            hidden width of a Linear-BN-ReLU-Linear head.

    Returns:
        `forward(views, backbone, step)` (views: at least one batch N x C x H x W) returns
        `ObjectiveOutput(loss, logs)`: `loss` a 0-d tensor in [0, 4], `logs` the detached
        "loss" and "cosine" (mean cosine similarity of the mapped student features to the
        teacher's).

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> teacher = build_backbone("small_cnn", widths=[8, 16, 32], strides=[2, 2, 2])
        >>> student = build_backbone("small_cnn", widths=[4, 8], strides=[2, 2])
        >>> distill = Distillation(student, teacher=teacher)
        >>> out = distill([torch.randn(4, 3, 16, 16)], student)
        >>> out.loss.backward()
        >>> out.loss.shape, sorted(out.logs)
        (torch.Size([]), ['cosine', 'loss'])
        >>> any(p.requires_grad for p in distill.teacher.parameters())
        False
    """

    num_views = 1

    def __init__(
        self,
        backbone: nn.Module,
        teacher: nn.Module | str,
        teacher_backbone: str | None = None,
        teacher_backbone_kwargs: Mapping[str, Any] | None = None,
        teacher_sha256: str | None = None,
        hidden_dim: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(teacher, str):
            teacher = _load_teacher(
                teacher, teacher_backbone, teacher_backbone_kwargs, teacher_sha256
            )
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher.eval()
        in_dim, out_dim = int(backbone.out_dim), int(teacher.out_dim)  # type: ignore[arg-type]
        if hidden_dim > 0:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, out_dim),
            )
        else:
            self.head = nn.Linear(in_dim, out_dim)
        self._student_prep = dict(getattr(backbone, "preprocessing", {}) or {})
        self._teacher_prep = dict(getattr(teacher, "preprocessing", {}) or {})

    def train(self, mode: bool = True) -> Distillation:
        """Train the head; the teacher stays in eval mode (frozen BatchNorm statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _teacher_input(self, view: Tensor) -> Tensor:
        """`view`, normalised for the student, as the teacher expects it."""
        s, t = self._student_prep, self._teacher_prep
        x = view
        if s.get("mean") and t.get("mean") and (s["mean"], s["std"]) != (t["mean"], t["std"]):
            shape = (1, -1, 1, 1)
            s_mean, s_std, t_mean, t_std = (
                torch.tensor(v, device=x.device, dtype=x.dtype).view(shape)
                for v in (s["mean"], s["std"], t["mean"], t["std"])
            )
            x = (x * s_std + s_mean - t_mean) / t_std
        size = t.get("input_size")
        if size and x.shape[-1] != int(size):
            x = F.interpolate(x, size=(int(size), int(size)), mode="bilinear", antialias=True)
        return x

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        features = encode_views(backbone, views)
        losses, cosines = [], []
        for view, feats in zip(views, features, strict=True):
            with torch.no_grad():
                target = self.teacher(self._teacher_input(view)).float()
            loss, cos = distillation_loss(self.head(feats).float(), target)
            losses.append(loss)
            cosines.append(cos)
        loss = torch.stack(losses).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "cosine": torch.stack(cosines).mean()})


def _load_teacher(
    source: str,
    backbone: str | None,
    backbone_kwargs: Mapping[str, Any] | None,
    sha256: str | None,
) -> nn.Module:
    from ssl_assets.ml.init_from import resolve_start, start_encoder

    start = resolve_start(source)
    if sha256 is not None and start.sha256 != sha256:
        raise ValueError(
            f"teacher {source}: SHA-256 {start.sha256} differs from the recorded {sha256}"
        )
    module, _ = start_encoder(start, backbone, backbone_kwargs)
    return module
