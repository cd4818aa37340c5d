"""The aligned tier: copies that moved, were re-cropped or re-toned, confirmed pixel by pixel.

Why: a held-out image that is a slightly shifted, cropped or re-toned copy of a training image
is a leak, and no single global threshold on an embedding separates those copies from different
pictures that merely look alike. On CIFAR-10 with its train and test folders pinned, pinned-
embedding cosine >= 0.95 finds 164 test images with a train copy (all of the same class), >= 0.92
312 (98 % same class), >= 0.85 1,196 (81 %: mostly different photos of similar scenes). So the
embedding only proposes candidates from a wide radius, and a second look at the pixels decides.

1. **Candidates**: each new image's `neighbours` most similar images (new and earlier ones) by
   pinned-embedding cosine, if at least `min_similarity`, from an inverted-file search over the
   semantic tier's k-means clusters (`curation/knn.py`). Chosen by measurement on CIFAR-10 (each
   test image's 2 most similar train images, every pair verified as below): cosine >= 0.8 /
   0.83 / 0.85 / 0.88 proposes 4,077 / 2,563 / 1,813 / 993 pairs holding the copies of 404 /
   390 / 367 / 342 test images. A more shift-tolerant key (the layout block pooled to 4x4)
   needs 4,652 pairs for 399, no better per pair, so the pinned embedding at 0.8 it is.
2. **Alignment**: both images' luma at 32x32; the first image's central window (a margin of
   `max_shift` pixels plus what the largest zoom needs) is matched against the second image
   zoomed by 1 - `max_crop`, 1 and 1 / (1 - `max_crop`) (a crop of up to `max_crop` resized back,
   either way round) and shifted by up to `max_shift` whole pixels each way (and mirrored, when
   `mirror`). The best alignment maximises zero-normalised cross-correlation (ZNCC; Lewis, "Fast
   normalized cross-correlation", Vision Interface 1995), which ignores brightness and contrast
   (any affine change of tone) and nearly ignores gamma.
3. **Decision**: at the best alignment, ZNCC >= `min_ncc` *and* the cosine between the two
   windows' gradient fields >= `min_gradient` (gradient correlation, as in 2-D/3-D registration:
   Penney et al., IEEE TMI 1998; the windows are smoothed with a [1, 2, 1] kernel first, which
   forgives the resampling a crop leaves). ZNCC alone is fooled by shared layout: two different
   ships on the same horizon correlate at 0.9 and more because the horizon carries most of the
   variance, while their edges differ. Of 15,454 CIFAR-10 test-train candidate pairs (3,050 test
   images), ZNCC >= 0.9 alone keeps 616 test images, matched to a train image of their own class
   for 86 % of the pairs; ZNCC >= 0.85 with gradient cosine >= 0.88 keeps 417, every pair of
   one class (the class is only read to measure this). A window flatter than `min_contrast`
   (luma standard deviation, 0-255) is not judged: its correlations are noise.

Made copies of 1,000 CIFAR-10 train images pass the decision: shifted 2 px 100 %; brightness
1.2, contrast 0.6 and 1.4, gamma 0.6, grayscale, JPEG q50 100 %; a 5 % corner crop 100 %, 10 %
crops (centre or corner) resized back 95-96 %; blurred (2x down and up) 88 %; mirrored 0.7 %
(100 % with `mirror`); 1,000 pairs of different images 0 %. What limits the tier on such copies
is the candidate stage: the pinned embedding is not shift-tolerant (after a 2-px diagonal shift
77 % keep cosine >= 0.8; after a 10 % corner crop 84 %), so a moved copy of a detailed image is
only looked at when the embedding still finds it near.

Images whose native size is below `min_side` pixels (the 8x8 sklearn digits) are never aligned:
upscaled, a different writer's digit matches within half a native pixel and a few grey levels:
with the size rule off, this tier verifies 1,871 of its 2,696 candidate pairs on the digits,
linking 1,512 of the 1,797 images (99.8 % of the pairs the same digit, none of them a copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

from ssl_assets.curation.hashing import grayscale, resize
from ssl_assets.curation.knn import ivf_neighbours

SIDE = 32  # pixels are compared at 32x32 luma, whatever the catalog's resolution
SCORE_COLUMNS = ["pixel_ncc", "pixel_gradient", "pixel_contrast"]
# Pairs aligned at once: bounds the stacked zoomed copies (pairs x zooms x 32 x 32 float32).
_CHUNK = 2048


@dataclass(frozen=True)
class AlignSettings:
    """How far two pixel grids may be moved onto each other, and how close they must then be."""

    max_shift: int = 2
    max_crop: float = 0.1
    mirror: bool = False
    min_ncc: float = 0.85
    min_gradient: float = 0.88
    min_contrast: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_shift <= 4 or not 0.0 <= self.max_crop <= 0.25:
            raise ValueError(f"max_shift must be in 0..4 and max_crop in 0..0.25: {self}")

    @property
    def scales(self) -> tuple[float, ...]:
        if self.max_crop == 0:
            return (1.0,)
        return (1.0 - self.max_crop, 1.0, 1.0 / (1.0 - self.max_crop))

    @property
    def margin(self) -> int:
        """Border left out of the reference window, so every shifted, zoomed window stays inside."""
        zoom = max(self.scales) - 1.0
        return self.max_shift + ceil(zoom * SIDE / 2)


def luma32(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 32 x 32 float32 luma (resampled when H, W differ from 32)."""
    luma = grayscale(np.asarray(images))
    if luma.shape[1:] != (SIDE, SIDE):
        luma = resize(luma, SIDE, SIDE)
    return luma.astype(np.float32)


