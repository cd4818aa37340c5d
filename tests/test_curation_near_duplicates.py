"""Pigeonhole near-duplicate search: exactly brute force, on random, skewed and real hashes."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from ssl_assets.curation.hashing import hamming, phash64
from ssl_assets.curation.near_duplicates import (
    DEFAULT_MAX_DISTANCE,
    PAIR_COLUMNS,
    choose_n_chunks,
    connected_groups,
    find_near_pairs,
)

U64_MAX = np.iinfo(np.uint64).max


def brute_force(new: np.ndarray, d: int, old: np.ndarray | None = None) -> set[tuple]:
    """Every (left, right, right_is_existing, distance) within d, by comparing all pairs."""
    dist = hamming(new[:, None], new[None, :])
    i, j = np.nonzero(np.triu(dist <= d, k=1))
    pairs = {(a, b, False, int(dist[a, b])) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    if old is not None:
        cross = hamming(new[:, None], old[None, :])
        i, j = np.nonzero(cross <= d)
        pairs |= {
            (a, b, True, int(cross[a, b])) for a, b in zip(i.tolist(), j.tolist(), strict=True)
        }
    return pairs


def as_set(pairs: pd.DataFrame) -> set[tuple]:
    return set(
        zip(
            pairs["left"].tolist(),
            pairs["right"].tolist(),
            pairs["right_is_existing"].tolist(),
            pairs["distance"].astype(int).tolist(),
            strict=True,
        )
    )


def flip_bits(rng: np.random.Generator, n_bits: int) -> np.uint64:
    mask = 0
    for bit in rng.choice(64, n_bits, replace=False):
        mask |= 1 << int(bit)
    return np.uint64(mask)


def planted(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, set, set]:
    """Uniform hashes plus copies at distance 0..d (planted) and d+1..d+3 (decoys)."""
    base = rng.integers(0, U64_MAX, n, dtype=np.uint64, endpoint=True)
    sources = rng.choice(n, 200, replace=False)
    near = [
        base[s] ^ flip_bits(rng, int(k))
        for s, k in zip(sources[:100], rng.integers(0, d + 1, 100), strict=True)
    ]
    far = [
        base[s] ^ flip_bits(rng, int(k))
        for s, k in zip(sources[100:], rng.integers(d + 1, d + 4, 100), strict=True)
    ]
    hashes = np.concatenate([base, near, far])
    truth = {(int(s), n + k) for k, s in enumerate(sources[:100])}
    decoys = {(int(s), n + 100 + k) for k, s in enumerate(sources[100:])}
    return hashes, truth, decoys


@pytest.mark.parametrize("d", [DEFAULT_MAX_DISTANCE, 6, 9])
@pytest.mark.parametrize("chunks", ["auto", "d+1"])
def test_equals_brute_force_on_random_hashes_with_planted_copies(d, chunks):
    rng = np.random.default_rng(d)
    hashes, truth, decoys = planted(rng, 3000, d)
    n_chunks = None if chunks == "auto" else d + 1
    pairs = find_near_pairs(hashes, d, n_chunks=n_chunks)
    assert list(pairs.columns) == PAIR_COLUMNS
    assert as_set(pairs) == brute_force(hashes, d)
    found = set(zip(pairs["left"].tolist(), pairs["right"].tolist(), strict=True))
    assert truth <= found  # recall 1.0
    assert not decoys & found  # nothing beyond the distance
    assert (pairs["left"] < pairs["right"]).all()
    assert not pairs.duplicated(["left", "right"]).any()


def skewed_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Few free bits: large groups of identical hashes and crowded chunk buckets."""
    free = np.uint64(0x8000_0100_0F00_00F1)  # 10 free bits
    fixed = np.uint64(0x1234_5678_0000_0000)
    return (rng.integers(0, U64_MAX, n, dtype=np.uint64, endpoint=True) & free) | fixed


