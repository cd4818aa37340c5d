-- 003: audits of the curated data (diversity, bias) and labeling candidates.
-- Per-image scores are replaced by every run (the current state); everything small is
-- append-only with its run_id, and `audit_runs` says which batch was newest at each run, so a
-- trend across batches is one join: stage_metrics / bias_* JOIN audit_runs USING (run_id).

CREATE TABLE audit_runs (        -- one row per audit materialization
    run_id        VARCHAR,
    asset         VARCHAR NOT NULL,   -- diversity_audit | bias_audit | labeling_candidates
    newest_batch  VARCHAR,            -- newest curated admitted batch (by arrival) at the time
    batches       INTEGER,            -- curated admitted batches audited
    images        INTEGER,            -- images the audit looked at
    embedder      VARCHAR,            -- embedding source (pinned embedder version), if any
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE diversity_scores (  -- per included train image; rebuilt every diversity_audit run
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    cluster       INTEGER NOT NULL,   -- merged cluster, 0 = largest
    kmeans_cluster INTEGER NOT NULL,  -- the k-means cluster before merging
    outlier_score DOUBLE,             -- Euclidean distance (unit embeddings) to the k-th neighbour
    typicality    DOUBLE,             -- 1 / mean distance to the k nearest neighbours (TypiClust)
    nn_similarity DOUBLE,             -- cosine similarity to the nearest other image
    nn_image_id   VARCHAR,
    redundant     BOOLEAN,            -- nn_similarity >= the redundancy threshold
    x             DOUBLE,             -- 2-D PCA projection
    y             DOUBLE,
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE diversity_clusters ( -- per merged cluster and run (append-only)
    run_id          VARCHAR,
    cluster         INTEGER NOT NULL,
    images          INTEGER NOT NULL,
    share           DOUBLE NOT NULL,
    kmeans_clusters INTEGER NOT NULL, -- k-means clusters merged into it
    mean_outlier    DOUBLE,
    medoid_id       VARCHAR,          -- its most typical image
    recorded_at     TIMESTAMP NOT NULL
);

CREATE TABLE bias_groups (       -- subgroup counts and shares per scope and run (append-only)
    run_id        VARCHAR,
    attribute     VARCHAR NOT NULL,   -- metadata.csv column, or 'label'
    subgroup      VARCHAR NOT NULL,   -- the value ('(missing)': no value; share is NULL)
    scope         VARCHAR NOT NULL,   -- all | train | val | test | newest_batch | earlier_batches
    images        INTEGER NOT NULL,
    share         DOUBLE,             -- among included images of the scope with a value
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE bias_drift (        -- shares of the newest batch vs all earlier ones, per attribute
    run_id          VARCHAR,
    attribute       VARCHAR NOT NULL,
    newest_batch    VARCHAR,
    newest_images   INTEGER,
    earlier_images  INTEGER,
    tv_distance     DOUBLE,           -- total-variation distance between the two share vectors
    chi2            DOUBLE,           -- chi-square test of homogeneity (2 x subgroups table)
    dof             INTEGER,
    p_value         DOUBLE,
    drifted         BOOLEAN,          -- tv above the limit and p below alpha
    skipped_reason  VARCHAR,          -- why no test was possible (e.g. one batch only)
    recorded_at     TIMESTAMP NOT NULL
);

CREATE TABLE bias_group_stats (  -- per-subgroup image statistics, long form (append-only)
    run_id        VARCHAR,
    attribute     VARCHAR NOT NULL,
    subgroup      VARCHAR NOT NULL,
    statistic     VARCHAR NOT NULL,   -- images, excluded_rate, brightness, contrast, resolution,
                                      -- aspect_ratio, issue_rate, issue_rate_<issue>
    value         DOUBLE,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE bias_shortcuts (    -- can image statistics alone predict the attribute?
    run_id             VARCHAR,
    attribute          VARCHAR NOT NULL,
    images             INTEGER,
    classes            INTEGER,
    chance             DOUBLE,        -- balanced accuracy of guessing: 1 / classes
    balanced_accuracy  DOUBLE,        -- cross-validated, shallow decision tree
    lift               DOUBLE,        -- (balanced_accuracy - chance) / (1 - chance)
    top_feature        VARCHAR,
    shortcut           BOOLEAN,
    skipped_reason     VARCHAR,
    recorded_at        TIMESTAMP NOT NULL
);

CREATE TABLE labeling_candidates ( -- each run's selection, in pick order (append-only)
    run_id        VARCHAR,
    rank          INTEGER NOT NULL,   -- 1 = picked first
    image_id      VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    path          VARCHAR NOT NULL,   -- the landed file
    thumbnail     VARCHAR,            -- PNG written next to the CSV
    distance      DOUBLE,             -- distance to the nearest labeled/picked image when picked
    embedder      VARCHAR,
    csv_path      VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);
