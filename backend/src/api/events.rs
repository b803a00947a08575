//! The audit log, newest first.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiQuery;
use super::page::{DEFAULT_LIMIT, page, split};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::server::AppState;
use crate::tokens::Role;

/// An audited change.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Increasing id.
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who: `token:<name>`, or `backend` for the backend's own work.
    pub actor: String,
    /// What: `version.created`, `delta.done`, `manifest.signed`, `device.tagged`, ...
    pub kind: String,
    /// On what: `model:<name>/<version>`, `device:<id>`, ...
    pub subject: String,
    /// Details (JSON).
    pub detail: serde_json::Value,
}

page!(EventPage, EventView);

/// Filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events on this subject.
    pub subject: Option<String>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Items per page (1 to 500, default 50).
    #[serde(default, deserialize_with = "super::page::limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<i64>,
}

/// Audit events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery), security(("bearer" = [])),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_events(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let mut sql = "SELECT id, at, actor, kind, subject, detail FROM events WHERE id < $1".to_owned();
    let mut binds = Vec::new();
    for (column, value) in [("subject", &q.subject), ("kind", &q.kind)] {
        if let Some(v) = value {
            binds.push(v.clone());
            sql.push_str(&format!(" AND {column} = ${}", binds.len() + 1));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 2));
    let mut query = sqlx::query(AssertSqlSafe(sql.clone())).bind(q.after.unwrap_or(i64::MAX));
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.bind(i64::from(limit) + 1).fetch_all(&state.db.pool).await?;
    let items = rows
        .iter()
        .map(|r| {
            let detail: String = r.try_get(5)?;
            Ok(EventView {
                id: r.try_get(0)?,
                at: r.try_get(1)?,
                actor: r.try_get(2)?,
                kind: r.try_get(3)?,
                subject: r.try_get(4)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (items, next) = split(items, limit, |e| e.id.to_string());
    Ok(Json(EventPage { items, next }))
}
