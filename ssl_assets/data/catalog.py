"""Build one batch's catalog: decode each ok image once into a memory-mappable uint8 array.

Training, hashing, quality scoring and embedding all read the canonical array, never the files
again. A file whose bytes no longer match the manifest's hash (changed after ingestion) is not
decoded: it is returned as a failure with a reason, like every other problem.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_assets.curation.hashing import pixel_hash
from ssl_assets.data.canonical import CanonicalSpec, canonicalise, decode_rgb


@dataclass
class BatchCatalog:
    arrays: np.ndarray  # N x R x R x 3 uint8, row i = index.iloc[i]
    index: pd.DataFrame  # image_id, array_row, pixel_hash, orig_width, orig_height
    failures: pd.DataFrame  # image_id, reason, detail


def build_batch_catalog(
    batch_dir: Path, ok_rows: pd.DataFrame, spec: CanonicalSpec
) -> BatchCatalog:
    """Decode the manifest's ok rows (image_id, rel_path, content_hash) of one batch."""
    batch_dir = batch_dir.resolve()

    def decode(row) -> tuple[np.ndarray, str, int, int] | tuple[None, str, str]:
        path = (batch_dir / row.rel_path).resolve()
        if not path.is_relative_to(batch_dir) or path.is_symlink():
            return None, "outside_batch", str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            return None, "unreadable", str(exc)
        if hashlib.sha256(data).hexdigest() != row.content_hash:
            return None, "changed_since_ingest", "bytes differ from manifest"
        try:
            rgb = decode_rgb(data)
        except Exception as exc:  # a decoder failure must become a row, not crash the batch
            return None, "decode_failed", f"{type(exc).__name__}: {exc}"
        return canonicalise(rgb, spec), pixel_hash(rgb), rgb.shape[1], rgb.shape[0]

    rows = list(ok_rows.itertuples(index=False))
    # Decoding and hashing release the GIL: threads use every core; results keep row order.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(decode, rows, chunksize=64))
    r = spec.resolution
    arrays = np.empty((len(rows), r, r, 3), dtype=np.uint8)
    index, failures = [], []
    for row, result in zip(rows, results, strict=True):
        if result[0] is None:
            failures.append((row.image_id, result[1], result[2]))
            continue
        pixels, digest, width, height = result
        arrays[len(index)] = pixels
        index.append((row.image_id, len(index), digest, width, height))
    return BatchCatalog(
        arrays=arrays[: len(index)],
        index=pd.DataFrame(
            index, columns=["image_id", "array_row", "pixel_hash", "orig_width", "orig_height"]
        ),
        failures=pd.DataFrame(failures, columns=["image_id", "reason", "detail"]),
    )


def save_array_atomic(array: np.ndarray, path: Path) -> None:
    """np.save to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_array(path: Path) -> np.ndarray:
    """Memory-map a catalog array read-only (no copy, no decode)."""
    return np.load(path, mmap_mode="r")