def test_equals_brute_force_on_skewed_hashes_and_star_keeps_the_groups():
    rng = np.random.default_rng(1)
    hashes = np.concatenate([skewed_hashes(rng, 1500), rng.integers(0, U64_MAX, 500, np.uint64)])
    rng.shuffle(hashes)
    _, counts = np.unique(hashes, return_counts=True)
    assert counts.max() >= 5  # identical groups really exist
    d = DEFAULT_MAX_DISTANCE
    pairs = find_near_pairs(hashes, d)
    assert as_set(pairs) == brute_force(hashes, d)
    star = find_near_pairs(hashes, d, identical="star")
    assert len(star) < len(pairs)
    assert as_set(star) <= as_set(pairs)
    assert (connected_groups(len(hashes), star) == connected_groups(len(hashes), pairs)).all()


@pytest.mark.parametrize("d", [DEFAULT_MAX_DISTANCE, 6])
def test_existing_set_mode_never_pairs_existing_with_existing(d):
    rng = np.random.default_rng(2)
    hashes, truth, _ = planted(rng, 2500, d)
    hashes = np.concatenate([hashes, skewed_hashes(rng, 400)])
    order = rng.permutation(len(hashes))
    new, old = hashes[order[:1200]], hashes[order[1200:]]
    old = np.concatenate([old, new[:5]])  # some new hashes are already curated, identically
    pairs = find_near_pairs(new, d, existing=old)
    assert as_set(pairs) == brute_force(new, d, old)
    cross = pairs[pairs["right_is_existing"]]
    assert len(cross) > 0 and len(pairs) > len(cross)
    distances = hamming(new[cross["left"]], old[cross["right"]])
    assert (distances == cross["distance"]).all()
    # Planted pairs that ended up split across new/old are found through the cross pairs.
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    for a, b in truth:
        pa, pb = sorted((position[a], position[b]))
        if pa < 1200 <= pb:
            assert ((cross["left"] == pa) & (cross["right"] == pb - 1200)).any()
    # An empty existing set is the same as none.
    empty = find_near_pairs(new, d, existing=np.empty(0, np.uint64))
    assert as_set(empty) == as_set(find_near_pairs(new, d))


def test_chunk_choice_is_valid_and_results_do_not_depend_on_it():
    assert choose_n_chunks(1_000_000, 0, 6) > 7  # more tables, fewer random candidates
    assert choose_n_chunks(100, 0, 4) >= 5
    rng = np.random.default_rng(3)
    hashes = np.concatenate([skewed_hashes(rng, 800), rng.integers(0, U64_MAX, 800, np.uint64)])
    results = [as_set(find_near_pairs(hashes, 5, n_chunks=m)) for m in (6, 7, 9, 12)]
    assert all(r == results[0] for r in results)
    with pytest.raises(ValueError):
        find_near_pairs(hashes, 5, n_chunks=5)
    with pytest.raises(ValueError):
        find_near_pairs(hashes, 64)


def test_connected_groups_chain_existing_bridges_and_isolated_items():
    pairs = pd.DataFrame(
        {
            "left": [0, 1, 3, 5],
            "right": [1, 2, 7, 7],
            "right_is_existing": [False, False, True, True],
            "distance": [1, 2, 3, 1],
        }
    )
    groups = connected_groups(7, pairs)
    assert groups.tolist() == [0, 0, 0, 1, 2, 1, 3]  # 3 and 5 meet through existing item 7
    assert connected_groups(3, pairs.iloc[:0]).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        connected_groups(2, pairs)


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


def test_real_images_copies_grouped_with_their_originals_and_distinct_ones_not():
    rng = np.random.default_rng(4)
    originals = np.stack([smooth_image(rng) for _ in range(20)])

    def jpeg(x: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, "JPEG", quality=95)
        return np.asarray(Image.open(buf).convert("RGB"))

    copies = [
        jpeg(originals[0]),
        np.asarray(Image.fromarray(originals[1]).resize((48, 48), Image.BICUBIC).resize((64, 64))),
        np.clip(originals[2].astype(np.int16) + 10, 0, 255).astype(np.uint8),
    ]
    hashes = phash64(np.concatenate([originals, np.stack(copies)]))
    groups = connected_groups(len(hashes), find_near_pairs(hashes))
    assert groups[20:].tolist() == groups[:3].tolist()  # each copy joins its original
    assert len(set(groups[:20].tolist())) == 20  # distinct images stay apart
