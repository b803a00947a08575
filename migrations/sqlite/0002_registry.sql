-- The registry's own bookkeeping: what is known of each validation set, and the delta
-- jobs the background worker runs (one per base version and new version). Kept
-- equivalent across engines like 0001.

CREATE TABLE validation_sets (
    sha256      TEXT    PRIMARY KEY REFERENCES artifacts (sha256),
    name        TEXT    NOT NULL,
    records     BIGINT  NOT NULL,
    input_type  TEXT    NOT NULL,
    input_shape TEXT    NOT NULL,
    expectation TEXT    NOT NULL CHECK (expectation IN ('label', 'output')),
    classes     BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- A job is claimed by setting claimed_at (only when unclaimed or the claim is stale), so
-- replicas never compute the same delta at once and a job a crashed replica held is
-- taken up again. 'not_smaller': mota-delta's best patch was the full image, so offers
-- against that base carry the full image.
CREATE TABLE delta_jobs (
    base_version_id BIGINT  NOT NULL REFERENCES model_versions (id),
    version_id      BIGINT  NOT NULL REFERENCES model_versions (id),
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'not_smaller', 'failed')),
    detail          TEXT,
    claimed_at      BIGINT,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (base_version_id, version_id)
);
CREATE INDEX delta_jobs_state ON delta_jobs (state);
