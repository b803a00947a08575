//! The `/v1` API: JSON over HTTP, bearer tokens, one error body, keyset pagination, and
//! an OpenAPI document generated from the handlers themselves (so it cannot drift from
//! what is served; a test checks every documented route answers).

// utoipa's `path` macro spells out the path of every `IntoParams` type it is given.
#![allow(unused_qualifications)]

pub mod artifacts;
pub mod devices;
pub mod events;
pub mod extract;
pub mod meta;
pub mod models;
pub mod page;
pub mod revocations;
pub mod rollouts;
pub mod sets;
pub mod tokens;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post, put};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::{ApiError, ErrorBody, ErrorDetail};
use crate::registry::RegistryError;
use crate::server::AppState;

/// Every route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/v1/openapi.json", get(meta::openapi))
        .route("/v1/whoami", get(meta::whoami))
        .route("/v1/keys", get(meta::keys))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{model}", get(models::get_model))
        .route("/v1/models/{model}/versions", get(models::list_versions).post(models::upload_version))
        .route("/v1/models/{model}/versions/{version}", get(models::get_version))
        .route("/v1/models/{model}/versions/{version}/manifests", post(models::sign_manifest))
        .route("/v1/validation-sets", get(sets::list_sets).post(sets::upload_set))
        .route("/v1/validation-sets/{sha256}", get(sets::get_set))
        .route("/v1/artifacts/{sha256}", get(artifacts::get_artifact))
        .route("/v1/devices", get(devices::list_devices).post(devices::create_device))
        .route("/v1/devices/{id}", get(devices::get_device))
        .route("/v1/devices/{id}/credentials", post(devices::issue_credentials))
        .route("/v1/devices/{id}/tags/{tag}", put(devices::add_tag).delete(devices::remove_tag))
        .route("/v1/devices/{id}/updates", get(rollouts::device_updates))
        .route("/v1/rollouts", get(rollouts::list_rollouts).post(rollouts::create_rollout))
        .route("/v1/rollouts/{id}", get(rollouts::get_rollout))
        .route("/v1/rollouts/{id}/devices", get(rollouts::rollout_devices))
        .route("/v1/rollouts/{id}/pause", post(rollouts::pause_rollout))
        .route("/v1/rollouts/{id}/resume", post(rollouts::resume_rollout))
        .route("/v1/rollouts/{id}/approve", post(rollouts::approve_rollout))
        .route("/v1/rollouts/{id}/abort", post(rollouts::abort_rollout))
        .route("/v1/rollouts/{id}/rollback", post(rollouts::rollback_rollout))
        .route("/v1/events", get(events::list_events))
        .route("/v1/revocations", get(revocations::list_revocations).post(revocations::add_revocation))
        .route("/v1/tokens", get(tokens::list_tokens).post(tokens::create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke_token))
        .fallback(|| async { ApiError::not_found("such route") })
}

/// 415 unless the body is declared `application/octet-stream`.
pub fn require_octet_stream(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if ct.to_ascii_lowercase().starts_with("application/octet-stream") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file as application/octet-stream",
        ))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let message = e.to_string();
        match e {
            RegistryError::Invalid(_) => Self::bad_request("invalid", message),
            RegistryError::Inspect(_) => Self::unprocessable("unusable", message),
            RegistryError::Rule(_) => Self::unprocessable("rule", message),
            RegistryError::Duplicate { .. } => Self::conflict("duplicate_version", message),
            RegistryError::ClassMismatch { .. } => Self::conflict("class_mismatch", message),
            RegistryError::NotFound(what) => Self::not_found(what),
            RegistryError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
            RegistryError::Blob(e) => e.into(),
            RegistryError::Db(e) => Self::internal(e),
            RegistryError::Join(e) => Self::internal(e),
        }
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "mota", description = "mota backend API: model registry, signing, devices, rollouts, audit log"),
    paths(
        meta::healthz, meta::readyz, meta::openapi, meta::whoami, meta::keys,
        models::list_models, models::get_model, models::list_versions, models::get_version,
        models::upload_version, models::sign_manifest,
        sets::upload_set, sets::list_sets, sets::get_set,
        artifacts::get_artifact,
        devices::list_devices, devices::get_device, devices::create_device, devices::issue_credentials, devices::add_tag, devices::remove_tag,
        rollouts::create_rollout, rollouts::list_rollouts, rollouts::get_rollout, rollouts::rollout_devices,
        rollouts::pause_rollout, rollouts::resume_rollout, rollouts::approve_rollout, rollouts::abort_rollout,
        rollouts::rollback_rollout, rollouts::device_updates,
        events::list_events,
        revocations::list_revocations, revocations::add_revocation,
        tokens::list_tokens, tokens::create_token, tokens::revoke_token,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
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
