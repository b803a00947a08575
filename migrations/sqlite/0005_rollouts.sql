-- The rollout engine's state. A rollout's members are fixed when it is created: one
-- attempt row per selected device, in the cohort its stable hash put it, starting
-- 'pending'; the engine offers a cohort by moving its pending attempts to 'offered'.
-- Cohorts advance by conditional updates (state = 'active' -> 'passed'), so replicas
-- racing on one cohort change it once. Commands to devices go through an outbox the
-- engine drains, so an API call never waits on the broker and a restart loses none.
-- Kept equivalent across engines like 0001.

ALTER TABLE rollouts ADD COLUMN reason TEXT;
ALTER TABLE rollouts ADD COLUMN approved_through INTEGER NOT NULL DEFAULT 0;

ALTER TABLE cohorts ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cohorts ADD COLUMN ready_at BIGINT;
ALTER TABLE cohorts ADD COLUMN reason TEXT;

ALTER TABLE attempts ADD COLUMN base_sha256 TEXT;
ALTER TABLE attempts ADD COLUMN delta INTEGER;
ALTER TABLE attempts ADD COLUMN offered_at BIGINT;
ALTER TABLE attempts ADD COLUMN prev_accuracy_permille INTEGER;
ALTER TABLE attempts ADD COLUMN prev_latency_us BIGINT;
ALTER TABLE attempts ADD COLUMN arena_used BIGINT;
ALTER TABLE attempts ADD COLUMN bytes_done BIGINT;
CREATE INDEX attempts_cohort ON attempts (cohort_id, state);
CREATE INDEX attempts_device ON attempts (device_id, rollout_id);

CREATE TABLE commands (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    rollout_id  BIGINT  NOT NULL REFERENCES rollouts (id),
    action      TEXT    NOT NULL CHECK (action IN ('rollback', 'cancel')),
    created_at  BIGINT  NOT NULL,
    sent_at     BIGINT
);
CREATE INDEX commands_unsent ON commands (id) WHERE sent_at IS NULL;
