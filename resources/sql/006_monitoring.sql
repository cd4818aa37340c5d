-- 006: monitoring. Drift of every curated batch against the champion's training data, the
-- champion (and latest challenger) scored on each batch's new labels, and every retrain decision.

CREATE TABLE batch_drift (       -- one row per monitored batch and embedding space
    batch             VARCHAR NOT NULL,
    space             VARCHAR NOT NULL,   -- pinned | champion (the champion encoder's features)
    embedder          VARCHAR,            -- pinned embedder version or the encoder's model_id
    champion_id       VARCHAR,            -- the champion judged against (NULL: none yet)
    statistic         VARCHAR,            -- energy distance, permutation test
    batch_images      INTEGER NOT NULL,
    reference_images  INTEGER NOT NULL,   -- the champion encoder's training images (capped)
    energy            DOUBLE,
    effect            DOUBLE,             -- energy coefficient, 0 = same distribution
    p_value           DOUBLE,
    permutations      INTEGER,
    ood_share         DOUBLE,             -- nearest training image beyond the 99th percentile
    ood_threshold     DOUBLE,
    drifted           BOOLEAN NOT NULL,
    reason            VARCHAR NOT NULL,
    max_effect        DOUBLE,             -- the bounds it was judged against (run config)
    alpha             DOUBLE,
    max_ood_share     DOUBLE,
    run_id            VARCHAR,
    recorded_at       TIMESTAMP NOT NULL
);

CREATE TABLE batch_scores (      -- shadow evaluation: models on a batch's new labeled images
    batch               VARCHAR NOT NULL,
    model_id            VARCHAR NOT NULL,
    role                VARCHAR NOT NULL, -- champion | challenger
    images              INTEGER NOT NULL, -- labeled images of the batch the model never trained on
    correct             INTEGER NOT NULL,
    accuracy            DOUBLE,
    low                 DOUBLE,           -- 95 % Wilson interval
    high                DOUBLE,
    unknown_labels      INTEGER,          -- labels outside the model's class list
    reference_accuracy  DOUBLE,           -- its test accuracy when fine-tuned
    decayed             BOOLEAN NOT NULL,
    delta_low           DOUBLE,           -- challenger - champion, paired bootstrap (challenger rows)
    delta_high          DOUBLE,
    max_accuracy_drop   DOUBLE,
    reason              VARCHAR NOT NULL,
    run_id              VARCHAR,
    recorded_at         TIMESTAMP NOT NULL
);

CREATE TABLE retrain_decisions ( -- every retrain decision (retrain or not), with its evidence
    decided_at    TIMESTAMP NOT NULL,
    decided_by    VARCHAR NOT NULL,   -- retrain_sensor | ssl-assets run
    retrain       BOOLEAN NOT NULL,
    triggers      VARCHAR,            -- JSON list: count, drift, decay
    reason        VARCHAR NOT NULL,   -- the decision in plain words (the sensor tick's text)
    evidence      VARCHAR,            -- JSON: counts, drifted and decayed batches, bounds
    snapshot      VARCHAR,            -- the train split it was decided on
    run_key       VARCHAR,            -- the retrain run it asked for (NULL: none)
    decision_key  VARCHAR NOT NULL    -- one row per distinct decision, not per sensor tick
);
