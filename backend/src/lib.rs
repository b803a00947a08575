//! The backend: model registry, signing, blob storage, rollout engine and ops API.
//!
//! Built so far (issue 6, in progress): the configuration, the database (SQLite by
//! default, PostgreSQL by URL, one schema in `migrations/`), the local blob store, the release
//! key (files, or a development key generated into the data dir), API tokens, and the
//! server skeleton (`run`: health and readiness, request ids, body limits, graceful
//! shutdown). Still to come: the S3 blob store, the registry, manifest signing per version,
//! the `/v1` resources and OpenAPI (issue 6), and the MQTT side (issue 7).

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod db;
pub mod events;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod signing;
pub mod tokens;

pub use config::Config;
pub use server::run;
