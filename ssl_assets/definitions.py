"""The one Definitions object (`workspace.yaml` points here).

Importing this module must stay cheap: `dagster dev`, every run process and every sensor tick
import it, so torch and Great Expectations are imported lazily inside the steps that use them.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor, load_assets_from_modules

from resources.lake import LakeResource
from resources.metadata import MetadataStore
from ssl_assets.assets import audit, curate, evaluate, ingest, pretrain
from ssl_assets.jobs import curate_job, ingest_job, pipeline_job, retrain_job
from ssl_assets.sensors import curation_sensor, landing_sensor, retrain_sensor


def build_resources(lake_root: str | None = None) -> dict[str, object]:
    """The resources every asset uses, rooted at `lake_root` (default `$SSL_LAKE` or ./lake)."""
    lake = LakeResource(root=lake_root) if lake_root else LakeResource.from_env()
    return {"lake": lake, "metadata": MetadataStore(path=str(lake.metadata_path))}


all_assets = load_assets_from_modules([ingest, curate, audit, pretrain, evaluate])

defs = Definitions(
    assets=all_assets,
    jobs=[ingest_job, curate_job, retrain_job, pipeline_job],
    sensors=[landing_sensor, curation_sensor, retrain_sensor],
    resources=build_resources(),
    # One process per run: each step in its own process would re-import torch and GX.
    executor=in_process_executor,
)
