"""Batched, vectorized multi-view augmentations for self-supervised learning.

Why: the views are what SSL learns from. SimCLR (Chen et al., 2020, arXiv:2002.05709) showed
that the composition "random resized crop + colour distortion (+ blur)" is what makes contrastive
learning work; MoCo v2 (arXiv:2003.04297), BYOL (arXiv:2006.07733, asymmetric blur/solarize),
VICReg (arXiv:2105.04906, BYOL's recipe), DINO (arXiv:2104.14294, multi-crop) and MAE
(arXiv:2111.06377, crop + flip only) tune that recipe. Torchvision's transforms run per image on
the CPU in data-loader workers; here every operation works on a whole N x C x H x W batch (uint8
or float) on whatever device holds it, with *per-sample* random parameters and no Python loop
over samples:

- random resized crop + horizontal flip: one `affine_grid` + `grid_sample` call for the batch
  (the flip is a sign in the affine matrix; crop boxes are sub-pixel);
- colour jitter (brightness, contrast, saturation, hue, torchvision's definitions; per-sample
  factors, applied with probability p, the four ops in a random order per call);
- random grayscale, gaussian blur (per-sample sigma, separable), solarize.

Random parameters are drawn on the CPU from an optional `torch.Generator` and moved to the
batch's device, so a seeded generator gives the same views on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_assets.ml.backbones import IMAGENET_MEAN, IMAGENET_STD

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


# --------------------------------------------------------------------------- random helpers


def _rand(n: int, generator: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """`n` uniform draws in [lo, hi) on the CPU."""
    return torch.rand(n, generator=generator) * (hi - lo) + lo


def _bernoulli(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    """`n` CPU booleans, True with probability p."""
    return torch.rand(n, generator=generator) < p


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """CPU vector of N values -> N x 1 x 1 x 1 on `x`'s device and dtype."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; floating input is returned as is (assumed [0, 1])."""
    if images.dim() != 4:
        raise ValueError(f"expected N x C x H x W, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or floating images, got {images.dtype}")
    return images


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """`(x - mean) / std` per channel."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


# --------------------------------------------------------------------------- geometry


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """Per-sample crop boxes `(x0, y0, w, h)` in pixels (N x 4, CPU), torchvision's
    RandomResizedCrop rule, vectorized: up to `attempts` (area, log-ratio) draws per sample, the
    first that fits wins, else the central crop clamped to `ratio`."""
    area = float(height * width)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    target = torch.rand(n, attempts, generator=generator) * (scale[1] - scale[0]) + scale[0]
    aspect = torch.exp(
        torch.rand(n, attempts, generator=generator) * (log_r[1] - log_r[0]) + log_r[0]
    )
    w = torch.sqrt(target * area * aspect)
    h = torch.sqrt(target * area / aspect)
    ok = (w <= width) & (h <= height) & (w > 0) & (h > 0)
    first = ok.float().argmax(dim=1, keepdim=True)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    found = ok.any(dim=1)
    # fallback: whole image, clamped to the allowed aspect ratio (torchvision)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = height * ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    x0 = torch.rand(n, generator=generator) * (width - w)
    y0 = torch.rand(n, generator=generator) * (height - h)
    return torch.stack([x0, y0, w, h], dim=1)


def crop_and_resize(
    images: Tensor,
    boxes: Tensor,
    size: int | tuple[int, int],
    flip: Tensor | None = None,
) -> Tensor:
    """Resample each image's box `(x0, y0, w, h)` to `size` (bilinear), optionally mirrored.

    One `affine_grid` + `grid_sample` for the batch. `boxes` (N x 4) and `flip` (N bools) may
    live on any device. With `align_corners=False`, the box edges map to the output's outer
    pixel edges, so the full-image box at the same size is the identity.
    """
    x = to_float(images)
    n, c, height, width = x.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    x0, y0, w, h = boxes.unbind(dim=1)
    sx = w / width
    sy = h / height
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    cx = (2.0 * x0 + w) / width - 1.0
    cy = (2.0 * y0 + h) / height - 1.0
    zeros = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zeros, cx], 1), torch.stack([zeros, sy, cy], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), [n, c, out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    images: Tensor,
    size: int | tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample random resized crop and horizontal flip, as one resampling call."""
    n, _, height, width = images.shape
    boxes = sample_crop_boxes(n, height, width, scale, ratio, generator)
    flip = _bernoulli(n, flip_prob, generator)
    return crop_and_resize(images, boxes, size, flip)


