-- Signed commands and revocations (issue 17). Kept equivalent across engines like 0001.
--
-- What a rollback of an attempt returns to, as the device's committed report named it:
-- the image (hex SHA-256) and the manifest that installed it (NULL for a model flashed
-- at the factory). A rollback is signed naming exactly these; with no image known none
-- can be, and the attempt ends 'rollback_failed'.
ALTER TABLE attempts ADD COLUMN rollback_image TEXT;
ALTER TABLE attempts ADD COLUMN rollback_manifest TEXT;

-- Root-signed revocation lists of release keys, exactly as uploaded, with the key ids
-- they name (hex, comma-separated). Devices keep the one with the highest sequence
-- number; the engine publishes that one, retained, on every device's trust topic
-- (published_at NULL: not yet), and a hello that declares an older one gets it again.
CREATE TABLE revocations (
    seq         BIGINT  PRIMARY KEY,
    statement   BLOB   NOT NULL,
    revoked     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    published_at BIGINT
);
