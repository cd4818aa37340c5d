"""The metadata store: the one owner of `metadata.duckdb` and every table in it.

DuckDB lets one process at a time open a file for writing (readers in other processes take a
lock too). So every unit of work opens a short-lived connection, retries with backoff while
another process holds the lock, and closes it again at once (`resources.store.core`). Steps
that write also share the `metadata_writer` concurrency pool, so Dagster queues them.

The schema is versioned: `resources/sql/NNN_*.sql` files are applied in order on first use and
recorded in `schema_version`. Every query and write the pipeline makes is a named method here,
one module per domain under `resources/store/` with its SQL beside it in `<domain>.sql`:
ingestion, curation, audits, the model registry, evaluation, and gates and metrics. Assets call
these methods and hold no SQL of their own.
"""

from __future__ import annotations

from resources.store.audits import AuditQueries
from resources.store.core import TABLES, StoreCore, utcnow
from resources.store.curation import CurationQueries
from resources.store.evaluation import EvaluationQueries
from resources.store.gates import GateQueries
from resources.store.ingest import IngestQueries
from resources.store.monitoring import MonitoringQueries
from resources.store.registry import RegistryQueries


class MetadataStore(
    IngestQueries,
    CurationQueries,
    AuditQueries,
    RegistryQueries,
    EvaluationQueries,
    MonitoringQueries,
    GateQueries,
    StoreCore,
):
    """DuckDB-backed metadata: manifests, curation, audits, metrics, gates, the model registry."""


__all__ = ["TABLES", "MetadataStore", "utcnow"]
