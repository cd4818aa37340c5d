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
