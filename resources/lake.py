"""The lake: one root directory, and the only code that turns names into paths under it.

Layout under `$SSL_LAKE` (default `./lake`):

    landing/<batch>/...                what users drop in; never modified, moved or deleted
    staging/<version>/<batch>.npy      canonical arrays decoded while ingesting
    catalog/<version>/<batch>.npy      decoded canonical arrays (+ .pinned.npy embeddings)
    embeddings/<model_id>/<version>.npy  frozen features of an encoder
    checkpoints/<run>/, jobs/<run>.json  training state and the job a trainer reads
    models/<model_id>/                 weights + config (+ MODEL_CARD.md)
    reports/<asset>/...                pictures and CSVs the UI links to
    metadata.duckdb                    the metadata store

This module is the only one that knows these names: everything the metadata store records is
relative to the lake root (so a copied or moved lake keeps working) and is turned into a path
here, where nothing can escape the lake.

Every name that comes from outside (a batch name, a relative path from a CSV) is checked here,
so no path can escape the lake.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from ssl_assets.data.landed import READY_MARKER

LAKE_ENV = "SSL_LAKE"
METADATA_ENV = "SSL_METADATA"
DEFAULT_LAKE = "lake"
_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafePathError(ValueError):
    """A name would resolve outside the directory it must stay in."""


class ModelIntegrityError(ValueError):
    """A registered model's weights are not the ones the registry recorded."""


#: weights file of a model directory, per kind of directory (the registry records the directory
#: of a fine-tuned model and the weights file of an encoder)
_WEIGHTS_IN_DIR = ("model.safetensors", "encoder.safetensors")


def default_lake_root() -> str:
    """The lake root from `$SSL_LAKE`, else `./lake`, as an absolute path."""
    return str(Path(os.environ.get(LAKE_ENV) or DEFAULT_LAKE).expanduser().resolve())


