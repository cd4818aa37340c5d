-- Ingestion: the manifest (`images`), labels, attributes, CSV rejects and the admission log.

-- name: known_image_ids
-- Which of the registered ids (`_ids`) are in the manifest of batches other than the given one.
SELECT DISTINCT i.image_id FROM images i JOIN _ids USING (image_id)
WHERE i.batch IS DISTINCT FROM ?;

-- name: append_new_labels
-- Labels are append-only: re-ingesting a batch adds only labels not seen before from it.
INSERT INTO labels BY NAME SELECT n.* FROM _new_labels n
WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.image_id = n.image_id
                  AND l.label = n.label AND l.batch = n.batch);

-- name: batch_manifest
SELECT * FROM images WHERE batch = ? ORDER BY rel_path;

-- name: batch_admission
SELECT admitted, reason FROM batch_status WHERE batch = ?;

-- name: ok_images
SELECT image_id, rel_path, content_hash, bytes FROM images
WHERE batch = ? AND status = 'ok' ORDER BY rel_path;

-- name: admitted_batches
SELECT batch FROM admitted_batches ORDER BY batch;

-- name: decided_batches
-- Batches with an admission decision (admitted or not).
SELECT DISTINCT batch FROM batches;

-- name: settled_batches
-- Batches with nothing left to ingest: rejected by their gate, or admitted and catalogued.
SELECT batch FROM batch_status WHERE NOT admitted
UNION SELECT DISTINCT batch FROM image_catalog WHERE version = ?;

-- name: batch_status
SELECT * FROM batch_status ORDER BY batch;

-- name: quarantine_counts
SELECT batch, reason, count(*) AS n FROM images WHERE status = 'quarantined'
GROUP BY ALL ORDER BY batch, n DESC;
