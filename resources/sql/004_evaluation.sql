-- 004: evaluation. Feature arrays live in the lake; these tables index and score them.

CREATE TABLE image_embeddings (  -- frozen-encoder features of every curated image
    image_id      VARCHAR NOT NULL,
    model_id      VARCHAR NOT NULL,   -- the encoder
    array_path    VARCHAR NOT NULL,   -- relative to the lake root
    array_row     INTEGER NOT NULL,
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE probes (            -- the label-efficiency table: one row per budget x seed x method
    model_id      VARCHAR NOT NULL,   -- the SSL encoder being evaluated
    budget        VARCHAR NOT NULL,
    fraction      DOUBLE,
    min_per_class INTEGER,
    n_labels      INTEGER NOT NULL,
    method        VARCHAR NOT NULL,   -- ssl/linear, ssl/knn, random/linear, scratch/supervised ...
    encoder       VARCHAR,
    probe         VARCHAR,
    seed          INTEGER NOT NULL,
    accuracy      DOUBLE NOT NULL,    -- on the test split
    val_accuracy  DOUBLE,
    train_seconds DOUBLE,
    run_id        VARCHAR,
    recorded_at   TIMESTAMP NOT NULL
);

CREATE TABLE promotions (        -- every champion decision, with its reasons
    challenger_id     VARCHAR NOT NULL,
    champion_id       VARCHAR,        -- the champion it was compared with (NULL: none yet)
    promoted          BOOLEAN NOT NULL,
    challenger_val    DOUBLE,
    champion_val      DOUBLE,
    delta_low         DOUBLE,         -- bootstrap interval of challenger - champion on val
    delta_high        DOUBLE,
    reasons           VARCHAR,        -- JSON list of one line per rule
    decided_by        VARCHAR NOT NULL, -- pipeline | restore | promote (a person, via the CLI)
    run_id            VARCHAR,
    decided_at        TIMESTAMP NOT NULL
);
