-- A version keeps its model's security counter unless its upload asks to raise it
-- (MCUboot's semantics: the counter rises only when older versions must become unusable),
-- so versions of one model may share a counter: UNIQUE (model_id, security_counter) goes.
-- Versions are ordered by id (registration order) instead; the index serves that.
-- Kept equivalent across engines like 0001 (SQLite rebuilds the table to drop the
-- constraint; PostgreSQL drops it by its default name).
ALTER TABLE model_versions DROP CONSTRAINT model_versions_model_id_security_counter_key;
CREATE INDEX model_versions_by_model ON model_versions (model_id, id);
