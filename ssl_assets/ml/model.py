"""The model a training run optimises, and the ways it can be set up before the first step.

Why one module: `SSLModel` puts the backbone and the objective (with its heads and teachers)
into one `nn.Module`, so one `DistributedDataParallel` wraps the whole student and one forward
call runs a multi-view objective within DDP's contract. Gradient checkpointing patches instance
`forward`s and a warm start loads a trained encoder's weights; both act on the backbone and must
happen in a set order relative to building the objective (see each function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_assets.ml.backbones import ResNetBackbone, SmallCNN
from ssl_assets.ml.objectives import Objective, ObjectiveOutput


class SSLModel(nn.Module):
    """Backbone + objective as one module, so one `DistributedDataParallel` wraps both and one
    forward call runs a whole objective: `forward(views, step) -> ObjectiveOutput`."""

    def __init__(self, backbone: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.backbone = backbone
        self.objective = objective
        # a compiled view of the backbone, kept out of the module tree (and the state_dict)
        self.__dict__["encoder_fn"] = None

    def forward(self, views: Sequence[Tensor], step: int = 0) -> ObjectiveOutput:
        compiled = self.__dict__["encoder_fn"]  # not `or`: a compiled module has no __bool__
        return self.objective(views, self.backbone if compiled is None else compiled, step)

    def compile_backbone(self, **kwargs: Any) -> None:
        """Route the objective's backbone calls through `torch.compile(backbone)`."""
        self.__dict__["encoder_fn"] = torch.compile(self.backbone, **kwargs)


def _patch_training_forward(module: nn.Module, train_forward: Callable[..., Tensor]) -> None:
    """Use `train_forward` instead of `module.forward` while training with autograd on."""
    plain = module.forward

    def forward(*args: Any, **kwargs: Any) -> Tensor:
        if module.training and torch.is_grad_enabled():
            return train_forward(*args, **kwargs)
        return plain(*args, **kwargs)

    module.forward = forward  # type: ignore[method-assign]


def enable_gradient_checkpointing(backbone: nn.Module) -> int:
    """Recompute activations in the backward pass instead of storing them (Chen et al., 2016,
    arXiv:1604.06174), per transformer block (ViT), per residual stage (ResNet) or per
    conv block (small_cnn). Patches instance `forward`s, so the state_dict is unchanged; call it
    *after* building the objective (teachers are deep copies and must not share the patch).
    Returns how many segments are checkpointed."""
    from torch.utils.checkpoint import checkpoint, checkpoint_sequential

    def per_module(module: nn.Module) -> None:
        plain = module.forward
        _patch_training_forward(
            module, lambda *a, **k: checkpoint(plain, *a, use_reentrant=False, **k)
        )

    if isinstance(backbone, SmallCNN):
        features = backbone.features
        segments = max(1, len(features) // 3)
        _patch_training_forward(
            features,
            lambda x: checkpoint_sequential(features, segments, x, use_reentrant=False),
        )
        return segments
    if isinstance(backbone, ResNetBackbone):
        net = backbone.net
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        for stage in stages:
            per_module(stage)
        return len(stages)
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        for block in blocks:
            per_module(block)
        return len(blocks)
    raise ValueError(f"no gradient-checkpointing recipe for {type(backbone).__name__}")


def load_encoder_weights(
    backbone: nn.Module, path: str | Path, backbone_name: str | None = None
) -> None:
    """Warm start: load a weights file strictly, our `encoder.safetensors` or any start
    `ssl_assets.ml.init_from` reads (a torchvision `.pth` from the hub cache, a local
    `.pth`/`.safetensors`, a fine-tuned model's weights). If the `encoder.json` /
    `model.json` beside it names another backbone than `backbone_name`, fail early."""
    from ssl_assets.ml.init_from import load_start

    load_start(backbone, path, backbone_name)
