"""Write a file so that readers see the old version or the whole new one, never half of it.

One helper for every artefact the pipeline writes (catalog arrays, staged catalogs, encoders,
fine-tuned models): write to a temporary name beside the target, flush it to disk, rename.
Plain Python, no Dagster: the training code uses it under torchrun too.
"""

from __future__ import annotations

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
