-- no-transaction
-- A version keeps its model's security counter unless its upload asks to raise it
-- (MCUboot's semantics: the counter rises only when older versions must become unusable),
-- so versions of one model may share a counter: UNIQUE (model_id, security_counter) goes.
-- Versions are ordered by id (registration order) instead; the index serves that.
-- Kept equivalent across engines like 0001.
--
-- SQLite cannot drop a table constraint: the table is rebuilt (sqlite.org/lang_altertable,
-- "making other kinds of table schema changes"). Dropping a table that other tables
-- reference needs foreign key enforcement off, which SQLite ignores inside a
-- transaction, so this migration runs outside sqlx's and opens its own. Run again after a
-- crash between its commit and sqlx's bookkeeping, it rebuilds the table once more.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE model_versions_new (
    id                    INTEGER PRIMARY KEY,
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
    UNIQUE (model_id, version)
);
INSERT INTO model_versions_new (id, model_id, version, security_counter, image_sha256, arena_bytes, ops,
                                validation_sha256, accuracy_permille, min_accuracy_permille, max_drop_permille,
                                created_at)
SELECT id, model_id, version, security_counter, image_sha256, arena_bytes, ops, validation_sha256,
       accuracy_permille, min_accuracy_permille, max_drop_permille, created_at
  FROM model_versions;
DROP TABLE model_versions;
ALTER TABLE model_versions_new RENAME TO model_versions;
CREATE INDEX model_versions_by_model ON model_versions (model_id, id);
COMMIT;
PRAGMA foreign_keys = ON;