def default_metadata_path() -> str:
    """The DuckDB file from `$SSL_METADATA`, else `metadata.duckdb` in the default lake root."""
    configured = os.environ.get(METADATA_ENV)
    if configured:
        return str(Path(configured).expanduser().resolve())
    return str(Path(default_lake_root()) / "metadata.duckdb")


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
    """Paths in the lake. `root` (None: `$SSL_LAKE`, else `./lake`) is resolved when a path is
    used, in the process that uses it, never baked in when the code is loaded: the launchpad
    shows no machine's absolute path, and a run resolves the lake of the machine it runs on.

    `metadata_file` (default `$SSL_METADATA`, else `<root>/metadata.duckdb`) lets the DuckDB
    file live on a local or block volume while the root is an object-store mount: DuckDB needs
    real file locks, which FUSE mounts of S3/GCS buckets do not give.
    """

    root: str | None = Field(
        default=None,
        description="The lake's root folder. None: $SSL_LAKE when a run starts, else ./lake.",
    )
    metadata_file: str | None = Field(
        default=None,
        description="The DuckDB file. None: $SSL_METADATA when a run starts, else metadata.duckdb in the root.",
    )

    @classmethod
    def from_env(cls) -> LakeResource:
        return cls(root=default_lake_root(), metadata_file=os.environ.get(METADATA_ENV) or None)

    @property
    def root_path(self) -> Path:
        return Path(self.root or default_lake_root()).resolve()

    @property
    def landing_dir(self) -> Path:
        return self.root_path / "landing"

    @property
    def metadata_path(self) -> Path:
        if self.metadata_file:
            return Path(self.metadata_file).expanduser().resolve()
        if self.root is None and os.environ.get(METADATA_ENV):
            return Path(default_metadata_path())
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

    # -- every path rule of the lake -----------------------------------------------------------

    @staticmethod
    def catalog_array(version: str, batch: str) -> str:
        """A batch's canonical pixels at `version`, relative to the root (as recorded)."""
        return f"catalog/{version}/{validate_batch_name(batch)}.npy"

    @staticmethod
    def pinned_array(array_path: str) -> str:
        """The pinned embeddings stored beside a catalog array."""
        return array_path.removesuffix(".npy") + ".pinned.npy"

    def staged_array(self, version: str, batch: str) -> Path:
        """Where ingestion leaves a batch's decoded catalog for image_catalog to take over."""
        return self.path("staging", version, f"{validate_batch_name(batch)}.npy")

    @staticmethod
    def embeddings_array(model_id: str, version: str) -> str:
        """An encoder's frozen features of every curated image, relative to the root."""
        return f"embeddings/{model_id}/{version}.npy"

    @staticmethod
    def model_rel(model_id: str) -> str:
        """A model's directory relative to the root, as the registry records it."""
        return f"models/{model_id}"

    def model_dir(self, model_id: str) -> Path:
        return self.path(self.model_rel(model_id))

    def checkpoint_dir(self, run_key: str) -> Path:
        return self.path("checkpoints", run_key)

    def job_file(self, run_key: str) -> Path:
        return self.path("jobs", f"{run_key}.json")

    def report_path(self, *parts: str) -> Path:
        """A file under reports/ (its folder created)."""
        path = self.path("reports", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def read_rows(self, catalog: pd.DataFrame, suffix: str = ".npy") -> np.ndarray:
        """Rows of the per-batch arrays (pixels, or `.pinned.npy` embeddings) for catalog rows
        (`array_path`, `array_row`), in the rows' order; arrays are memory-mapped."""
        from ssl_assets.data.catalog import load_array

        if catalog.empty:
            return np.empty((0,))
        parts, order = [], []
        for array_path, rows in catalog.reset_index(drop=True).groupby("array_path", sort=False):
            array = load_array(self.path(array_path.removesuffix(".npy") + suffix))
            parts.append(np.asarray(array[rows["array_row"].to_numpy()]))
            order.append(rows.index.to_numpy())
        stacked = np.concatenate(parts)
        out = np.empty_like(stacked)
        out[np.concatenate(order)] = stacked  # row k of `stacked` was asked for at order[k]
        return out

    def row_batches(self, catalog: pd.DataFrame) -> CatalogRows:
        """`read_rows(catalog)` one slice at a time: an object with `shape[0]` and
        `[start:stop]` (what `embed_images` reads in batches), so embedding a catalog of photos
        holds one batch of pixels in memory, not the whole catalog."""
        return CatalogRows(self, catalog)

    # -- the registry's paths: recorded relative to the root, verified when loaded -----------

    def recorded(self, path: str | os.PathLike[str]) -> str:
        """What the registry records for a file or folder in the lake: its path relative to the
        root (POSIX separators), so the record stays true when the lake is copied or moved."""
        return Path(path).resolve().relative_to(self.root_path).as_posix()

    def model_path(self, recorded: str) -> Path:
        """The path of a registry record under this lake.

        Relative records resolve under the root. Absolute ones (written by older code) keep
        their part from the last `models/` on, under this lake: they point into the lake the
        model was trained in, which may since have been copied (the copy must not serve the
        original's files) or moved. Nothing may resolve outside the lake.
        """
        parts = PurePath(recorded).parts
        if PurePath(recorded).is_absolute():
            if "models" not in parts:
                raise UnsafePathError(f"registered path {recorded!r} is not under a models/ folder")
            parts = parts[len(parts) - 1 - parts[::-1].index("models") :]
        return self.path(*parts)

    def verified_model_path(self, row: Mapping[str, Any]) -> Path:
        """`model_path` of a `models` row, after checking its weights' SHA-256 against the
        row's `content_hash`; raises `ModelIntegrityError` naming both when they differ (or when
        there is nothing to check against), `FileNotFoundError` when the weights are gone."""
        from ssl_assets.atomic import file_sha256

        path = self.model_path(str(row["path"]))
        weights = path
        if path.is_dir():
            weights = next((path / n for n in _WEIGHTS_IN_DIR if (path / n).is_file()), path / "?")
        if not weights.is_file():
            raise FileNotFoundError(
                f"model {row['model_id']}: no weights at {weights} (registered as {row['path']!r})"
            )
        expected = row.get("content_hash")
        if not isinstance(expected, str) or not expected:
            raise ModelIntegrityError(
                f"model {row['model_id']}: the registry records no content_hash for {weights}, "
                "so its weights cannot be verified"
            )
        actual = file_sha256(weights)
        if actual != expected:
            raise ModelIntegrityError(
                f"model {row['model_id']}: {weights} has SHA-256 {actual}, but the registry "
                f"recorded {expected}; the weights were replaced or damaged since registration "
                "(restore them, or promote or retrain another model)"
            )
        return path

    def weights_file(self, row: Mapping[str, Any] | None, model_id: str) -> Path:
        """The verified weights file of registered model `model_id` (`row`: its `models` row,
        None when it is not registered): an encoder's `encoder.safetensors`, a fine-tuned
        model's `model.safetensors`. Raises ValueError for an unknown id."""
        if row is None:
            raise ValueError(f"{model_id!r} is not a registered model id")
        path = self.verified_model_path(row)
        if path.is_dir():
            path = next(path / n for n in _WEIGHTS_IN_DIR if (path / n).is_file())
        return path


class CatalogRows:
    """Catalog rows (`array_path`, `array_row`) read on demand, a slice at a time."""

    def __init__(self, lake: LakeResource, catalog: pd.DataFrame) -> None:
        self._lake = lake
        self._catalog = catalog.reset_index(drop=True)
        self.shape = (len(self._catalog),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError("read catalog rows by slice")
        return self._lake.read_rows(self._catalog.iloc[rows])


def unusable_batches_text(lake: LakeResource) -> str:
    """One line naming the ready folders in landing/ that cannot become batches, and why ("" if
    none): they are never ingested, and a person must rename (or copy) them."""
    found = lake.unusable_batches()
    if not found:
        return ""
    return f"{len(found)} ready folder(s) in landing/ will not be ingested: " + "; ".join(
        f"{name!r} {why}" for name, why in found
    )
