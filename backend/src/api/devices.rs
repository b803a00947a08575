//! Devices: listed and filtered (class, tag, running model), provisioned, tagged.
//!
//! Provisioning (`POST /v1/devices`, operator) fixes a device's id and class and issues
//! its MQTT credentials, shown once: the operator who onboards a fleet also tags it, and
//! a device's credentials let it speak only for itself, so this is fleet work, not
//! administration of the backend (tokens are admin's). Without auto-registration only
//! provisioned devices are taken (mqtt::registry); with it (the embedded default) devices
//! may still register themselves by their first hello.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{DEFAULT_LIMIT, page, split};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::db::now_ms;
use crate::events;
use crate::mqtt::auth;
use crate::server::AppState;
use crate::tokens::Role;

/// A device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Device class.
    pub device_class: String,
    /// Provisioned (class fixed, MQTT credentials issued), Unix milliseconds; absent for
    /// a device that registered itself by its hello.
    pub provisioned_at: Option<i64>,
    /// The class its last hello declared, when that differs from its provisioned class
    /// (recorded, not applied).
    pub reported_class: Option<String>,
    /// Agent version it reported.
    pub agent_version: Option<String>,
    /// Connected to the broker (last will seen or not).
    pub online: bool,
    /// The model it runs.
    pub running_model: Option<String>,
    /// Its version.
    pub running_version: Option<String>,
    /// Its image.
    pub running_sha256: Option<String>,
    /// Its anti-rollback counter.
    pub security_counter: i64,
    /// Tags.
    pub tags: Vec<String>,
    /// Unix milliseconds.
    pub first_seen: i64,
    /// Unix milliseconds.
    pub last_seen: i64,
}

page!(DevicePage, DeviceView);

/// Filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Only this device class.
    pub class: Option<String>,
    /// Only devices with this tag.
    pub tag: Option<String>,
    /// Only devices running this model.
    pub model: Option<String>,
    /// Items per page (1 to 500, default 50).
    #[serde(default, deserialize_with = "super::page::limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// A tag: `[A-Za-z0-9._-]`, 1 to 64 bytes.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
pub struct Tag(pub String);

/// A device to provision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Device id (`[A-Za-z0-9._-]`, at most 64 bytes): its MQTT topic level.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    /// Device class, fixed from now on (a hello declaring another is not applied).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,32}$")]
    pub device_class: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A device's MQTT login, shown once (only its hash is stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct MqttCredentials {
    /// Username, and the client id the device must connect with: the device id.
    pub username: String,
    /// Password: 32 random bytes, hex.
    pub password: String,
    /// The same login for Mosquitto's dynamic-security plugin: a command document to
    /// publish on `$CONTROL/dynamic-security/v1` as the plugin's admin (docs/production.md).
    #[schema(value_type = Object)]
    pub mosquitto_dynsec: serde_json::Value,
}

/// A provisioned device and its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvisionedDevice {
    /// The device.
    pub device: DeviceView,
    /// Its MQTT login.
    pub mqtt: MqttCredentials,
}

/// The credentials of `id` with `password`; `new` when the device had none before.
fn credentials(id: &str, password: String, new: bool) -> MqttCredentials {
    let mosquitto_dynsec = auth::mosquitto_dynsec(id, &password, new);
    MqttCredentials { username: id.to_owned(), password, mosquitto_dynsec }
}

const COLUMNS: &str = "d.id, d.device_class, d.agent_version, d.online, d.running_model, d.running_version, \
                       d.running_sha256, d.security_counter, d.first_seen, d.last_seen, d.provisioned_at, \
                       d.reported_class";

