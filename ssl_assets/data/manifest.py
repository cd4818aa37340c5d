"""Inspect every file of a landed batch and say, per file, whether it is a usable image.

One manifest row per file occurrence. Nothing here writes to the landing zone: files are opened
read-only, symlinks are never followed, only regular files up to a size cap are opened at all
(`ssl_assets.data.landed`), and every problem becomes a `quarantined` row with a
machine-readable `reason` (and the decoder's own words in `detail`) instead of an exception.

Validation decodes each image fully (`Image.load`): a truncated JPEG is only found that way.
Decoding is the most expensive step of curation, so it happens once: given a `CanonicalSpec`,
`scan_and_decode` also returns the canonical pixels and pixel hashes of the ok images (a
`BatchCatalog`), which ingestion stages for `image_catalog`. Only a catalog of another version
(a different resolution or aspect handling) decodes the files again.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ssl_assets.data.canonical import CanonicalSpec, canonicalise, pixel_hash, rgb_pixels
from ssl_assets.data.catalog import BatchCatalog
from ssl_assets.data.landed import READY_MARKER, LandedFileError, check_regular, read_landed

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# Sidecar files that belong to the landing conventions, not images.
CONTROL_FILES = frozenset({READY_MARKER, "labels.csv", "metadata.csv"})
# Modes we can turn into RGB without guessing a scale (16-bit, 32-bit int and float images need a
# user's decision on how to map them to 8 bits, so they are quarantined with a clear reason).
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
)

QUARANTINE_REASONS = (
    "symlink",
    "outside_batch",
    "not_a_regular_file",
    "file_too_large",
    "unsupported_extension",
    "empty_file",
    "unreadable",
    "not_an_image",
    "too_many_pixels",
    "unsupported_mode",
    "truncated",
    "corrupt",
)

_CHUNK = 256  # files per unit of work handed to a thread

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
    # Filled for ok images when a canonical spec is given (not manifest columns).
    pixels: np.ndarray | None = None
    pixel_hash: str | None = None
    decoded_size: tuple[int, int] | None = None  # (width, height) after EXIF orientation

    def quarantine(self, reason: str, detail: str | None = None) -> _Row:
        assert reason in QUARANTINE_REASONS, reason
        self.status, self.reason, self.detail = "quarantined", reason, detail
        return self


def inspect_image_bytes(
    row: _Row, data: bytes, max_pixels: int, spec: CanonicalSpec | None = None
) -> _Row:
    """Fill `row` from the file's bytes: hash, format, size, mode, or a quarantine reason.

    With `spec`, an ok image also gets its canonical pixels and the hash of its native pixels,
    from the same decode that validated it.
    """
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
                if spec is not None:
                    try:
                        rgb = rgb_pixels(img)
                        row.pixels = canonicalise(rgb, spec)
                    except Exception as exc:  # e.g. malformed EXIF: a row, never a crash
                        return row.quarantine(
                            "corrupt", f"cannot convert to RGB: {type(exc).__name__}: {exc}"
                        )
                    row.pixel_hash = pixel_hash(rgb)
                    row.decoded_size = (rgb.shape[1], rgb.shape[0])
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


def _walk(batch_dir: Path) -> list[tuple[str, str, bool]]:
    """(relative path, path, is_symlink) for every entry that is a file or a link, sorted.

    Symlinked directories are reported as links and not descended into. `os.scandir` reads the
    entry types with the directory listing: no system call per file (50,000 files: ~0.2 s).
    """
    found: list[tuple[str, str, bool]] = []
    pending = [(str(batch_dir), "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                rel = prefix + entry.name
                if entry.is_symlink():
                    found.append((rel, entry.path, True))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, rel + "/"))
                else:
                    found.append((rel, entry.path, False))
    return sorted(found)


def scan_batch(
    batch_dir: Path, batch: str, max_pixels: int, max_file_bytes: int | None = None
) -> pd.DataFrame:
    """Inspect every file under `batch_dir` (any nesting) and return the manifest."""
    return scan_and_decode(batch_dir, batch, max_pixels, max_file_bytes=max_file_bytes)[0]


def scan_and_decode(
    batch_dir: Path,
    batch: str,
    max_pixels: int,
    spec: CanonicalSpec | None = None,
    max_file_bytes: int | None = None,
) -> tuple[pd.DataFrame, BatchCatalog | None]:
    """The manifest of every file under `batch_dir` and, with `spec`, the catalog of its ok
    images (canonical arrays in manifest order, pixel hashes, sizes after EXIF orientation).

    Only regular files are opened (a FIFO, socket or device is `not_a_regular_file`), and only
    when at most `max_file_bytes` long (`file_too_large`; default: the active profile's cap),
    both judged from the file's metadata before anything is read.
    """
    if max_file_bytes is None:
        from ssl_assets.profiles import get_profile

        max_file_bytes = get_profile().max_file_bytes
    batch_dir = batch_dir.resolve()

    def inspect(entry: tuple[str, str, bool]) -> _Row:
        rel_path, path, is_link = entry
        row = _Row(rel_path=rel_path)
        if is_link:
            target = os.path.realpath(path)
            inside = Path(target).is_relative_to(batch_dir)
            return row.quarantine(
                "symlink" if inside else "outside_batch",
                f"links to {'a path inside the batch' if inside else target}; links are never followed",
            )
        # The walk does not descend into linked folders, so a plain file it finds is inside the
        # batch: no per-file realpath needed.
        try:
            st = os.lstat(path)
        except OSError as exc:
            return row.quarantine("unreadable", str(exc))
        try:
            check_regular(st)  # a FIFO, socket or device is never opened
        except LandedFileError as exc:
            return row.quarantine(exc.reason, exc.detail)
        row.bytes = st.st_size
        suffix = os.path.splitext(rel_path)[1]
        if suffix.lower() not in IMAGE_EXTENSIONS:
            return row.quarantine(
                "unsupported_extension", f"{suffix or '(none)'} is not an image extension"
            )
        try:
            data = read_landed(path, max_file_bytes, st)
        except LandedFileError as exc:
            return row.quarantine(exc.reason, exc.detail)
        except OSError as exc:
            return row.quarantine("unreadable", str(exc))
        return inspect_image_bytes(row, data, max_pixels, spec)

    entries = [e for e in _walk(batch_dir) if e[0] not in CONTROL_FILES]
    # Reading, hashing and decoding release the GIL: threads use every core. Work goes out in
    # chunks (a future per file costs more than decoding a small JPEG); order is kept.
    chunks = [entries[i : i + _CHUNK] for i in range(0, len(entries), _CHUNK)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows = [row for part in pool.map(lambda c: [inspect(e) for e in c], chunks) for row in part]

    columns = [c for c in MANIFEST_COLUMNS if c not in ("image_id", "batch")]
    df = pd.DataFrame([[getattr(r, c) for c in columns] for r in rows], columns=columns)
    if df.empty:
        df = pd.DataFrame(columns=[c for c in MANIFEST_COLUMNS if c not in ("image_id", "batch")])
    df.insert(0, "batch", batch)
    df.insert(0, "image_id", [image_id_for(batch, p) for p in df["rel_path"]])
    df = df[MANIFEST_COLUMNS]
    for col in ("bytes", "width", "height"):
        df[col] = df[col].astype("Int64")
    return df, (None if spec is None else _catalog_of(df, rows, spec))


def _catalog_of(manifest: pd.DataFrame, rows: list[_Row], spec: CanonicalSpec) -> BatchCatalog:
    ok = [
        (image_id, r)
        for image_id, r in zip(manifest["image_id"], rows, strict=True)
        if r.status == "ok"
    ]
    arrays = np.empty((len(ok), spec.resolution, spec.resolution, 3), dtype=np.uint8)
    for i, (_, r) in enumerate(ok):
        arrays[i] = r.pixels
        r.pixels = None  # one copy in memory, not two
    index = pd.DataFrame(
        {
            "image_id": [image_id for image_id, _ in ok],
            "array_row": np.arange(len(ok), dtype=np.int64),
            "pixel_hash": [r.pixel_hash for _, r in ok],
            "orig_width": [r.decoded_size[0] for _, r in ok],
            "orig_height": [r.decoded_size[1] for _, r in ok],
        }
    )
    return BatchCatalog(
        arrays=arrays,
        index=index,
        failures=pd.DataFrame(columns=["image_id", "reason", "detail"]),
    )
