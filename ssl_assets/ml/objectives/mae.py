"""MAE (He, Chen, Xie, Li, Dollar & Girshick, 2022, "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022, arXiv:2111.06377).

Why: reconstruct what you cannot see. A random 75% of the image patches is dropped; the ViT
encoder sees only the visible patches (cheap), a small decoder gets the encoded visible tokens
plus a shared learned mask token at every removed position (with position embeddings) and
predicts the pixels of each patch. The loss is the MSE on the *masked* patches only; with
`norm_pix_loss` each target patch is first normalised by its own mean and variance, which the
paper found to give better representations. Only the encoder is kept after pre-training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssl_assets.ml.backbones import (
    TransformerBlock,
    init_transformer_weights,
    sincos_pos_embed_2d,
)
from ssl_assets.ml.objectives.base import Objective, ObjectiveOutput


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """N x C x H x W -> N x L x (p*p*C), patches row-major, pixels (row, col, channel) inside."""
    n, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}x{w} not divisible by patch size {patch_size}")
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(n, c, gh, patch_size, gw, patch_size)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int, height: int, width: int) -> Tensor:
    """Inverse of `patchify`."""
    n = patches.shape[0]
    gh, gw = height // patch_size, width // patch_size
    x = patches.reshape(n, gh, gw, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, height, width)


def random_masking(
    batch_size: int,
    seq_len: int,
    mask_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample random split of `seq_len` patches: `(idx_keep, idx_mask)`.

    Keeps `int(seq_len * (1 - mask_ratio))` patches (at least one), as MAE's `random_masking`
    (argsort of uniform noise). Noise is drawn on the generator's device (CPU by default).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    num_keep = max(1, int(seq_len * (1.0 - mask_ratio)))
    noise = torch.rand(batch_size, seq_len, generator=generator)
    order = torch.argsort(noise, dim=1).to(device)
    return order[:, :num_keep], order[:, num_keep:]


def mae_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    norm_pix_loss: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """MSE on masked patches: `sum_i mask_i * mean_p (pred - target)^2 / sum_i mask_i`.

    `pred` and `target` are N x L x P patch pixels, `mask` N x L with 1 where the patch was
    removed. With `norm_pix_loss` the target patch is `(t - mean) / sqrt(var + eps)` over its P
    values (unbiased variance, as the reference code).
    """
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MAEDecoder(nn.Module):
    """Lightweight MAE decoder: embed, insert mask tokens, add positions, blocks, predict pixels."""

    pos_embed: Tensor

    def __init__(
        self,
        encoder_dim: int,
        grid_size: int,
        patch_size: int,
        in_channels: int = 3,
        decoder_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        pos = sincos_pos_embed_2d(grid_size, grid_size, decoder_dim)
        pos = torch.cat([torch.zeros(1, decoder_dim), pos], dim=0)  # class token at 0
        self.register_buffer("pos_embed", pos[None], persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(decoder_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.pred = nn.Linear(decoder_dim, patch_size * patch_size * in_channels)
        init_transformer_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, encoded: Tensor, idx_keep: Tensor, seq_len: int) -> Tensor:
        """`encoded`: N x (1 + k) x D from the encoder (class token first) -> N x L x P."""
        x = self.embed(encoded)
        n, _, dim = x.shape
        tokens = self.mask_token.expand(n, seq_len, dim).to(x.dtype)
        index = idx_keep.unsqueeze(-1).expand(-1, -1, dim)
        tokens = tokens.scatter(1, index, x[:, 1:])
        x = torch.cat([x[:, :1], tokens], dim=1) + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]


class MAE(Objective):
    """MAE on view 0 with a ViT backbone exposing `forward_encoder(x, idx_keep)`.

    - MAE, He et al., 2022, https://arxiv.org/abs/2111.06377

    Reconstruct what you cannot see: a random `mask_ratio` of the patches is dropped, the
    encoder sees only the visible ones (cheap), and a small decoder (`MAEDecoder`) predicts the
    pixels of the removed patches from the encoded visible tokens and a shared mask token;
    the loss (`mae_loss`) is the MSE on the masked patches only. Only the encoder is kept.
    Set `self.generator` to a `torch.Generator` (CPU) for reproducible masks.

    Args:
        backbone: A ViT (`build_backbone("vit")`) with `forward_encoder`, `patch_size`,
            `grid_size`, `embed_dim` and `in_channels`; images N x C x H x W with H and W
            multiples of `patch_size`.
        mask_ratio: Fraction of the L patches removed (0.75).
        norm_pix_loss: Normalise each target patch by its own mean and variance (the paper's
            better-representation variant).
        decoder_dim: Decoder width.
        decoder_depth: Decoder transformer blocks.
        decoder_heads: Decoder attention heads.

    Returns:
        `forward(views, backbone, step)` (views: at least 1 batch N x C x H x W; view 0 is
        used) returns `ObjectiveOutput(loss, logs)`: `loss` a 0-d tensor, `logs` the detached
        "loss" and "mask_ratio" (the fraction actually masked).

    Example:
        >>> import torch
        >>> from ssl_assets.ml.backbones import build_backbone
        >>> vit = build_backbone(
        ...     "vit", image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2
        ... )
        >>> mae = MAE(vit, mask_ratio=0.75, decoder_dim=16, decoder_depth=1, decoder_heads=2)
        >>> mae.generator = torch.Generator().manual_seed(0)
        >>> out = mae([torch.randn(4, 3, 16, 16)], vit)  # 16 patches, 12 masked per image
        >>> out.loss.backward()
        >>> float(out.logs["mask_ratio"])
        0.75
    """

    num_views = 1

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
    ) -> None:
        super().__init__()
        for attr in ("forward_encoder", "patch_size", "grid_size", "embed_dim", "in_channels"):
            if not hasattr(backbone, attr):
                raise TypeError(f"MAE needs a ViT backbone with `{attr}` (build_backbone('vit'))")
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = int(backbone.patch_size)
        self.decoder = MAEDecoder(
            int(backbone.embed_dim),
            int(backbone.grid_size),
            self.patch_size,
            int(backbone.in_channels),
            decoder_dim,
            decoder_depth,
            decoder_heads,
        )
        self.generator: torch.Generator | None = None

    def forward(
        self, views: Sequence[Tensor], backbone: nn.Module, step: int = 0
    ) -> ObjectiveOutput:
        self._check_views(views)
        images = views[0]
        target = patchify(images, self.patch_size)
        n, seq_len, _ = target.shape
        idx_keep, idx_mask = random_masking(
            n, seq_len, self.mask_ratio, images.device, self.generator
        )
        encoded = backbone.forward_encoder(images, idx_keep)
        pred = self.decoder(encoded, idx_keep, seq_len)
        mask = torch.zeros(n, seq_len, device=images.device)
        mask.scatter_(1, idx_mask, 1.0)
        loss = mae_loss(pred, target, mask, self.norm_pix_loss)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "mask_ratio": mask.mean()})
