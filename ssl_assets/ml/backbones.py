"""Encoders for self-supervised pre-training, each with the preprocessing its weights expect.

Why these three:

- torchvision ResNet-18/50 (He et al., 2016, "Deep Residual Learning for Image Recognition",
  arXiv:1512.03385), the standard SSL benchmark encoders. `small_image_stem=True` replaces the
  7x7/stride-2 conv and max-pool with a 3x3/stride-1 conv, the usual CIFAR adaptation used by
  SimCLR (arXiv:2002.05709, appendix B.9), so 32x32 inputs keep their resolution.
- `small_cnn`: five 3x3 conv blocks, four of them strided (~0.4 M parameters), that trains
  SimCLR at 32x32 at hundreds of images/s on two CPU cores, for tests, smoke runs and CPU-only
  deployments.
- a small ViT (Dosovitskiy et al., 2021, arXiv:2010.11929) with patch size 4 at 32x32 and fixed
  2-D sin-cos position embeddings as in MAE (He et al., 2022, arXiv:2111.06377); it exposes
  `forward_encoder(x, idx_keep)` for MAE's masked encoding and takes DINO's smaller local crops
  (positions are rescaled to the crop's patch grid).

`norm="group"` swaps every BatchNorm for GroupNorm (Wu & He, 2018, arXiv:1803.08494), so a
data-parallel run does not depend on per-rank batch statistics (and tests can compare a 2-rank
run with one process). `build_backbone(name, **cfg)` returns a module mapping N x C x H x W to
N x `out_dim` features and carrying `preprocessing` (input size, channels, mean, std, value
range), a JSON-serialisable dict to record next to the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocessing_dict(
    input_size: int,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """What a consumer must do to an image before the encoder: resize to `input_size`, scale
    pixels to `value_range`, then `(x - mean) / std` per channel."""
    mean = list(mean) if mean is not None else _default_stat(IMAGENET_MEAN, channels)
    std = list(std) if std is not None else _default_stat(IMAGENET_STD, channels)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} entries, got {len(mean)}/{len(std)}")
    return {
        "input_size": int(input_size),
        "channels": int(channels),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "value_range": [0.0, 1.0],
        "layout": "NCHW",
    }


def _default_stat(stat: Sequence[float], channels: int) -> list[float]:
    if channels == 3:
        return list(stat)
    return [sum(stat) / len(stat)] * channels


def _norm_layer(norm: str, groups: int) -> Callable[[int], nn.Module]:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda c: nn.GroupNorm(math.gcd(groups, c), c)
    raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")


class SmallCNN(nn.Module):
    """Fast CPU encoder: a stack of 3x3 conv-norm-ReLU blocks, global average pool.

    Defaults: widths (16, 32, 64, 128, 256), strides (1, 2, 2, 2, 2) (32x32 -> 2x2), ~0.39 M
    parameters, `out_dim = widths[-1]`. Cost is dominated by the full-resolution first block;
    `strides=(2, 2, 2, 2)` with `widths=(32, 64, 128, 256)` is about twice as fast again.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (1, 2, 2, 2, 2),
        norm: str = "batch",
        gn_groups: int = 8,
        input_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != len(strides) or not widths:
            raise ValueError("widths and strides must be non-empty and of equal length")
        norm_layer = _norm_layer(norm, gn_groups)
        layers: list[nn.Module] = []
        c = in_channels
        for width, stride in zip(widths, strides, strict=True):
            layers += [
                nn.Conv2d(c, width, 3, stride, 1, bias=False),
                norm_layer(width),
                nn.ReLU(inplace=True),
            ]
            c = width
        self.features = nn.Sequential(*layers)
        self.out_dim = c
        self.preprocessing = preprocessing_dict(input_size, in_channels, mean, std)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


