"""Partitions shared by the per-batch assets."""

from dagster import DynamicPartitionsDefinition

# One partition per landed batch folder; the landing sensor (or `ssl-assets run`) adds them.
batch_partitions = DynamicPartitionsDefinition(name="batches")

# Steps that write metadata.duckdb share this concurrency pool (limit set in dagster.yaml).
METADATA_WRITER_POOL = "metadata_writer"
OWNERS = ["team:ssl-assets"]