fn view(r: &sqlx::any::AnyRow) -> Result<DeviceView, sqlx::Error> {
    Ok(DeviceView {
        id: r.try_get(0)?,
        device_class: r.try_get(1)?,
        provisioned_at: r.try_get(10)?,
        reported_class: r.try_get(11)?,
        agent_version: r.try_get(2)?,
        online: r.try_get::<i32, _>(3)? != 0,
        running_model: r.try_get(4)?,
        running_version: r.try_get(5)?,
        running_sha256: r.try_get(6)?,
        security_counter: r.try_get(7)?,
        tags: Vec::new(),
        first_seen: r.try_get(8)?,
        last_seen: r.try_get(9)?,
    })
}

fn check_ident(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    mota_proto::limits::check_ident(field, value, max).map_err(|e| ApiError::bad_request("invalid", e.to_string()))
}

/// Devices by id, filtered.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", params(DeviceQuery), security(("bearer" = [])),
    responses((status = 200, body = DevicePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_devices(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeviceQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    // Conditions are added only for the filters given: PostgreSQL cannot type an
    // `$1 IS NULL` placeholder, and each shape of the query gets its own index plan.
    let mut sql = format!("SELECT {COLUMNS} FROM devices d WHERE d.id > $1");
    let mut binds = vec![q.after.clone().unwrap_or_default()];
    let mut add = |condition: &str, value: &Option<String>| {
        if let Some(v) = value {
            binds.push(v.clone());
            sql.push_str(&condition.replace('?', &format!("${}", binds.len())));
        }
    };
    add(" AND d.device_class = ?", &q.class);
    add(" AND d.running_model = ?", &q.model);
    add(" AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = ?)", &q.tag);
    sql.push_str(&format!(" ORDER BY d.id LIMIT ${}", binds.len() + 1));
    let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.bind(i64::from(limit) + 1).fetch_all(&state.db.pool).await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    let (mut items, next) = split(items, limit, |d| d.id.clone());
    attach_tags(&state, &mut items).await?;
    Ok(Json(DevicePage { items, next }))
}

async fn attach_tags(state: &AppState, devices: &mut [DeviceView]) -> Result<(), ApiError> {
    if devices.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (1..=devices.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT device_id, tag FROM device_tags WHERE device_id IN ({}) ORDER BY device_id, tag",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
    for d in devices.iter() {
        query = query.bind(d.id.clone());
    }
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for r in query.fetch_all(&state.db.pool).await? {
        tags.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
    }
    for d in devices {
        d.tags = tags.remove(&d.id).unwrap_or_default();
    }
    Ok(())
}

/// One device.
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices", params(("id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_device(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(load(&state, &id).await?))
}

async fn load(state: &AppState, id: &str) -> Result<DeviceView, ApiError> {
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM devices d WHERE d.id = $1")))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id}")))?;
    let mut device = [view(&row)?];
    attach_tags(state, &mut device).await?;
    let [device] = device;
    Ok(device)
}

/// Provisions a device: fixes its class and issues its MQTT credentials (shown once).
#[utoipa::path(post, path = "/v1/devices", tag = "devices", request_body = NewDevice, security(("bearer" = [])),
    responses((status = 201, body = ProvisionedDevice), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn create_device(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<ProvisionedDevice>), ApiError> {
    caller.require(Role::Operator)?;
    check_ident("id", &new.id, mota_proto::limits::MAX_DEVICE_ID_LEN)?;
    check_ident("device_class", &new.device_class, mota_proto::limits::MAX_CLASS_LEN)?;
    for Tag(tag) in &new.tags {
        check_ident("tag", tag, MAX_TAG_LEN)?;
    }
    let password = auth::new_password().map_err(|e| ApiError::internal(e.to_string()))?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO devices (id, device_class, first_seen, last_seen, provisioned_at, mqtt_password_hash) \
         VALUES ($1, $2, $3, $3, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&new.id)
    .bind(&new.device_class)
    .bind(now)
    .bind(auth::hash(&password))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::conflict("exists", format!("device {} exists", new.id)));
    }
    for Tag(tag) in &new.tags {
        sqlx::query("INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&new.id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
    }
    let tags: Vec<&str> = new.tags.iter().map(|t| t.0.as_str()).collect();
    let detail = serde_json::json!({ "device_class": new.device_class, "tags": tags });
    events::record(&mut tx, &caller.actor, "device.provisioned", &format!("device:{}", new.id), &detail).await?;
    tx.commit().await?;
    let device = load(&state, &new.id).await?;
    Ok((StatusCode::CREATED, Json(ProvisionedDevice { mqtt: credentials(&new.id, password, true), device })))
}

