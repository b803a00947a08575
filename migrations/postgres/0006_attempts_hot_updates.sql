-- An attempt's state changes with nearly every status report. With `state` in an index
-- every such change wrote a new entry into each of the table's four indexes; without
-- it PostgreSQL updates the row in place on its page (a heap-only tuple) and touches no
-- index. The engine's queries by cohort walk (cohort_id, device_id) and filter the
-- state, which is what they ordered by anyway. Room is left on each page for those
-- in-place updates. Kept equivalent across engines like 0001.
DROP INDEX attempts_cohort;
CREATE INDEX attempts_cohort ON attempts (cohort_id, device_id);
ALTER TABLE attempts SET (fillfactor = 80);
