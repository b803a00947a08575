//! Bearer-token authentication for the API, and the error body every endpoint shares.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::AppState;
use crate::tokens::{self, Lookup, Role};

/// An API error: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For humans.
    pub message: String,
}

impl ApiError {
    /// An error with its status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such resource.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    /// 409: the request conflicts with what exists.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed, but not something devices could use.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500: our fault; logged with its cause, which the caller does not see.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error (logged)")
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        Self::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

impl From<crate::blobs::BlobError> for ApiError {
    fn from(e: crate::blobs::BlobError) -> Self {
        use crate::blobs::BlobError;
        match e {
            BlobError::NotFound(what) => Self::not_found(format!("blob {what}")),
            BlobError::TooLarge(max) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("larger than {max} bytes"))
            }
            BlobError::DigestMismatch { .. } => Self::bad_request("digest_mismatch", e.to_string()),
            BlobError::Range { .. } => Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "range", e.to_string()),
            other => Self::internal(other),
        }
    }
}

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`unauthorized`, `forbidden`, ...).
    pub code: String,
    /// For humans.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What its token may do.
    pub role: Role,
    /// Who, for the audit log: `token:<name>`.
    pub actor: String,
}

impl Caller {
    /// `Ok` when the caller's role is at least `role`, else 403.
    pub fn require(&self, role: Role) -> Result<&Self, ApiError> {
        if self.role >= role {
            Ok(self)
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("needs the {role:?} role")))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| unauthorized("missing bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("expected `Authorization: Bearer <token>`"))?;
        match tokens::lookup(&state.db, token.trim()).await {
            Ok(Lookup::Live(holder)) => Ok(Self { role: holder.role, actor: format!("token:{}", holder.name) }),
            Ok(Lookup::Expired { at }) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                format!("the token expired at {}; ask an admin for a new one", rfc3339(at)),
            )),
            Ok(Lookup::Unknown) => Err(unauthorized("unknown or revoked token")),
            Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())),
        }
    }
}

/// Unix milliseconds as an RFC 3339 time (UTC, seconds), for messages.
fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_grants_itself_and_everything_below() {
        let operator = Caller { role: Role::Operator, actor: "token:ci".into() };
        assert!(operator.require(Role::Viewer).is_ok());
        assert!(operator.require(Role::Operator).is_ok());
        let refused = operator.require(Role::Admin).err().map(|e| (e.status, e.code));
        assert_eq!(refused, Some((StatusCode::FORBIDDEN, "forbidden")));
    }
}
