//! The backend: model registry, signing, blob storage, rollout engine and ops API.
//!
//! Not built yet (issues 6 and 7): an axum server on SQLite or PostgreSQL (sqlx), a
//! local or S3 blob store, and the MQTT side (rumqttc, with an in-process rumqttd by
//! default). It signs manifests with `mota_proto::sign` and speaks the topics of
//! `mota_proto::topic`.
