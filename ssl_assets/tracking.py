"""Experiment tracking: every training run logged to MLflow, beside the Dagster run that made it.

Why MLflow as well as Dagster: Dagster keeps what each materialization produced, MLflow keeps
training runs side by side (params, per-epoch curves, artifacts) and compares them, which is
what a person tuning an objective or a fine-tuning strategy looks at. Each MLflow run carries
the Dagster run id as a tag, and the materialization links back to the MLflow run.

Where runs go: `uri` when given, else `$MLFLOW_TRACKING_URI` (a tracking server), else a local
store under the lake, `sqlite:///<lake>/mlflow.db`, with artifacts in `<lake>/mlflow-artifacts/`
(MLflow's plain file store is deprecated; SQLite needs no server). Browse a local store with
`mlflow ui --backend-store-uri sqlite:///lake/mlflow.db` (the `mlflow` package; the project
depends on `mlflow-skinny`, the client alone: full `mlflow` pins pyarrow below what the rest of
the project installs).

Plain code (no Dagster import); `mlflow` is imported when a run is logged, never at load time.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKING_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_EXPERIMENT = "ssl-assets"
LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlflow-artifacts"
#: MLflow's limits per log_batch call
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100


def tracking_uri(lake_root: str | os.PathLike[str], configured: str | None = None) -> str:
    """`configured`, else `$MLFLOW_TRACKING_URI`, else the SQLite store under the lake."""
    if configured:
        return configured
    if os.environ.get(TRACKING_ENV):
        return os.environ[TRACKING_ENV]
    return f"sqlite:///{Path(lake_root).resolve() / LOCAL_STORE}"


@dataclass(frozen=True)
class TrackedRun:
    """Where a logged run lives: its ids, the store, and a link a person can follow."""

    run_id: str
    experiment_id: str
    uri: str

    @property
    def link(self) -> str:
        """The run's page on a tracking server, or how to open it from a local store."""
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return (
            f"mlflow ui --backend-store-uri {self.uri} , then experiment "
            f"{self.experiment_id}, run {self.run_id}"
        )


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as `a.b` keys with text values (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _experiment(client: Any, name: str, uri: str, lake_root: str | os.PathLike[str]) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = not uri.startswith(("http://", "https://", "databricks"))
    location = (Path(lake_root).resolve() / LOCAL_ARTIFACTS).as_uri() if local else None
    return client.create_experiment(name, artifact_location=location)


def log_run(
    lake_root: str | os.PathLike[str],
    name: str,
    *,
    uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    epochs: Sequence[Mapping[str, Any]] = (),
    summary: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
) -> TrackedRun:
    """Log one finished training run: `params` (nested keys flattened), every numeric value of
    each `epochs` record as a metric at step = its position, `summary` numbers as final
    metrics, and `artifacts` (file name -> bytes, or a path logged under its own name; empty
    bytes are skipped). Returns where it went."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    # creating the local store logs each schema migration at INFO: not news for a pipeline run
    logging.getLogger("mlflow").setLevel(max(logging.getLogger("mlflow").level, logging.WARNING))
    uri = tracking_uri(lake_root, uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, experiment, uri, lake_root)
    run = client.create_run(
        experiment_id, run_name=name, tags={k: str(v) for k, v in (tags or {}).items()}
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for step, record in enumerate(epochs)
        for key, value in record.items()
        if _is_number(value)
    ]
    metrics += [
        Metric(f"final_{k}", float(v), now, 0) for k, v in (summary or {}).items() if _is_number(v)
    ]
    flat = [Param(k, v) for k, v in _flat(params or {}).items()]
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH_METRICS])
    for i in range(0, len(flat), _BATCH_PARAMS):
        client.log_batch(run_id, params=flat[i : i + _BATCH_PARAMS])
    with tempfile.TemporaryDirectory() as tmp:
        for file_name, content in (artifacts or {}).items():
            if isinstance(content, bytes):
                if not content:
                    continue
                path = Path(tmp) / file_name
                path.write_bytes(content)
            else:
                path = Path(content)
            if path.is_file():
                client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return TrackedRun(run_id=run_id, experiment_id=experiment_id, uri=uri)
