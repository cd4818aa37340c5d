"""The one Definitions object (`workspace.yaml` points here), built for one profile.

Importing this module must stay cheap: `dagster dev`, every run process and every sensor tick
import it, so torch and Great Expectations are imported lazily inside the steps that use them.

The profile is resolved here, once: `build_definitions(profile)` gives every resource its
value for that profile (the `profile` sizes, the `image_spec`, `compute`, the lake) and the
sensors their interval. `defs` is built from `$SSL_PROFILE` (default demo); `ssl-assets run
--profile X` builds its own with X, so the flag and the variable give identical run configs.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor, load_assets_from_modules

from resources.curation_settings import CurationSettings
from resources.lake import LakeResource
from resources.metadata import MetadataStore
from resources.settings import ComputeResource, ImageSpecResource, TrackingResource
from ssl_assets.assets import (
    audit_assets,
    curation_assets,
    evaluation_assets,
    ingest_assets,
    monitoring_assets,
    pretraining_assets,
)
from ssl_assets.jobs import curate_job, ingest_job, pipeline_job, retrain_job
from ssl_assets.profiles import Profile, get_profile
from ssl_assets.sensors import build_sensors

ASSET_MODULES = [
    ingest_assets,
    curation_assets,
    audit_assets,
    monitoring_assets,
    pretraining_assets,
    evaluation_assets,
]


def build_resources(
    lake_root: str | None = None, profile: Profile | str | None = None
) -> dict[str, object]:
    """Every resource the assets and sensors use, for one profile, rooted at `lake_root`
    (default: `$SSL_LAKE` or ./lake, resolved when a run uses it, not now: the code may be
    loaded on another machine than the one a run executes on)."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    lake = LakeResource(root=lake_root) if lake_root else LakeResource()
    return {
        "lake": lake,
        "metadata": MetadataStore(path=str(lake.metadata_path) if lake_root else None),
        "profile": profile,
        "image_spec": ImageSpecResource(
            resolution=profile.catalog_resolution,
            aspect=profile.catalog_aspect,  # type: ignore[arg-type]
        ),
        "compute": ComputeResource(),
        "curation": CurationSettings.for_lake(lake),
        "tracking": TrackingResource(),
    }


def build_definitions(
    profile: Profile | str | None = None, lake_root: str | None = None
) -> Definitions:
    """The project's Definitions for one profile (default `$SSL_PROFILE`, else demo)."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        jobs=[ingest_job, curate_job, retrain_job, pipeline_job],
        sensors=build_sensors(profile),
        resources=build_resources(lake_root, profile),
        # One process per run: each step in its own process would re-import torch and GX.
        executor=in_process_executor,
    )


defs = build_definitions()
