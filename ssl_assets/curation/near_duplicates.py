"""Near-duplicate search over 64-bit perceptual hashes: a pigeonhole (multi-index) Hamming search.

Why: comparing all pairs is quadratic (a million images is 5e11 pairs), so pairs within Hamming
distance `d` are found with an index instead, in plain numpy:

- Identical hash values are collapsed first (`np.unique` with inverse and counts). Real data has
  large groups of identical hashes (flat or near-constant images); searching unique values keeps
  those groups from multiplying the work, and they are expanded back to items only at the end.
- The 64 bits are split into `m` contiguous chunks. If two hashes differ in at most `d` bits,
  at most `d` chunks differ, so they agree exactly on at least `m - d` chunks (pigeonhole). For
  every combination of `m - d` chunks we sort the values by those chunks (the key) and take the
  pairs inside each run of equal keys as candidates, then verify them with a popcount. Each pair
  is reported by exactly one combination, the lexicographically first it agrees on, so nothing
  is reported twice and no `np.unique` over pairs is needed. `m = d + 1` is the classic scheme
  (share one chunk; `d + 1` tables); a larger `m` uses more tables with longer keys, which cuts
  the random candidates by orders of magnitude on large inputs. The default picks `m` with a
  simple cost model (see `choose_n_chunks`); results are the same for every `m`.
- New batches are deduplicated against everything already curated: with `existing`, only
  new-new and new-existing pairs are searched (the existing keys are sorted and each new key is
  looked up with `searchsorted`); existing-existing pairs are never formed.

The default distance is `DEFAULT_MAX_DISTANCE = 4` on 64-bit pHash/dHash. Measured on CIFAR-10
(32x32): JPEG re-encoding (q75/q95) and 2x/7x upscaling stay at distance 0 and a 1.2x brightening
is within 4 for 95% of images (99% within 6); random distinct pairs fall within 4 (or 6) at a rate
of about 5e-7. Small crops move pHash further (a 1-pixel crop-and-resize is within 4 for 31%,
within 6 for 60%); the semantic tier catches those. On low-detail images (the 1,797 8x8 sklearn
digits upscaled) distance 6 merges 281 images, mostly different writers' drawings of the same
digit, against 54 at distance 4, hence 4.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from math import comb
from typing import Literal

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ssl_assets.curation.hashing import popcount64

DEFAULT_MAX_DISTANCE = 4
PAIR_COLUMNS = ["left", "right", "right_is_existing", "distance"]

# Candidate pairs materialised at once (each costs a few dozen bytes of temporaries).
_BLOCK = 1 << 22
_UINT64 = np.uint64


def chunk_layout(n_chunks: int) -> list[tuple[int, int]]:
    """(shift, width) of each of `n_chunks` contiguous chunks of a 64-bit word, widths within 1."""
    if not 1 <= n_chunks <= 64:
        raise ValueError(f"n_chunks must be in 1..64, got {n_chunks}")
    widths = [64 // n_chunks + (1 if c < 64 % n_chunks else 0) for c in range(n_chunks)]
    shifts = np.concatenate(([0], np.cumsum(widths)[:-1])).tolist()
    return list(zip(shifts, widths, strict=True))


def choose_n_chunks(n_new: int, n_existing: int, max_distance: int) -> int:
    """Number of chunks minimising an estimated cost for uniform random hashes.

    Cost per table: sorting/scanning all values (~1 unit each) plus the random candidates that
    share the key (~1 unit each); the number of tables is C(m, d).
    """
    d = max_distance
    n_total = n_new + n_existing
    pairs = n_new * (n_new - 1) / 2 + n_new * n_existing
    best, best_cost = d + 1, float("inf")
    for m in range(d + 1, min(64, d + 8) + 1):
        key_bits = sum(w for _, w in chunk_layout(m)[: m - d])
        cost = comb(m, d) * (n_total + pairs * 2.0**-key_bits)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


class _Chunked:
    """Unique hash values split once into chunks, so each table only shifts and ORs."""

    def __init__(self, values: np.ndarray, layout: list[tuple[int, int]]) -> None:
        self.values = values
        self.widths = [width for _, width in layout]
        self.chunks = [(values >> _UINT64(s)) & _UINT64((1 << w) - 1) for s, w in layout]
        self.pos_bits = max(1, int(len(values) - 1).bit_length())

    def key(self, combo: tuple[int, ...], low_bits: int = 0) -> tuple[np.ndarray, int]:
        """Chunks of `combo` concatenated above `low_bits` zero bits; returns (key, key bits)."""
        key = np.zeros(len(self.values), dtype=_UINT64)
        offset = low_bits
        for c in combo:
            key |= self.chunks[c] << _UINT64(offset)
            offset += self.widths[c]
        return key, offset - low_bits

    def sort(self, combo: tuple[int, ...]) -> _SortedKeys:
        """Sort by the key of `combo`, packing each value's position into the low bits if it fits."""
        key_bits = sum(self.widths[c] for c in combo)
        if key_bits + self.pos_bits <= 64:  # one packed uint64 sort: much faster than argsort
            words, _ = self.key(combo, self.pos_bits)
            words |= np.arange(len(self.values), dtype=_UINT64)
            words.sort()
            return _SortedKeys(words, self.pos_bits, None)
        key, _ = self.key(combo)
        order = np.argsort(key, kind="stable")
        return _SortedKeys(key[order], 0, order)


