"""Benchmark the pigeonhole near-duplicate search: time, recall and exactness.

Why: the search must scale to a million hashes in seconds with recall 1.0; this script is the
evidence. It times `find_near_pairs` on uniform random 64-bit hashes with planted near duplicates
(copies with 0..d flipped bits), reports recall against the planted pairs, and where brute force
is affordable checks that the result equals it exactly. It then hashes the 60,000 real CIFAR-10
images (skewed hash buckets) and reports the same, plus the skew.

    .venv/bin/python benchmarks/near_duplicates.py                    # 10k, 100k, 1M + CIFAR-10
    .venv/bin/python benchmarks/near_duplicates.py --sizes 10000 --no-cifar   # quick run
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssl_assets.curation.hashing import hamming, phash64  # noqa: E402
from ssl_assets.curation.near_duplicates import (  # noqa: E402
    DEFAULT_MAX_DISTANCE,
    choose_n_chunks,
    chunk_layout,
    connected_groups,
    find_near_pairs,
    value_pairs,
)

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def planted(n: int, d: int, rng: np.random.Generator) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """n uniform hashes where 1% are copies of other items with 0..d random bit flips."""
    hashes = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    n_plant = max(1, n // 100)
    chosen = rng.choice(n, 2 * n_plant, replace=False)
    sources, copies = chosen[:n_plant], chosen[n_plant:]
    flips = np.zeros(n_plant, dtype=np.uint64)
    n_flips = rng.integers(0, d + 1, n_plant)
    for k in range(d):  # flip bit positions drawn without replacement per copy
        bits = np.argsort(rng.random((n_plant, 64)), axis=1)[:, k].astype(np.uint64)
        flips |= np.where(k < n_flips, np.uint64(1) << bits, np.uint64(0))
    hashes[copies] = hashes[sources] ^ flips
    pairs = set(
        zip(np.minimum(sources, copies).tolist(), np.maximum(sources, copies).tolist(), strict=True)
    )
    return hashes, pairs


def brute_force(hashes: np.ndarray, d: int) -> set[tuple[int, int]]:
    """All pairs within distance d by comparing every pair, in row blocks."""
    found: set[tuple[int, int]] = set()
    block = max(1, 40_000_000 // max(1, len(hashes)))
    for s in range(0, len(hashes), block):
        dist = hamming(hashes[s : s + block, None], hashes[None, :])
        i, j = np.nonzero(dist <= d)
        i += s
        keep = i < j
        found |= set(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    return found


def as_set(pairs: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(pairs["left"].tolist(), pairs["right"].tolist(), strict=True))


def timed(hashes: np.ndarray, d: int, n_chunks: int | None) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    pairs = find_near_pairs(hashes, d, n_chunks=n_chunks)
    return pairs, time.perf_counter() - start


def run_random(sizes: list[int], d: int, brute_max: int, classic_max: int, seed: int) -> None:
    print(f"# uniform random 64-bit hashes, 1% planted copies with 0..{d} flipped bits, d={d}")
    print("# chunks: * = chosen by choose_n_chunks (the default); d+1 = classic pigeonhole")
    print(f"{'n':>9} {'chunks':>7} {'time_s':>7} {'pairs':>7} {'recall':>7} {'brute_force':>12}")
    for n in sizes:
        hashes, truth = planted(n, d, np.random.default_rng(seed))
        auto = choose_n_chunks(n, 0, d)
        for m in dict.fromkeys([auto, d + 1] if n <= classic_max else [auto]):
            pairs, seconds = timed(hashes, d, m)
            got = as_set(pairs)
            recall = len(truth & got) / len(truth)
            check = "skipped"
            if n <= brute_max and m == auto:
                check = "identical" if brute_force(hashes, d) == got else "DIFFERENT"
            label = f"{m}" + ("*" if m == auto else "")
            print(f"{n:>9} {label:>7} {seconds:>7.2f} {len(pairs):>7} {recall:>7.4f} {check:>12}")


def run_skewed(n: int, d: int, seed: int) -> None:
    """Heavily skewed hashes: 30% one value (blank images), 20% from 1,000 near-identical values."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, np.iinfo(np.uint64).max, dtype=np.uint64, endpoint=True)
    close = centre ^ (np.uint64(1) << rng.integers(0, 64, (1000, 3)).astype(np.uint64)).sum(
        axis=1, dtype=np.uint64
    )
    hashes = np.concatenate(
        [
            np.full(int(n * 0.3), rng.integers(0, 2**63, dtype=np.uint64)),
            rng.choice(close, int(n * 0.2)),
            rng.integers(0, np.iinfo(np.uint64).max, n - int(n * 0.5), np.uint64, endpoint=True),
        ]
    )
    rng.shuffle(hashes)
    values, counts = np.unique(hashes, return_counts=True)
    self_pairs, _ = value_pairs(values, d)
    all_rows = int((counts * (counts - 1) // 2).sum()) + int(
        (counts[self_pairs["a"]] * counts[self_pairs["b"]]).sum()
    )
    print(f"# skewed: {n} hashes, {len(values)} unique, largest identical group {counts.max()}")
    start = time.perf_counter()
    star = find_near_pairs(hashes, d, identical="star")
    seconds = time.perf_counter() - start
    groups = np.bincount(connected_groups(n, star))
    print(
        f"identical='star': {seconds:.2f}s  rows {len(star)} (identical='all' would return "
        f"{all_rows:.3g})  duplicate groups {int((groups > 1).sum())}  largest {groups.max()}"
    )


def load_cifar(path: Path) -> np.ndarray:
    """Decode every JPG in the CIFAR-10 tar with Pillow (read straight from the archive)."""
    images = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                data = tar.extractfile(member).read()
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(images)


def chunk_skew(values: np.ndarray, m: int, d: int) -> str:
    """Bucket skew of the index tables: largest bucket and candidates vs uniform hashes."""
    largest, candidates, expected = 0, 0, 0.0
    layout = chunk_layout(m)
    for combo in combinations(range(m), m - d):
        key = np.zeros(len(values), dtype=np.uint64)
        bits = 0
        for c in combo:
            shift, width = layout[c]
            key = (key << np.uint64(width)) | (
                (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            )
            bits += width
        _, counts = np.unique(key, return_counts=True)
        largest = max(largest, int(counts.max()))
        candidates += int((counts * (counts - 1) // 2).sum())
        expected += len(values) * (len(values) - 1) / 2 * 2.0**-bits
    return (
        f"largest bucket {largest}, candidate pairs {candidates} "
        f"(uniform hashes would give ~{expected:.0f})"
    )


def run_cifar(path: Path, d: int, brute: bool) -> None:
    print(f"# CIFAR-10 pHash ({path.name}), d={d}")
    start = time.perf_counter()
    images = load_cifar(path)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    hashes = phash64(images)
    hash_s = time.perf_counter() - start
    values, counts = np.unique(hashes, return_counts=True)
    top = np.sort(counts)[::-1][:5]
    print(f"images {len(images)}  decode {decode_s:.1f}s  phash64 {hash_s:.1f}s")
    print(
        f"unique hashes {len(values)}  largest identical-hash group {top[0]} "
        f"(top 5: {top.tolist()})  items in identical groups {int(counts[counts > 1].sum())}"
    )
    for m in dict.fromkeys([d + 1, choose_n_chunks(len(values), 0, d)]):
        print(f"{m} chunks: {chunk_skew(values, m, d)}")
    auto = choose_n_chunks(len(values), 0, d)
    for m in dict.fromkeys([auto, d + 1]):
        pairs, seconds = timed(hashes, d, m)
        groups = connected_groups(len(hashes), pairs)
        sizes = np.bincount(groups)
        label = f"{m}" + (" (auto)" if m == auto else " (d+1)")
        print(
            f"chunks {label}: {seconds:.2f}s  pairs {len(pairs)}  "
            f"(distance 0: {int((pairs['distance'] == 0).sum())})  "
            f"duplicate groups {int((sizes > 1).sum())}  largest group {sizes.max()}"
        )
        start = time.perf_counter()
        star_pairs = find_near_pairs(hashes, d, identical="star", n_chunks=m)
        star_s = time.perf_counter() - start
        same = (connected_groups(len(hashes), star_pairs) == groups).all()
        print(f"  identical='star': {star_s:.2f}s  pairs {len(star_pairs)}  same groups {same}")
    if brute:
        start = time.perf_counter()
        exact = brute_force(hashes, d) == as_set(pairs)
        print(f"brute force ({time.perf_counter() - start:.1f}s): identical={exact}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE)
    parser.add_argument("--brute-max", type=int, default=20_000, help="largest n brute-forced")
    parser.add_argument(
        "--classic-max", type=int, default=100_000, help="largest n also run with d+1 chunks"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cifar", type=Path, default=CIFAR)
    parser.add_argument("--no-skewed", action="store_true")
    parser.add_argument("--no-cifar", action="store_true")
    parser.add_argument("--no-cifar-brute", action="store_true")
    args = parser.parse_args()
    run_random(args.sizes, args.max_distance, args.brute_max, args.classic_max, args.seed)
    if not args.no_skewed:
        run_skewed(max(args.sizes), args.max_distance, args.seed)
    if not args.no_cifar:
        if args.cifar.exists():
            run_cifar(args.cifar, args.max_distance, not args.no_cifar_brute)
        else:
            print(f"# CIFAR-10 skipped: {args.cifar} not found")


if __name__ == "__main__":
    main()