def _zoom_matrix(scale: float) -> np.ndarray:
    """Bilinear resampling matrix: output pixel u reads input position scale * (u - c) + c."""
    c = (SIDE - 1) / 2
    x = np.clip(scale * (np.arange(SIDE) - c) + c, 0, SIDE - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), SIDE - 2)
    frac = (x - x0).astype(np.float32)
    out = np.zeros((SIDE, SIDE), np.float32)
    out[np.arange(SIDE), x0] = 1 - frac
    out[np.arange(SIDE), x0 + 1] += frac
    return out


def _box_sums(planes: np.ndarray, width: int, offsets: np.ndarray) -> np.ndarray:
    """Sums of every width x width window at (offsets[i], offsets[j]): P x S x S (separable:
    row strips first, then columns; planes are centred, so float32 keeps the variance exact
    enough)."""
    strips = np.stack([planes[:, o : o + width, :].sum(axis=1) for o in offsets], axis=1)
    return np.stack([strips[:, :, o : o + width].sum(axis=2) for o in offsets], axis=2)


def _gradient_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between the gradient fields (central differences after a [1, 2, 1] binomial
    smoothing, which forgives the resampling and sub-pixel offset a crop leaves) of two
    P x w x w stacks."""

    def field(x: np.ndarray) -> np.ndarray:
        x = (x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]) / 4
        x = (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) / 4
        gx = x[:, 1:-1, 2:] - x[:, 1:-1, :-2]
        gy = x[:, 2:, 1:-1] - x[:, :-2, 1:-1]
        return np.concatenate([gx.reshape(len(x), -1), gy.reshape(len(x), -1)], axis=1)

    ga, gb = field(a), field(b)
    dot = np.einsum("pk,pk->p", ga, gb)
    norms = np.sqrt(np.einsum("pk,pk->p", ga, ga) * np.einsum("pk,pk->p", gb, gb))
    return dot / np.maximum(norms, 1e-6)


def _align_chunk(a: np.ndarray, b: np.ndarray, settings: AlignSettings) -> np.ndarray:
    """(ZNCC, gradient cosine, contrast) at the best alignment of b onto a: P x 3."""
    p, m, shift = len(a), settings.margin, settings.max_shift
    w = SIDE - 2 * m
    ref = a[:, m : SIDE - m, m : SIDE - m]
    centred = ref - ref.mean(axis=(1, 2), keepdims=True)
    ref_sd = np.sqrt((centred**2).mean(axis=(1, 2)))
    ref_z = centred / np.maximum(ref_sd, 1e-3)[:, None, None]
    offsets = np.arange(m - shift, m + shift + 1)
    zoomed = []
    for scale in settings.scales:
        matrix = _zoom_matrix(scale)
        moved = matrix @ b @ matrix.T
        moved -= moved.mean(axis=(1, 2), keepdims=True)
        zoomed += [moved, moved[:, :, ::-1]] if settings.mirror else [moved]
    best = np.full(p, -np.inf, np.float32)
    choice = np.zeros((p, 3), np.int64)  # zoom, dy, dx
    for z, moved in enumerate(zoomed):
        total = _box_sums(moved, w, offsets) / (w * w)
        sd = np.sqrt(np.maximum(_box_sums(moved * moved, w, offsets) / (w * w) - total**2, 1e-6))
        for i, dy in enumerate(offsets):
            for j, dx in enumerate(offsets):
                dot = np.einsum("pyx,pyx->p", ref_z, moved[:, dy : dy + w, dx : dx + w])
                ncc = dot / (w * w) / sd[:, i, j]
                better = ncc > best
                best[better] = ncc[better]
                choice[better] = (z, dy, dx)
    stack = np.stack(zoomed)[choice[:, 0], np.arange(p)]
    windows = sliding_window_view(stack, (w, w), axis=(1, 2))
    matched = windows[np.arange(p), choice[:, 1], choice[:, 2]]
    contrast = np.minimum(ref_sd, matched.std(axis=(1, 2)))
    return np.stack([best, _gradient_cosine(ref, matched), contrast], axis=1)


def aligned_scores(
    first: np.ndarray, second: np.ndarray, settings: AlignSettings = AlignSettings()
) -> pd.DataFrame:
    """`SCORE_COLUMNS` of each pair (first[i], second[i]): N x H x W x 3 uint8 images, or their
    `luma32` (N x 32 x 32 float32). See the module doc for what they mean."""
    a = first if first.ndim == 3 else luma32(first)
    b = second if second.ndim == 3 else luma32(second)
    if a.shape != b.shape:
        raise ValueError(f"pairs must line up: {a.shape} vs {b.shape}")
    with threadpool_limits(limits=1):  # small products: a second thread only contends
        parts = [
            _align_chunk(a[s : s + _CHUNK], b[s : s + _CHUNK], settings)
            for s in range(0, len(a), _CHUNK)
        ]
    scores = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
    return pd.DataFrame(scores.astype(np.float64), columns=SCORE_COLUMNS)


def verified(scores: pd.DataFrame, settings: AlignSettings = AlignSettings()) -> np.ndarray:
    """Which scored pairs are copies (a missing score never is)."""
    return (
        (scores["pixel_ncc"] >= settings.min_ncc)
        & (scores["pixel_gradient"] >= settings.min_gradient)
        & (scores["pixel_contrast"] >= settings.min_contrast)
    ).to_numpy(bool)


def candidate_pairs(
    new: np.ndarray,
    old: np.ndarray,
    labels: np.ndarray,
    neighbours: int,
    min_similarity: float,
    n_probe: int,
) -> pd.DataFrame:
    """Each new row's `neighbours` most similar rows of new + old at cosine >= `min_similarity`,
    as `left`, `right`, `right_is_existing`, `similarity` (the layout of `semantic_pairs`: a
    new-new pair once, with left < right). `labels` clusters the rows of new then old."""
    base = np.concatenate([new, old]) if len(old) else new
    sims, index = ivf_neighbours(
        new, base, labels, neighbours, n_probe, self_index=np.arange(len(new))
    )
    rows, slot = np.nonzero((index >= 0) & (sims >= min_similarity))
    other = index[rows, slot]
    is_old = other >= len(new)
    left = np.where(is_old, rows, np.minimum(rows, other))
    right = np.where(is_old, other - len(new), np.maximum(rows, other))
    pairs = pd.DataFrame(
        {
            "left": left.astype(np.int64),
            "right": right.astype(np.int64),
            "right_is_existing": is_old,
            "similarity": sims[rows, slot].astype(np.float32),
        }
    )
    pairs = pairs.drop_duplicates(["left", "right", "right_is_existing"])
    return pairs.sort_values(["left", "right_is_existing", "right"]).reset_index(drop=True)
