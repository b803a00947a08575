-- The backend's schema (PostgreSQL). Times are Unix milliseconds; digests are lowercase hex
-- SHA-256; JSON columns hold documents the API defines. Kept equivalent to
-- ../sqlite/0001_schema.sql (types differ, names and constraints do not).

CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE signing_keys (
    key_id      TEXT    PRIMARY KEY,
    public_key  TEXT    NOT NULL,
    certificate BYTEA    NOT NULL,
    not_after   BIGINT  NOT NULL,
    active      INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE artifacts (
    sha256      TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('model', 'patch', 'validation_set')),
    size        BIGINT  NOT NULL CHECK (size > 0),
    created_at  BIGINT  NOT NULL
);

CREATE TABLE models (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    device_class     TEXT    NOT NULL,
    security_counter BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL
);

CREATE TABLE model_versions (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id              BIGINT  NOT NULL REFERENCES models (id),
    version               TEXT    NOT NULL,
    security_counter      BIGINT  NOT NULL,
    image_sha256          TEXT    NOT NULL REFERENCES artifacts (sha256),
    arena_bytes           BIGINT  NOT NULL,
    ops                   TEXT    NOT NULL,
    validation_sha256     TEXT    REFERENCES artifacts (sha256),
    accuracy_permille     INTEGER,
    min_accuracy_permille INTEGER,
    max_drop_permille     INTEGER,
    created_at            BIGINT  NOT NULL,
    UNIQUE (model_id, version),
    UNIQUE (model_id, security_counter)
);

CREATE TABLE deltas (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    base_sha256   TEXT    NOT NULL REFERENCES artifacts (sha256),
    version_id    BIGINT  NOT NULL REFERENCES model_versions (id),
    patch_sha256  TEXT    NOT NULL REFERENCES artifacts (sha256),
    codec         INTEGER NOT NULL,
    created_at    BIGINT  NOT NULL,
    UNIQUE (base_sha256, version_id)
);

CREATE TABLE devices (
    id               TEXT    PRIMARY KEY,
    device_class     TEXT    NOT NULL,
    agent_version    TEXT,
    online           INTEGER NOT NULL DEFAULT 0,
    running_sha256   TEXT,
    running_model    TEXT,
    running_version  TEXT,
    security_counter BIGINT  NOT NULL DEFAULT 0,
    slot_bytes       BIGINT,
    arena_bytes      BIGINT,
    first_seen       BIGINT  NOT NULL,
    last_seen        BIGINT  NOT NULL
);
CREATE INDEX devices_class ON devices (device_class);
CREATE INDEX devices_running ON devices (running_model, running_version);

CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_tag ON device_tags (tag);

CREATE TABLE rollouts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id  BIGINT  NOT NULL REFERENCES model_versions (id),
    selector    TEXT    NOT NULL,
    plan        TEXT    NOT NULL,
    gates       TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('draft', 'running', 'paused', 'completed', 'aborted', 'rolled_back')),
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE cohorts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id   BIGINT  NOT NULL REFERENCES rollouts (id),
    position     INTEGER NOT NULL,
    target       TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'passed', 'failed')),
    started_at   BIGINT,
    finished_at  BIGINT,
    UNIQUE (rollout_id, position)
);

-- One signed offer per (version, base, rollout): the envelope devices receive.
CREATE TABLE offers (
    manifest_sha256 TEXT    PRIMARY KEY,
    rollout_id      BIGINT  REFERENCES rollouts (id),
    version_id      BIGINT  NOT NULL REFERENCES model_versions (id),
    base_sha256     TEXT,
    envelope        BYTEA    NOT NULL,
    key_id          TEXT    NOT NULL REFERENCES signing_keys (key_id),
    created_at      BIGINT  NOT NULL
);

CREATE TABLE attempts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id        BIGINT  NOT NULL REFERENCES rollouts (id),
    device_id         TEXT    NOT NULL REFERENCES devices (id),
    cohort_id         BIGINT  REFERENCES cohorts (id),
    manifest_sha256   TEXT,
    state             TEXT    NOT NULL,
    error_code        INTEGER,
    accuracy_permille INTEGER,
    latency_us        BIGINT,
    updated_at        BIGINT  NOT NULL,
    UNIQUE (rollout_id, device_id)
);

-- Device reports, idempotent by (device, rollout, seq): a report re-sent after a reboot
-- or a reconnect is stored (and counted) once.
CREATE TABLE device_reports (
    device_id   TEXT    NOT NULL,
    rollout_id  BIGINT  NOT NULL,
    seq         BIGINT  NOT NULL,
    event       INTEGER NOT NULL,
    payload     BYTEA    NOT NULL,
    received_at BIGINT  NOT NULL,
    PRIMARY KEY (device_id, rollout_id, seq)
);

-- The audit log: every change an operator or the rollout engine makes.
CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT  NOT NULL,
    actor    TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    detail   TEXT    NOT NULL
);
CREATE INDEX events_subject ON events (subject, at);
