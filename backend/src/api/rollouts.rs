//! Rollouts: create (or preview), list, show with per-cohort progress and gate values,
//! act on (pause, resume, approve, abort, rollback), and the per-device attempts; plus a
//! device's update history. Actions return the rollout as it is after the action.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{CounterPage, DEFAULT_LIMIT, page, split};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::rollout::RolloutError;
use crate::rollout::actions::{self, Action};
use crate::rollout::create::{NewRollout, Preview, create};
use crate::rollout::states::AttemptState;
use crate::rollout::view::{self, AttemptView, RolloutView};
use crate::server::AppState;
use crate::tokens::Role;

page!(RolloutPage, RolloutView);
page!(AttemptPage, AttemptView);

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        let message = e.to_string();
        match e {
            RolloutError::Invalid(_) => Self::unprocessable("invalid_rollout", message),
            RolloutError::NotFound(what) => Self::not_found(what),
            RolloutError::Conflict(_) => Self::conflict("rollout_state", message),
            RolloutError::Registry(e) => e.into(),
            RolloutError::Db(e) => Self::internal(e),
        }
    }
}

/// Creates a rollout, or with `dry_run` shows what it would do.
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", request_body = NewRollout, security(("bearer" = [])),
    responses((status = 201, body = RolloutView), (status = 200, description = "dry run", body = Preview),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_rollout(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewRollout>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let (preview, id) = create(&state.db, &new, &caller.actor).await?;
    let Some(id) = id else {
        return Ok(Json(preview).into_response());
    };
    state.engine_wake.notify_one();
    Ok((StatusCode::CREATED, Json(view::load(&state.db, id).await?)).into_response())
}

/// Rollouts, newest first.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts", params(CounterPage), security(("bearer" = [])),
    responses((status = 200, body = RolloutPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_rollouts(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CounterPage>,
) -> Result<Json<RolloutPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let items = view::list(&state.db, q.after, limit + 1).await?;
    let (items, next) = split(items, limit, |r| r.id.to_string());
    Ok(Json(RolloutPage { items, next }))
}

/// One rollout, with per-cohort progress and gate values.
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "rollouts", params(("id" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses((status = 200, body = RolloutView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_rollout(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<RolloutView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(view::load(&state.db, id).await?))
}

/// Filter and page of attempts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// Only attempts in this state.
    #[param(
        pattern = "^(pending|offered|accepted|downloading|verified|validated|committed|rejected|timed_out|skipped|incompatible|cancelled|rolling_back|rolled_back|rollback_failed|superseded|reverted)$"
    )]
    pub state: Option<String>,
    /// Items per page (1 to 500, default 50).
    #[serde(default, deserialize_with = "super::page::limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page (`ROLLOUT/DEVICE`).
    #[param(pattern = "^[0-9]{1,18}/[A-Za-z0-9._-]{0,64}$")]
    pub after: Option<String>,
}

fn cursor(after: Option<&str>) -> Result<Option<(i64, String)>, ApiError> {
    let Some(after) = after else { return Ok(None) };
    let bad = || ApiError::bad_request("invalid", "after: not a cursor this list returned");
    let (rollout, device) = after.split_once('/').ok_or_else(bad)?;
    Ok(Some((rollout.parse().map_err(|_| bad())?, device.to_owned())))
}

async fn attempt_page(state: &AppState, by_device: bool, key: &str, q: &AttemptQuery) -> Result<AttemptPage, ApiError> {
    if q.state.as_deref().is_some_and(|s| AttemptState::parse(s).is_none()) {
        let all: Vec<&str> = AttemptState::ALL.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::bad_request("invalid", format!("state: one of {}", all.join(", "))));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let items =
        view::attempts(&state.db, by_device, key, q.state.as_deref(), cursor(q.after.as_deref())?, limit + 1).await?;
    let (items, next) = split(items, limit, |a| format!("{}/{}", a.rollout_id, a.device_id));
    Ok(AttemptPage { items, next })
}

/// The devices of a rollout and where each is.
#[utoipa::path(get, path = "/v1/rollouts/{id}/devices", tag = "rollouts",
    params(("id" = i64, Path, minimum = 1), AttemptQuery), security(("bearer" = [])),
    responses((status = 200, body = AttemptPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn rollout_devices(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let known: Option<i64> =
        sqlx::query_scalar("SELECT id FROM rollouts WHERE id = $1").bind(id).fetch_optional(&state.db.pool).await?;
    if known.is_none() {
        return Err(ApiError::not_found(format!("rollout {id}")));
    }
    Ok(Json(attempt_page(&state, false, &id.to_string(), &q).await?))
}

/// A device's update history: its attempts in every rollout, newest first.
#[utoipa::path(get, path = "/v1/devices/{id}/updates", tag = "devices",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), AttemptQuery), security(("bearer" = [])),
    responses((status = 200, body = AttemptPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn device_updates(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let known: Option<String> =
        sqlx::query_scalar("SELECT id FROM devices WHERE id = $1").bind(&id).fetch_optional(&state.db.pool).await?;
    if known.is_none() {
        return Err(ApiError::not_found(format!("device {id}")));
    }
    Ok(Json(attempt_page(&state, true, &id, &q).await?))
}

async fn act(state: &AppState, caller: &Caller, id: i64, action: Action) -> Result<Json<RolloutView>, ApiError> {
    caller.require(Role::Operator)?;
    actions::apply(&state.db, id, action, &caller.actor, None).await?;
    state.engine_wake.notify_one();
    Ok(Json(view::load(&state.db, id).await?))
}

macro_rules! action {
    ($name:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "rollouts", params(("id" = i64, Path, minimum = 1)),
            security(("bearer" = [])),
            responses((status = 200, body = RolloutView), (status = 400, body = ErrorBody),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
                (status = 409, body = ErrorBody)))]
        pub async fn $name(
            caller: Caller,
            State(state): State<AppState>,
            ApiPath(id): ApiPath<i64>,
        ) -> Result<Json<RolloutView>, ApiError> {
            act(&state, &caller, id, $action).await
        }
    };
}

action!(pause_rollout, Action::Pause, "/v1/rollouts/{id}/pause", "Stops offering; devices already offered finish.");
action!(
    resume_rollout,
    Action::Resume,
    "/v1/rollouts/{id}/resume",
    "Continues a paused rollout; a cohort that failed its gates is accepted."
);
action!(
    approve_rollout,
    Action::Approve,
    "/v1/rollouts/{id}/approve",
    "Lets the next cohort start (plans with approval)."
);
action!(abort_rollout, Action::Abort, "/v1/rollouts/{id}/abort", "Ends the rollout and cancels unfinished devices.");
action!(
    rollback_rollout,
    Action::Rollback,
    "/v1/rollouts/{id}/rollback",
    "Ends the rollout and sends every device that took the version back to its previous model."
);

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    /// The preview's new parts (incompatible and busy devices) are documented schemas.
    #[test]
    fn every_schema_the_rollout_routes_name_is_documented() {
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap_or_default();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().cloned().unwrap_or_default();
        for name in ["Preview", "Incompatible", "Busy", "Tally", "NewRollout"] {
            assert!(schemas.contains_key(name), "{name} is not in the document");
        }
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "a $ref to {name} resolves to nothing");
        }
    }

    #[test]
    fn the_documented_states_are_the_state_machines() {
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap_or_default();
        let params = &doc["paths"]["/v1/rollouts/{id}/devices"]["get"]["parameters"];
        let state = params.as_array().and_then(|p| p.iter().find(|p| p["name"] == "state")).cloned();
        let pattern = state.map(|s| s["schema"]["pattern"].clone()).unwrap_or_default();
        let all: Vec<&str> = crate::rollout::states::AttemptState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(pattern, format!("^({})$", all.join("|")));
    }
}
