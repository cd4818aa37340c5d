"""Dagster resources: where the lake is, and the DuckDB metadata store that owns every table."""

from resources.lake import LakeResource, UnsafePathError
from resources.metadata import MetadataStore

__all__ = ["LakeResource", "MetadataStore", "UnsafePathError"]
