-- 002: curation. Arrays live in the lake; these tables index and explain them.

CREATE TABLE image_catalog (     -- one row per decoded image and canonical version
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    version       VARCHAR NOT NULL,   -- canonical spec, e.g. r32-pad
    array_row     INTEGER NOT NULL,   -- row in the batch's array
    array_path    VARCHAR NOT NULL,   -- relative to the lake root
    pixel_hash    VARCHAR NOT NULL,   -- sha256 of the native decoded RGB pixels
    phash         UBIGINT NOT NULL,
    dhash         UBIGINT NOT NULL,
    orig_width    INTEGER NOT NULL,
    orig_height   INTEGER NOT NULL,
    embedder      VARCHAR NOT NULL,   -- pinned embedder version of <batch>.pinned.npy
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE catalog_failures (  -- ok manifest rows that could not be catalogued, and why
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    version       VARCHAR NOT NULL,
    reason        VARCHAR NOT NULL,
    detail        VARCHAR,
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE quality_scores (    -- long form: image_id, score name, value (computed once)
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    version       VARCHAR NOT NULL,
    score         VARCHAR NOT NULL,
    value         DOUBLE,
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE quality_issues (    -- one row per (image, flagged issue); rebuilt from scores
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    issue         VARCHAR NOT NULL,
    score         DOUBLE,
    threshold     DOUBLE,
    excludes      BOOLEAN NOT NULL,   -- configuration: exclude the image, or only annotate
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE duplicate_pairs (   -- edges found for newly curated images (append-only)
    image_id      VARCHAR NOT NULL,   -- the new image
    other_id      VARCHAR NOT NULL,
    tier          VARCHAR NOT NULL,   -- exact | near | semantic
    score         DOUBLE,             -- hamming distance (near) or cosine similarity (semantic)
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE duplicates (        -- group of every deduplicated image (append-only, one row each)
    seq             BIGINT NOT NULL,  -- curation order: earlier groups win ties
    image_id        VARCHAR NOT NULL,
    group_id        VARCHAR NOT NULL, -- image_id of the group's kept representative
    role            VARCHAR NOT NULL, -- representative | member
    tier            VARCHAR,          -- strongest tier linking a member: exact | near | semantic
    matched_id      VARCHAR,          -- the image it was matched to
    score           DOUBLE,
    linked_groups   VARCHAR[],        -- every existing group the image touched
    embedder        VARCHAR NOT NULL,
    run_id          VARCHAR,
    recorded_at     TIMESTAMP NOT NULL
);

CREATE TABLE splits (            -- append-only: an image's split is assigned once, never changed
    image_id      VARCHAR NOT NULL,
    group_id      VARCHAR NOT NULL,
    split         VARCHAR NOT NULL,   -- train | val | test
    source        VARCHAR NOT NULL,   -- hash | pin | group
    cross_split   BOOLEAN NOT NULL,   -- matched groups in other splits, or pin contradicts group
    detail        VARCHAR,
    run_id        VARCHAR,
    assigned_at   TIMESTAMP NOT NULL
);

CREATE TABLE overrides (         -- people's decisions, applied on the next curation run
    image_id      VARCHAR NOT NULL,
    action        VARCHAR NOT NULL,   -- include | exclude | unmerge
    who           VARCHAR,
    why           VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);
CREATE VIEW current_overrides AS
    SELECT * FROM overrides
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY recorded_at DESC) = 1;

CREATE TABLE curated_images (    -- the current decision per image; rebuilt every curation run
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    group_id      VARCHAR NOT NULL,
    split         VARCHAR NOT NULL,
    include       BOOLEAN NOT NULL,
    reasons       VARCHAR,            -- comma-separated exclusion reasons ('' when included)
    annotations   VARCHAR,            -- comma-separated flags that only annotate
    run_id        VARCHAR,
    updated_at    TIMESTAMP NOT NULL
);
