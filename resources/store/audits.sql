-- Audits: diversity, representation (bias) and labeling candidates, each run recorded.

-- name: issue_pairs
SELECT DISTINCT image_id, issue FROM quality_issues;

-- name: attributes
SELECT image_id, key, value FROM attributes;

-- name: current_labels
SELECT image_id, label FROM current_labels;

-- name: latest_bias_shares
-- The newest bias audit's subgroup shares among included train images and all included images.
SELECT attribute, subgroup, scope, share FROM bias_groups
WHERE run_id = (SELECT run_id FROM bias_groups ORDER BY recorded_at DESC LIMIT 1)
  AND scope IN ('train', 'all');
