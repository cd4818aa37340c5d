-- 005: leaks. The curation settings behind every duplicate decision, the scores of every
-- duplicate edge, re-curations with every change they made, and the leak report.

ALTER TABLE duplicates ADD COLUMN settings VARCHAR;          -- JSON: the lake's curation settings
ALTER TABLE duplicate_pairs ADD COLUMN cosine DOUBLE;        -- embedding cosine of the pair
ALTER TABLE duplicate_pairs ADD COLUMN pixel_ncc DOUBLE;     -- ZNCC at the best alignment
ALTER TABLE duplicate_pairs ADD COLUMN pixel_gradient DOUBLE; -- gradient cosine there
ALTER TABLE duplicate_pairs ADD COLUMN settings VARCHAR;

CREATE TABLE recurations (       -- every applied `ssl-assets recurate`
    recuration_id     VARCHAR NOT NULL,
    settings_before   VARCHAR NOT NULL,  -- JSON
    settings_after    VARCHAR NOT NULL,  -- JSON
    images            INTEGER NOT NULL,  -- images re-curated
    group_changes     INTEGER NOT NULL,
    exclusion_changes INTEGER NOT NULL,
    split_moves       INTEGER NOT NULL,
    protected_moves   INTEGER NOT NULL,  -- moves of images that evaluated a promoted model
    forced            BOOLEAN NOT NULL,
    who               VARCHAR,
    why               VARCHAR,
    recorded_at       TIMESTAMP NOT NULL
);

CREATE TABLE curation_changes (  -- one row per image and kind of change a re-curation made
    recuration_id VARCHAR NOT NULL,
    image_id      VARCHAR NOT NULL,
    change        VARCHAR NOT NULL,  -- group | exclusion | split
    before        VARCHAR,
    after         VARCHAR,
    protected     BOOLEAN NOT NULL,  -- held out when a promoted model was evaluated
    recorded_at   TIMESTAMP NOT NULL
);

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
