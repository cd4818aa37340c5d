-- Gate verdicts and stage metrics: what every check and every stage records.

-- name: previous_metric
-- The most recent earlier value of a metric (partition and run filters are optional: NULL = any).
SELECT value FROM stage_metrics
WHERE asset = ? AND metric = ?
  AND (? IS NULL OR partition = ?)
  AND (? IS NULL OR run_id IS DISTINCT FROM ?)
ORDER BY recorded_at DESC LIMIT 1;

-- name: latest_metrics
-- The newest value of every metric an asset recorded.
SELECT metric, value FROM stage_metrics WHERE asset = ?
QUALIFY row_number() OVER (PARTITION BY metric ORDER BY recorded_at DESC) = 1;

-- name: latest_gate_verdicts
-- Each check's latest verdict for the given assets (one row per asset, check and partition).
SELECT asset, check_name, partition, passed, severity, details, recorded_at FROM gate_results
WHERE list_contains(?, asset)
QUALIFY row_number() OVER (
    PARTITION BY asset, check_name, coalesce(partition, '') ORDER BY recorded_at DESC) = 1
ORDER BY asset, partition, check_name;

-- name: latest_gate_verdicts_any_partition
-- Each check's latest verdict for the given assets, whatever partition it judged.
SELECT asset, check_name, passed, severity, details, recorded_at FROM gate_results
WHERE list_contains(?, asset)
QUALIFY row_number() OVER (PARTITION BY asset, check_name ORDER BY recorded_at DESC) = 1
ORDER BY asset, check_name;

-- name: gate_counts
-- Gates passed / evaluated per asset, over every evaluation so far.
SELECT asset, count(*) FILTER (WHERE passed) AS passed, count(*) AS gates
FROM gate_results GROUP BY asset ORDER BY asset;