/// Issues a device new MQTT credentials (shown once; the old password stops working at
/// its next login). A device that registered itself by hello is provisioned by this:
/// its current class is fixed.
#[utoipa::path(post, path = "/v1/devices/{id}/credentials", tag = "devices",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")), security(("bearer" = [])),
    responses((status = 200, body = ProvisionedDevice), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn issue_credentials(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ProvisionedDevice>, ApiError> {
    caller.require(Role::Operator)?;
    let password = auth::new_password().map_err(|e| ApiError::internal(e.to_string()))?;
    // Read before the transaction (SQLite: see change_tag).
    let was: Option<Option<i64>> = sqlx::query_scalar("SELECT provisioned_at FROM devices WHERE id = $1")
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?;
    let Some(was) = was else {
        return Err(ApiError::not_found(format!("device {id}")));
    };
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE devices SET provisioned_at = COALESCE(provisioned_at, $2), mqtt_password_hash = $3, \
         reported_class = NULL WHERE id = $1",
    )
    .bind(&id)
    .bind(now_ms())
    .bind(auth::hash(&password))
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({ "newly_provisioned": was.is_none() });
    events::record(&mut tx, &caller.actor, "device.credentials_issued", &format!("device:{id}"), &detail).await?;
    tx.commit().await?;
    let device = load(&state, &id).await?;
    Ok(Json(ProvisionedDevice { mqtt: credentials(&id, password, was.is_none()), device }))
}

/// Longest tag.
const MAX_TAG_LEN: usize = 64;

/// Tags a device (idempotent).
#[utoipa::path(put, path = "/v1/devices/{id}/tags/{tag}", tag = "devices",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), ("tag" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")), security(("bearer" = [])),
    responses((status = 200, body = DeviceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_tag(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath((id, tag)): ApiPath<(String, String)>,
) -> Result<Json<DeviceView>, ApiError> {
    caller.require(Role::Operator)?;
    check_ident("tag", &tag, MAX_TAG_LEN)?;
    change_tag(&state, &caller, &id, &tag, true).await?;
    Ok(Json(load(&state, &id).await?))
}

/// Removes a tag (idempotent).
#[utoipa::path(delete, path = "/v1/devices/{id}/tags/{tag}", tag = "devices",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), ("tag" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")), security(("bearer" = [])),
    responses((status = 200, body = DeviceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_tag(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath((id, tag)): ApiPath<(String, String)>,
) -> Result<Json<DeviceView>, ApiError> {
    caller.require(Role::Operator)?;
    check_ident("tag", &tag, MAX_TAG_LEN)?;
    change_tag(&state, &caller, &id, &tag, false).await?;
    Ok(Json(load(&state, &id).await?))
}

async fn change_tag(state: &AppState, caller: &Caller, id: &str, tag: &str, add: bool) -> Result<(), ApiError> {
    // Checked before the transaction: on SQLite a transaction that reads before it writes
    // can fail at once with SQLITE_BUSY under concurrent writers instead of waiting.
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM devices WHERE id = $1").bind(id).fetch_optional(&state.db.pool).await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("device {id}")));
    }
    let mut tx = state.db.begin().await?;
    let sql = if add {
        "INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM device_tags WHERE device_id = $1 AND tag = $2"
    };
    let changed = sqlx::query(sql).bind(id).bind(tag).execute(&mut *tx).await?.rows_affected();
    if changed == 1 {
        let kind = if add { "device.tagged" } else { "device.untagged" };
        events::record(&mut tx, &caller.actor, kind, &format!("device:{id}"), &serde_json::json!({ "tag": tag }))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
