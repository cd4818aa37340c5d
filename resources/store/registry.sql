-- The model registry: every encoder and fine-tuned model, its status, and every champion
-- decision. Only resources/store/registry.py writes `models.status` and `promotions`.

-- name: delete_model
DELETE FROM models WHERE model_id = ?;

-- name: model
SELECT * FROM models WHERE model_id = ?;

-- name: models
SELECT model_id, kind, status, lineage FROM models;

-- name: current_champion
SELECT * FROM models WHERE kind = ? AND status = 'champion' ORDER BY created_at DESC LIMIT 1;

-- name: latest_usable_encoder
-- The newest encoder that passed its collapse check.
SELECT * FROM models WHERE kind = 'encoder' AND status <> 'rejected'
ORDER BY created_at DESC LIMIT 1;

-- name: latest_finetuned
SELECT * FROM models WHERE kind = 'finetuned' ORDER BY created_at DESC LIMIT 1;

-- name: retire_champions
UPDATE models SET status = 'retired', reason = ?
WHERE status = 'champion' AND kind IN ('finetuned', 'encoder');

-- name: crown
UPDATE models SET status = 'champion', reason = ? WHERE model_id IN (?, ?);

-- name: reject
UPDATE models SET status = 'rejected', reason = ? WHERE model_id = ?;

-- name: last_encoder_at
SELECT max(created_at) AS at FROM models WHERE kind = 'encoder' AND status <> 'rejected';

-- name: train_counts
-- Included train images, and how many of them were split after the given time.
SELECT count(*) AS total, count(*) FILTER (WHERE s.assigned_at > ?) AS new
FROM curated_images c JOIN splits s USING (image_id)
WHERE c.include AND c.split = 'train';

-- name: train_ids
SELECT image_id FROM curated_images WHERE include AND split = 'train' ORDER BY image_id;

-- name: promotions
SELECT decided_at, challenger_id, champion_id, promoted, decided_by,
    round(challenger_val, 3) AS challenger_val, round(champion_val, 3) AS champion_val,
    round(delta_low, 3) AS delta_low, round(delta_high, 3) AS delta_high, reasons
FROM promotions ORDER BY decided_at;
