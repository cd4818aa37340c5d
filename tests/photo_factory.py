"""Photo-like test images at real sizes and aspect ratios, made on the fly.

Why not noise: a photo is smooth at the scale of a pixel and structured at the scale of the
picture, and canonicalisation, JPEG size and augmentation all behave differently on noise. Each
image is a smooth random colour field with a few shapes, and its label says which shape is
largest (so fine-tuning has something to learn); distinct seeds give distinct pictures.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from resources.lake import READY_MARKER

#: (width, height) ratios the acceptance test asks for: 4:3, 3:4, 16:9
ASPECTS = ((4, 3), (3, 4), (16, 9))
CLASSES = ("ellipse", "box")


def photo(seed: int, width: int, height: int) -> tuple[Image.Image, str]:
    """A `width` x `height` RGB photo-like image and its class."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    label = CLASSES[seed % len(CLASSES)]
    for i in range(3):
        big = i == 0
        w = int(width * rng.uniform(0.35, 0.5) if big else width * rng.uniform(0.08, 0.15))
        h = int(height * rng.uniform(0.35, 0.5) if big else height * rng.uniform(0.08, 0.15))
        x0 = int(rng.integers(0, max(1, width - w)))
        y0 = int(rng.integers(0, max(1, height - h)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = label if big else CLASSES[int(rng.integers(0, 2))]
        (draw.ellipse if shape == "ellipse" else draw.rectangle)(
            (x0, y0, x0 + w, y0 + h), fill=colour
        )
    noise = rng.normal(0, 3, size=(height, width, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), label


def photo_size(seed: int, short_min: int = 320, long_max: int = 1024) -> tuple[int, int]:
    """A (width, height) between 320 and 1024 px with one of `ASPECTS`, chosen by `seed`."""
    rng = np.random.default_rng(seed + 10_000)
    aw, ah = ASPECTS[seed % len(ASPECTS)]
    long_side = int(rng.integers(max(short_min * max(aw, ah) // min(aw, ah), 400), long_max + 1))
    if aw >= ah:
        return long_side, max(short_min, long_side * ah // aw)
    return max(short_min, long_side * aw // ah), long_side


def write_photo_batch(landing: Path, batch: str, n: int, first_seed: int = 0) -> Path:
    """A landed batch of `n` JPEG photos (every image labelled) with its `_READY` marker."""
    batch_dir = landing / batch
    (batch_dir / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(first_seed, first_seed + n):
        img, label = photo(seed, *photo_size(seed))
        rel = f"photos/p{seed:04d}.jpg"
        img.save(batch_dir / rel, quality=90)
        rows.append((rel, label))
    with (batch_dir / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    (batch_dir / READY_MARKER).write_text("")
    return batch_dir
