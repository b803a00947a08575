//! The HTTP server: router, middleware, and the life cycle (`run` returns once
//! `shutdown` resolves and in-flight requests are done).

use std::future::Future;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use std::sync::Arc;

use crate::auth::{ApiError, Caller};
use crate::config::Config;
use crate::db::{Db, DbError};
use crate::signing::Signer;
use crate::tokens::Role;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created.
    #[error("data directory {0}: {1}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
    /// The database is unusable.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No release key.
    #[error(transparent)]
    Signing(#[from] crate::signing::SigningError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The release key.
    pub signer: Arc<Signer>,
}

/// Opens the database (migrating it) and serves the API on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServerError::DataDir(config.data_dir.clone(), e))?;
    let db = Db::connect(&config.database_url()).await?;
    db.migrate().await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signer =
        crate::signing::load(config.release_key.as_deref(), config.release_cert.as_deref(), &config.data_dir, &db, now)
            .await?;
    let app = router(AppState { db, signer: Arc::new(signer) }, config.max_body_bytes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)
}

/// The routes and middleware.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/whoami", get(whoami))
        .route("/v1/keys", get(keys))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The caller's role (a way to check a token).
async fn whoami(caller: Caller) -> Json<serde_json::Value> {
    Json(json!({ "role": caller.role }))
}

/// The public part of the release key in use (viewers and up).
async fn keys(caller: Caller, State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let s = &state.signer;
    Ok(Json(json!({
        "release": {
            "key_id": s.release.key_id().to_string(),
            "not_after": s.not_after,
            "development": s.development,
            "certificate_pem": mota_proto::keys::certificate_pem(s.release.certificate()).unwrap_or_default(),
        }
    })))
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "database": e.to_string() })))
        }
    }
}
