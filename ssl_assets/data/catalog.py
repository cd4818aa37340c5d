"""One batch's catalog: each ok image decoded once into a memory-mappable uint8 array.

Training, hashing, quality scoring and embedding all read the canonical array, never the files
again. Ingestion already decodes every file to validate it, so it *stages* the catalog of the
default version (`save_staged_catalog`) and `image_catalog` takes it over
(`take_staged_catalog`) when it was made from exactly the manifest's ok rows. Otherwise (another
version, or a staged file that is missing or stale) `build_batch_catalog` decodes the files; a
file whose bytes no longer match the manifest's hash (changed after ingestion) is not decoded:
it is returned as a failure with a reason, like every other problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_assets.atomic import write_atomic
from ssl_assets.data.canonical import CanonicalSpec, canonicalise, decode_rgb, pixel_hash
from ssl_assets.data.landed import LandedFileError, read_landed


@dataclass
class BatchCatalog:
    arrays: np.ndarray  # N x R x R x 3 uint8, row i = index.iloc[i]
    index: pd.DataFrame  # image_id, array_row, pixel_hash, orig_width, orig_height
    failures: pd.DataFrame  # image_id, reason, detail


def build_batch_catalog(
    batch_dir: Path, ok_rows: pd.DataFrame, spec: CanonicalSpec
) -> BatchCatalog:
    """Decode the manifest's ok rows (image_id, rel_path, content_hash, optional bytes) of one
    batch. A file is read only while it is still a regular file no larger than it was at
    ingestion (without `bytes`: the profile's file-size cap)."""
    from ssl_assets.profiles import get_profile

    batch_dir = batch_dir.resolve()
    max_bytes = get_profile().max_file_bytes

    def decode(row) -> tuple[np.ndarray, str, int, int] | tuple[None, str, str]:
        path = (batch_dir / row.rel_path).resolve()
        if not path.is_relative_to(batch_dir) or path.is_symlink():
            return None, "outside_batch", str(path)
        try:
            # Ingestion read a regular file of this size: anything else changed since.
            recorded = getattr(row, "bytes", None)
            limit = max_bytes if recorded is None or pd.isna(recorded) else int(recorded)
            data = read_landed(path, limit)
        except LandedFileError as exc:
            reason = "changed_since_ingest" if exc.reason == "file_too_large" else exc.reason
            return None, reason, exc.detail
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
    # Work goes out in chunks: a future per image costs more than decoding a small JPEG.
    chunks = [rows[i : i + 256] for i in range(0, len(rows), 256)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = [r for part in pool.map(lambda c: [decode(x) for x in c], chunks) for r in part]
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

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    write_atomic(path, write)


def rows_digest(image_ids: list[str], content_hashes: list[str]) -> str:
    """Fingerprint of a set of (image_id, file hash) rows: a staged catalog is only used for the
    very rows it was decoded from."""
    digest = hashlib.sha256()
    for image_id, content_hash in sorted(zip(image_ids, content_hashes, strict=True)):
        digest.update(f"{image_id}:{content_hash}\n".encode())
    return digest.hexdigest()


def _sidecar(array_path: Path) -> Path:
    return array_path.with_suffix(".json")


def save_staged_catalog(catalog: BatchCatalog, content_hashes: list[str], array_path: Path) -> None:
    """Write a catalog made during ingestion: the array, then a JSON sidecar with its index and
    the digest of the rows it holds (written last, so a sidecar always has its whole array)."""
    _sidecar(array_path).unlink(missing_ok=True)
    save_array_atomic(catalog.arrays, array_path)
    sidecar = {
        "rows": len(catalog.index),
        "digest": rows_digest(catalog.index["image_id"].tolist(), content_hashes),
        "index": catalog.index.to_dict(orient="list"),
    }
    write_atomic(_sidecar(array_path), lambda tmp: tmp.write_text(json.dumps(sidecar)))


def take_staged_catalog(
    array_path: Path, ok_rows: pd.DataFrame, destination: Path
) -> BatchCatalog | None:
    """Move a staged catalog to `destination` and return it (arrays memory-mapped), or None when
    there is none or it was not made from exactly `ok_rows` (image_id, content_hash)."""
    sidecar_path = _sidecar(array_path)
    if not sidecar_path.is_file() or not array_path.is_file():
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text())
        index = pd.DataFrame(sidecar["index"])
        wanted = rows_digest(ok_rows["image_id"].tolist(), ok_rows["content_hash"].tolist())
        if sidecar["digest"] != wanted or sidecar["rows"] != len(ok_rows):
            return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable sidecar: decode the files instead
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(array_path, destination)
    sidecar_path.unlink(missing_ok=True)
    try:
        arrays = load_array(destination)
    except (OSError, ValueError):
        return None  # a damaged array: decode the files instead (they overwrite it)
    if arrays.shape[0] != len(index):
        return None
    return BatchCatalog(
        arrays=arrays,
        index=index.astype({"array_row": "int64", "orig_width": "int64", "orig_height": "int64"}),
        failures=pd.DataFrame(columns=["image_id", "reason", "detail"]),
    )


def load_array(path: Path) -> np.ndarray:
    """Memory-map a catalog array read-only (no copy, no decode)."""
    return np.load(path, mmap_mode="r")
