-- The engine's queries by cohort walk (cohort_id, device_id) and filter the state; on
-- PostgreSQL, keeping `state` out of every index lets a status report update the row in
-- place (see the PostgreSQL migration). Kept equivalent across engines like 0001.
DROP INDEX attempts_cohort;
CREATE INDEX attempts_cohort ON attempts (cohort_id, device_id);
