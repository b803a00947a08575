//! The HTTP server: router, middleware, and the life cycle (`run` returns once
//! `shutdown` resolves and in-flight requests are done).

use std::future::Future;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use std::sync::Arc;

use crate::auth::{ApiError, Caller, ErrorBody};
use crate::blobs::{BlobError, BlobStore, Blobs};
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
    /// The blob store is unusable.
    #[error(transparent)]
    Blobs(#[from] BlobError),
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
    /// Models, patches and validation sets.
    pub blobs: Blobs,
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
    let blobs = Blobs::open(&config)?;
    blobs.ping().await?;
    let app = router(AppState { db, signer: Arc::new(signer), blobs }, config.max_body_bytes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)
}

/// The routes and middleware.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
        .route("/v1/keys", get(keys))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The API's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The caller's role (a way to check a token).
#[utoipa::path(get, path = "/v1/whoami", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
async fn whoami(caller: Caller) -> Json<Whoami> {
    Json(Whoami { role: caller.role })
}

/// The public part of the release key in use (viewers and up).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = Keys), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn keys(caller: Caller, State(state): State<AppState>) -> Result<Json<Keys>, ApiError> {
    caller.require(Role::Viewer)?;
    let s = &state.signer;
    Ok(Json(Keys {
        release: ReleaseKeyView {
            key_id: s.release.key_id().to_string(),
            not_after: s.not_after,
            development: s.development,
            certificate_pem: mota_proto::keys::certificate_pem(s.release.certificate()).unwrap_or_default(),
        },
    }))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), database: None })
}

/// The process can serve: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(Health { status: "ready".into(), database: None })),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: "unavailable".into(), database: Some(e.to_string()) }),
        ),
    }
}

/// The OpenAPI document of everything above.
#[derive(OpenApi)]
#[openapi(
    info(title = "mota", description = "mota backend API: models, rollouts, devices"),
    paths(healthz, readyz, openapi, whoami, keys),
    components(schemas(Health, Whoami, Keys, ReleaseKeyView, ErrorBody, Role)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The `bearer` security scheme (API tokens).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Liveness and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// Why the database is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The token's role.
    pub role: Role,
}

/// Signing keys in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct Keys {
    /// The release key.
    pub release: ReleaseKeyView,
}

/// The public part of a release key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseKeyView {
    /// Key id (hex of the first 8 bytes of the public key's SHA-256).
    pub key_id: String,
    /// End of the certificate's validity, Unix seconds.
    pub not_after: u64,
    /// Whether it is the generated development key.
    pub development: bool,
    /// The certificate (PEM) devices receive in every envelope.
    pub certificate_pem: String,
}
