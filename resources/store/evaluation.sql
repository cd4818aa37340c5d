-- Evaluation: what pretraining and evaluation read (curated, included images with their
-- catalog rows and labels), frozen embeddings, and the label-efficiency table.

-- name: training_rows
-- Included train and val images at a catalog version, with labels where they exist.
SELECT k.image_id, k.split, c.array_path, c.array_row, l.label
FROM curated_images k JOIN image_catalog c USING (image_id)
LEFT JOIN current_labels l USING (image_id)
WHERE k.include AND k.split IN ('train', 'val') AND c.version = ?
ORDER BY c.array_path, c.array_row;

-- name: labeled_rows
-- Included, labeled images of every split at a catalog version.
SELECT k.image_id, k.split, c.array_path, c.array_row, l.label
FROM curated_images k JOIN image_catalog c USING (image_id)
JOIN current_labels l USING (image_id)
WHERE k.include AND c.version = ?
ORDER BY k.split, c.array_path, c.array_row;

-- name: latest_attributes
-- The latest value of every attribute but the split pin, per image.
SELECT image_id, key, value FROM attributes WHERE key <> 'split'
QUALIFY row_number() OVER (PARTITION BY image_id, key ORDER BY recorded_at DESC) = 1;

-- name: curated_rows
-- Every curated image's catalog row at a version (embeddings cover included and excluded).
SELECT c.image_id, c.array_path, c.array_row FROM curated_images k
JOIN image_catalog c USING (image_id) WHERE c.version = ?
ORDER BY c.array_path, c.array_row;

-- name: embedding_index
SELECT image_id, array_path, array_row FROM image_embeddings WHERE model_id = ?;

-- name: embedded_train_ids
SELECT k.image_id FROM curated_images k JOIN image_embeddings e USING (image_id)
WHERE k.include AND k.split = 'train' AND e.model_id = ? ORDER BY e.array_row;

-- name: probes
SELECT * FROM probes WHERE model_id = ?;

-- name: latest_probe_summary
-- The label-efficiency table of the newest evaluated encoder, mean and spread over draws.
SELECT budget, method, round(avg(n_labels)) AS labels,
    round(avg(accuracy), 3) AS test_acc, round(coalesce(stddev_samp(accuracy), 0), 3) AS std,
    count(*) AS seeds
FROM probes
WHERE model_id = (SELECT model_id FROM probes ORDER BY recorded_at DESC LIMIT 1)
GROUP BY ALL ORDER BY labels, method;

-- name: curated_split_counts
SELECT split, count(*) FILTER (WHERE include) AS included, count(*) AS images
FROM curated_images GROUP BY split ORDER BY split;
