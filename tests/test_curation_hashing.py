"""Exact and perceptual hashes on real encoded images: lossless round trips, JPEG, resizing."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import scipy.fft
from PIL import Image, ImageDraw, PngImagePlugin

from ssl_assets.curation.hashing import (
    dhash64,
    hamming,
    phash64,
    popcount64,
    resample_matrix,
    resize,
)
from ssl_assets.curation.near_duplicates import DEFAULT_MAX_DISTANCE
from ssl_assets.data.canonical import pixel_hash


def smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A random smooth colour field with a few sharp rectangles (distinct per seed)."""
    low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        w, h = (int(v) for v in rng.integers(4, 24, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    return np.asarray(img)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([smooth_image(rng) for _ in range(24)])


def encode(rgb: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_lossless_round_trips_have_the_same_pixel_hash_but_different_bytes(images):
    rgb = images[0]
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "same picture, other metadata")
    files = [encode(rgb, "PNG"), encode(rgb, "BMP"), encode(rgb, "PNG", pnginfo=meta)]
    assert len({hashlib.sha256(f).hexdigest() for f in files}) == 3  # file bytes all differ
    assert {pixel_hash(decode(f)) for f in files} == {pixel_hash(rgb)}


def test_pixel_hash_sees_one_pixel_and_the_shape(images):
    changed = images[0].copy()
    changed[5, 5, 1] ^= 1
    assert pixel_hash(changed) != pixel_hash(images[0])
    flat = np.arange(36, dtype=np.uint8)
    assert pixel_hash(flat.reshape(2, 6, 3)) != pixel_hash(flat.reshape(6, 2, 3))
    with pytest.raises(ValueError):
        pixel_hash(images[0].astype(np.float32))


@pytest.mark.parametrize("hash_fn", [phash64, dhash64])
def test_jpeg_resize_and_brightening_stay_within_distance(images, hash_fn):
    base = hash_fn(images)
    jpeg = np.stack([decode(encode(x, "JPEG", quality=95)) for x in images])
    bigger = np.stack(
        [np.asarray(Image.fromarray(x).resize((96, 96), Image.BICUBIC)) for x in images]
    )
    brighter = np.clip(images.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    assert (jpeg != images).any()  # really lossy
    assert hamming(base, hash_fn(jpeg)).max() <= 2
    assert hamming(base, hash_fn(bigger)).max() <= 2
    assert hamming(base, hash_fn(brighter)).max() <= DEFAULT_MAX_DISTANCE


@pytest.mark.parametrize("hash_fn", [phash64, dhash64])
def test_distinct_images_are_far_apart(images, hash_fn):
    h = hash_fn(images)
    dist = hamming(h[:, None], h[None, :])
    off_diagonal = dist[~np.eye(len(h), dtype=bool)]
    assert off_diagonal.min() > 2 * DEFAULT_MAX_DISTANCE


def test_phash_matches_an_independent_pil_and_scipy_implementation(images):
    """imagehash's recipe, one image at a time, with PIL's float resampler and scipy's DCT."""

    def reference(rgb: np.ndarray) -> int:
        r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
        luma = Image.fromarray(r * 0.299 + g * 0.587 + b * 0.114, mode="F")
        small = np.asarray(luma.resize((32, 32), Image.LANCZOS), dtype=np.float64)
        low = scipy.fft.dct(scipy.fft.dct(small, axis=0), axis=1)[:8, :8]
        bits = (low > np.median(low)).ravel()
        return int("".join("1" if bit else "0" for bit in bits), 2)

    expected = np.array([reference(x) for x in images], dtype=np.uint64)
    assert (phash64(images) == expected).all()


def test_hashes_are_batched_consistently(images):
    assert phash64(images).dtype == np.uint64
    assert (phash64(images[3]) == phash64(images)[3]).all()
    assert (dhash64(images[:5]) == dhash64(images)[:5]).all()
    with pytest.raises(ValueError):
        phash64(images[..., :2])


def test_hamming_and_popcount():
    a = np.array([0, 0xFFFF_FFFF_FFFF_FFFF, 0b1011], dtype=np.uint64)
    assert hamming(a, np.uint64(0)).tolist() == [0, 64, 3]
    assert hamming(a[:, None], a[None, :]).shape == (3, 3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, np.iinfo(np.uint64).max, 1000, dtype=np.uint64, endpoint=True)
    expected = [bin(int(v)).count("1") for v in x]
    assert popcount64(x).tolist() == expected


def test_resize_to_the_same_size_is_exactly_the_identity():
    """Like Pillow, an axis that keeps its size is not resampled: a 32x32 canonical image goes
    into the hashes and the pinned embedding bit for bit (a Lanczos matrix is only nearly the
    identity, and its residues used to flip gradient-orientation bins)."""
    planes = np.random.default_rng(0).random((5, 32, 32))
    assert np.array_equal(resize(planes, 32, 32), planes)
    wide = np.random.default_rng(1).random((2, 32, 48))
    assert np.array_equal(
        resize(wide, 32, 32)[:, :, 0], (wide @ resample_matrix(48, 32).T)[:, :, 0]
    )