# --------------------------------------------------------------------------- colour


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """N x 3 x H x W -> N x 1 x H x W luma (single-channel input is returned as is)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """`clamp(x * f)`, per-sample `factor` (N,)."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the per-image mean luma: `clamp(f x + (1 - f) mean)`."""
    f = _per_sample(factor, x)
    channel_mean = x.mean(dim=(2, 3))  # luma is linear: mean of luma = luma of channel means
    if x.shape[1] == 3:
        channel_mean = channel_mean @ torch.tensor(_GRAY, device=x.device, dtype=x.dtype)
    mean = channel_mean.reshape(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image: `clamp(f x + (1 - f) gray)`."""
    if x.shape[1] == 1:
        return x
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * rgb_to_grayscale(x)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by per-sample `shift` (turns, in [-0.5, 0.5]), torchvision's HSV definition.

    A hue rotation keeps each pixel's max (V) and max - min (chroma), so the HSV round trip
    reduces to computing the hue sextant and `max - chroma * clamp(min(k, 4 - k), 0, 1)` with
    `k = (n + 6 h') mod 6`, n = 5, 3, 1 for R, G, B (the closed-form HSV -> RGB).
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    maxc = x.amax(dim=1)
    chroma = maxc - x.amin(dim=1)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h6 = torch.where(
        maxc == r,
        (g - b) / safe,
        torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    shift6 = 6.0 * shift.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)
    h6 = (h6 + shift6).unsqueeze(1)  # N x 1 x H x W
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h6, 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return (maxc.unsqueeze(1) - chroma.unsqueeze(1) * weight).clamp_(0.0, 1.0)


def color_jitter(
    images: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    prob: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision ColorJitter applied per sample with probability `prob`.

    Factors are uniform in `[max(0, 1 - s), 1 + s]` (hue shift in `[-hue, hue]`) per sample; the
    four operations run in one random order per call (torchvision draws it per image). Samples
    that are not jittered are returned unchanged.
    """
    x = to_float(images)
    n = x.shape[0]
    apply = _bernoulli(n, prob, generator)
    if not bool(apply.any()):
        return x
    ops: dict[str, tuple[float, Any]] = {
        "brightness": (brightness, adjust_brightness),
        "contrast": (contrast, adjust_contrast),
        "saturation": (saturation, adjust_saturation),
        "hue": (hue, adjust_hue),
    }
    order = torch.randperm(4, generator=generator).tolist()
    names = list(ops)
    out = x
    for idx in order:
        name = names[idx]
        strength, fn = ops[name]
        if strength <= 0:
            continue
        if name == "hue":
            factor = _rand(n, generator, -strength, strength)
        else:
            factor = _rand(n, generator, max(0.0, 1.0 - strength), 1.0 + strength)
        out = fn(out, factor)
    keep = _per_sample(apply.float(), out) > 0
    return torch.where(keep, out, x)


def random_grayscale(
    images: Tensor, prob: float = 0.2, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each sample by its luma (repeated over channels) with probability `prob`."""
    x = to_float(images)
    mask = _per_sample(_bernoulli(x.shape[0], prob, generator).float(), x) > 0
    return torch.where(mask, rgb_to_grayscale(x).expand_as(x), x)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable gaussian blur with per-sample `sigma` (N,), odd `kernel_size`, reflect padding.

    A sigma near 0 gives a delta kernel, i.e. the image unchanged.
    """
    x = to_float(images)
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if kernel_size == 1:
        return x
    n, c, height, width = x.shape
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, dtype=torch.float32)
    sig = sigma.float().clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2.0 * sig**2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype)
    pad_mode = "reflect" if min(height, width) > half else "replicate"
    xp = F.pad(x, (half, half, half, half), mode=pad_mode)
    # vertical pass then horizontal pass, each a weighted sum of shifted copies
    rows = sum(
        kernel[:, j].view(-1, 1, 1, 1) * xp[:, :, j : j + height, :] for j in range(kernel_size)
    )
    out = sum(
        kernel[:, j].view(-1, 1, 1, 1) * rows[:, :, :, j : j + width] for j in range(kernel_size)
    )
    assert isinstance(out, Tensor)
    return out


