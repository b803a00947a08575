//! Validation sets: uploaded once, referenced by digest from any number of versions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiPath, ApiQuery};
use super::page::{DEFAULT_LIMIT, PageQuery, page, split};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::blobs::parse_digest;
use crate::registry::{SetView, set_view};
use crate::server::AppState;
use crate::tokens::Role;

page!(SetPage, SetView);

/// Upload parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SetQuery {
    /// A label for people (1 to 128 printable characters).
    #[param(min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub name: String,
}

/// Uploads a validation set (the binary `mota valset make` writes). The same bytes
/// again give the same set.
#[utoipa::path(post, path = "/v1/validation-sets", tag = "validation-sets", params(SetQuery),
    security(("bearer" = [])), request_body(content((Vec<u8> = "application/octet-stream"))),
    responses((status = 201, body = SetView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "not a validation set")))]
pub async fn upload_set(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SetQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<SetView>), ApiError> {
    caller.require(Role::Operator)?;
    super::require_octet_stream(&headers)?;
    let view = state.registry.add_set(&query.name, body, &caller.actor).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Validation sets, by digest.
#[utoipa::path(get, path = "/v1/validation-sets", tag = "validation-sets", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SetPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_sets(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<SetPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    let rows = sqlx::query(
        "SELECT s.sha256, a.size, s.name, s.records, s.input_type, s.input_shape, s.expectation, s.classes, s.created_at \
         FROM validation_sets s JOIN artifacts a ON a.sha256 = s.sha256 WHERE s.sha256 > $1 ORDER BY s.sha256 LIMIT $2",
    )
    .bind(page.after.clone().unwrap_or_default())
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let items = rows.iter().map(set_view).collect::<Result<Vec<_>, _>>()?;
    let (items, next) = split(items, limit, |s| s.sha256.clone());
    Ok(Json(SetPage { items, next }))
}

/// One validation set.
#[utoipa::path(get, path = "/v1/validation-sets/{sha256}", tag = "validation-sets",
    params(("sha256" = String, Path, pattern = "^[0-9a-fA-F]{64}$")), security(("bearer" = [])),
    responses((status = 200, body = SetView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_set(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(sha256): ApiPath<String>,
) -> Result<Json<SetView>, ApiError> {
    caller.require(Role::Viewer)?;
    let digest = parse_digest(&sha256).ok_or_else(|| ApiError::bad_request("bad_path", "not a SHA-256 in hex"))?;
    let view = state.registry.set(&digest).await?;
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("validation set {sha256}")))
}
