"""Image quality issues in the style of cleanvision, computed on whole batches in numpy.

Why: dark, overexposed, blurry, flat, grayscale and oddly shaped images waste training compute and
skew a self-supervised encoder, so curation scores and flags them. cleanvision's issue set and its
default thresholds are a well-known reference, but it scores one PIL image at a time from files;
here the same ideas run vectorised on N x H x W x 3 uint8 batches of already-decoded images.

Scores live in [0, 1] and, as in cleanvision, *low means more of an issue*; an image is flagged
when its score is below the threshold in `QualityThresholds`:

- dark: 99th percentile of perceived brightness sqrt(.241 R^2 + .691 G^2 + .068 B^2) / 255;
- light: 1 - 5th percentile of the same brightness;
- blurry: 1 - exp(-0.01 x std of the clipped 3x3 edge filter (PIL's FIND_EDGES)) on the luma
  downsampled to at most 64 px a side, plus cleanvision's contrast term (std of the 256-bin luma
  histogram, counts scaled to a 64x64 image, through the same 1 - exp(-0.01 x) and kept only
  above 0.18) so flat images count as low information rather than blurry; capped at 1.
  Unlike PIL, border pixels (which PIL copies unfiltered) are left out of the edge std;
- low_information: 0.1 x entropy (bits) of the pooled 768-bin RGB histogram (PIL's entropy()),
  capped at 1;
- grayscale: 99th percentile of the per-pixel channel spread (max - min) / 255; cleanvision
  flags only exact R = G = B, the default threshold here tolerates codec rounding;
- odd_size: min(s / m, m / s) for s = sqrt(height x width) of the original image and m the
  median of the reference set (default: the batch itself);
- odd_aspect_ratio: min(a / m, m / a) for a = width / height and m the reference median; for a
  dataset of square images this is cleanvision's min(w / h, h / w).

The two geometric scores are relative to a dataset, so `quality_scores` records the raw original
sizes and `quality_flags` (or `geometry_scores`) compares them with a reference, for example every
image curated so far.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ssl_assets.curation.hashing import batch_slices, check_batch, grayscale, resize

ISSUES = (
    "dark",
    "light",
    "blurry",
    "low_information",
    "grayscale",
    "odd_size",
    "odd_aspect_ratio",
)
BLUR_MAX_SIDE = 64
BLUR_NORMALIZING_FACTOR = 0.01
BLUR_CONTRAST_THRESHOLD = 0.18
ENTROPY_NORMALIZING_FACTOR = 0.1


@dataclass(frozen=True)
class QualityThresholds:
    """Flag an image for an issue when its score is below the threshold (cleanvision-like)."""

    dark: float = 0.37
    light: float = 0.05
    blurry: float = 0.29
    low_information: float = 0.3
    grayscale: float = 0.02
    odd_size: float = 0.2
    odd_aspect_ratio: float = 0.35

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _brightness_scores(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rgb.reshape(len(rgb), -1, 3).astype(np.float32)
    bright = np.sqrt(x[..., 0] ** 2 * 0.241 + x[..., 1] ** 2 * 0.691 + x[..., 2] ** 2 * 0.068)
    p5, p99 = np.percentile(bright / 255.0, [5, 99], axis=1)
    return np.clip(p99, 0, 1), np.clip(1 - p5, 0, 1)


def _blur_scores(rgb: np.ndarray) -> np.ndarray:
    n, h, w = rgb.shape[:3]
    luma = grayscale(rgb)
    ratio = max(h, w) / BLUR_MAX_SIDE
    if ratio > 1:
        luma = resize(luma, max(1, int(h // ratio)), max(1, int(w // ratio)))
    luma = np.clip(np.rint(luma), 0, 255)
    if luma.shape[1] >= 3 and luma.shape[2] >= 3:
        centre = luma[:, 1:-1, 1:-1]
        neighbours = sum(
            luma[:, 1 + dy : luma.shape[1] - 1 + dy, 1 + dx : luma.shape[2] - 1 + dx]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if dy or dx
        )
        edges = np.clip(8 * centre - neighbours, 0, 255).reshape(n, -1)
        edge_std = edges.std(axis=1)
    else:
        edge_std = np.zeros(n)
    pixels = luma.shape[1] * luma.shape[2]
    codes = luma.reshape(n, -1).astype(np.int64) + 256 * np.arange(n)[:, None]
    hist = np.bincount(codes.ravel(), minlength=256 * n).reshape(n, 256)
    hist_std = (hist * (BLUR_MAX_SIDE**2 / pixels)).std(axis=1)
    blur = 1 - np.exp(-BLUR_NORMALIZING_FACTOR * edge_std)
    contrast = 1 - np.exp(-BLUR_NORMALIZING_FACTOR * hist_std)
    contrast[contrast <= BLUR_CONTRAST_THRESHOLD] = 0
    return np.minimum(blur + contrast, 1)


def _entropy_scores(rgb: np.ndarray) -> np.ndarray:
    n = len(rgb)
    codes = rgb.reshape(n, -1, 3).astype(np.int64) + np.array([0, 256, 512])
    codes = codes.reshape(n, -1) + 768 * np.arange(n)[:, None]
    hist = np.bincount(codes.ravel(), minlength=768 * n).reshape(n, 768)
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return np.minimum(ENTROPY_NORMALIZING_FACTOR * entropy, 1)


def _grayscale_scores(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    spread = spread.reshape(len(rgb), -1)
    return np.percentile(spread.astype(np.float32), 99, axis=1) / 255.0


def _sizes(orig_sizes: np.ndarray, n: int | None = None) -> np.ndarray:
    sizes = np.asarray(orig_sizes, dtype=np.float64).reshape(-1, 2)
    if n is not None and len(sizes) != n:
        raise ValueError(f"expected {n} (height, width) rows, got {len(sizes)}")
    if (sizes <= 0).any():
        raise ValueError("image sizes must be positive")
    return sizes


def quality_scores(images: np.ndarray, orig_sizes: np.ndarray) -> pd.DataFrame:
    """Per-image quality scores of an N x H x W x 3 uint8 batch (one row per image).

    `orig_sizes` is N x 2 (height, width) of the original files, since the canonical images may
    have been resized. Columns: `<issue>_score` for dark, light, blurry, low_information and
    grayscale, plus `orig_height`, `orig_width` for the relative geometric issues.
    """
    images = check_batch(images)
    sizes = _sizes(orig_sizes, len(images))
    columns: dict[str, list[np.ndarray]] = {
        f"{k}_score": [] for k in ("dark", "light", "blurry", "low_information", "grayscale")
    }
    for part in batch_slices(images, pixels_per_batch=1 << 22):
        rgb = images[part]
        dark, light = _brightness_scores(rgb)
        columns["dark_score"].append(dark)
        columns["light_score"].append(light)
        columns["blurry_score"].append(_blur_scores(rgb))
        columns["low_information_score"].append(_entropy_scores(rgb))
        columns["grayscale_score"].append(_grayscale_scores(rgb))
    frame = pd.DataFrame(
        {k: np.concatenate(v or [np.empty(0)]).astype(np.float64) for k, v in columns.items()}
    )
    frame["orig_height"] = sizes[:, 0].astype(np.int64)
    frame["orig_width"] = sizes[:, 1].astype(np.int64)
    return frame


def geometry_scores(sizes: np.ndarray, reference_sizes: np.ndarray | None = None) -> pd.DataFrame:
    """`odd_size_score` and `odd_aspect_ratio_score` of (height, width) rows vs a reference set."""
    sizes = _sizes(sizes)
    ref = sizes if reference_sizes is None or len(reference_sizes) == 0 else _sizes(reference_sizes)
    side = np.sqrt(sizes[:, 0] * sizes[:, 1])
    aspect = sizes[:, 1] / sizes[:, 0]
    median_side = np.median(np.sqrt(ref[:, 0] * ref[:, 1])) if len(ref) else 1.0
    median_aspect = np.median(ref[:, 1] / ref[:, 0]) if len(ref) else 1.0
    return pd.DataFrame(
        {
            "odd_size_score": np.minimum(side / median_side, median_side / side),
            "odd_aspect_ratio_score": np.minimum(aspect / median_aspect, median_aspect / aspect),
        }
    )


def quality_flags(
    scores: pd.DataFrame,
    thresholds: QualityThresholds | None = None,
    reference_sizes: np.ndarray | None = None,
) -> pd.DataFrame:
    """Boolean `is_<issue>` columns for every issue in `ISSUES`, aligned with `scores`' index.

    `scores` comes from `quality_scores`; `reference_sizes` (M x 2, height and width) is the
    dataset the geometric issues are judged against (default: the rows of `scores`).
    """
    thresholds = thresholds or QualityThresholds()
    sizes = scores[["orig_height", "orig_width"]].to_numpy()
    all_scores = scores.copy()
    if len(scores):
        geometry = geometry_scores(sizes, reference_sizes)
        all_scores["odd_size_score"] = geometry["odd_size_score"].to_numpy()
        all_scores["odd_aspect_ratio_score"] = geometry["odd_aspect_ratio_score"].to_numpy()
    else:
        all_scores["odd_size_score"] = all_scores["odd_aspect_ratio_score"] = np.empty(0)
    limits = thresholds.as_dict()
    return pd.DataFrame(
        {f"is_{k}": all_scores[f"{k}_score"].to_numpy() < limits[k] for k in ISSUES},
        index=scores.index,
    )
