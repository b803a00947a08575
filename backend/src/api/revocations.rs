//! Revocation lists of release keys (root-signed, made offline with `mota keys revoke`):
//! admins upload them, everyone may read them. See `crate::revocations`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use crate::auth::{ApiError, Caller, ErrorBody};
use crate::revocations::{self, RevocationError, RevocationView};
use crate::server::AppState;
use crate::tokens::Role;

/// Uploads a root-signed revocation list (the file `mota keys revoke` writes). The
/// engine publishes it, retained, to every device; devices then refuse offers and
/// commands signed by the keys it names.
#[utoipa::path(post, path = "/v1/revocations", tag = "keys", security(("bearer" = [])),
    request_body(content((Vec<u8> = "application/octet-stream"))),
    responses((status = 201, body = RevocationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "not newer than the current list"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody, description = "not a revocation list of our root")))]
pub async fn add_revocation(
    caller: Caller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RevocationView>), ApiError> {
    caller.require(Role::Admin)?;
    super::require_octet_stream(&headers)?;
    match revocations::add(&state.db, &state.signer, &body, &caller.actor).await {
        Ok(view) => {
            state.engine_wake.notify_one();
            Ok((StatusCode::CREATED, Json(view)))
        }
        Err(e @ RevocationError::NotNewer { .. }) => Err(ApiError::conflict("not_newer", e.to_string())),
        Err(e @ (RevocationError::Malformed(_) | RevocationError::WrongRoot { .. })) => {
            Err(ApiError::unprocessable("invalid_revocation", e.to_string()))
        }
        Err(RevocationError::Db(e)) => Err(ApiError::internal(e)),
    }
}

/// The revocation lists uploaded, newest first (devices keep the newest).
#[utoipa::path(get, path = "/v1/revocations", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = Vec<RevocationView>), (status = 401, body = ErrorBody)))]
pub async fn list_revocations(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<RevocationView>>, ApiError> {
    caller.require(Role::Viewer)?;
    revocations::list(&state.db).await.map(Json).map_err(ApiError::internal)
}
