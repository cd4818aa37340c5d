"""The embedded default dataset: scikit-learn's bundled handwritten digits, as landed PNG batches.

1,797 real 8x8 grayscale digits ship inside scikit-learn, so the pipeline runs with no network and
no download. They land as two batches so that the second one "arrives" after the first, each with
a `labels.csv` that labels a stratified minority of its images; the rest stay unlabeled.

The digits carry no attributes (no writer, device or demographic information), so no
`metadata.csv` is written: the bias audit reports that plainly rather than inventing groups.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_assets.data.landed import READY_MARKER

BATCHES = ("digits-001", "digits-002")
FIRST_BATCH_SHARE = 0.6
SEED = 20260101


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 intensities, white ink on black; scale to the full 8-bit range.
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return pixels, digits.target.astype(int)


def _stratified_labeled(targets: np.ndarray, fraction: float, rng: np.random.Generator) -> set[int]:
    chosen: set[int] = set()
    for cls in np.unique(targets):
        idx = np.flatnonzero(targets == cls)
        k = max(1, int(round(fraction * len(idx))))
        chosen.update(int(i) for i in rng.choice(idx, size=min(k, len(idx)), replace=False))
    return chosen


def write_default_dataset(landing_dir: Path, n_images: int, label_fraction: float) -> list[str]:
    """Write the default batches under `landing_dir` (skipping any that already exist).

    Returns the batch names. Each batch is written completely before its `_READY` marker, so a
    sensor never picks up a half-written batch.
    """
    pixels, targets = _load_digits()
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(targets))[: min(n_images, len(targets))]
    cut = int(round(FIRST_BATCH_SHARE * len(order)))
    parts = {BATCHES[0]: order[:cut], BATCHES[1]: order[cut:]}

    for batch, indices in parts.items():
        batch_dir = landing_dir / batch
        if (batch_dir / READY_MARKER).exists():
            continue
        image_dir = batch_dir / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        labeled = _stratified_labeled(targets[indices], label_fraction, rng)
        rows = []
        for pos, idx in enumerate(indices):
            rel = f"images/digit_{int(idx):04d}.png"
            Image.fromarray(pixels[idx]).save(batch_dir / rel)
            if pos in labeled:
                rows.append((rel, str(int(targets[idx]))))
        with (batch_dir / "labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label"])
            writer.writerows(sorted(rows))
        (batch_dir / READY_MARKER).write_text("")
    return list(parts)
