"""`dagster dev -w workspace.yaml` starts, lists our assets and checks, and runs a materialization
launched through its GraphQL API (what the UI's buttons call)."""

from __future__ import annotations

import time

import duckdb
import pytest

from tests.dagster_server import dagster_dev
from tests.factories import write_image

pytestmark = pytest.mark.slow

ASSETS = """
{ assetNodes { assetKey { path } groupName
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }
"""
ADD_PARTITION = """
mutation($key: String!) {
  addDynamicPartition(partitionsDefName: "batches", partitionKey: $key,
    repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "ssl_assets"}) {
    __typename ... on PythonError { message }
  }
}
"""
LAUNCH = """
mutation($key: String!) {
  launchRun(executionParams: {
    selector: {repositoryName: "__repository__", repositoryLocationName: "ssl_assets",
               jobName: "ingest_batch"},
    executionMetadata: {tags: [{key: "dagster/partition", value: $key}]},
    runConfigData: "{}"
  }) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def test_dagster_dev_lists_assets_and_runs_a_materialization(tmp_path):
    with dagster_dev(tmp_path) as server:
        nodes = server.graphql(ASSETS)["assetNodes"]
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert "raw_images" in by_key
        assert by_key["raw_images"]["groupName"] == "ingest"
        checks = {
            c["name"]: c["blocking"] for c in by_key["raw_images"]["assetChecksOrError"]["checks"]
        }
        assert checks == {"raw_manifest_suite": True, "raw_has_usable_images": True}

        batch_dir = server.lake / "landing" / "ui-batch"
        for i in range(3):
            write_image(batch_dir / f"{i}.png", seed=i)
        # no _READY marker: the landing sensor leaves this batch to the run we launch ourselves
        added = server.graphql(ADD_PARTITION, {"key": "ui-batch"})["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added

        launched = server.graphql(LAUNCH, {"key": "ui-batch"})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline:
            status = server.graphql(STATUS, {"id": run_id})["runOrError"]["status"]
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(1)
        assert status == "SUCCESS", server.log.read_text()[-4000:]

    with duckdb.connect(str(server.lake / "metadata.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM images WHERE batch = 'ui-batch'").fetchone() == (
            3,
        )
        assert con.execute("SELECT batch FROM admitted_batches").fetchall() == [("ui-batch",)]
