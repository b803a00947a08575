//! API tokens, for admins: list, create (the secret is shown once), revoke. The first
//! token comes from `mota-backend token create`; the rest can be managed here.
//!
//! A token may be given an expiry (`expires_at`); once past it, requests with it get 401
//! `token_expired` (an unknown or revoked token gets 401 `unauthorized`). Each token
//! shows when it was last used, to the minute (see `tokens::LAST_USED_GRANULARITY_MS`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::events;
use crate::server::AppState;
use crate::tokens::{self, Role};

/// A token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds, once revoked.
    pub revoked_at: Option<i64>,
    /// Unix milliseconds from which the token is refused (`token_expired`); absent: never.
    pub expires_at: Option<i64>,
    /// Unix milliseconds of its last use, to the minute (written at most once a minute);
    /// absent: never used.
    pub last_used_at: Option<i64>,
}

/// A new token and its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenView {
    /// The token.
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret: shown now and never again.
    pub secret: String,
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A name to recognise it by (1 to 64 printable characters).
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Unix milliseconds from which it is refused (in the future); absent: it never
    /// expires.
    #[serde(default, deserialize_with = "super::extract::opt_integral")]
    #[schema(minimum = 0, maximum = 9007199254740991_i64)] // 2^53 - 1: exact in every JSON parser
    pub expires_at: Option<u64>,
}

/// Largest integer every JSON parser reads exactly.
const MAX_SAFE: u64 = (1 << 53) - 1;

/// The columns [`view`] reads.
const COLUMNS: &str = "id, name, role, created_at, revoked_at, expires_at, last_used_at";

fn view(r: &sqlx::any::AnyRow) -> Result<TokenView, sqlx::Error> {
    let role: String = r.try_get(2)?;
    Ok(TokenView {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        created_at: r.try_get(3)?,
        revoked_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        last_used_at: r.try_get(6)?,
    })
}

/// Every token, oldest first.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(caller: Caller, State(state): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id")))
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(rows.iter().map(view).collect::<Result<_, _>>()?))
}

/// Creates a token, valid until `expires_at` if given.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken, security(("bearer" = [])),
    responses((status = 201, body = NewTokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<NewTokenView>), ApiError> {
    caller.require(Role::Admin)?;
    if new.name.is_empty() || new.name.chars().count() > 64 || new.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid", "name: 1 to 64 printable characters"));
    }
    // The clock expiry is judged by (`tokens::lookup`).
    let now = state.db.now().await?;
    let expires_at = match new.expires_at {
        Some(at) if at > MAX_SAFE => {
            return Err(ApiError::bad_request("invalid", format!("expires_at is at most {MAX_SAFE}")));
        }
        Some(at) if at as i64 <= now => {
            return Err(ApiError::bad_request("invalid", "expires_at is not in the future"));
        }
        at => at.map(|at| at as i64),
    };
    let mut tx = state.db.begin().await?;
    let (id, secret) =
        tokens::insert(&mut tx, &new.name, new.role, now, expires_at).await.map_err(ApiError::internal)?;
    let detail = serde_json::json!({ "name": new.name, "role": new.role, "expires_at": expires_at });
    events::record(&mut tx, &caller.actor, "token.created", &format!("token:{id}"), &detail).await?;
    tx.commit().await?;
    let token = TokenView {
        id,
        name: new.name,
        role: new.role,
        created_at: now,
        revoked_at: None,
        expires_at,
        last_used_at: None,
    };
    Ok((StatusCode::CREATED, Json(NewTokenView { token, secret })))
}

/// Revokes a token (idempotent); it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = TokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<TokenView>, ApiError> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin().await?;
    let revoked = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(state.db.now().await?)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if revoked == 1 {
        events::record(&mut tx, &caller.actor, "token.revoked", &format!("token:{id}"), &serde_json::json!({})).await?;
    }
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("token {id}")))?;
    tx.commit().await?;
    Ok(Json(view(&row)?))
}
