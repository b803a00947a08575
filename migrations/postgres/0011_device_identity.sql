-- Device identity (issue "Device identity"). Kept equivalent across engines like 0001.
--
-- A provisioned device (POST /v1/devices) has its class fixed by the operator and MQTT
-- credentials: username = device id, a random 32-byte password shown once and stored
-- only as its SHA-256 (lowercase hex), as API tokens are. A row without
-- `provisioned_at` was registered by a device's own hello (auto-registration, the
-- embedded single-machine default); its class still follows its hellos.
ALTER TABLE devices ADD COLUMN provisioned_at BIGINT;
ALTER TABLE devices ADD COLUMN mqtt_password_hash TEXT;
-- The class the device's last hello declared, when it differs from the fixed class of a
-- provisioned device (recorded, never applied); NULL when they agree.
ALTER TABLE devices ADD COLUMN reported_class TEXT;
