"""Curation's duplicate settings for one lake: a resource set once, read from `curation.json`.

Why per lake: the thresholds that separate copies from look-alikes depend on the data. On the
8x8 sklearn digits a pHash distance of 6 or a cosine of 0.95 merges different writers' digits,
while CIFAR-10's re-cropped and re-toned copies need the aligned tier; a lake of one kind of
image keeps one set of values for every batch it ever curates. So the values live with the lake,
in `$SSL_LAKE/curation.json` (any subset of the fields below; the rest keep their defaults),
are read once when the Definitions are built, are shown on the UI's resources page and in the
`duplicates` asset's metadata, and are recorded (as JSON) with every duplicate decision and
edge. The launchpad's `resources:` section can still override them for one run (that run's
decisions record what it used). `ssl-assets recurate` re-curates under new values and, when it
applies them, writes them to `curation.json`, so later batches are curated the same way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from resources.lake import LakeResource
from ssl_assets.atomic import write_atomic
from ssl_assets.curation.dedup import DedupConfig

CURATION_FILE = "curation.json"
_DEFAULTS = DedupConfig()


class CurationSettings(ConfigurableResource):
    """How duplicates are found in this lake (see `ssl_assets/curation/dedup.py`)."""

    embedder: str = Field(
        default="pinned",
        description="'pinned' (the fixed cheap embedding) or the id of an encoder to pin",
    )
    near_max_distance: int = Field(
        default=_DEFAULTS.near_max_distance, description="near tier: max pHash Hamming distance"
    )
    semantic_threshold: float = Field(
        default=_DEFAULTS.semantic_threshold, description="semantic tier: min embedding cosine"
    )
    semantic_clusters: int | None = Field(
        default=_DEFAULTS.semantic_clusters, description="k-means clusters; None = ~1 per 1,000"
    )
    aligned: bool = Field(default=_DEFAULTS.aligned, description="run the aligned tier")
    aligned_min_similarity: float = Field(
        default=_DEFAULTS.aligned_min_similarity,
        description="aligned tier: candidates need at least this embedding cosine",
    )
    aligned_neighbours: int = Field(
        default=_DEFAULTS.aligned_neighbours, description="candidates per new image (kNN)"
    )
    aligned_probes: int = Field(
        default=_DEFAULTS.aligned_probes, description="k-means clusters searched per image"
    )
    aligned_min_side: int = Field(
        default=_DEFAULTS.aligned_min_side,
        description="images with a shorter native side are never aligned (e.g. 8x8 digits)",
    )
    aligned_max_shift: int = Field(
        default=_DEFAULTS.aligned_max_shift, description="max shift in pixels at 32x32"
    )
    aligned_max_crop: float = Field(
        default=_DEFAULTS.aligned_max_crop, description="max crop (resized back), a fraction"
    )
    aligned_mirror: bool = Field(
        default=_DEFAULTS.aligned_mirror, description="mirrored copies count as copies"
    )
    aligned_min_ncc: float = Field(
        default=_DEFAULTS.aligned_min_ncc, description="min ZNCC at the best alignment"
    )
    aligned_min_gradient: float = Field(
        default=_DEFAULTS.aligned_min_gradient,
        description="min gradient-field cosine at the best alignment",
    )
    seed: int = _DEFAULTS.seed
    source: str = Field(
        default="defaults", description="where these values came from (recorded, not a setting)"
    )

    def dedup_config(self) -> DedupConfig:
        names = {f.name for f in dataclasses.fields(DedupConfig)}
        return DedupConfig(**{k: v for k, v in self.values().items() if k in names})

    def values(self) -> dict[str, Any]:
        """The settings that decide (everything but `source`)."""
        return {k: v for k, v in self.model_dump().items() if k != "source"}

    def record(self) -> str:
        """What every decision records: the values and where they came from, as JSON."""
        return json.dumps({**self.values(), "source": self.source}, sort_keys=True)

    def replaced(self, source: str | None = None, **changes: Any) -> CurationSettings:
        """A copy with some values changed (unknown names are a ValueError)."""
        return settings_from({**self.values(), **changes}, source=source or self.source)

    @classmethod
    def for_lake(cls, lake: LakeResource) -> CurationSettings:
        """The lake's settings: `curation.json` over the defaults (defaults alone without it)."""
        path = lake.path(CURATION_FILE)
        if not path.is_file():
            return cls()
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold one JSON object of curation settings")
        return settings_from(values, source=CURATION_FILE)

    def write(self, lake: LakeResource) -> Path:
        """Save the values as the lake's `curation.json` (atomically); returns its path."""
        path = lake.path(CURATION_FILE)
        text = json.dumps(self.values(), indent=2, sort_keys=True) + "\n"
        write_atomic(path, lambda tmp: tmp.write_text(text))
        return path


def settings_from(values: dict[str, Any], source: str) -> CurationSettings:
    """Settings from a mapping, refusing names that are not settings (a typo would otherwise
    be ignored silently)."""
    known = set(CurationSettings.model_fields) - {"source"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown curation settings {unknown}; known: {sorted(known)}")
    return CurationSettings(**values, source=source)
