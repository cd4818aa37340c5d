"""Pictures of training results for the UI (matplotlib, imported lazily; no torch import)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

CURVE_KEYS = ("loss", "embedding_std", "effective_rank", "knn_accuracy")
#: fine-tuning's per-epoch record (`supervised.TrainLog.history`)
FINETUNE_CURVE_KEYS = ("loss", "val_loss", "val_accuracy")


def training_curves_png(
    history: Sequence[dict[str, Any]], keys: Sequence[str] = CURVE_KEYS
) -> bytes | None:
    """One small panel per monitored quantity (by default loss, collapse indicators, online
    kNN accuracy) over epochs; None when nothing was recorded."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if k in history[0]]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6))
    axes = [axes] if len(keys) == 1 else list(axes)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(epochs, [h.get(key) for h in history], marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
