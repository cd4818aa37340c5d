"""Weighted sum of self-supervised objectives, built from configuration.

Why: combinations such as SimCLR + VICReg or DINO + MAE (e.g. iBOT-like "global + masked"
recipes; Zhou et al., 2022, arXiv:2111.07832) are just `L = sum_i w_i L_i` over existing
objectives, so this module adds no loss code: each component is built with `build_objective`
from its own config, receives the same views and backbone, and its logs are prefixed with its
name. Within one forward the backbone's features of a view tensor are computed once and shared
between components (`ViewCache`), so SimCLR + VICReg costs one backbone pass per view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ssl_assets.ml.objectives.base import Objective, ObjectiveOutput, ViewCache


class Hybrid(Objective):
    """`loss = sum_i weight_i * component_i.loss`.

    - e.g. iBOT's "global + masked" recipe, Zhou et al., 2022, https://arxiv.org/abs/2111.07832

    Combinations such as SimCLR + VICReg are a weighted sum of existing objectives, so this
    class adds no loss code: each component is built with `build_objective` from its own
    config and gets the same views and backbone; within one forward the backbone's features
    of a view are computed once and shared (`ViewCache`). `components` is a sequence of
    mappings, each with `name` (a registered objective), optional `weight` (default 1.0),
    optional `key` (log prefix / module name, default `name`; needed to use one objective
    twice) and the rest of that objective's configuration.

    Args:
        backbone: Encoder mapping N x C x H x W images to N x D features, D =
            `backbone.out_dim`; handed to every component.
        components: The components' configs, as above (no nested hybrids).

    Returns:
        `forward(views, backbone, step)` (views: batches N x C x H x W, as many as the most
        demanding component needs) returns `ObjectiveOutput(loss, logs)`: `loss` the weighted
        0-d sum, `logs` the total "loss" plus every component's logs as "<key>/<name>".
        `update_teacher` updates every component's teacher, logs prefixed the same way.

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2], input_size=16)
        >>> hybrid = Hybrid(
        ...     backbone,
        ...     components=[
        ...         {"name": "simclr", "hidden_dim": 32, "out_dim": 16},
        ...         {"name": "vicreg", "weight": 0.1, "hidden_dim": 32, "out_dim": 32},
        ...     ],
        ... )
        >>> views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        >>> out = hybrid(views, backbone)
        >>> out.loss.backward()
        >>> hybrid.weights
        {'simclr': 1.0, 'vicreg': 0.1}
        >>> [k for k in sorted(out.logs) if not k.startswith("vicreg/")]
        ['loss', 'simclr/contrastive_acc', 'simclr/loss']
    """

    def __init__(self, backbone: nn.Module, components: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        from ssl_assets.ml.objectives import build_objective

        if not components:
            raise ValueError("a hybrid objective needs at least one component")
        self.components = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for spec in components:
            cfg = dict(spec)
            name = cfg.pop("name")
            key = str(cfg.pop("key", name))
            weight = float(cfg.pop("weight", 1.0))
            if name == "hybrid":
                raise ValueError("hybrid objectives cannot be nested")
            if key in self.components:
                raise ValueError(f"duplicate component key {key!r}; set distinct `key`s")
            self.components[key] = build_objective(name, backbone=backbone, **cfg)
            self.weights[key] = weight
        self.num_views = max(c.num_views for c in self.components.values())

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        memo: Any = ViewCache(backbone)
        total: Tensor | None = None
        logs: dict[str, Tensor] = {}
        for key, component in self.components.items():
            out = component(views, memo, step)
            weighted = self.weights[key] * out.loss
            total = weighted if total is None else total + weighted
            logs.update({f"{key}/{k}": v for k, v in out.logs.items()})
        assert total is not None
        logs["loss"] = total.detach()
        return ObjectiveOutput(total, logs)

    def update_teacher(self, backbone: nn.Module, step: int, max_steps: int) -> dict[str, float]:
        logs: dict[str, float] = {}
        for key, component in self.components.items():
            logs.update(
                {
                    f"{key}/{k}": v
                    for k, v in component.update_teacher(backbone, step, max_steps).items()
                }
            )
        return logs