class _SortedKeys:
    """Sorted words whose bits above `shift` are the key; positions are below it or in `order`."""

    def __init__(self, words: np.ndarray, shift: int, order: np.ndarray | None) -> None:
        self.words, self.shift, self.order = words, shift, order

    def position(self, at: np.ndarray) -> np.ndarray:
        """Original positions of the values at sorted indices `at`."""
        if self.order is not None:
            return self.order[at]
        return (self.words[at] & _UINT64((1 << self.shift) - 1)).astype(np.int64)

    def equal_to_next(self) -> np.ndarray:
        """Sorted indices p whose key equals the key at p + 1."""
        diff = self.words[1:] ^ self.words[:-1]
        return np.flatnonzero(diff < _UINT64(1 << self.shift) if self.shift else diff == 0)

    def ranges(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of sorted indices holding each of `keys` (uint64 keys, unshifted)."""
        if self.shift == 0:
            return (
                np.searchsorted(self.words, keys, side="left"),
                np.searchsorted(self.words, keys, side="right"),
            )
        lo = np.searchsorted(self.words, keys << _UINT64(self.shift), side="left")
        hi = np.searchsorted(self.words, (keys + _UINT64(1)) << _UINT64(self.shift), side="left")
        return lo, hi


def _expand(lo: np.ndarray, hi: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For rows r with ranges [lo[r], hi[r]), yield (row, position) arrays in bounded blocks."""
    counts = np.maximum(hi - lo, 0)
    keep = np.flatnonzero(counts)
    if len(keep) == 0:
        return
    lo, counts = lo[keep], counts[keep]
    ends = np.cumsum(counts)
    start = 0
    while start < len(keep):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _BLOCK, side="right")))
        c = counts[start:stop]
        rows = np.repeat(np.arange(start, stop), c)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(c) - c, c)
        yield keep[rows], lo[rows] + offsets
        start = stop


