"""Cross-stage settings are resources set once: changing the image spec's resolution in its one
place changes the catalog version every stage reads and writes."""

from __future__ import annotations

import json

import pytest
from dagster import materialize

from resources.settings import ImageSpecResource
from ssl_assets.data.default_dataset import write_default_dataset
from ssl_assets.definitions import build_definitions
from tests.factories import add_partitions, resources_for

pytestmark = pytest.mark.slow
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def test_the_image_spec_resolution_is_set_once_and_every_stage_uses_it(lake, store, instance):
    spec = ImageSpecResource(resolution=24, aspect="pad")
    resources = resources_for(lake, store, image_spec=spec)
    batches = write_default_dataset(lake.landing_dir, n_images=120, label_fraction=0.9)
    defs = build_definitions("tiny")
    add_partitions(instance, *batches)
    assets = {a.key.to_user_string(): a for a in defs.assets}

    def run(names, **kwargs):
        result = materialize(
            [assets[n] for n in names], instance=instance, resources=resources, **kwargs
        )
        assert result.success
        return result

    for batch in batches:
        run(["raw_images", "image_catalog"], partition_key=batch)
        staged = lake.staged_array("r24-pad", batch)
        assert staged.is_file() or lake.path(lake.catalog_array("r24-pad", batch)).is_file()
    run(["duplicates", "quality_issues", "curated_images", "diversity_audit", "bias_audit"])
    run(
        ["ssl_encoder", "image_embeddings"],
        run_config={"ops": {"ssl_encoder": {"config": {"epochs": 1}}}, **QUIET},
    )
    # every stage read and wrote the one version the resource names, nothing else
    assert set(store.query("SELECT DISTINCT version FROM image_catalog")["version"]) == {"r24-pad"}
    assert set(store.query("SELECT DISTINCT version FROM quality_scores")["version"]) == {"r24-pad"}
    assert len(store.curated_catalog("r24-pad")) == 120 == len(store.curated_images())
    encoder = store.latest_usable_encoder()
    assert json.loads(encoder["lineage"])["catalog_version"] == "r24-pad"
    features = store.embedding_index(encoder["model_id"])
    assert len(features) == 120 and features["array_path"].str.endswith("/r24-pad.npy").all()
    assert lake.read_rows(store.admitted_catalog("r24-pad").head(2)).shape[1:] == (24, 24, 3)
