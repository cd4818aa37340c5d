"""Projection and prediction heads of the self-supervised methods (after lightly's `heads.py`).

Why separate heads: every method trains the backbone through a small MLP whose output is thrown
away after pre-training. Their shapes follow the papers (defaults are the papers' ImageNet sizes;
shrink them for small encoders):

- SimCLR (Chen et al., 2020, arXiv:2002.05709): Linear-BN-ReLU-Linear(-BN), 128-d output.
- MoCo v2 (Chen et al., 2020, arXiv:2003.04297): 2-layer MLP, 2048 hidden, 128-d, no BN.
- BYOL (Grill et al., 2020, arXiv:2006.07733): projector and predictor Linear-BN-ReLU-Linear,
  4096 hidden, 256-d.
- VICReg (Bardes et al., 2022, arXiv:2105.04906): three 8192-d layers, BN-ReLU after the first two.
- DINO (Caron et al., 2021, arXiv:2104.14294): 3-layer GELU MLP to a 256-d bottleneck, L2
  normalisation, then a weight-normalised linear layer to K prototypes.

`batch_norm=False` gives BatchNorm-free heads (needed when comparing DDP against one process).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: one MLP block: (in_features, out_features, batch_norm, activation)
Block = tuple[int, int, bool, nn.Module | None]


class ProjectionHead(nn.Module):
    """MLP built from blocks `(in, out, batch_norm, activation)`; Linear has no bias before BN."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_dim, out_dim, batch_norm, activation in blocks:
            layers.append(nn.Linear(in_dim, out_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out_dim))
            if activation is not None:
                layers.append(activation)
        self.layers = nn.Sequential(*layers)
        self.out_dim = blocks[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _mlp_blocks(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    batch_norm: bool,
    last_batch_norm: bool,
) -> list[Block]:
    if num_layers < 2:
        raise ValueError(f"num_layers must be >= 2, got {num_layers}")
    blocks: list[Block] = [(in_dim, hidden_dim, batch_norm, nn.ReLU(inplace=True))]
    for _ in range(num_layers - 2):
        blocks.append((hidden_dim, hidden_dim, batch_norm, nn.ReLU(inplace=True)))
    blocks.append((hidden_dim, out_dim, last_batch_norm, None))
    return blocks


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR projector (v1: 2 layers; v2: 3), BN on every layer when `batch_norm`."""

    def __init__(
        self,
        in_dim: int = 2048,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(
            _mlp_blocks(in_dim, hidden_dim, out_dim, num_layers, batch_norm, batch_norm)
        )


class MoCoProjectionHead(ProjectionHead):
    """MoCo v2 projector: Linear-ReLU-Linear, no BN by default (v3: 3 layers with BN)."""

    def __init__(
        self,
        in_dim: int = 2048,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(
            _mlp_blocks(in_dim, hidden_dim, out_dim, num_layers, batch_norm, batch_norm)
        )


class BYOLProjectionHead(ProjectionHead):
    """BYOL projector: Linear-BN-ReLU-Linear (4096 hidden, 256 out)."""

    def __init__(
        self,
        in_dim: int = 2048,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(_mlp_blocks(in_dim, hidden_dim, out_dim, 2, batch_norm, False))


class BYOLPredictionHead(ProjectionHead):
    """BYOL predictor q: same shape as the projector, from the projection to the projection."""

    def __init__(
        self,
        in_dim: int = 256,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(_mlp_blocks(in_dim, hidden_dim, out_dim, 2, batch_norm, False))


class VICRegProjectionHead(ProjectionHead):
    """VICReg expander: `num_layers` layers, BN-ReLU after all but the last (8192-d in paper)."""

    def __init__(
        self,
        in_dim: int = 2048,
        hidden_dim: int = 8192,
        out_dim: int = 8192,
        num_layers: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(_mlp_blocks(in_dim, hidden_dim, out_dim, num_layers, batch_norm, False))


class WeightNormLinear(nn.Module):
    """Bias-free `y = g * x @ (v / ||v||).T` with per-output-row norm (Salimans & Kingma, 2016).

    Written out rather than via `torch.nn.utils.parametrizations.weight_norm` so that the module
    deep-copies (for DINO's teacher) and pickles without parametrisation caveats.
    """

    def __init__(self, in_dim: int, out_dim: int, fixed_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02, a=-2.0, b=2.0)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fixed_norm)

    @property
    def weight(self) -> Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class DINOProjectionHead(nn.Module):
    """DINO head: 3-layer GELU MLP -> bottleneck -> L2 norm -> weight-normalised linear to K."""

    def __init__(
        self,
        in_dim: int = 2048,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer: int = -1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim)]
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fixed_norm=norm_last_layer)
        self.freeze_last_layer = freeze_last_layer
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.layers(x), dim=-1)
        return self.last_layer(x)

    def cancel_last_layer_gradients(self, epoch: int) -> None:
        """DINO freezes the prototypes for the first `freeze_last_layer` epochs: call after
        `backward()` and before the optimiser step."""
        if epoch >= self.freeze_last_layer:
            return
        for p in self.last_layer.parameters():
            p.grad = None
