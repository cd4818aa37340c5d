"""Deduplicate newly catalogued images against themselves and everything curated before.

Four tiers, strongest first: `exact` (identical decoded pixels), `near` (perceptual hash within
a Hamming distance), `semantic` (pinned-embedding cosine similarity within k-means clusters) and
`aligned` (a pinned-embedding neighbour confirmed by comparing pixels under the best small shift,
crop and tone change; `curation/aligned.py`). Every edge records the pair's embedding cosine and,
where both images are large enough to judge, its pixel scores, whichever tier found it.
Edges are searched only new-new and new-old, so earlier decisions never move: an old group keeps
its id (its first member, the kept representative) and new images can only join it.

A new image that touches several old groups joins the earliest one and remembers all of them in
`linked_groups`; whether that is a leak across splits is the split step's call, not this one's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ssl_assets.curation.aligned import (
    AlignSettings,
    aligned_scores,
    candidate_pairs,
    luma32,
    verified,
)
from ssl_assets.curation.near_duplicates import connected_groups, find_near_pairs
from ssl_assets.curation.semantic import cluster_labels, semantic_pairs

TIERS = ("exact", "near", "semantic", "aligned")
EDGE_COLUMNS = ["left", "right", "right_is_existing", "tier", "score"]
# What every edge records besides its tier's score (NaN where not measured).
EDGE_SCORES = ["cosine", "pixel_ncc", "pixel_gradient"]
ReadPixels = Callable[[pd.DataFrame], np.ndarray]
GROUP_COLUMNS = ["image_id", "group_id", "role", "tier", "matched_id", "score", "linked_groups"]


@dataclass(frozen=True)
class DedupConfig:
    """Curation's defaults. Measured on the default data (1,797 sklearn digits), distance 4
    merges 65 images and similarity 0.98 another 43, all visibly the same digit drawn the same
    way; distance 6 / similarity 0.95 would merge over half of them (different people's 1s).
    The aligned tier's defaults were set on CIFAR-10 (see `curation/aligned.py`); it never
    judges images under `aligned_min_side` native pixels, so the 8x8 digits are untouched."""

    near_max_distance: int = 4
    semantic_threshold: float = 0.98
    semantic_clusters: int | None = None  # None: about one cluster per 1,000 images
    aligned: bool = True
    aligned_min_similarity: float = 0.8  # candidates: pinned-embedding cosine at least this
    aligned_neighbours: int = 2  # ... among each new image's nearest
    aligned_probes: int = 3  # k-means clusters searched per image
    aligned_min_side: int = 16  # native pixels (shorter side) both images need to be judged
    aligned_max_shift: int = 2  # pixels at 32x32
    aligned_max_crop: float = 0.1
    aligned_mirror: bool = False
    aligned_min_ncc: float = 0.85
    aligned_min_gradient: float = 0.88
    seed: int = 0

    @property
    def align(self) -> AlignSettings:
        return AlignSettings(
            max_shift=self.aligned_max_shift,
            max_crop=self.aligned_max_crop,
            mirror=self.aligned_mirror,
            min_ncc=self.aligned_min_ncc,
            min_gradient=self.aligned_min_gradient,
        )


def _exact_edges(new_hashes: pd.Series, old_hashes: pd.Series) -> pd.DataFrame:
    """Star edges: every new image to the first image with the same pixel hash."""
    new = pd.DataFrame({"h": new_hashes.to_numpy(), "i": np.arange(len(new_hashes))})
    old_first = (
        pd.DataFrame({"h": old_hashes.to_numpy(), "j": np.arange(len(old_hashes))})
        .drop_duplicates("h")
        .set_index("h")["j"]
    )
    to_old = new[new["h"].isin(old_first.index)]
    cross = pd.DataFrame(
        {"left": to_old["i"].to_numpy(), "right": old_first.loc[to_old["h"]].to_numpy()}
    ).assign(right_is_existing=True)
    fresh = new[~new["h"].isin(old_first.index)]
    first = fresh.groupby("h")["i"].transform("min")
    inner = fresh[fresh["i"] != first]
    within = pd.DataFrame(
        {"left": first[inner.index].to_numpy(), "right": inner["i"].to_numpy()}
    ).assign(right_is_existing=False)
    return pd.concat([cross, within], ignore_index=True).assign(tier="exact", score=1.0)


def _strongest(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One edge per pair, labelled with the strongest tier that found it."""
    found = [p[EDGE_COLUMNS] for p in parts if len(p)]
    if not found:
        return pd.DataFrame(
            {"left": [], "right": [], "right_is_existing": [], "tier": [], "score": []}
        ).astype({"left": int, "right": int, "right_is_existing": bool, "score": float})
    edges = pd.concat(found, ignore_index=True)
    edges["rank"] = edges["tier"].map({t: k for k, t in enumerate(TIERS)})
    edges = edges.sort_values(["rank", "left", "right"], kind="stable")
    edges = edges.drop_duplicates(["left", "right", "right_is_existing"]).drop(columns="rank")
    return edges.reset_index(drop=True)


class _PairPixels:
    """Luma (32x32) of the new and old images that pairs name, read once, and which of them are
    large enough natively to be judged."""

    def __init__(
        self, new: pd.DataFrame, old: pd.DataFrame, read: ReadPixels, min_side: int
    ) -> None:
        self.frames, self.read, self.min_side = (new, old), read, min_side
        self.luma: list[dict[int, np.ndarray]] = [{}, {}]

    def judged(self, side: int, rows: np.ndarray) -> np.ndarray:
        frame = self.frames[side]
        if not {"orig_width", "orig_height"} <= set(frame.columns):
            return np.ones(len(rows), bool)
        shorter = np.minimum(frame["orig_width"].to_numpy(), frame["orig_height"].to_numpy())
        return shorter[rows] >= self.min_side

    def get(self, side: int, rows: np.ndarray) -> np.ndarray:
        cache = self.luma[side]
        missing = np.setdiff1d(np.unique(rows), np.fromiter(cache, np.int64, len(cache)))
        if len(missing):
            pixels = self.read(self.frames[side].iloc[missing])
            cache.update(zip(missing.tolist(), luma32(pixels), strict=True))
        return np.stack([cache[int(r)] for r in rows])

    def scores(self, pairs: pd.DataFrame, settings: AlignSettings) -> pd.DataFrame:
        """Pixel scores of each pair (NaN where either image is too small to judge)."""
        left = pairs["left"].to_numpy(np.int64)
        right = pairs["right"].to_numpy(np.int64)
        is_old = pairs["right_is_existing"].to_numpy(bool)
        judged = self.judged(0, left)
        judged[is_old] &= self.judged(1, right[is_old])
        judged[~is_old] &= self.judged(0, right[~is_old])
        out = pd.DataFrame(np.nan, index=pairs.index, columns=["pixel_ncc", "pixel_gradient"])
        out["pixel_contrast"] = np.nan
        rows = np.flatnonzero(judged)
        if len(rows) == 0:
            return out
        first = self.get(0, left[rows])
        second = np.empty_like(first)
        old_rows = is_old[rows]
        if old_rows.any():
            second[old_rows] = self.get(1, right[rows][old_rows])
        if (~old_rows).any():
            second[~old_rows] = self.get(0, right[rows][~old_rows])
        measured = aligned_scores(first, second, settings)
        out.iloc[rows] = measured[out.columns].to_numpy()
        return out


def _aligned_edges(
    edges: pd.DataFrame,
    new_embeddings: np.ndarray,
    old_embeddings: np.ndarray,
    labels: np.ndarray,
    pixels: _PairPixels,
    config: DedupConfig,
) -> pd.DataFrame:
    """Candidate pairs no stronger tier linked, verified by their pixels: the aligned tier."""
    candidates = candidate_pairs(
        new_embeddings,
        old_embeddings,
        labels,
        config.aligned_neighbours,
        config.aligned_min_similarity,
        config.aligned_probes,
    )
    key = ["left", "right", "right_is_existing"]
    known = candidates.merge(edges[key], on=key, how="left", indicator=True)["_merge"]
    candidates = candidates[(known == "left_only").to_numpy()].reset_index(drop=True)
    scores = pixels.scores(candidates, config.align)
    ok = verified(scores, config.align)
    return (
        candidates[ok]
        .assign(tier="aligned", score=scores["pixel_gradient"][ok].to_numpy())
        .reset_index(drop=True)
    )


def _edge_scores(
    edges: pd.DataFrame,
    new_embeddings: np.ndarray,
    old_embeddings: np.ndarray,
    pixels: _PairPixels | None,
    config: DedupConfig,
) -> pd.DataFrame:
    """`edges` with `EDGE_SCORES`: the embedding cosine of every pair and, unless exact, the
    pixel scores of the pairs both of whose images are large enough to judge."""
    left = edges["left"].to_numpy(np.int64)
    right = edges["right"].to_numpy(np.int64)
    is_old = edges["right_is_existing"].to_numpy(bool)
    other = np.empty((len(edges), new_embeddings.shape[1]), np.float32)
    other[is_old] = old_embeddings[right[is_old]] if is_old.any() else 0
    other[~is_old] = new_embeddings[right[~is_old]]
    edges = edges.assign(cosine=np.einsum("ij,ij->i", new_embeddings[left], other))
    edges["pixel_ncc"] = np.where(edges["tier"] == "exact", 1.0, np.nan)
    edges["pixel_gradient"] = edges["pixel_ncc"]
    todo = (edges["tier"] != "exact").to_numpy()
    if pixels is not None and todo.any():
        scores = pixels.scores(edges[todo], config.align)
        edges.loc[todo, ["pixel_ncc", "pixel_gradient"]] = scores[
            ["pixel_ncc", "pixel_gradient"]
        ].to_numpy()
    return edges


def find_edges(
    new: pd.DataFrame,
    new_embeddings: np.ndarray,
    old: pd.DataFrame,
    old_embeddings: np.ndarray,
    config: DedupConfig,
    read_pixels: ReadPixels | None = None,
) -> pd.DataFrame:
    """Duplicate edges of the new images (rows of `new`) among themselves and with `old`.

    `new` and `old` need `pixel_hash` and `phash` (uint64) columns, in their curation order (and
    `orig_width`, `orig_height` for the aligned tier, whose pixels `read_pixels(rows)` reads;
    without it there is no aligned tier). One edge per pair, labelled with the strongest tier
    that found it, with `EDGE_SCORES`.
    """
    new_embeddings = np.asarray(new_embeddings, np.float32)
    old_embeddings = np.asarray(old_embeddings, np.float32)
    if len(old) == 0:
        old_embeddings = np.zeros((0, new_embeddings.shape[1]), np.float32)
    parts = [_exact_edges(new["pixel_hash"], old["pixel_hash"])]
    near = find_near_pairs(
        new["phash"].to_numpy(np.uint64),
        config.near_max_distance,
        existing=old["phash"].to_numpy(np.uint64) if len(old) else None,
        identical="star",
    )
    parts.append(near.rename(columns={"distance": "score"}).assign(tier="near"))
    labels = None
    if len(new) > 1 or len(old):
        points = np.concatenate([new_embeddings, old_embeddings])
        labels = cluster_labels(points, config.semantic_clusters, config.seed)
        semantic = semantic_pairs(
            new_embeddings,
            config.semantic_threshold,
            existing=old_embeddings if len(old) else None,
            labels=labels,
        )
        parts.append(semantic.rename(columns={"similarity": "score"}).assign(tier="semantic"))
    edges = _strongest(parts)
    pixels = None
    if read_pixels is not None:
        pixels = _PairPixels(new, old, read_pixels, config.aligned_min_side)
        if config.aligned and labels is not None:
            aligned = _aligned_edges(edges, new_embeddings, old_embeddings, labels, pixels, config)
            edges = _strongest([edges, aligned])
    return _edge_scores(edges, new_embeddings, old_embeddings, pixels, config)


def label_edges(edges: pd.DataFrame, new_ids: np.ndarray, old_ids: np.ndarray) -> pd.DataFrame:
    """`edges` with the image ids of both ends added as `left_id` and `right_id`."""
    is_old = edges["right_is_existing"].to_numpy(bool)
    right = edges["right"].to_numpy(int)
    right_ids = np.empty(len(edges), dtype=object)
    right_ids[is_old] = old_ids[right[is_old]]
    right_ids[~is_old] = new_ids[right[~is_old]]
    return edges.assign(left_id=new_ids[edges["left"].to_numpy(int)], right_id=right_ids)


def assign_groups(
    new_ids: list[str],
    old: pd.DataFrame,
    edges: pd.DataFrame,
    unmerged: set[str] | frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Group every new image; returns one row per new image with `GROUP_COLUMNS`.

    `old` has `image_id` and `group_id` of earlier images, in the order their groups were made.
    Images in `unmerged` (a person said they are not duplicates) keep no edges.
    """
    n = len(new_ids)
    ids = np.asarray(new_ids, dtype=object)
    old_group = old["group_id"].to_numpy(dtype=object)
    edges = label_edges(edges, ids, old["image_id"].to_numpy(dtype=object))
    keep = ~(edges["left_id"].isin(list(unmerged)) | edges["right_id"].isin(list(unmerged)))
    edges = edges[keep]
    inner = edges[~edges["right_is_existing"].astype(bool)]
    cross = edges[edges["right_is_existing"].astype(bool)]
    component = connected_groups(n, inner[["left", "right"]])
    group_rank = {g: k for k, g in enumerate(pd.unique(old_group))}

    # Strongest edge per new image (a new image may be either end of an inner edge).
    ends = pd.concat(
        [
            edges[["left", "right_id", "tier", "score"]].set_axis(
                ["i", "other", "tier", "score"], axis=1
            ),
            inner[["right", "left_id", "tier", "score"]].set_axis(
                ["i", "other", "tier", "score"], axis=1
            ),
        ],
        ignore_index=True,
    )
    ends["rank"] = ends["tier"].map({t: k for k, t in enumerate(TIERS)})
    best = ends.sort_values(["i", "rank"], kind="stable").drop_duplicates("i").set_index("i")

    linked: dict[int, list[str]] = {}
    for left, right in zip(cross["left"].to_numpy(int), cross["right"].to_numpy(int), strict=True):
        linked.setdefault(int(component[left]), []).append(old_group[right])

    rows = []
    first_of: dict[int, int] = {}
    for i in range(n):
        first_of.setdefault(int(component[i]), i)
    for i in range(n):
        comp = int(component[i])
        groups = sorted(set(linked.get(comp, [])), key=group_rank.__getitem__)
        if groups:
            group_id, role = groups[0], "member"
        elif first_of[comp] == i:
            group_id, role = ids[i], "representative"
        else:
            group_id, role = ids[first_of[comp]], "member"
        edge = best.loc[i] if role == "member" and i in best.index else None
        rows.append(
            {
                "image_id": ids[i],
                "group_id": group_id,
                "role": role,
                "tier": None if edge is None else edge["tier"],
                "matched_id": None if edge is None else edge["other"],
                "score": None if edge is None else float(edge["score"]),
                "linked_groups": groups,
            }
        )
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def new_and_old(catalog: pd.DataFrame, done: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the admitted catalog into images not deduplicated yet (in curation order) and
    those already in a group (`done`: image_id, group_id, seq), the latter in group order."""
    is_old = catalog["image_id"].isin(done["image_id"])
    new = catalog[~is_old].reset_index(drop=True)
    old = (
        catalog[is_old]
        .merge(done, on="image_id")
        .sort_values("seq", kind="stable")
        .reset_index(drop=True)
    )
    return new, old


def group_tables(
    groups: pd.DataFrame,
    edges: pd.DataFrame,
    new: pd.DataFrame,
    old: pd.DataFrame,
    *,
    next_seq: int,
    embedder: str,
    stamp: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows `duplicates` (one per new image, numbered on from `next_seq`) and
    `duplicate_pairs` (one per edge found) record."""
    rows = groups.assign(
        seq=np.arange(next_seq, next_seq + len(groups)), embedder=embedder, **stamp
    )
    labelled = label_edges(
        edges, new["image_id"].to_numpy(object), old["image_id"].to_numpy(object)
    )
    pairs = pd.DataFrame(
        {
            "image_id": labelled["left_id"],
            "other_id": labelled["right_id"],
            "tier": labelled["tier"],
            "score": labelled["score"].astype(float),
            **{c: labelled[c].astype(float) for c in EDGE_SCORES if c in labelled},
            **stamp,
        }
    )
    return rows, pairs
