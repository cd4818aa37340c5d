"""PNG plots of the audits, for the Dagster UI (inline) and the lake's reports folder.

Why: a cluster-size entropy of 0.41 means little until you see one blob holding most points.
matplotlib is imported inside each function (and only its Agg canvas, never pyplot's global
state), so importing this module costs nothing and plots work in any thread or process.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

MAX_POINTS = 5000
MAX_ATTRIBUTES = 6


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def projection_png(xy: np.ndarray, clusters: np.ndarray, title: str, seed: int = 0) -> bytes:
    """Scatter of a 2-D projection coloured by cluster (at most `MAX_POINTS` points drawn)."""
    xy = np.asarray(xy, dtype=float)
    clusters = np.asarray(clusters)
    if len(xy) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(xy), MAX_POINTS, replace=False))
        xy, clusters = xy[keep], clusters[keep]
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    ax.scatter(
        xy[:, 0],
        xy[:, 1],
        c=clusters % 20,
        cmap="tab20",
        vmin=0,
        vmax=19,
        s=5,
        alpha=0.8,
        linewidths=0,
    )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return _png(fig)


def cluster_sizes_png(sizes: np.ndarray, title: str) -> bytes:
    """Bar chart of cluster sizes, largest first, with the share of the largest marked."""
    sizes = np.sort(np.asarray(sizes, dtype=float))[::-1]
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    if len(sizes):
        ax.bar(np.arange(len(sizes)), sizes, color="#4c72b0")
        ax.axhline(sizes.sum() / len(sizes), color="grey", lw=1, ls="--", label="even split")
        ax.legend(fontsize=8)
        ax.annotate(
            f"{sizes[0] / sizes.sum():.0%}",
            (0, sizes[0]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("cluster (largest first)")
    ax.set_ylabel("images")
    return _png(fig)


def subgroup_shares_png(shares: pd.DataFrame, floor: float, title: str) -> bytes:
    """Per attribute (at most `MAX_ATTRIBUTES`), subgroup shares side by side for each scope."""
    data = shares[shares["share"].notna()]
    attributes = list(dict.fromkeys(data["attribute"]))[:MAX_ATTRIBUTES]
    fig = _figure(7.0, 2.6 * max(1, len(attributes)))
    if not attributes:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no attributes to show", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    axes = fig.subplots(len(attributes), 1, squeeze=False)[:, 0]
    for ax, attribute in zip(axes, attributes, strict=True):
        part = data[data["attribute"] == attribute]
        table = part.pivot_table(index="subgroup", columns="scope", values="share", aggfunc="first")
        scopes = ("all", "train", "val", "test", "earlier_batches", "newest_batch")
        table = table[[s for s in scopes if s in table.columns]].fillna(0.0)
        width = 0.8 / max(1, len(table.columns))
        for k, scope in enumerate(table.columns):
            ax.bar(np.arange(len(table)) + k * width, table[scope], width, label=scope)
        ax.axhline(floor, color="red", lw=1, ls="--", label=f"floor {floor:.0%}")
        ax.set_xticks(np.arange(len(table)) + 0.4 - width / 2)
        ax.set_xticklabels([str(s)[:14] for s in table.index], fontsize=7, rotation=30)
        ax.set_ylabel("share")
        ax.set_title(f"{title}: {attribute}", fontsize=9)
        ax.legend(fontsize=6, ncols=4)
    return _png(fig)
