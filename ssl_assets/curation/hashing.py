"""Exact and perceptual image hashes, batched in numpy.

Why: exact duplicates must be found on *decoded pixels*, not file bytes (the same picture saved as
PNG and as BMP, or with other metadata, has different bytes), and near duplicates need a compact
perceptual hash that can be indexed (see `near_duplicates`). Decoding a million images is the
expensive part of curation, so hashing works on whole batches of already-decoded arrays instead of
one PIL image at a time.

`phash64` follows imagehash's `phash` (grayscale, resize to 32x32, 2-D DCT, top-left 8x8,
compare to the median) and `dhash64` its `dhash` (grayscale, resize to 9x8, compare horizontal
neighbours). Resizing is done in float64 with a PIL-style antialiased Lanczos-3 filter, so
values agree with imagehash's in nearly all bits but are not guaranteed bit-identical. Bits are
packed row-major with the first bit as the most significant one, the order imagehash uses for its
hex strings, so `f"{h:016x}"` reads like an imagehash string.

The grayscale/resize helpers are public because `semantic` and `image_issues` reuse them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Pixels (images x height x width) processed per batch: bounds float64 temporaries to ~128 MiB.
_PIXELS_PER_BATCH = 1 << 24
_LANCZOS_A = 3.0


def check_batch(images: np.ndarray) -> np.ndarray:
    """Validate an N x H x W x 3 uint8 batch and return it (a single H x W x 3 image is promoted)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must have at least one pixel, got shape {images.shape}")
    return images


def batch_slices(images: np.ndarray, pixels_per_batch: int = _PIXELS_PER_BATCH) -> list[slice]:
    """Slices over the first axis so each batch holds at most `pixels_per_batch` pixels."""
    n, h, w = images.shape[:3]
    step = max(1, pixels_per_batch // max(1, h * w))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def grayscale(images: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma (PIL's "L" weights) of N x H x W x 3 uint8 images, as float64 N x H x W."""
    luma = images[..., 0] * 0.299
    luma += images[..., 1] * 0.587
    luma += images[..., 2] * 0.114
    return luma


@lru_cache(maxsize=64)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Dense (n_out, n_in) antialiased Lanczos-3 resampling matrix, built like PIL's resampler.

    When shrinking, the kernel is stretched by the scale factor (antialiasing); weights are
    renormalised where the window leaves the image. The cached array is read-only.
    """
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    x = (np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / stretch
    weights = np.where(np.abs(x) < _LANCZOS_A, np.sinc(x) * np.sinc(x / _LANCZOS_A), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def resize(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float stack N x H x W (or N x H x W x C) to N x height x width (x C)."""
    if planes.ndim == 4:
        n, h, w, c = planes.shape
        stacked = np.moveaxis(planes, 3, 1).reshape(n * c, h, w)
        out = resize(stacked, height, width).reshape(n, c, height, width)
        return np.moveaxis(out, 1, 3)
    # Like Pillow, an axis that keeps its size is not resampled (its Lanczos matrix is only
    # nearly the identity): 32x32 canonical images skip the whole resize, exactly.
    if planes.shape[2] != width:
        planes = planes @ resample_matrix(planes.shape[2], width).T
    if planes.shape[1] != height:
        planes = resample_matrix(planes.shape[1], height) @ planes
    return planes


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack N x 64 booleans into uint64, first bit most significant."""
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="big")
    return packed.view(">u8").ravel().astype(np.uint64)


@lru_cache(maxsize=1)
def _dct_rows() -> np.ndarray:
    """First 8 rows of the unnormalised 32-point DCT-II (scipy.fftpack.dct's default scaling)."""
    k = np.arange(8)[:, None]
    n = np.arange(32)[None, :]
    rows = 2.0 * np.cos(np.pi * k * (2 * n + 1) / 64.0)
    rows.setflags(write=False)
    return rows


def phash64(images: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hash of each image in an N x H x W x 3 uint8 batch (uint64, N)."""
    images = check_batch(images)
    out = np.empty(images.shape[0], dtype=np.uint64)
    dct = _dct_rows()
    for part in batch_slices(images):
        small = resize(grayscale(images[part]), 32, 32)
        low = (dct @ small @ dct.T).reshape(-1, 64)
        median = np.median(low, axis=1, keepdims=True)
        out[part] = _pack_bits(low > median)
    return out


def dhash64(images: np.ndarray) -> np.ndarray:
    """64-bit difference hash of each image in an N x H x W x 3 uint8 batch (uint64, N)."""
    images = check_batch(images)
    out = np.empty(images.shape[0], dtype=np.uint64)
    for part in batch_slices(images):
        small = resize(grayscale(images[part]), 8, 9)
        bits = small[:, :, 1:] > small[:, :, :-1]
        out[part] = _pack_bits(bits.reshape(-1, 64))
    return out


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (uint8 result)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    as_bytes = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between uint64 hashes, broadcasting like numpy (uint8 result)."""
    return popcount64(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))
