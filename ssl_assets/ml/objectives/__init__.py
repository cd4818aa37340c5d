"""Self-supervised objectives behind one interface, and the `build_objective` registry.

Why a registry: assets and configs name a method by string (`"simclr"`, `"dino"`, or a
`"hybrid"` of weighted components) and pass its hyper-parameters as plain data. Every objective
is an `nn.Module` built as `build_objective(name, backbone=backbone, **cfg)` (the backbone gives
`out_dim` for the heads and is deep-copied for momentum teachers), called as
`objective(views, backbone, step) -> ObjectiveOutput(loss, logs)`, with
`objective.update_teacher(backbone, step, max_steps)` after each optimiser step.

Papers: SimCLR arXiv:2002.05709, MoCo v2 arXiv:1911.05722 / arXiv:2003.04297, BYOL
arXiv:2006.07733, VICReg arXiv:2105.04906, DINO arXiv:2104.14294, MAE arXiv:2111.06377; distillation from a frozen teacher
arXiv:2106.05237.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ssl_assets.ml.objectives.base import (
    Objective,
    ObjectiveOutput,
    ViewCache,
    cosine_momentum,
    encode_views,
    make_teacher,
    update_momentum,
)
from ssl_assets.ml.objectives.byol import BYOL, byol_loss, normalized_mse
from ssl_assets.ml.objectives.dino import DINO, DINOLoss
from ssl_assets.ml.objectives.distill import Distillation, distillation_loss
from ssl_assets.ml.objectives.hybrid import Hybrid
from ssl_assets.ml.objectives.mae import MAE, mae_loss, patchify, random_masking, unpatchify
from ssl_assets.ml.objectives.moco import MoCo, NegativeQueue, info_nce_queue_loss
from ssl_assets.ml.objectives.simclr import NTXentLoss, SimCLR, nt_xent_loss
from ssl_assets.ml.objectives.vicreg import VICReg, VICRegLoss, vicreg_loss

OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "vicreg": VICReg,
    "dino": DINO,
    "mae": MAE,
    "hybrid": Hybrid,
    "distill": Distillation,
}


def build_objective(name: str, **cfg: Any) -> Objective:
    """Build a registered objective; `cfg` must contain `backbone` plus the method's options.

    Example: `build_objective("hybrid", backbone=bb, components=[{"name": "simclr"},
    {"name": "vicreg", "weight": 0.1, "hidden_dim": 512, "out_dim": 512}])`.
    """
    try:
        factory = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}") from None
    if "backbone" not in cfg:
        raise TypeError("build_objective needs backbone=<module with out_dim>")
    return factory(**cfg)


__all__ = [
    "BYOL",
    "DINO",
    "DINOLoss",
    "Distillation",
    "Hybrid",
    "MAE",
    "MoCo",
    "NTXentLoss",
    "NegativeQueue",
    "OBJECTIVES",
    "Objective",
    "ObjectiveOutput",
    "SimCLR",
    "VICReg",
    "VICRegLoss",
    "ViewCache",
    "build_objective",
    "byol_loss",
    "cosine_momentum",
    "distillation_loss",
    "encode_views",
    "info_nce_queue_loss",
    "mae_loss",
    "make_teacher",
    "normalized_mse",
    "nt_xent_loss",
    "patchify",
    "random_masking",
    "unpatchify",
    "update_momentum",
    "vicreg_loss",
]
