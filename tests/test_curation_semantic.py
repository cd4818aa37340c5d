"""Pinned embedder and SemDeDup pairs on real images: copies found, distinct images kept apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from ssl_assets.curation.hashing import phash64
from ssl_assets.curation.near_duplicates import connected_groups, find_near_pairs
from ssl_assets.curation.semantic import (
    DEFAULT_SEMANTIC_THRESHOLD,
    EMBEDDING_DIM,
    PAIR_COLUMNS,
    PINNED_EMBEDDER_VERSION,
    pinned_embed,
    semantic_pairs,
)


def smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        w, h = (int(v) for v in rng.integers(4, 24, 2))
        draw.rectangle(
            [x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    return np.asarray(img)


@pytest.fixture(scope="module")
def originals() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.stack([smooth_image(rng) for _ in range(40)])


def cropped(x: np.ndarray, px: int = 2) -> np.ndarray:
    h, w = x.shape[:2]
    return np.asarray(Image.fromarray(x[px:-px, px:-px]).resize((w, h), Image.BICUBIC))


def brightened(x: np.ndarray, factor: float = 1.1) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(x)).enhance(factor))


def resized(x: np.ndarray, side: int = 96) -> np.ndarray:
    return np.asarray(Image.fromarray(x).resize((side, side), Image.BICUBIC))


def test_embedding_is_pinned_normalised_and_deterministic(originals):
    emb = pinned_embed(originals)
    assert emb.dtype == np.float32 and emb.shape == (len(originals), EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb, pinned_embed(originals))
    assert np.allclose(pinned_embed(originals[:1]), emb[:1], atol=1e-6)
    assert PINNED_EMBEDDER_VERSION.startswith("pinned-v")
    flat = np.full((1, 16, 16, 3), 128, np.uint8)  # no layout, no gradients: still finite
    assert np.isfinite(pinned_embed(flat)).all()


def test_copies_are_semantic_pairs_and_distinct_images_are_not(originals):
    copies = np.stack([cropped(originals[0]), brightened(originals[1]), cropped(originals[2], 1)])
    emb = pinned_embed(np.concatenate([originals, copies]))
    pairs = semantic_pairs(emb, DEFAULT_SEMANTIC_THRESHOLD, n_clusters=1, seed=0)
    assert list(pairs.columns) == PAIR_COLUMNS
    found = set(zip(pairs["left"].tolist(), pairs["right"].tolist(), strict=True))
    assert {(0, 40), (1, 41), (2, 42)} <= found
    assert all(right >= 40 for _, right in found)  # no two originals paired
    assert (pairs["similarity"] >= DEFAULT_SEMANTIC_THRESHOLD).all()


def test_each_copy_is_found_by_the_near_or_the_semantic_tier(originals):
    copies = [
        cropped(originals[3]),
        brightened(originals[4], 1.15),
        resized(originals[5]),
        cropped(brightened(originals[6]), 1),
    ]
    n = len(originals)
    hashes = np.concatenate([phash64(originals), [phash64(c)[0] for c in copies]])
    emb = np.concatenate([pinned_embed(originals), *[pinned_embed(c) for c in copies]])
    near = find_near_pairs(hashes)
    semantic = semantic_pairs(emb, n_clusters=1, seed=0)
    both = connected_groups(len(hashes), pd.concat([near, semantic], ignore_index=True))
    for k, source in enumerate((3, 4, 5, 6)):
        assert both[n + k] == both[source]
    assert len(set(both[:n].tolist())) == n


def test_existing_mode_and_clustering(originals):
    emb_old = pinned_embed(originals)
    new_images = np.stack([cropped(originals[7]), smooth_image(np.random.default_rng(99))])
    emb_new = pinned_embed(new_images)
    for k in (1, 4):
        pairs = semantic_pairs(emb_new, n_clusters=k, seed=3, existing=emb_old)
        assert pairs[["left", "right", "right_is_existing"]].values.tolist() == [[0, 7, True]]
    again = semantic_pairs(emb_new, n_clusters=4, seed=3, existing=emb_old)
    assert again.equals(semantic_pairs(emb_new, n_clusters=4, seed=3, existing=emb_old))
    # New items only: with the default auto clustering, the copy pairs with nothing new.
    alone = semantic_pairs(emb_new, seed=0)
    assert alone.empty


def test_semantic_pairs_match_all_pairs_when_one_cluster(originals):
    emb = pinned_embed(np.concatenate([originals, np.stack([cropped(x) for x in originals[:10]])]))
    threshold = 0.5  # low enough to produce many pairs
    pairs = semantic_pairs(emb, threshold, n_clusters=1, seed=0)
    sim = emb @ emb.T
    i, j = np.nonzero(np.triu(sim >= threshold, k=1))
    assert set(zip(pairs["left"], pairs["right"], strict=True)) == set(zip(i, j, strict=True))
    with pytest.raises(ValueError):
        semantic_pairs(emb, existing=emb[:, :5])
