"""Data-quality gates: GX 1.x suites and metric thresholds, recorded in DuckDB.

`quality.gates` runs a suite or a metric rule, writes the outcome to `gate_results` and returns
a Dagster `AssetCheckResult`; `quality.suites` holds the expectation suites per stage and
`quality.thresholds` every threshold's default, so nothing is a literal scattered in code.
"""
