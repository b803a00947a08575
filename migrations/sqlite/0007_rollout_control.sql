-- The rollout control plane (issue 16). Kept equivalent across engines like 0001.
--
-- One unfinished attempt per device, enforced by the database: `open_device` holds the
-- device id exactly while the attempt is unfinished ('pending', 'offered', 'accepted',
-- 'downloading', 'verified', 'validated', 'timed_out': rollout::states'
-- AttemptState::UNFINISHED, checked by a test) and NULL once it finished. A unique index
-- on it refuses a second one; NULLs never collide. It is a column of its own, not a
-- partial index on `state`, so a status report's state change still touches no index
-- (0006): only the one write that finishes an attempt changes `open_device`.
ALTER TABLE attempts ADD COLUMN open_device TEXT;
-- Existing attempts: the newest unfinished one of each device in a live rollout.
UPDATE attempts SET open_device = device_id
 WHERE state IN ('pending', 'offered', 'accepted', 'downloading', 'verified', 'validated', 'timed_out')
   AND rollout_id IN (SELECT id FROM rollouts WHERE state IN ('running', 'paused'))
   AND NOT EXISTS (SELECT 1 FROM attempts b WHERE b.device_id = attempts.device_id AND b.rollout_id > attempts.rollout_id
                   AND b.state IN ('pending', 'offered', 'accepted', 'downloading', 'verified', 'validated', 'timed_out')
                   AND b.rollout_id IN (SELECT id FROM rollouts WHERE state IN ('running', 'paused')));
CREATE UNIQUE INDEX attempts_open_device ON attempts (open_device);
-- Offers sent again after a timeout (bounded by the gates' max_retries).
ALTER TABLE attempts ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;

-- What a device declared it can take, from its hello (slot_bytes and arena_bytes were
-- already kept): the delta codecs it decodes (a bit per codec) and its largest chunk.
ALTER TABLE devices ADD COLUMN codecs INTEGER;
ALTER TABLE devices ADD COLUMN max_chunk BIGINT;
-- The report number of the status report that last set the running model: a hello
-- whose device had not yet sent that report (its next_seq is not past it) is older
-- than the report, and its running model is not taken (replicas handle the two in
-- either order).
ALTER TABLE devices ADD COLUMN running_seq BIGINT;

-- One replica steps a given rollout at a time: the lease's holder and until when (ms).
ALTER TABLE rollouts ADD COLUMN lease_owner TEXT;
ALTER TABLE rollouts ADD COLUMN lease_until BIGINT;
