"""Image quality issues in the style of cleanvision, computed on whole batches in numpy.

Why: dark, overexposed, blurry, flat, grayscale and oddly shaped images waste training compute and
skew a self-supervised encoder, so curation scores and flags them. cleanvision's issue set and its
default thresholds are a well-known reference, but it scores one PIL image at a time from files;
here the same ideas run vectorised on N x H x W x 3 uint8 batches of already-decoded images.

Scores live in [0, 1] and, as in cleanvision, *low means more of an issue*; an image is flagged
when its score is below the issue's threshold.

Each issue type is one registered object, as cleanvision registers its issue managers
(`cleanvision/issue_managers/`): its name, a one-line description, its default threshold, whether
it excludes an image by default or only annotates it, and its rule. The registry (`REGISTRY`,
filled by `register`) is the only list of issues: `ISSUES`, `default_thresholds()`,
`default_excluding()`, the score columns of `quality_scores`, the flag columns of `quality_flags`
and the exclusion reasons curation accepts are all read from it, so adding an issue type is one
`register(...)` call. A rule is one of:

- `PixelIssue`: a per-image score of a chunk of canonical pixels (`PixelChunk`). Values several
  rules share (perceived brightness, luma) are cached properties of the chunk, computed once per
  chunk whichever rules ask for them;
- `GeometryIssue`: a score of original (height, width) sizes relative to a reference set of
  sizes. These scores depend on the dataset, so `quality_scores` records the raw original sizes
  and `quality_flags` (or `geometry_scores`) compares them with a reference, for example every
  image curated so far.

The formula of each issue is documented on its scoring function, next to its registration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, KeysView, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import numpy as np
import pandas as pd

from ssl_assets.curation.hashing import batch_slices, check_batch, grayscale, resize

BLUR_MAX_SIDE = 64
BLUR_NORMALIZING_FACTOR = 0.01
BLUR_CONTRAST_THRESHOLD = 0.18
ENTROPY_NORMALIZING_FACTOR = 0.1
PIXELS_PER_CHUNK = 1 << 22
_NAME = re.compile(r"[a-z][a-z0-9_]*")


# -- issue types and the registry -----------------------------------------------------------------


class PixelChunk:
    """A chunk of N x H x W x 3 uint8 canonical images and the values several rules share.

    Each cached property is computed on first use and then reused by every rule that reads it,
    so adding a rule that reuses, say, the brightness costs no second pass over the pixels.
    """

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    def __len__(self) -> int:
        return len(self.rgb)

    @cached_property
    def brightness(self) -> np.ndarray:
        """Perceived brightness sqrt(.241 R^2 + .691 G^2 + .068 B^2) / 255 per pixel, N x H*W.

        The weights are cleanvision's (after Finley's "HSP" colour model): green looks brighter
        than red, red brighter than blue.
        """
        x = self.rgb.reshape(len(self.rgb), -1, 3).astype(np.float32)
        bright = np.sqrt(x[..., 0] ** 2 * 0.241 + x[..., 1] ** 2 * 0.691 + x[..., 2] ** 2 * 0.068)
        return bright / 255.0

    @cached_property
    def brightness_percentiles(self) -> tuple[np.ndarray, np.ndarray]:
        """5th and 99th percentile of `brightness` per image (one partition for both)."""
        p5, p99 = np.percentile(self.brightness, [5, 99], axis=1)
        return p5, p99

    @cached_property
    def blur_luma(self) -> np.ndarray:
        """ITU-R 601-2 luma, downsampled to at most `BLUR_MAX_SIDE` px a side and rounded to
        integer levels 0..255 as PIL's "L" images hold it; N x h x w float64."""
        h, w = self.rgb.shape[1:3]
        luma = grayscale(self.rgb)
        ratio = max(h, w) / BLUR_MAX_SIDE
        if ratio > 1:
            luma = resize(luma, max(1, int(h // ratio)), max(1, int(w // ratio)))
        return np.clip(np.rint(luma), 0, 255)


PixelScorer = Callable[[PixelChunk], np.ndarray]
GeometryScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ImageIssue:
    """One issue type: flag an image when its score is below `threshold`.

    `description` is the one line a person reads next to the flag; `excludes` says whether the
    issue excludes an image by default (otherwise it only annotates it).
    """

    name: str
    description: str
    threshold: float
    excludes: bool

    @property
    def score_column(self) -> str:
        return f"{self.name}_score"

    @property
    def flag_column(self) -> str:
        return f"is_{self.name}"


@dataclass(frozen=True, kw_only=True)
class PixelIssue(ImageIssue):
    """An issue scored per image from its canonical pixels: `score(chunk)` -> N floats in [0, 1]."""

    score: PixelScorer = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class GeometryIssue(ImageIssue):
    """An issue scored from original sizes relative to a reference set:
    `score(sizes, reference)` (N x 2 and M x 2 positive (height, width) rows) -> N floats."""

    score: GeometryScorer = field(repr=False)


_REGISTRY: dict[str, ImageIssue] = {}
REGISTRY: Mapping[str, ImageIssue] = MappingProxyType(_REGISTRY)
"""Every issue type in registration order (read-only; add with `register`)."""
ISSUES: KeysView[str] = REGISTRY.keys()
"""The issue names in registration order (a live view of the registry)."""


def register(issue: ImageIssue) -> ImageIssue:
    """Add an issue type to the registry (after the existing ones) and return it."""
    if not isinstance(issue, PixelIssue | GeometryIssue):
        raise TypeError(f"expected a PixelIssue or GeometryIssue, got {type(issue).__name__}")
    if not _NAME.fullmatch(issue.name):
        raise ValueError(f"issue names are lower_snake_case identifiers, got {issue.name!r}")
    if issue.name in _REGISTRY:
        raise ValueError(f"issue {issue.name!r} is already registered")
    _REGISTRY[issue.name] = issue
    return issue


def unregister(name: str) -> ImageIssue:
    """Remove an issue type from the registry and return it."""
    return _REGISTRY.pop(name)


def pixel_issues() -> list[PixelIssue]:
    return [i for i in _REGISTRY.values() if isinstance(i, PixelIssue)]


def geometry_issues() -> list[GeometryIssue]:
    return [i for i in _REGISTRY.values() if isinstance(i, GeometryIssue)]


def default_thresholds() -> dict[str, float]:
    """Default threshold of every issue, by name (a fresh dict: edit it freely)."""
    return {name: issue.threshold for name, issue in _REGISTRY.items()}


def default_excluding() -> list[str]:
    """Names of the issues that exclude an image by default; the others only annotate."""
    return [name for name, issue in _REGISTRY.items() if issue.excludes]


# -- the issue types, in cleanvision's order ------------------------------------------------------


def _dark_score(chunk: PixelChunk) -> np.ndarray:
    """99th percentile of the perceived brightness (`PixelChunk.brightness`): an image is dark
    when even its brightest pixels are dim."""
    return np.clip(chunk.brightness_percentiles[1], 0, 1)


def _light_score(chunk: PixelChunk) -> np.ndarray:
    """1 - 5th percentile of the perceived brightness: an image is overexposed when even its
    darkest pixels are bright."""
    return np.clip(1 - chunk.brightness_percentiles[0], 0, 1)


def _blurry_score(chunk: PixelChunk) -> np.ndarray:
    """1 - exp(-0.01 x std of the clipped 3x3 edge filter (PIL's FIND_EDGES)) on the luma
    downsampled to at most 64 px a side, plus cleanvision's contrast term (std of the 256-bin
    luma histogram, counts scaled to a 64x64 image, through the same 1 - exp(-0.01 x) and kept
    only above 0.18) so flat images count as low information rather than blurry; capped at 1.

    Unlike PIL, border pixels (which PIL copies unfiltered) are left out of the edge std.
    """
    luma = chunk.blur_luma
    n = len(luma)
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


def _low_information_score(chunk: PixelChunk) -> np.ndarray:
    """0.1 x entropy (bits) of the pooled 768-bin RGB histogram (PIL's entropy()), capped at 1."""
    rgb = chunk.rgb
    n = len(rgb)
    codes = rgb.reshape(n, -1, 3).astype(np.int64) + np.array([0, 256, 512])
    codes = codes.reshape(n, -1) + 768 * np.arange(n)[:, None]
    hist = np.bincount(codes.ravel(), minlength=768 * n).reshape(n, 768)
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return np.minimum(ENTROPY_NORMALIZING_FACTOR * entropy, 1)


def _grayscale_score(chunk: PixelChunk) -> np.ndarray:
    """99th percentile of the per-pixel channel spread (max - min) / 255. cleanvision flags only
    exact R = G = B; the default threshold here tolerates codec rounding."""
    rgb = chunk.rgb
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    spread = spread.reshape(len(rgb), -1)
    return np.percentile(spread.astype(np.float32), 99, axis=1) / 255.0


def _odd_size_score(sizes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """min(s / m, m / s) for s = sqrt(height x width) of the original image and m the median of
    the reference set: as far below 1 for half the usual side as for twice it."""
    side = np.sqrt(sizes[:, 0] * sizes[:, 1])
    median_side = np.median(np.sqrt(reference[:, 0] * reference[:, 1])) if len(reference) else 1.0
    return np.minimum(side / median_side, median_side / side)


def _odd_aspect_ratio_score(sizes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """min(a / m, m / a) for a = width / height and m the reference median; for a dataset of
    square images this is cleanvision's min(w / h, h / w)."""
    aspect = sizes[:, 1] / sizes[:, 0]
    median_aspect = np.median(reference[:, 1] / reference[:, 0]) if len(reference) else 1.0
    return np.minimum(aspect / median_aspect, median_aspect / aspect)


register(
    PixelIssue(
        name="dark",
        description="Underexposed: even the brightest pixels are dim.",
        threshold=0.37,
        excludes=True,
        score=_dark_score,
    )
)
register(
    PixelIssue(
        name="light",
        description="Overexposed: even the darkest pixels are bright.",
        threshold=0.05,
        excludes=True,
        score=_light_score,
    )
)
register(
    PixelIssue(
        name="blurry",
        description="Blurry: few sharp edges for the image's contrast.",
        threshold=0.29,
        excludes=True,
        score=_blurry_score,
    )
)
register(
    PixelIssue(
        name="low_information",
        description="Low information: few distinct colours (flat, nearly blank).",
        threshold=0.3,
        excludes=True,
        score=_low_information_score,
    )
)
register(
    PixelIssue(
        name="grayscale",
        description="Grayscale: red, green and blue are (nearly) equal everywhere.",
        threshold=0.02,
        excludes=False,
        score=_grayscale_score,
    )
)
register(
    GeometryIssue(
        name="odd_size",
        description="Odd size: the original is much smaller or larger than the dataset's usual.",
        threshold=0.2,
        excludes=False,
        score=_odd_size_score,
    )
)
register(
    GeometryIssue(
        name="odd_aspect_ratio",
        description="Odd aspect ratio: the original is much wider or taller than usual.",
        threshold=0.35,
        excludes=False,
        score=_odd_aspect_ratio_score,
    )
)


# -- scoring and flagging -------------------------------------------------------------------------


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
    have been resized. Columns: `<issue>_score` for every registered `PixelIssue`, in registry
    order, plus `orig_height`, `orig_width` for the relative geometric issues.
    """
    images = check_batch(images)
    sizes = _sizes(orig_sizes, len(images))
    issues = pixel_issues()
    columns: dict[str, list[np.ndarray]] = {i.score_column: [] for i in issues}
    for part in batch_slices(images, pixels_per_batch=PIXELS_PER_CHUNK):
        chunk = PixelChunk(images[part])
        for issue in issues:
            columns[issue.score_column].append(issue.score(chunk))
    frame = pd.DataFrame(
        {k: np.concatenate(v or [np.empty(0)]).astype(np.float64) for k, v in columns.items()}
    )
    frame["orig_height"] = sizes[:, 0].astype(np.int64)
    frame["orig_width"] = sizes[:, 1].astype(np.int64)
    return frame


def geometry_scores(sizes: np.ndarray, reference_sizes: np.ndarray | None = None) -> pd.DataFrame:
    """`<issue>_score` of every registered `GeometryIssue` (`odd_size_score`,
    `odd_aspect_ratio_score`, ...) of (height, width) rows vs a reference set (default: `sizes`)."""
    sizes = _sizes(sizes)
    ref = sizes if reference_sizes is None or len(reference_sizes) == 0 else _sizes(reference_sizes)
    return pd.DataFrame({i.score_column: i.score(sizes, ref) for i in geometry_issues()})


def resolve_thresholds(thresholds: Mapping[str, float] | None = None) -> dict[str, float]:
    """Every issue's threshold: the registry defaults, overridden by `thresholds` (by name)."""
    unknown = set(thresholds or {}) - set(_REGISTRY)
    if unknown:
        raise ValueError(f"thresholds name unknown issues {sorted(unknown)}; known: {list(ISSUES)}")
    return {**default_thresholds(), **{k: float(v) for k, v in (thresholds or {}).items()}}


def quality_flags(
    scores: pd.DataFrame,
    thresholds: Mapping[str, float] | None = None,
    reference_sizes: np.ndarray | None = None,
) -> pd.DataFrame:
    """Boolean `is_<issue>` columns for every issue in `ISSUES`, aligned with `scores`' index.

    `scores` comes from `quality_scores`; `thresholds` maps issue names to thresholds (missing
    names keep their defaults); `reference_sizes` (M x 2, height and width) is the dataset the
    geometric issues are judged against (default: the rows of `scores`).
    """
    limits = resolve_thresholds(thresholds)
    all_scores = scores.copy()
    geometry = geometry_scores(scores[["orig_height", "orig_width"]].to_numpy(), reference_sizes)
    for column in geometry:
        all_scores[column] = geometry[column].to_numpy()
    return pd.DataFrame(
        {
            issue.flag_column: all_scores[issue.score_column].to_numpy() < limits[name]
            for name, issue in _REGISTRY.items()
        },
        index=scores.index,
    )


def issue_table(
    catalog: pd.DataFrame,
    scores: pd.DataFrame,
    thresholds: Mapping[str, float],
    exclude: Sequence[str],
) -> pd.DataFrame:
    """One row per (image, flagged issue): image_id, batch, issue, score, threshold, excludes.

    `catalog`: admitted catalog rows (image_id, batch, orig_height, orig_width) in curation
    order; `scores`: long-form quality scores (image_id, score, value). The geometric issues
    are judged against every admitted image, so they are recomputed here, not stored."""
    columns = ["image_id", "batch", "issue", "score", "threshold", "excludes"]
    if catalog.empty:
        return pd.DataFrame(columns=columns)
    wide = (
        scores.pivot(index="image_id", columns="score", values="value")
        .reindex(catalog["image_id"])
        .reset_index()
        if len(scores)
        else pd.DataFrame({"image_id": catalog["image_id"]})
    )
    wide["orig_height"] = catalog["orig_height"].to_numpy()
    wide["orig_width"] = catalog["orig_width"].to_numpy()
    geometry = geometry_scores(wide[["orig_height", "orig_width"]].to_numpy())
    for column in geometry:
        wide[column] = geometry[column].to_numpy()
    flags = quality_flags(wide, thresholds)
    parts = []
    thresholds = resolve_thresholds(thresholds)
    for issue in ISSUES:
        hit = flags[f"is_{issue}"].to_numpy()
        score_col = f"{issue}_score"
        parts.append(
            pd.DataFrame(
                {
                    "image_id": catalog["image_id"].to_numpy()[hit],
                    "batch": catalog["batch"].to_numpy()[hit],
                    "issue": issue,
                    "score": wide[score_col].to_numpy()[hit] if score_col in wide else np.nan,
                    "threshold": thresholds[issue],
                    "excludes": issue in exclude,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[columns]
