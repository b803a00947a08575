-- What each device was offered, with the artifacts the offer names: the chunk service
-- serves a device only the image, patch and validation set of a manifest it was offered.
-- Kept apart from `attempts` because an offer need not belong to a rollout (attempts
-- require one). Kept equivalent across engines like 0001.

CREATE TABLE device_offers (
    device_id       TEXT    NOT NULL,
    manifest_sha256 TEXT    NOT NULL,
    rollout_id      BIGINT  NOT NULL,
    image_sha256    TEXT    NOT NULL,
    patch_sha256    TEXT,
    set_sha256      TEXT,
    offered_at      BIGINT  NOT NULL,
    PRIMARY KEY (device_id, manifest_sha256)
);
