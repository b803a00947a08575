//! The backend: model registry, signing, blob storage, the ops API, the MQTT side
//! (device registry, offers, chunks and status reports), the rollout engine and the web
//! dashboard over the API.
//!
//! One code path for both deployments: sqlx's `Any` driver over SQLite or PostgreSQL,
//! and [`blobs::Blobs`] over a local directory or an S3 bucket. `main` parses the
//! configuration and calls [`run`]; tests build the same state with [`server::open`] and
//! drive [`server::router`] in memory. ARCHITECTURE.md describes each module's
//! invariants; backend/README.md is the operator guide.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod events;
pub mod metrics;
pub mod mqtt;
pub mod registry;
pub mod revocations;
pub mod rollout;
pub mod server;
pub mod signing;
pub mod tokens;

pub use config::Config;
pub use server::run;
