"""The lake: one root directory, and the only code that turns names into paths under it.

Layout under `$SSL_LAKE` (default `./lake`):

    landing/<batch>/...   what users drop in; never modified, moved or deleted by the pipeline
    staging/<version>/    canonical arrays decoded while ingesting, taken over by the catalog
    catalog/...           decoded canonical arrays (written by curation)
    models/<model_id>/    weights + config
    metadata.duckdb       the metadata store

Every name that comes from outside (a batch name, a relative path from a CSV) is checked here,
so no path can escape the lake.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dagster import ConfigurableResource

LAKE_ENV = "SSL_LAKE"
METADATA_ENV = "SSL_METADATA"
DEFAULT_LAKE = "lake"
READY_MARKER = "_READY"
_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafePathError(ValueError):
    """A name would resolve outside the directory it must stay in."""


def default_lake_root() -> str:
    """The lake root from `$SSL_LAKE`, else `./lake`, as an absolute path."""
    return str(Path(os.environ.get(LAKE_ENV) or DEFAULT_LAKE).expanduser().resolve())


def validate_batch_name(batch: str) -> str:
    """Batch names become folder names and partition keys: letters, digits, `._-` only."""
    if not _BATCH_NAME.match(batch) or batch in {".", ".."}:
        raise UnsafePathError(
            f"batch name {batch!r} is not allowed: use letters, digits, '.', '_' or '-' "
            "(at most 128 characters, not starting with '.' or '-')"
        )
    return batch


def resolve_inside(root: Path, relative: str | os.PathLike[str]) -> Path:
    """Join `relative` onto `root` and refuse anything that resolves outside `root`."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise UnsafePathError(f"{str(relative)!r} resolves outside {root}")
    return candidate


class LakeResource(ConfigurableResource):
    """Paths in the lake. `root` defaults to `$SSL_LAKE` or `./lake`.

    `metadata_file` (default `$SSL_METADATA`, else `<root>/metadata.duckdb`) lets the DuckDB
    file live on a local or block volume while the root is an object-store mount: DuckDB needs
    real file locks, which FUSE mounts of S3/GCS buckets do not give.
    """

    root: str
    metadata_file: str | None = None

    @classmethod
    def from_env(cls) -> LakeResource:
        return cls(root=default_lake_root(), metadata_file=os.environ.get(METADATA_ENV) or None)

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    @property
    def landing_dir(self) -> Path:
        return self.root_path / "landing"

    @property
    def metadata_path(self) -> Path:
        if self.metadata_file:
            return Path(self.metadata_file).expanduser().resolve()
        return self.root_path / "metadata.duckdb"

    def path(self, *parts: str) -> Path:
        """A path under the lake root; refuses anything that would escape it."""
        return resolve_inside(self.root_path, Path(*parts))

    def batch_dir(self, batch: str) -> Path:
        """`landing/<batch>`, after checking the name and that it does not leave the landing zone."""
        validate_batch_name(batch)
        landing = self.landing_dir.resolve()
        path = resolve_inside(landing, batch)
        if path.parent != landing:
            raise UnsafePathError(f"batch {batch!r} is not a direct child of {landing}")
        return path

    def ready_batches(self) -> list[str]:
        """Batch folders that carry the `_READY` marker, in name order (= arrival order)."""
        return self._scan_landing()[0]

    def unusable_batches(self) -> list[tuple[str, str]]:
        """(folder name, why) of folders with a `_READY` marker that cannot become a batch: a
        name that is not allowed, or a link. They are never ingested, so say so instead of
        dropping them silently. Show names with `!r`: they may hold any bytes."""
        return self._scan_landing()[1]

    def _scan_landing(self) -> tuple[list[str], list[tuple[str, str]]]:
        if not self.landing_dir.is_dir():
            return [], []
        ready, unusable = [], []
        for entry in sorted(self.landing_dir.iterdir()):
            if not entry.is_dir() or not (entry / READY_MARKER).is_file():
                continue  # a file, or a folder still being copied
            if entry.is_symlink():
                unusable.append(
                    (entry.name, "is a link; batches are read from real folders, never via links")
                )
            elif not _BATCH_NAME.match(entry.name) or entry.name in {".", ".."}:
                unusable.append(
                    (
                        entry.name,
                        "name not allowed: use letters, digits, '.', '_' or '-' (at most 128 "
                        "characters, starting with a letter or digit); rename the folder",
                    )
                )
            else:
                ready.append(entry.name)
        return ready, unusable

    def ensure(self) -> None:
        """Create the lake's top-level folders (never touches what is inside them)."""
        self.landing_dir.mkdir(parents=True, exist_ok=True)


def unusable_batches_text(lake: LakeResource) -> str:
    """One line naming the ready folders in landing/ that cannot become batches, and why ("" if
    none): they are never ingested, and a person must rename (or copy) them."""
    found = lake.unusable_batches()
    if not found:
        return ""
    return f"{len(found)} ready folder(s) in landing/ will not be ingested: " + "; ".join(
        f"{name!r} {why}" for name, why in found
    )