class ResNetBackbone(nn.Module):
    """torchvision ResNet without its classifier (`fc = Identity`), optionally with a small-image
    stem and GroupNorm."""

    def __init__(
        self,
        depth: int = 18,
        in_channels: int = 3,
        small_image_stem: bool = False,
        norm: str = "batch",
        gn_groups: int = 32,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        import torchvision  # imported here: the other backbones do not need it

        factories = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}
        if depth not in factories:
            raise ValueError(f"depth must be one of {sorted(factories)}, got {depth}")
        net = factories[depth](weights=None, norm_layer=_norm_layer(norm, gn_groups))
        if small_image_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        if input_size is None:
            input_size = 32 if small_image_stem else 224
        self.preprocessing = preprocessing_dict(input_size, in_channels, mean, std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def sincos_pos_embed_2d(
    grid_h: int, grid_w: int, dim: int, scale_h: float = 1.0, scale_w: float = 1.0
) -> Tensor:
    """MAE's fixed 2-D sin-cos embedding, (grid_h * grid_w) x dim, row-major over the grid.

    Half of `dim` encodes the row, half the column; `scale_*` stretch positions so that a
    coarser grid spans the same coordinate range as the reference grid (like interpolation).
    """
    if dim % 4:
        raise ValueError(f"embedding dim must be divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def emb_1d(pos: Tensor) -> Tensor:
        out = pos[:, None] * omega[None, :]
        return torch.cat([out.sin(), out.cos()], dim=1)

    ys = torch.arange(grid_h, dtype=torch.float64) * scale_h
    xs = torch.arange(grid_w, dtype=torch.float64) * scale_w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    emb = torch.cat([emb_1d(gy.reshape(-1)), emb_1d(gx.reshape(-1))], dim=1)
    return emb.float()


class Attention(nn.Module):
    """Multi-head self-attention via `scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, seq, dim = x.shape
        qkv = self.qkv(x).reshape(n, seq, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, seq, dim))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (ViT / MAE): x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_transformer_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    """Small ViT with a class token; `forward` returns the normalised class token (N x D)."""

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} not a multiple of patch {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.out_dim = embed_dim
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer(
            "pos_embed",
            sincos_pos_embed_2d(self.grid_size, self.grid_size, embed_dim)[None],
            persistent=False,
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.preprocessing = preprocessing_dict(image_size, in_channels, mean, std)
        init_transformer_weights(self)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)

    def _pos_embed(self, grid_h: int, grid_w: int) -> Tensor:
        if grid_h == self.grid_size and grid_w == self.grid_size:
            return self.pos_embed
        emb = sincos_pos_embed_2d(
            grid_h,
            grid_w,
            self.embed_dim,
            scale_h=(self.grid_size - 1) / max(grid_h - 1, 1),
            scale_w=(self.grid_size - 1) / max(grid_w - 1, 1),
        )
        return emb[None].to(self.pos_embed.device)

    def patch_tokens(self, x: Tensor) -> Tensor:
        """Patch embeddings plus position embeddings, N x L x D (no class token)."""
        x = self.patch_embed(x)
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        return x + self._pos_embed(grid_h, grid_w).to(x.dtype)

    def forward_encoder(self, x: Tensor, idx_keep: Tensor | None = None) -> Tensor:
        """Encode the patches at `idx_keep` (N x k indices, all if None) with a class token in
        front; returns the normalised tokens, N x (1 + k) x D (MAE's masked encoder)."""
        tokens = self.patch_tokens(x)
        if idx_keep is not None:
            index = idx_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, index)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_encoder(x)[:, 0]


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(**cfg: Any) -> nn.Module:
        return ResNetBackbone(depth=depth, **cfg)

    return build


def _vit(**defaults: Any) -> Callable[..., nn.Module]:
    def build(**cfg: Any) -> nn.Module:
        return VisionTransformer(**{**defaults, **cfg})

    return build


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": _resnet(18),
    "resnet50": _resnet(50),
    "small_cnn": SmallCNN,
    "vit": _vit(),
    "vit_tiny": _vit(embed_dim=192, depth=12, num_heads=3),
}


#: what `"auto"` means per device type: the standard photo encoder where a GPU can train it,
#: the smallest standard ResNet where only a CPU can (ResNet-50 trains ~1/3 as fast again)
AUTO_BACKBONES = {"cuda": "resnet50", "cpu": "resnet18"}


def resolve_backbone_name(name: str, device: str) -> str:
    """`name`, or for "auto" the backbone `AUTO_BACKBONES` gives the device type of `device`
    ("cuda:1" -> "cuda"; any other device type gets the CPU choice)."""
    if name != "auto":
        return name
    kind = str(device).split(":")[0]
    return AUTO_BACKBONES.get(kind, AUTO_BACKBONES["cpu"])


def build_backbone(name: str, **cfg: Any) -> nn.Module:
    """Build a registered backbone by name (`BACKBONES`); `cfg` goes to its constructor.

    The result has `out_dim` (feature size) and `preprocessing` (see `preprocessing_dict`).
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}") from None
    return factory(**cfg)
