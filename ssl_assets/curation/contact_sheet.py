"""PNG grids of images with captions, so a person can judge thresholds by eye in the UI.

`pair_sheet` and `captioned_sheet` show every image at a size a person can judge (96 px by
default, upscaled without smoothing so pixels stay pixels), each with the ids and the score
that put it there, so a doubtful pair or flag can be looked up and overridden."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 12
#: side of an image in the judging sheets, pixels
JUDGE_CELL = 96


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


ReadRows = Callable[[pd.DataFrame], np.ndarray]


def _pixels_of(
    catalog: pd.DataFrame, wanted: set[str], read_rows: ReadRows
) -> dict[str, np.ndarray]:
    """Pixels of the wanted images only (a sheet never reads the whole catalog)."""
    shown = catalog[catalog["image_id"].isin(wanted)].reset_index(drop=True)
    pixels = read_rows(shown) if len(shown) else np.empty((0,))
    return {image_id: pixels[k] for k, image_id in enumerate(shown["image_id"])}


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _tile(img: np.ndarray, cell: int) -> Image.Image:
    return Image.fromarray(np.asarray(img, dtype=np.uint8)).resize(
        (cell, cell), Image.Resampling.NEAREST
    )


def _sheet(
    title: str, items: Sequence[tuple[list[np.ndarray], list[str]]], cell: int, per_row: int
) -> bytes:
    """A titled grid of items, each one or more tiles side by side with caption lines below."""
    font, line = _font(11), 13
    tiles = max((len(t) for t, _ in items), default=1)
    lines = max((len(c) for _, c in items), default=0)
    item_w = tiles * cell + (tiles - 1) * 2
    item_h = cell + lines * line + 8
    cols = max(1, min(per_row, len(items)))
    rows = max(1, -(-len(items) // cols))
    width = max(cols * (item_w + 12) + 8, 360)
    sheet = Image.new("RGB", (width, 24 + rows * item_h + 4), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill="black", font=_font(13))
    for k, (images, captions) in enumerate(items):
        x0 = 6 + (k % cols) * (item_w + 12)
        y0 = 24 + (k // cols) * item_h
        for j, img in enumerate(images):
            sheet.paste(_tile(img, cell), (x0 + j * (cell + 2), y0))
        for j, text in enumerate(captions):
            draw.text((x0, y0 + cell + 2 + j * line), text, fill="black", font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def pair_sheet(
    pairs: pd.DataFrame,
    catalog: pd.DataFrame,
    read_rows: ReadRows,
    title: str,
    score_text: Callable[[float], str],
    limit: int = 24,
    cell: int = JUDGE_CELL,
    per_row: int = 4,
) -> bytes | None:
    """Up to `limit` duplicate pairs (columns image_id, other_id, score), each the two images
    side by side captioned with both ids and the score; None when there is none."""
    shown = pairs.head(limit)
    if shown.empty:
        return None
    wanted = set(shown["image_id"]) | set(shown["other_id"])
    pixels = _pixels_of(catalog, wanted, read_rows)
    items = [
        (
            [pixels[p.image_id], pixels[p.other_id]],
            [f"{p.image_id[:12]}", f"{p.other_id[:12]}", score_text(float(p.score))],
        )
        for p in shown.itertuples()
        if p.image_id in pixels and p.other_id in pixels
    ]
    return _sheet(title, items, cell, per_row) if items else None


def captioned_sheet(
    rows: pd.DataFrame,
    catalog: pd.DataFrame,
    read_rows: ReadRows,
    title: str,
    caption: Callable[[Any], list[str]],
    cell: int = JUDGE_CELL,
    per_row: int = 8,
) -> bytes | None:
    """One tile per row (column image_id), captioned by `caption(row)`; None when empty."""
    if rows.empty:
        return None
    pixels = _pixels_of(catalog, set(rows["image_id"]), read_rows)
    items = [([pixels[r.image_id]], caption(r)) for r in rows.itertuples() if r.image_id in pixels]
    return _sheet(title, items, cell, per_row) if items else None


PairTile = tuple[Sequence[str], np.ndarray, np.ndarray]


def pairs_png(
    sections: Sequence[tuple[str, Sequence[PairTile]]], cols: int = 5, cell: int = 56
) -> bytes:
    """Pairs of images side by side, each with caption lines under it (ids and scores), in
    titled sections: a person judges what a threshold merged, and what it nearly merged."""
    line = CAPTION_HEIGHT
    lines = max([len(c) for _, tiles in sections for c, _, _ in tiles] or [1])
    tile_w, tile_h = 2 * cell + 8, cell + lines * line + 6
    chars = tile_w // 6  # the default font is about 6 pixels a character
    width = max(240, cols * tile_w + 4)
    height = sum(line + 6 + max(1, -(-len(tiles) // cols)) * tile_h for _, tiles in sections)
    sheet = Image.new("RGB", (width, height + 4), "white")
    draw = ImageDraw.Draw(sheet)
    y = 2
    for title, tiles in sections:
        draw.text((2, y), title[: width // 6], fill="black")
        y += line + 6
        if not tiles:
            draw.text((2, y), "none", fill="gray")
        for k, (caption, first, second) in enumerate(tiles):
            x, top = 2 + (k % cols) * tile_w, y + (k // cols) * tile_h
            for j, img in enumerate((first, second)):
                tile = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize(
                    (cell, cell), Image.Resampling.NEAREST
                )
                sheet.paste(tile, (x + j * (cell + 1), top))
            for i, text in enumerate(caption):
                draw.text((x, top + cell + 2 + i * line), text[:chars], fill="black")
        y += max(1, -(-len(tiles) // cols)) * tile_h
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
