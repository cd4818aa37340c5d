"""The streaming file hash recorded beside (and checked against) every written artefact."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ssl_assets.atomic import file_sha256


def test_file_sha256_hashes_the_whole_file_chunk_by_chunk(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == expected
    assert file_sha256(str(path), chunk_size=1000) == expected  # several chunks, a short last one
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert file_sha256(empty) == hashlib.sha256(b"").hexdigest()
