"""The monitoring picture for the UI: drift and out-of-distribution share over batches.

Why a picture: one batch's energy coefficient of 0.03 says little; the same number beside the
earlier batches' and the bound says whether this is the trend or a jump. Drawn with the audits'
Agg-only helpers (no pyplot state), batches in order of arrival.
"""

from __future__ import annotations

import pandas as pd

from ssl_assets.audit.plots import _figure, _png

SPACES = {"pinned": ("pinned embedder", "tab:blue"), "champion": ("champion encoder", "tab:orange")}


def drift_over_batches_png(history: pd.DataFrame, max_effect: float, max_ood_share: float) -> bytes:
    """Energy coefficient (top) and out-of-distribution share (bottom) per batch and embedding
    space, drifted batches ringed in red, the bounds dashed. `history`: `batch_drift` rows."""
    batches = list(dict.fromkeys(history["batch"]))
    position = {b: i for i, b in enumerate(batches)}
    fig = _figure(max(5.0, 0.5 * len(batches) + 3.0), 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for space, part in history.groupby("space", sort=False):
        label, colour = SPACES.get(str(space), (str(space), "tab:gray"))
        part = part.dropna(subset=["effect"])
        x = part["batch"].map(position)
        for ax, column in ((top, "effect"), (bottom, "ood_share")):
            ax.plot(x, part[column], marker="o", color=colour, label=label)
            hit = part["drifted"].astype(bool)
            ax.scatter(x[hit], part.loc[hit, column], s=120, facecolors="none", edgecolors="red")
    top.axhline(max_effect, color="gray", linestyle="--", linewidth=1, label="bound")
    bottom.axhline(max_ood_share, color="gray", linestyle="--", linewidth=1)
    top.set_ylabel("energy coefficient")
    bottom.set_ylabel("out-of-distribution share")
    top.set_title("drift of each batch from the champion's training data", fontsize=10)
    top.legend(fontsize=8, loc="upper left")
    bottom.set_xticks(range(len(batches)), batches, rotation=30, ha="right", fontsize=8)
    return _png(fig)
