"""Small PNG grids of images with captions, so a person can judge thresholds by eye in the UI."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
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


ReadRows = Callable[[pd.DataFrame], np.ndarray]


def _pixels_of(
    catalog: pd.DataFrame, wanted: set[str], read_rows: ReadRows
) -> dict[str, np.ndarray]:
    """Pixels of the wanted images only (a sheet never reads the whole catalog)."""
    shown = catalog[catalog["image_id"].isin(wanted)].reset_index(drop=True)
    pixels = read_rows(shown) if len(shown) else np.empty((0,))
    return {image_id: pixels[k] for k, image_id in enumerate(shown["image_id"])}


def group_sheet(
    groups: pd.DataFrame, catalog: pd.DataFrame, read_rows: ReadRows, limit: int = 6
) -> bytes:
    """A few duplicate groups per tier, the kept image first, then its excluded copies."""
    members = groups[groups["role"] == "member"]
    picked: list[tuple[str, list[str]]] = []
    for tier in ("exact", "near", "semantic", "aligned"):
        for group_id, part in list(members[members["tier"] == tier].groupby("group_id"))[:2]:
            picked.append((tier, [group_id, *part["image_id"].tolist()][:limit]))
    pixels = _pixels_of(catalog, {i for _, ids in picked for i in ids}, read_rows)
    rows = [
        (f"{tier}: kept first, then excluded copies", [pixels[i] for i in ids if i in pixels])
        for tier, ids in picked
    ]
    return grid_png(rows or [("no duplicate groups", [])])


def issue_sheet(
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    read_rows: ReadRows,
    issues: Sequence[str],
    exclude: Sequence[str],
    per_issue: int = 8,
) -> bytes | None:
    """Up to `per_issue` flagged images per quality issue, captioned with what the flag does."""
    if table.empty:
        return None
    pixels = _pixels_of(catalog, set(table["image_id"]), read_rows)
    rows = []
    for issue in issues:
        ids = table.loc[table["issue"] == issue, "image_id"].head(per_issue)
        if len(ids):
            action = "excludes" if issue in exclude else "annotates"
            rows.append((f"{issue} ({action})", [pixels[i] for i in ids]))
    return grid_png(rows) if rows else None


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
