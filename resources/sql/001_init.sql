-- 001: the foundation schema. Append new migrations as 002_*.sql, never edit this file.
-- No primary keys: batches are replaced with delete+insert in one transaction, and uniqueness
-- is a data-quality rule checked by the GX suites (so a violation is reported, not a crash).

CREATE TABLE images (            -- the raw manifest: one row per file occurrence in a batch
    image_id      VARCHAR NOT NULL,   -- stable hash of (batch, relative path)
    batch         VARCHAR NOT NULL,
    rel_path      VARCHAR NOT NULL,
    content_hash  VARCHAR,            -- sha256 of the file's bytes (NULL when never read)
    bytes         BIGINT,
    format        VARCHAR,
    width         INTEGER,
    height        INTEGER,
    mode          VARCHAR,
    status        VARCHAR NOT NULL,   -- ok | quarantined
    reason        VARCHAR,            -- why quarantined (NULL when ok)
    detail        VARCHAR,            -- the decoder's own words, for people
    run_id        VARCHAR,
    ingested_at   TIMESTAMP NOT NULL
);
-- Every tabular asset is a table (or view) of its own name.
CREATE VIEW raw_images AS SELECT * FROM images;

CREATE TABLE labels (            -- append-only; the latest label per image wins
    image_id     VARCHAR NOT NULL,
    label        VARCHAR NOT NULL,
    batch        VARCHAR NOT NULL,   -- the batch whose labels.csv carried it
    run_id       VARCHAR,
    recorded_at  TIMESTAMP NOT NULL
);
CREATE VIEW current_labels AS
    SELECT image_id, label, batch, recorded_at FROM labels
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY recorded_at DESC) = 1;

CREATE TABLE attributes (        -- metadata.csv in long form: columns vary between batches
    image_id     VARCHAR NOT NULL,
    batch        VARCHAR NOT NULL,
    key          VARCHAR NOT NULL,
    value        VARCHAR,
    run_id       VARCHAR,
    recorded_at  TIMESTAMP NOT NULL
);

CREATE TABLE ingest_rejects (    -- CSV rows that could not be used, with the reason
    batch        VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,   -- labels.csv | metadata.csv
    line         INTEGER,
    reason       VARCHAR NOT NULL,
    detail       VARCHAR,
    run_id       VARCHAR,
    recorded_at  TIMESTAMP NOT NULL
);

CREATE TABLE batches (           -- append-only admission log; the latest row per batch wins
    batch        VARCHAR NOT NULL,
    admitted     BOOLEAN NOT NULL,
    reason       VARCHAR,
    files        INTEGER,
    ok           INTEGER,
    quarantined  INTEGER,
    run_id       VARCHAR,
    recorded_at  TIMESTAMP NOT NULL
);
CREATE VIEW batch_status AS
    SELECT * FROM batches
    QUALIFY row_number() OVER (PARTITION BY batch ORDER BY recorded_at DESC) = 1;
CREATE VIEW admitted_batches AS
    SELECT batch, recorded_at FROM batch_status WHERE admitted;

CREATE TABLE stage_metrics (
    asset        VARCHAR NOT NULL,
    partition    VARCHAR,
    run_id       VARCHAR,
    metric       VARCHAR NOT NULL,
    value        DOUBLE,
    recorded_at  TIMESTAMP NOT NULL
);

CREATE TABLE gate_results (
    asset        VARCHAR NOT NULL,
    check_name   VARCHAR NOT NULL,
    partition    VARCHAR,
    passed       BOOLEAN NOT NULL,
    severity     VARCHAR NOT NULL,   -- ERROR (blocking) | WARN
    details      VARCHAR,            -- JSON: what failed and why
    run_id       VARCHAR,
    recorded_at  TIMESTAMP NOT NULL
);

CREATE TABLE models (            -- the model registry (encoders, fine-tuned models, champions)
    model_id      VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,  -- encoder | finetuned
    path          VARCHAR,
    content_hash  VARCHAR,
    config        VARCHAR,           -- JSON
    metrics       VARCHAR,           -- JSON
    lineage       VARCHAR,           -- JSON: data snapshot, code version, parent model
    status        VARCHAR NOT NULL,  -- candidate | champion | retired | rejected
    reason        VARCHAR,
    run_id        VARCHAR,
    created_at    TIMESTAMP NOT NULL
);
