"""Inspect every file of a landed batch and say, per file, whether it is a usable image.

One manifest row per file occurrence. Nothing here writes to the landing zone: files are opened
read-only, symlinks are never followed, and every problem becomes a `quarantined` row with a
machine-readable `reason` (and the decoder's own words in `detail`) instead of an exception.

Validation decodes each image fully (`Image.load`): a truncated JPEG is only found that way.
The catalog decodes again to canonicalise; for the small images this project targets that is
cheap next to training, and it keeps ingestion free of any resolution choice.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# Sidecar files that belong to the landing conventions, not images.
CONTROL_FILES = frozenset({"_READY", "labels.csv", "metadata.csv"})
# Modes we can turn into RGB without guessing a scale (16-bit, 32-bit int and float images need a
# user's decision on how to map them to 8 bits, so they are quarantined with a clear reason).
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
)

QUARANTINE_REASONS = (
    "symlink",
    "outside_batch",
    "unsupported_extension",
    "empty_file",
    "unreadable",
    "not_an_image",
    "too_many_pixels",
    "unsupported_mode",
    "truncated",
    "corrupt",
)

MANIFEST_COLUMNS = [
    "image_id",
    "batch",
    "rel_path",
    "content_hash",
    "bytes",
    "format",
    "width",
    "height",
    "mode",
    "status",
    "reason",
    "detail",
]


def image_id_for(batch: str, rel_path: str) -> str:
    """Stable id of a file occurrence: the same (batch, relative path) always gets the same id."""
    return hashlib.sha256(f"{batch}/{rel_path}".encode()).hexdigest()[:20]


@dataclass
class _Row:
    rel_path: str
    status: str = "ok"
    reason: str | None = None
    detail: str | None = None
    content_hash: str | None = None
    bytes: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None

    def quarantine(self, reason: str, detail: str | None = None) -> _Row:
        assert reason in QUARANTINE_REASONS, reason
        self.status, self.reason, self.detail = "quarantined", reason, detail
        return self


def inspect_image_bytes(row: _Row, data: bytes, max_pixels: int) -> _Row:
    """Fill `row` from the file's bytes: hash, format, size, mode, or a quarantine reason."""
    row.bytes = len(data)
    row.content_hash = hashlib.sha256(data).hexdigest()
    if not data:
        return row.quarantine("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                row.format, row.mode = img.format, img.mode
                row.width, row.height = img.size
                if row.width <= 0 or row.height <= 0:
                    return row.quarantine("corrupt", f"size {img.size}")
                if row.width * row.height > max_pixels:
                    return row.quarantine(
                        "too_many_pixels",
                        f"{row.width}x{row.height} exceeds the limit of {max_pixels} pixels",
                    )
                if img.mode not in SUPPORTED_MODES:
                    return row.quarantine(
                        "unsupported_mode", f"mode {img.mode!r} has no defined 8-bit RGB mapping"
                    )
                img.load()  # full decode: the only way to find a truncated file
    except UnidentifiedImageError as exc:
        return row.quarantine("not_an_image", str(exc))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return row.quarantine("too_many_pixels", str(exc))
    except OSError as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text.lower() else "corrupt"
        return row.quarantine(reason, text)
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        return row.quarantine("corrupt", f"{type(exc).__name__}: {exc}")
    return row


def _walk(batch_dir: Path) -> list[tuple[str, Path, bool]]:
    """(relative path, path, is_symlink) for every entry that is a file or a link, sorted.

    Symlinked directories are reported as links and not descended into.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(batch_dir, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            if (base / name).is_symlink():
                found.append(((base / name).relative_to(batch_dir).as_posix(), base / name, True))
        for name in filenames:
            path = base / name
            found.append((path.relative_to(batch_dir).as_posix(), path, path.is_symlink()))
    return sorted(found)


def scan_batch(batch_dir: Path, batch: str, max_pixels: int) -> pd.DataFrame:
    """Inspect every file under `batch_dir` (any nesting) and return the manifest."""
    batch_dir = batch_dir.resolve()

    def inspect(entry: tuple[str, Path, bool]) -> _Row:
        rel_path, path, is_link = entry
        row = _Row(rel_path=rel_path)
        if is_link:
            target = os.path.realpath(path)
            inside = Path(target).is_relative_to(batch_dir)
            return row.quarantine(
                "symlink" if inside else "outside_batch",
                f"links to {'a path inside the batch' if inside else target}; links are never followed",
            )
        # os.walk does not descend into linked folders, so a plain file it finds is inside the
        # batch: no per-file realpath needed.
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            row.bytes = path.stat().st_size
            return row.quarantine(
                "unsupported_extension", f"{path.suffix or '(none)'} is not an image extension"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            return row.quarantine("unreadable", str(exc))
        return inspect_image_bytes(row, data, max_pixels)

    entries = [e for e in _walk(batch_dir) if e[0] not in CONTROL_FILES]
    # Reading, hashing and decoding release the GIL: threads use every core, order is kept.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows = list(pool.map(inspect, entries, chunksize=64))

    df = pd.DataFrame([r.__dict__ for r in rows])
    if df.empty:
        df = pd.DataFrame(columns=[c for c in MANIFEST_COLUMNS if c not in ("image_id", "batch")])
    df.insert(0, "batch", batch)
    df.insert(0, "image_id", [image_id_for(batch, p) for p in df["rel_path"]])
    df = df[MANIFEST_COLUMNS]
    for col in ("bytes", "width", "height"):
        df[col] = df[col].astype("Int64")
    return df
