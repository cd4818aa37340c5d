-- Monitoring: drift of each curated batch against the champion's training data, models scored
-- on each batch's new labels, and the retrain decisions taken on that evidence.

-- name: unmonitored_batches
-- Admitted batches with curated images and no monitoring record yet, in order of arrival.
SELECT b.batch, min(b.recorded_at) AS arrived FROM batches b
WHERE b.batch IN (SELECT batch FROM admitted_batches)
  AND b.batch IN (SELECT batch FROM curated_images)
  AND b.batch NOT IN (SELECT batch FROM batch_drift)
GROUP BY b.batch ORDER BY arrived, b.batch;

-- name: trained_reference
-- Included train images whose split was assigned by the given time (what an encoder created
-- then has trained on, itself or through its warm-start ancestors), other batches than the
-- one judged, at a catalog version.
SELECT c.image_id, c.array_path, c.array_row, c.embedder
FROM curated_images k JOIN splits s USING (image_id) JOIN image_catalog c USING (image_id)
WHERE k.include AND k.split = 'train' AND s.assigned_at <= ? AND c.version = ? AND c.batch <> ?
ORDER BY c.array_path, c.array_row;

-- name: trained_image_ids
-- Included train images whose split was assigned by the given time (an encoder's creation).
SELECT k.image_id FROM curated_images k JOIN splits s USING (image_id)
WHERE k.include AND k.split = 'train' AND s.assigned_at <= ?;

-- name: batch_included
-- The included images of one batch (any split) at a catalog version.
SELECT c.image_id, c.array_path, c.array_row, c.embedder
FROM curated_images k JOIN image_catalog c USING (image_id)
WHERE k.include AND c.batch = ? AND c.version = ?
ORDER BY c.array_path, c.array_row;

-- name: batch_new_labels
-- Included images whose current label came with this batch's labels.csv (its own images or,
-- keyed by image_id, earlier ones), with the time each got its split (NULL: none yet).
SELECT c.image_id, l.label, c.array_path, c.array_row, s.assigned_at AS split_at
FROM current_labels l JOIN curated_images k USING (image_id)
JOIN image_catalog c USING (image_id) LEFT JOIN splits s USING (image_id)
WHERE l.batch = ? AND k.include AND c.version = ?
ORDER BY c.array_path, c.array_row;

-- name: drift_history
-- Every batch's drift rows, batches in order of arrival.
SELECT d.* EXCLUDE (run_id) FROM batch_drift d
JOIN (SELECT batch, min(recorded_at) AS arrived FROM batches GROUP BY batch) b USING (batch)
ORDER BY b.arrived, d.batch, d.space;

-- name: scores_history
SELECT s.* EXCLUDE (run_id) FROM batch_scores s
JOIN (SELECT batch, min(recorded_at) AS arrived FROM batches GROUP BY batch) b USING (batch)
ORDER BY b.arrived, s.batch, s.role DESC;

-- name: pending_batches
-- Admitted batches the newest usable encoder has not trained on: none of their images had a
-- split when it was created (? twice: its created_at; NULL = no encoder yet, all pending).
SELECT a.batch FROM admitted_batches a
WHERE ? IS NULL OR NOT EXISTS (
    SELECT 1 FROM splits s JOIN image_catalog c USING (image_id)
    WHERE c.batch = a.batch AND s.assigned_at <= ?)
ORDER BY a.batch;

-- name: drift_of
SELECT batch, space, effect, p_value, ood_share, drifted, reason FROM batch_drift
WHERE list_contains(?, batch) ORDER BY batch, space;

-- name: champion_scores_of
SELECT batch, model_id, images, accuracy, low, high, reference_accuracy, decayed, reason
FROM batch_scores WHERE role = 'champion' AND list_contains(?, batch) ORDER BY batch;

-- name: monitored_batches
SELECT DISTINCT batch FROM batch_drift WHERE list_contains(?, batch);

-- name: latest_decision_key
SELECT decision_key FROM retrain_decisions ORDER BY decided_at DESC LIMIT 1;

-- name: retrain_decisions
SELECT decided_at, decided_by, retrain, triggers, reason, snapshot, run_key, evidence
FROM retrain_decisions ORDER BY decided_at;