def _expand_all(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_expand` concatenated into one (rows, positions) pair."""
    blocks = list(_expand(lo, hi))
    if not blocks:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _first_combination(x: np.ndarray, layout: list[tuple[int, int]], need: int) -> np.ndarray:
    """Bitmask (over chunks) of the first `need` chunks where `x` (a XOR of two hashes) is zero."""
    zero = np.zeros(x.shape, dtype=np.uint64)
    for c, (shift, width) in enumerate(layout):
        is_zero = ((x >> _UINT64(shift)) & _UINT64((1 << width) - 1)) == 0
        zero |= is_zero.astype(np.uint64) << _UINT64(c)
    first = np.zeros_like(zero)
    for _ in range(need):
        lowest = zero & (~zero + _UINT64(1))
        first |= lowest
        zero ^= lowest
    return first


def _verify(
    a: np.ndarray,
    b: np.ndarray,
    x_rows: np.ndarray,
    y_rows: np.ndarray,
    combo_mask: int,
    layout: list[tuple[int, int]],
    need: int,
    max_distance: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep candidate rows within distance that this table (combination) is responsible for."""
    x = a ^ b
    dist = popcount64(x)
    ok = np.flatnonzero(dist <= max_distance)
    x, x_rows, y_rows, dist = x[ok], x_rows[ok], y_rows[ok], dist[ok]
    mine = _first_combination(x, layout, need) == _UINT64(combo_mask)
    return x_rows[mine], y_rows[mine], dist[mine]


def value_pairs(
    values: np.ndarray,
    max_distance: int,
    existing_values: np.ndarray | None = None,
    n_chunks: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs of *distinct, unique* hash values within `max_distance`.

    Returns (self_pairs, cross_pairs): self_pairs has columns `a < b` indexing `values`; cross
    pairs `a` (into `values`) and `b` (into `existing_values`), equal values included. Both
    inputs must already be unique (see `find_near_pairs`). Each has a `distance` column.
    """
    values = np.asarray(values, dtype=_UINT64)
    old = np.asarray([] if existing_values is None else existing_values, dtype=_UINT64)
    d = int(max_distance)
    if not 0 <= d < 64:
        raise ValueError(f"max_distance must be in 0..63, got {max_distance}")
    m = n_chunks or choose_n_chunks(len(values), len(old), d)
    if m <= d:
        raise ValueError(f"n_chunks must exceed max_distance ({d}), got {m}")
    layout = chunk_layout(m)
    need = m - d
    found_self: list[tuple[np.ndarray, ...]] = []
    found_cross: list[tuple[np.ndarray, ...]] = []
    new_chunks = _Chunked(values, layout)
    old_chunks = _Chunked(old, layout) if len(old) and len(values) else None
    for combo in combinations(range(m), need):
        mask = sum(1 << c for c in combo)
        table = new_chunks.sort(combo)
        # Sorted indices p whose key equals the next one; consecutive ones form a run of equal
        # keys, and each p is paired with every later index of its run.
        eq = table.equal_to_next()
        if len(eq):
            chain_start = np.r_[True, np.diff(eq) != 1]
            chain_last = eq[np.r_[np.flatnonzero(chain_start)[1:] - 1, len(eq) - 1]]
            run_end = chain_last[np.cumsum(chain_start) - 1] + 2
            for rows, cols in _expand(eq + 1, run_end):
                i, j = table.position(eq[rows]), table.position(cols)
                found_self.append(_verify(values[i], values[j], i, j, mask, layout, need, d))
        if old_chunks is not None:
            old_table = old_chunks.sort(combo)
            lo, hi = old_table.ranges(new_chunks.key(combo)[0])
            for rows, cols in _expand(lo, hi):
                j = old_table.position(cols)
                found_cross.append(_verify(values[rows], old[j], rows, j, mask, layout, need, d))

    def frame(parts: list[tuple[np.ndarray, ...]], ordered: bool) -> pd.DataFrame:
        a = np.concatenate([p[0] for p in parts] or [np.empty(0, np.int64)]).astype(np.int64)
        b = np.concatenate([p[1] for p in parts] or [np.empty(0, np.int64)]).astype(np.int64)
        dist = np.concatenate([p[2] for p in parts] or [np.empty(0, np.uint8)]).astype(np.uint8)
        if ordered:
            a, b = np.minimum(a, b), np.maximum(a, b)
        return pd.DataFrame({"a": a, "b": b, "distance": dist})

    return frame(found_self, True), frame(found_cross, False)


_Groups = tuple[np.ndarray, np.ndarray]


def _group_members(inverse: np.ndarray, n_values: int) -> _Groups:
    """Items sorted by value (stable) and the start offset of each value's members."""
    members = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=n_values)
    return members, np.concatenate(([0], np.cumsum(counts)))


def _product(
    a_vals: np.ndarray, b_vals: np.ndarray, a_groups: _Groups, b_groups: _Groups
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All member pairs of value pairs (a_vals[k], b_vals[k]); returns (left, right, pair id)."""
    a_members, a_start = a_groups
    b_members, b_start = b_groups
    ca = a_start[a_vals + 1] - a_start[a_vals]
    cb = b_start[b_vals + 1] - b_start[b_vals]
    sizes = ca * cb
    k = np.repeat(np.arange(len(sizes)), sizes)
    t = np.arange(len(k)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    left = a_members[a_start[a_vals[k]] + t // cb[k]]
    right = b_members[b_start[b_vals[k]] + t % cb[k]]
    return left, right, k


def find_near_pairs(
    hashes: np.ndarray,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    existing: np.ndarray | None = None,
    *,
    identical: Literal["all", "star"] = "all",
    n_chunks: int | None = None,
) -> pd.DataFrame:
    """All pairs of items whose 64-bit hashes are within `max_distance` bits.

    Returns a frame with columns `left`, `right`, `right_is_existing`, `distance`:

    - `left` always indexes `hashes` (the new items);
    - if `right_is_existing` is False, `right` also indexes `hashes` and `left < right`;
    - if it is True, `right` indexes `existing`. Existing-existing pairs are never produced.

    Rows are sorted by (`left`, `right_is_existing`, `right`). With `identical="all"` (default)
    the result equals a brute-force comparison of every pair. Items with identical hashes make
    that output quadratic in the size of each identical group; `identical="star"` instead links
    every item of an identical group to the group's first item (distance 0) and links groups
    through their first items only. That keeps the output linear in the items and yields the
    same connected components (see `connected_groups`), which is all grouping needs.
    """
    if identical not in ("all", "star"):
        raise ValueError(f"identical must be 'all' or 'star', got {identical!r}")
    hashes = np.asarray(hashes, dtype=_UINT64).ravel()
    old = None if existing is None else np.asarray(existing, dtype=_UINT64).ravel()
    new_vals, new_inv = np.unique(hashes, return_inverse=True)
    new_inv = new_inv.ravel()
    if old is not None and len(old):
        old_vals, old_inv = np.unique(old, return_inverse=True)
        old_inv = old_inv.ravel()
    else:
        old_vals, old_inv = np.empty(0, _UINT64), np.empty(0, np.int64)
    selfp, crossp = value_pairs(new_vals, max_distance, old_vals, n_chunks)
    new_groups = _group_members(new_inv, len(new_vals))
    old_groups = _group_members(old_inv, len(old_vals))
    members, start = new_groups
    sizes = np.diff(start)

    parts: list[tuple[np.ndarray, np.ndarray, bool, np.ndarray]] = []
    sa, sb = selfp["a"].to_numpy(), selfp["b"].to_numpy()
    ca, cb = crossp["a"].to_numpy(), crossp["b"].to_numpy()
    if identical == "all":
        # Pairs inside each identical group: each member with the members after it.
        rows, cols = _expand_all(np.arange(1, len(members) + 1), np.repeat(start[1:], sizes))
        parts.append((members[rows], members[cols], False, np.zeros(len(rows), np.uint8)))
        left, right, k = _product(sa, sb, new_groups, new_groups)
        parts.append((left, right, False, selfp["distance"].to_numpy()[k]))
        left, right, k = _product(ca, cb, new_groups, old_groups)
        parts.append((left, right, True, crossp["distance"].to_numpy()[k]))
    else:  # "star"
        first = members[start[:-1]]
        not_first = np.ones(len(members), dtype=bool)
        not_first[start[:-1]] = False
        rep_of = np.repeat(first, sizes)[not_first]
        parts.append((rep_of, members[not_first], False, np.zeros(len(rep_of), np.uint8)))
        parts.append((first[sa], first[sb], False, selfp["distance"].to_numpy()))
        old_first = old_groups[0][old_groups[1][:-1]]
        parts.append((first[ca], old_first[cb], True, crossp["distance"].to_numpy()))

    left = np.concatenate([p[0] for p in parts]).astype(np.int64)
    right = np.concatenate([p[1] for p in parts]).astype(np.int64)
    is_old = np.concatenate([np.full(len(p[0]), p[2]) for p in parts]).astype(bool)
    dist = np.concatenate([p[3] for p in parts]).astype(np.uint8)
    swap = ~is_old & (left > right)
    left[swap], right[swap] = right[swap], left[swap]
    order = np.lexsort((right, is_old, left))
    return pd.DataFrame(
        {
            "left": left[order],
            "right": right[order],
            "right_is_existing": is_old[order],
            "distance": dist[order],
        }
    )


def connected_groups(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Group id per new item (int64, length `n`): connected components of the pair graph.

    `pairs` is a frame from `find_near_pairs` or `semantic.semantic_pairs` (only `left`,
    `right` and, if present, `right_is_existing` are read). Existing items referenced by cross
    pairs take part in the graph, so two new items near the same existing item share a group;
    a group touches the existing set iff one of its members is a `left` of a cross pair. Group
    ids are numbered 0, 1, ... in order of each group's first item; unpaired items get their own
    group. Groups are transitive closures: chained members may be further apart than the
    threshold from each other.
    """
    left = pairs["left"].to_numpy(dtype=np.int64)
    right = pairs["right"].to_numpy(dtype=np.int64)
    if "right_is_existing" in pairs:
        is_old = pairs["right_is_existing"].to_numpy(dtype=bool)
    else:
        is_old = np.zeros(len(left), dtype=bool)
    if len(left) and (left.min() < 0 or left.max() >= n or right[~is_old].max(initial=0) >= n):
        raise ValueError("pair indices out of range for n new items")
    # Existing items become extra nodes n, n+1, ... (only those referenced).
    old_ids, old_node = np.unique(right[is_old], return_inverse=True)
    nodes = right.copy()
    nodes[is_old] = n + old_node.ravel()
    size = n + len(old_ids)
    graph = coo_matrix((np.ones(len(left), np.int8), (left, nodes)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    labels = labels[:n]
    # Renumber by first appearance so ids do not depend on scipy's traversal order.
    _, first_index, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first_index), dtype=np.int64)
    rank[np.argsort(first_index, kind="stable")] = np.arange(len(first_index))
    return rank[inverse.ravel()]
