"""Small PNG grids of images with captions, so a person can judge thresholds by eye in the UI."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

CAPTION_HEIGHT = 12


def grid_png(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]], cell: int = 48, max_cols: int = 8
) -> bytes:
    """One row per (caption, images); images are H x W x 3 uint8, scaled to `cell` pixels."""
    rows = [(caption, list(images)[:max_cols]) for caption, images in rows]
    if not rows:
        rows = [("nothing to show", [])]
    width = max(1, max(len(images) for _, images in rows)) * (cell + 2) + 2
    height = len(rows) * (cell + CAPTION_HEIGHT + 4) + 2
    sheet = Image.new("RGB", (max(width, 240), height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 2
    for caption, images in rows:
        draw.text((2, y), caption[:80], fill="black")
        y += CAPTION_HEIGHT
        for k, img in enumerate(images):
            tile = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize(
                (cell, cell), Image.Resampling.NEAREST
            )
            sheet.paste(tile, (2 + k * (cell + 2), y))
        y += cell + 4
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that embeds the PNG inline (Dagster's UI renders it in the metadata panel)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
