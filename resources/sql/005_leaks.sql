-- 005: leaks. The curation settings behind every duplicate decision, the scores of every
-- duplicate edge, and the leak report.

ALTER TABLE duplicates ADD COLUMN settings VARCHAR;          -- JSON: the lake's curation settings
ALTER TABLE duplicate_pairs ADD COLUMN cosine DOUBLE;        -- embedding cosine of the pair
ALTER TABLE duplicate_pairs ADD COLUMN pixel_ncc DOUBLE;     -- ZNCC at the best alignment
ALTER TABLE duplicate_pairs ADD COLUMN pixel_gradient DOUBLE; -- gradient cosine there
ALTER TABLE duplicate_pairs ADD COLUMN settings VARCHAR;

-- Every duplicate edge between a held-out image (split val or test) and a training image, with
-- the tier and scores that linked them; edges a person undid (`unmerge`) are left out.
CREATE VIEW split_leaks AS
WITH edges AS (
    SELECT image_id AS a, other_id AS b, tier, score, cosine, pixel_ncc, pixel_gradient,
        settings, recorded_at FROM duplicate_pairs
    UNION ALL
    SELECT other_id, image_id, tier, score, cosine, pixel_ncc, pixel_gradient,
        settings, recorded_at FROM duplicate_pairs
),
unmerged AS (SELECT image_id FROM current_overrides WHERE action = 'unmerge')
SELECT h.split AS held_out_split, e.a AS held_out_id, e.b AS train_id, e.tier, e.score,
    e.cosine, e.pixel_ncc, e.pixel_gradient,
    coalesce(ch.include, false) AS held_out_included,
    coalesce(ct.include, false) AS train_included,
    e.settings, e.recorded_at
FROM edges e
JOIN splits h ON h.image_id = e.a AND h.split IN ('val', 'test')
JOIN splits t ON t.image_id = e.b AND t.split = 'train'
LEFT JOIN curated_images ch ON ch.image_id = e.a
LEFT JOIN curated_images ct ON ct.image_id = e.b
WHERE e.a NOT IN (SELECT image_id FROM unmerged) AND e.b NOT IN (SELECT image_id FROM unmerged);
