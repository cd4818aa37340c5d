"""Shared fixtures: a temporary lake, its metadata store and an ephemeral Dagster instance.

Tests run in the `tiny` profile and never touch ../shared: they make their own data.
"""

from __future__ import annotations

import os

os.environ["SSL_PROFILE"] = "tiny"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from dagster import DagsterInstance  # noqa: E402

from resources.lake import LakeResource  # noqa: E402
from resources.metadata import MetadataStore  # noqa: E402


@pytest.fixture
def lake(tmp_path: Path) -> LakeResource:
    resource = LakeResource(root=str(tmp_path / "lake"))
    resource.ensure()
    return resource


@pytest.fixture
def store(lake: LakeResource) -> MetadataStore:
    return MetadataStore(path=str(lake.metadata_path), lock_timeout_s=60)


@pytest.fixture
def instance() -> DagsterInstance:
    with DagsterInstance.ephemeral() as inst:
        yield inst
