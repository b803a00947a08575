//! API tokens, for admins: list, create (the secret is shown once), revoke. The first
//! token comes from `mota-backend token create`; the rest can be managed here.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::db::now_ms;
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
}

fn view(r: &sqlx::any::AnyRow) -> Result<TokenView, sqlx::Error> {
    let role: String = r.try_get(2)?;
    Ok(TokenView {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        created_at: r.try_get(3)?,
        revoked_at: r.try_get(4)?,
    })
}

/// Every token, oldest first.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(caller: Caller, State(state): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    let rows = sqlx::query("SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY id")
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(rows.iter().map(view).collect::<Result<_, _>>()?))
}

/// Creates a token.
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
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let (id, secret) = tokens::insert(&mut tx, &new.name, new.role, now).await.map_err(ApiError::internal)?;
    let detail = serde_json::json!({ "name": new.name, "role": new.role });
    events::record(&mut tx, &caller.actor, "token.created", &format!("token:{id}"), &detail).await?;
    tx.commit().await?;
    let token = TokenView { id, name: new.name, role: new.role, created_at: now, revoked_at: None };
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
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if revoked == 1 {
        events::record(&mut tx, &caller.actor, "token.revoked", &format!("token:{id}"), &serde_json::json!({})).await?;
    }
    let row = sqlx::query("SELECT id, name, role, created_at, revoked_at FROM api_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("token {id}")))?;
    tx.commit().await?;
    Ok(Json(view(&row)?))
}
