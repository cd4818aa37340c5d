-- Curation: the decoded catalog, quality scores and issues, duplicate groups, append-only
-- splits, people's overrides and the current include decision per image.

-- name: admitted_catalog
-- Catalogued images of admitted batches, in curation order: batches by arrival (first
-- admission-log row), then by path. Earlier images are the ones kept when copies turn up.
SELECT c.*, i.rel_path FROM image_catalog c
JOIN admitted_batches a USING (batch)
JOIN images i USING (image_id)
JOIN (SELECT batch, min(recorded_at) AS arrived FROM batches GROUP BY batch) b USING (batch)
WHERE c.version = ?
ORDER BY b.arrived, c.batch, i.rel_path;

-- name: admitted_quality_scores
SELECT s.image_id, s.score, s.value FROM quality_scores s
JOIN admitted_batches USING (batch) WHERE s.version = ?;

-- name: deduplicated
-- Every image already placed in a duplicate group, with its current group (an unmerge
-- override moves an image into a group of its own) and its curation order.
SELECT d.image_id, coalesce(c.group_id, d.group_id) AS group_id, d.seq
FROM duplicates d LEFT JOIN curated_images c USING (image_id) ORDER BY d.seq;

-- name: overridden
SELECT image_id FROM current_overrides WHERE action = ?;

-- name: current_overrides
SELECT image_id, action FROM current_overrides;

-- name: import_overrides
-- New rows of overrides.csv (registered as `_overrides`); rows seen before are not repeated.
INSERT INTO overrides
SELECT o.image_id, o.action, o.who, o.why, now()::TIMESTAMP FROM _overrides o
WHERE NOT EXISTS (SELECT 1 FROM overrides x WHERE x.image_id = o.image_id
    AND x.action = o.action AND x.who IS NOT DISTINCT FROM o.who
    AND x.why IS NOT DISTINCT FROM o.why);

-- name: unsplit_images
-- Deduplicated images without a split yet, in curation order, with their pin from metadata.csv.
SELECT d.image_id, d.group_id, d.role, d.linked_groups, c.pixel_hash,
    (SELECT any_value(a.value) FROM attributes a
     WHERE a.image_id = d.image_id AND a.key = 'split') AS pin
FROM duplicates d
JOIN (SELECT DISTINCT image_id, pixel_hash FROM image_catalog) c USING (image_id)
WHERE d.image_id NOT IN (SELECT image_id FROM splits)
ORDER BY d.seq;

-- name: group_splits
SELECT group_id, any_value(split) AS split FROM splits WHERE NOT cross_split GROUP BY group_id;

-- name: split_images
-- What the include decision needs: every split image with its batch, group, role and tier.
SELECT s.image_id, c.batch, s.group_id, s.split, d.role, d.tier, s.cross_split
FROM splits s JOIN duplicates d USING (image_id)
JOIN (SELECT DISTINCT image_id, batch FROM image_catalog) c USING (image_id)
ORDER BY d.seq;

-- name: image_issues
SELECT image_id, issue, excludes FROM quality_issues;

-- name: curated_images
SELECT * FROM curated_images;

-- name: curated_decisions
SELECT image_id, split, include, reasons FROM curated_images;

-- name: batches_by_arrival
SELECT batch, min(recorded_at) AS arrived FROM batches
WHERE batch IN (SELECT batch FROM admitted_batches)
GROUP BY batch ORDER BY arrived, batch;

-- name: catalogued_per_batch
SELECT c.batch, c.version, count(*) AS n FROM image_catalog c
JOIN admitted_batches USING (batch) GROUP BY ALL ORDER BY ALL;

-- name: uncurated_count
SELECT count(*) AS n FROM image_catalog c JOIN admitted_batches USING (batch)
WHERE c.image_id NOT IN (SELECT image_id FROM splits);

-- name: split_leaks
-- Every duplicate edge between a held-out (val, test) image and a training image.
SELECT * FROM split_leaks ORDER BY held_out_split, held_out_id, train_id;

-- name: split_sizes
SELECT split, count(*) AS images FROM curated_images GROUP BY split;

-- name: catalog_rows
-- Catalog rows (array path and row) of the given images at a version.
SELECT image_id, array_path, array_row FROM image_catalog
WHERE version = ? AND list_contains(?, image_id);

-- name: recuration_state
-- Every deduplicated image in curation order with what re-curation keeps and compares: its
-- duplicate row, its split row, its current decision and its split pin.
SELECT d.seq, d.image_id, d.role, d.tier, d.group_id AS duplicate_group,
    s.split, s.group_id AS split_group, s.cross_split, c.group_id, c.include, c.reasons,
    (SELECT any_value(a.value) FROM attributes a
     WHERE a.image_id = d.image_id AND a.key = 'split') AS pin
FROM duplicates d
LEFT JOIN splits s USING (image_id)
LEFT JOIN curated_images c USING (image_id)
ORDER BY d.seq;

-- name: protected_images
-- Held-out images (val, test) in use when a promoted model was evaluated: included, and split
-- before the latest decision that crowned a champion.
SELECT c.image_id FROM curated_images c JOIN splits s USING (image_id)
WHERE c.include AND s.split IN ('val', 'test')
    AND s.assigned_at <= (SELECT max(decided_at) FROM promotions WHERE promoted);

-- name: delete_recurated_duplicates
DELETE FROM duplicates WHERE image_id IN (SELECT image_id FROM _recurated);

-- name: delete_recurated_pairs
DELETE FROM duplicate_pairs WHERE image_id IN (SELECT image_id FROM _recurated);

-- name: delete_resplit
DELETE FROM splits WHERE image_id IN (SELECT image_id FROM _resplit);

-- name: clear_curated
DELETE FROM curated_images;

-- name: recurations
SELECT * FROM recurations ORDER BY recorded_at;

-- name: curation_changes
SELECT * FROM curation_changes WHERE recuration_id = ? ORDER BY change, image_id;
