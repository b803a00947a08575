//! Health, readiness, identity, keys and the API's own description.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::auth::{ApiError, Caller, ErrorBody};
use crate::blobs::BlobStore;
use crate::server::AppState;
use crate::tokens::Role;

/// The API's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::openapi())
}

/// The caller's role (a way to check a token).
#[utoipa::path(get, path = "/v1/whoami", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
pub async fn whoami(caller: Caller) -> Json<Whoami> {
    Json(Whoami { role: caller.role })
}

/// The public part of the release key in use (viewers and up).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = Keys), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn keys(caller: Caller, State(state): State<AppState>) -> Result<Json<Keys>, ApiError> {
    caller.require(Role::Viewer)?;
    let s = &state.signer;
    Ok(Json(Keys {
        release: ReleaseKeyView {
            key_id: s.release.key_id().to_string(),
            not_after: s.not_after,
            development: s.development,
            min_counter: *s.counters.start(),
            max_counter: *s.counters.end(),
            certificate_pem: mota_proto::keys::certificate_pem(s.release.certificate()).unwrap_or_default(),
        },
    }))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), database: None, blobs: None })
}

/// The process can serve: the database and the blob store answer.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = state.db.ping().await.err().map(|e| e.to_string());
    let blobs = state.blobs.ping().await.err().map(|e| e.to_string());
    if database.is_none() && blobs.is_none() {
        (StatusCode::OK, Json(Health { status: "ready".into(), database, blobs }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "unavailable".into(), database, blobs }))
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
    /// Why the blob store is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs: Option<String>,
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
    /// The lowest security counter the root certified the key to sign.
    pub min_counter: u32,
    /// The highest: a version that would raise a model's counter beyond it is refused.
    pub max_counter: u32,
    /// The certificate (PEM) devices receive in every envelope.
    pub certificate_pem: String,
}