def random_gaussian_blur(
    images: Tensor,
    prob: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Blur each sample with probability `prob`, sigma uniform in `sigma`; the kernel is ~10% of
    the image side (odd, at least 3) unless given, as in SimCLR."""
    x = to_float(images)
    n, _, height, width = x.shape
    if kernel_size is None:
        kernel_size = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
    apply = _bernoulli(n, prob, generator)
    sig = _rand(n, generator, sigma[0], sigma[1])
    if not bool(apply.any()):
        return x
    return gaussian_blur(x, torch.where(apply, sig, torch.zeros_like(sig)), kernel_size)


def random_solarize(
    images: Tensor,
    prob: float = 0.2,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """With probability `prob` per sample, invert pixels at or above `threshold`."""
    x = to_float(images)
    mask = _per_sample(_bernoulli(x.shape[0], prob, generator).float(), x) > 0
    return torch.where(mask & (x >= threshold), 1.0 - x, x)


# --------------------------------------------------------------------------- views and presets


@dataclass(frozen=True)
class ViewSpec:
    """Augmentation recipe of one view (probabilities are per sample)."""

    size: int = 32
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5


def augment_view(
    images: Tensor, spec: ViewSpec, generator: torch.Generator | None = None
) -> Tensor:
    """One view of the batch: crop+flip, jitter, grayscale, blur, solarize, in [0, 1]."""
    x = random_resized_crop(images, spec.size, spec.scale, spec.ratio, spec.flip_prob, generator)
    if spec.jitter_prob > 0:
        x = color_jitter(
            x,
            spec.brightness,
            spec.contrast,
            spec.saturation,
            spec.hue,
            spec.jitter_prob,
            generator,
        )
    if spec.gray_prob > 0:
        x = random_grayscale(x, spec.gray_prob, generator)
    if spec.blur_prob > 0:
        x = random_gaussian_blur(x, spec.blur_prob, spec.blur_sigma, generator=generator)
    if spec.solarize_prob > 0:
        x = random_solarize(x, spec.solarize_prob, spec.solarize_threshold, generator)
    return x.clamp_(0.0, 1.0)  # resampling and blur can overshoot [0, 1] by rounding


@dataclass(frozen=True)
class MultiViewAugment:
    """Callable producing `len(views)` augmented views of a batch, normalised with mean/std
    (`mean=None` keeps [0, 1] values). Views come back in `views` order (DINO: globals first)."""

    views: tuple[ViewSpec, ...]
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    name: str = field(default="custom")

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        x = to_float(images)
        out = []
        for spec in self.views:
            v = augment_view(x, spec, generator)
            if self.mean is not None and self.std is not None:
                v = normalize(v, self.mean, self.std)
            out.append(v)
        return out


AUGMENTATION_PRESETS = ("simclr", "moco", "byol", "vicreg", "dino", "mae", "distill")


def build_augmentation(
    method: str,
    image_size: int = 32,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    small_images: bool | None = None,
    n_local_crops: int = 6,
    local_size: int | None = None,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    **overrides: Any,
) -> MultiViewAugment:
    """The paper recipe of `method` (ImageNet settings), with `overrides` applied to every view.

    - simclr: crop (0.08, 1), flip, jitter (0.8, 0.8, 0.8, 0.2) p=0.8, gray 0.2, blur 0.5.
    - moco (v2): crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, gray 0.2, blur 0.5.
    - byol / vicreg: crop (0.08, 1), jitter (0.4, 0.4, 0.2, 0.1) p=0.8, gray 0.2,
      blur 1.0 / 0.1, solarize 0.0 / 0.2 (asymmetric views).
    - dino: 2 global crops (`global_scale`) as BYOL's two views, plus `n_local_crops` local
      crops of `local_size` (default `image_size * 96 / 224` rounded up to a multiple of 4)
      with `local_scale` and blur 0.5.
    - mae: crop (0.2, 1) and flip only.
    - distill: one view, BYOL's first (crop (0.08, 1), jitter, gray, blur 0.5): teacher and
      student see the same crop (arXiv:2106.05237), so one view per image is enough.

    `small_images` (default: `image_size <= 64`) turns gaussian blur off, as SimCLR's CIFAR
    protocol (arXiv:2002.05709, appendix B.9) and solo-learn's CIFAR recipes do; pass
    `blur_prob=...` to override. Override keys are `ViewSpec` fields other than `size`.
    """
    bad = set(overrides) - (set(ViewSpec.__dataclass_fields__) - {"size"})
    if bad:
        raise ValueError(
            f"unknown ViewSpec overrides {sorted(bad)} (sizes: image_size, local_size)"
        )
    if small_images is None:
        small_images = image_size <= 64
    s = image_size
    byol_jitter = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
    if method == "simclr":
        jitter = {"brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2}
        base = ViewSpec(size=s, scale=(0.08, 1.0), **jitter, blur_prob=0.5)
        views = [base, base]
    elif method == "moco":
        base = ViewSpec(size=s, scale=(0.2, 1.0), blur_prob=0.5)
        views = [base, base]
    elif method in ("byol", "vicreg"):
        v1 = ViewSpec(size=s, scale=(0.08, 1.0), **byol_jitter, blur_prob=1.0)
        v2 = replace(v1, blur_prob=0.1, solarize_prob=0.2)
        views = [v1, v2]
    elif method == "dino":
        g1 = ViewSpec(size=s, scale=global_scale, **byol_jitter, blur_prob=1.0)
        g2 = replace(g1, blur_prob=0.1, solarize_prob=0.2)
        if local_size is None:
            local_size = max(4, math.ceil(s * 96 / 224 / 4) * 4)
        local = replace(g1, size=local_size, scale=local_scale, blur_prob=0.5)
        views = [g1, g2] + [local] * n_local_crops
    elif method == "distill":
        views = [ViewSpec(size=s, scale=(0.08, 1.0), **byol_jitter, blur_prob=0.5)]
    elif method == "mae":
        base = ViewSpec(size=s, scale=(0.2, 1.0), jitter_prob=0.0, gray_prob=0.0)
        views = [base]
    else:
        raise ValueError(f"unknown augmentation preset {method!r}; choose {AUGMENTATION_PRESETS}")
    if small_images and "blur_prob" not in overrides:
        views = [replace(v, blur_prob=0.0) for v in views]
    if overrides:
        views = [replace(v, **overrides) for v in views]
    return MultiViewAugment(
        tuple(views),
        tuple(mean) if mean is not None else None,
        tuple(std) if std is not None else None,
        name=method,
    )
