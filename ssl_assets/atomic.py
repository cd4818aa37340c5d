"""Artefact files: write them so that readers see the old version or the whole new one, never
half of it, and hash them so that readers can tell they got the bytes that were recorded.

One helper for every artefact the pipeline writes (catalog arrays, staged catalogs, encoders,
fine-tuned models): write to a temporary name beside the target, flush it to disk, rename. One
helper for the SHA-256 recorded beside a written artefact (`weights_sha256`) and checked when it
is read back or keyed on (a warm start in `config_hash`): it streams the file, so hashing a
multi-GB checkpoint does not load it into memory.
Plain Python, no Dagster: the training code uses it under torchrun too.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` for a temporary path beside `path`, fsync it, then rename it to `path`.

    On any failure the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at `path`, read `chunk_size` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()
