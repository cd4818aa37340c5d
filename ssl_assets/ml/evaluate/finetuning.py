"""Fine-tune a pre-trained encoder with a linear head: `full`, `partial` or `lora`.

Why three strategies: with many labels, updating every weight (`full`) usually wins; with few,
it overfits and forgets, and freezing the early, generic stages (`partial`) or training only a
low-rank update (`lora`, see `lora.py`) keeps the pre-trained features while adapting the rest.
Which one is best is an empirical, per-data-set question, so it is a config choice and all
three share the supervised loop (`supervised.train_classifier`, early stopping on val).

"Stages" per backbone (`backbone_stages`), in input-to-output order; `partial` freezes the
first `freeze_stages` of them:

- `small_cnn`: each conv-norm-ReLU block (`block0` .. `block4` by default);
- ResNet: `stem` (first conv + norm), `layer1` .. `layer4` (torchvision's residual stages);
- ViT: `stem` (patch embedding + class token), `block0` .. `blockN-1`, `norm` (final LayerNorm).

Frozen parts are also kept in eval mode, so their BatchNorm running statistics (buffers that
are part of the weights) do not drift; in `lora` mode the whole encoder is frozen that way, and
its original weights stay bit-identical. The caller's encoder is never modified: fine-tuning
works on a deep copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ssl_assets.ml.backbones import ResNetBackbone, SmallCNN, VisionTransformer
from ssl_assets.ml.evaluate.lora import apply_lora, merge_lora
from ssl_assets.ml.evaluate.supervised import (
    Classifier,
    SupervisedConfig,
    TrainLog,
    train_classifier,
)

STRATEGIES = ("full", "partial", "lora")


@dataclass(frozen=True)
class Stage:
    """A named group of encoder modules (plus loose parameters such as a class token)."""

    name: str
    modules: tuple[nn.Module, ...]
    params: tuple[nn.Parameter, ...] = ()

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()] + list(self.params)


def backbone_stages(backbone: nn.Module) -> list[Stage]:
    """The encoder's stages, input side first (see the module docstring)."""
    if isinstance(backbone, SmallCNN):
        layers = list(backbone.features)
        return [Stage(f"block{i // 3}", tuple(layers[i : i + 3])) for i in range(0, len(layers), 3)]
    if isinstance(backbone, ResNetBackbone):
        net = backbone.net
        stem = Stage("stem", (net.conv1, net.bn1))
        return [stem] + [
            Stage(n, (getattr(net, n),)) for n in ("layer1", "layer2", "layer3", "layer4")
        ]
    if isinstance(backbone, VisionTransformer):
        stem = Stage("stem", (backbone.patch_embed,), (backbone.cls_token,))
        blocks = [Stage(f"block{i}", (b,)) for i, b in enumerate(backbone.blocks)]
        return [stem, *blocks, Stage("norm", (backbone.norm,))]
    raise ValueError(f"no stage definition for {type(backbone).__name__}")


@dataclass
class FinetuneConfig(SupervisedConfig):
    """`SupervisedConfig` plus the strategy. `freeze_stages`: how many leading stages `partial`
    freezes. LoRA: rank `lora_rank`, scale `lora_alpha / lora_rank`, layer types
    `lora_targets` ("linear", "conv"), conv kernel sizes `lora_conv_kernels`. Encoder
    parameters train at `lr * backbone_lr_scale`, LoRA factors and the head at `lr`.

    Defaults measured on the default data (a demo SSL encoder): lr 3e-3 with the encoder at the
    same rate (`backbone_lr_scale` 1.0) reaches the linear probe's test accuracy in about 35
    epochs with early stopping (patience 10); the encoder at 0.1x gets there too but needs
    every epoch of 40. For weights pre-trained on another domain, 0.1 is the gentler choice."""

    strategy: str = "full"
    freeze_stages: int = 2
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = ("linear", "conv")
    lora_conv_kernels: tuple[int, ...] = (1, 3)
    backbone_lr_scale: float = 1.0
    lr: float = 3e-3
    patience: int | None = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        self.lora_targets = tuple(self.lora_targets)
        self.lora_conv_kernels = tuple(int(k) for k in self.lora_conv_kernels)

    def describe(self) -> dict[str, Any]:
        """The strategy-relevant settings, for model.json and the model card."""
        out: dict[str, Any] = {"strategy": self.strategy}
        if self.strategy == "partial":
            out["freeze_stages"] = self.freeze_stages
        if self.strategy == "lora":
            out.update(
                rank=self.lora_rank,
                alpha=self.lora_alpha,
                targets=list(self.lora_targets),
                conv_kernels=list(self.lora_conv_kernels),
                merged=True,
            )
        return out


@dataclass
class FinetuneResult:
    """`model`: the trained classifier as trained (LoRA wrappers still in place for `lora`);
    `deploy_model`: the same function as plain layers (LoRA merged), what is evaluated, saved
    and served. `frozen_stages` / `lora_layers` name what was frozen / adapted."""

    model: Classifier
    deploy_model: Classifier
    log: TrainLog
    strategy: str
    trainable_parameters: int
    total_parameters: int
    frozen_stages: list[str] = field(default_factory=list)
    lora_layers: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def finetune(
    backbone: nn.Module,
    num_classes: int,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    cfg: FinetuneConfig | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of `backbone` + a new linear head on canonical uint8 images with
    early stopping on val, using `cfg.strategy`. `backbone` itself is left untouched."""
    cfg = cfg or FinetuneConfig()
    encoder = copy.deepcopy(backbone)
    for p in encoder.parameters():
        p.requires_grad_(True)
    model = Classifier(encoder, num_classes, preprocessing, seed=cfg.seed)
    frozen_modules: list[nn.Module] = []
    frozen_names: list[str] = []
    lora_layers: list[str] = []
    if cfg.strategy == "partial":
        stages = backbone_stages(encoder)
        if not 0 <= cfg.freeze_stages <= len(stages):
            raise ValueError(
                f"freeze_stages must be in [0, {len(stages)}], got {cfg.freeze_stages}"
            )
        for stage in stages[: cfg.freeze_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
            frozen_modules.extend(stage.modules)
            frozen_names.append(stage.name)
    elif cfg.strategy == "lora":
        lora_layers = apply_lora(
            encoder, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.lora_conv_kernels
        )
        frozen_modules.append(encoder)  # eval mode throughout: BatchNorm statistics stay put
        frozen_names = [s.name for s in _safe_stages(backbone)]
    train_cfg = cfg
    if cfg.strategy == "lora":  # LoRA factors are new weights: train them at the head's rate
        train_cfg = copy.copy(cfg)
        train_cfg.backbone_lr_scale = 1.0
    log = train_classifier(
        model,
        train_images,
        train_labels,
        train_cfg,
        val_images,
        val_labels,
        frozen_modules=frozen_modules,
    )
    deploy = model
    if cfg.strategy == "lora":
        deploy = merge_lora(model)  # type: ignore[assignment]
        deploy.eval()
    return FinetuneResult(
        model=model,
        deploy_model=deploy,
        log=log,
        strategy=cfg.strategy,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_parameters=sum(p.numel() for p in model.parameters()),
        frozen_stages=frozen_names,
        lora_layers=lora_layers,
        config=cfg.describe(),
    )


def _safe_stages(backbone: nn.Module) -> Sequence[Stage]:
    try:
        return backbone_stages(backbone)
    except ValueError:
        return []
