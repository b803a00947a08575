//! Models and their versions: list, show, upload (raw body or multipart), sign.

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::{Json, body::Bytes};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{CounterPage, DEFAULT_LIMIT, PageQuery, page, split};
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::blobs::parse_digest;
use crate::registry::manifests::{ManifestRequest, SignedManifest};
use crate::registry::{NewVersion, SetSource};
use crate::server::AppState;
use crate::tokens::Role;

/// A model: the versions of one network for one device class.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    /// Name.
    pub name: String,
    /// Device class.
    pub device_class: String,
    /// The highest security counter given to a version (what its next version gets unless
    /// its upload raises it).
    pub security_counter: i64,
    /// Number of versions.
    pub versions: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

page!(ModelPage, ModelView);

/// A version of a model.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// Model name.
    pub model: String,
    /// Version string.
    pub version: String,
    /// Anti-rollback counter: a device that committed it refuses versions with a lower
    /// one. Never decreases from one version of a model to the next; equal unless the
    /// upload raised it.
    pub security_counter: i64,
    /// Whether this version raised the model's counter (its counter is above the one of
    /// the version registered before it; a model's first version raises it from 0).
    pub raised_counter: bool,
    /// The `.tflite` image.
    pub image_sha256: String,
    /// Its size.
    pub image_size: i64,
    /// Tensor arena bytes devices need.
    pub arena_bytes: i64,
    /// Operators, in execution order.
    pub ops: Vec<String>,
    /// The validation set, if any.
    pub validation_set_sha256: Option<String>,
    /// Accuracy the backend measured on it (what a healthy device reproduces), permille.
    pub accuracy_permille: Option<i32>,
    /// The minimum devices check, permille.
    pub min_accuracy_permille: Option<i32>,
    /// Largest drop below the running model, permille.
    pub max_drop_permille: Option<i32>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Patches to this version (only in single-version responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deltas: Option<Vec<DeltaView>>,
}

page!(VersionPage, VersionView);

/// A delta job and, when done, its patch.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeltaView {
    /// The base version.
    pub base_version: String,
    /// Its image.
    pub base_sha256: String,
    /// `pending`, `done`, `not_smaller` or `failed`.
    pub state: String,
    /// The patch, when done.
    pub patch_sha256: Option<String>,
    /// Its size.
    pub patch_size: Option<i64>,
}

/// A version's columns. Whether it raised the counter is derived, not stored: its counter
/// against the highest of the versions registered before it (counters never decrease in
/// registration order, so that is its predecessor's). One source of truth, and right for
/// versions registered before raising was optional (each raised it then).
const VERSION_COLUMNS: &str = "m.name, v.version, v.security_counter, v.image_sha256, a.size, v.arena_bytes, v.ops, \
     v.validation_sha256, v.accuracy_permille, v.min_accuracy_permille, v.max_drop_permille, v.created_at, v.id, \
     CAST(CASE WHEN v.security_counter > COALESCE((SELECT MAX(p.security_counter) FROM model_versions p \
     WHERE p.model_id = v.model_id AND p.id < v.id), 0) THEN 1 ELSE 0 END AS BIGINT)";

fn version_view(r: &sqlx::any::AnyRow) -> Result<VersionView, sqlx::Error> {
    let ops: String = r.try_get(6)?;
    Ok(VersionView {
        model: r.try_get(0)?,
        version: r.try_get(1)?,
        security_counter: r.try_get(2)?,
        raised_counter: r.try_get::<i64, _>(13)? != 0,
        image_sha256: r.try_get(3)?,
        image_size: r.try_get(4)?,
        arena_bytes: r.try_get(5)?,
        ops: serde_json::from_str(&ops).unwrap_or_default(),
        validation_set_sha256: r.try_get(7)?,
        accuracy_permille: r.try_get(8)?,
        min_accuracy_permille: r.try_get(9)?,
        max_drop_permille: r.try_get(10)?,
        created_at: r.try_get(11)?,
        deltas: None,
    })
}

/// Models, by name.
#[utoipa::path(get, path = "/v1/models", tag = "models", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = ModelPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_models(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ModelPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    let rows = sqlx::query(
        "SELECT m.name, m.device_class, m.security_counter, \
         (SELECT COUNT(*) FROM model_versions v WHERE v.model_id = m.id), m.created_at \
         FROM models m WHERE m.name > $1 ORDER BY m.name LIMIT $2",
    )
    .bind(page.after.clone().unwrap_or_default())
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let items = rows.iter().map(model_view).collect::<Result<Vec<_>, _>>()?;
    let (items, next) = split(items, limit, |m| m.name.clone());
    Ok(Json(ModelPage { items, next }))
}

fn model_view(r: &sqlx::any::AnyRow) -> Result<ModelView, sqlx::Error> {
    Ok(ModelView {
        name: r.try_get(0)?,
        device_class: r.try_get(1)?,
        security_counter: r.try_get(2)?,
        versions: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}

/// One model.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "models", params(("model" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 200, body = ModelView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_model(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
) -> Result<Json<ModelView>, ApiError> {
    caller.require(Role::Viewer)?;
    let row = sqlx::query(
        "SELECT m.name, m.device_class, m.security_counter, \
         (SELECT COUNT(*) FROM model_versions v WHERE v.model_id = m.id), m.created_at FROM models m WHERE m.name = $1",
    )
    .bind(&model)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("model {model}")))?;
    Ok(Json(model_view(&row)?))
}

/// A model's versions, newest (last registered) first.
#[utoipa::path(get, path = "/v1/models/{model}/versions", tag = "models",
    params(("model" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), CounterPage), security(("bearer" = [])),
    responses((status = 200, body = VersionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiQuery(page): ApiQuery<CounterPage>,
) -> Result<Json<VersionPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT id FROM models WHERE name = $1").bind(&model).fetch_optional(&state.db.pool).await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("model {model}")));
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id \
         JOIN artifacts a ON a.sha256 = v.image_sha256 \
         WHERE m.name = $1 AND v.id < $2 ORDER BY v.id DESC LIMIT $3"
    )))
    .bind(&model)
    .bind(page.after.unwrap_or(i64::MAX))
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.db.pool)
    .await?;
    // The cursor is the version's id (counters can be equal).
    let items = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>(12)?, version_view(r)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (items, next) = split(items, limit, |(id, _)| id.to_string());
    Ok(Json(VersionPage { items: items.into_iter().map(|(_, v)| v).collect(), next }))
}

/// One version, with its delta jobs.
#[utoipa::path(get, path = "/v1/models/{model}/versions/{version}", tag = "models",
    params(("model" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), ("version" = String, Path, pattern = "^[A-Za-z0-9._+-]{1,32}$")), security(("bearer" = [])),
    responses((status = 200, body = VersionView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_version(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath((model, version)): ApiPath<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(load_version(&state, &model, &version).await?))
}

async fn load_version(state: &AppState, model: &str, version: &str) -> Result<VersionView, ApiError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id \
         JOIN artifacts a ON a.sha256 = v.image_sha256 WHERE m.name = $1 AND v.version = $2"
    )))
    .bind(model)
    .bind(version)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("version {version} of model {model}")))?;
    let mut view = version_view(&row)?;
    let id: i64 = row.try_get(12)?;
    let deltas = sqlx::query(
        "SELECT b.version, b.image_sha256, j.state, d.patch_sha256, a.size FROM delta_jobs j \
         JOIN model_versions b ON b.id = j.base_version_id \
         LEFT JOIN deltas d ON d.version_id = j.version_id AND d.base_sha256 = b.image_sha256 \
         LEFT JOIN artifacts a ON a.sha256 = d.patch_sha256 \
         WHERE j.version_id = $1 ORDER BY b.id DESC",
    )
    .bind(id)
    .fetch_all(&state.db.pool)
    .await?;
    view.deltas = Some(
        deltas
            .iter()
            .map(|r| {
                Ok(DeltaView {
                    base_version: r.try_get(0)?,
                    base_sha256: r.try_get(1)?,
                    state: r.try_get(2)?,
                    patch_sha256: r.try_get(3)?,
                    patch_size: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
    );
    Ok(view)
}

/// Upload parameters (query string with a raw body; form fields with multipart).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Version string (`1.4.0`), unique per model.
    #[param(pattern = "^[A-Za-z0-9._+-]{1,32}$")]
    pub version: String,
    /// Device class; required for a model's first version.
    #[param(pattern = "^[A-Za-z0-9._-]{1,32}$")]
    pub device_class: Option<String>,
    /// SHA-256 of a validation set uploaded before.
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    pub validation_set: Option<String>,
    /// Minimum on-device accuracy, permille (default: the accuracy the backend measures).
    #[param(minimum = 0, maximum = 1000)]
    pub min_accuracy_permille: Option<u16>,
    /// Largest accepted drop below the running model, permille (default 1000: off).
    #[param(minimum = 0, maximum = 1000)]
    pub max_drop_permille: Option<u16>,
    /// Raise the model's security counter with this version (default false: it keeps the
    /// counter of the version before). Devices that commit a raised counter refuse every
    /// version with a lower one from then on, rollback included: for a security fix.
    #[serde(default)]
    pub raise_counter: bool,
}

/// The multipart form of an upload: the files only, the parameters stay in the query
/// (describes the form in the OpenAPI document; the handler reads the parts as they
/// stream in).
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The `.tflite` file.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub model: Vec<u8>,
    /// A validation set file (optional; its file name labels it).
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub validation_set_file: Option<Vec<u8>>,
}

/// Registers a version. The model is checked with the devices' runtime (every operator
/// supported, arena planned) and evaluated on the validation set before anything is
/// stored; deltas from recent versions follow in the background.
#[utoipa::path(post, path = "/v1/models/{model}/versions", tag = "models",
    params(("model" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), UploadQuery), security(("bearer" = [])),
    request_body(content(
        (Vec<u8> = "application/octet-stream"),
        (UploadForm = "multipart/form-data"))),
    responses((status = 201, body = VersionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown validation set"),
        (status = 409, body = ErrorBody, description = "version exists, or the model is for another class"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "devices could not run the model, or the rule cannot hold")))]
pub async fn upload_version(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    caller.require(Role::Operator)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (query, image, set_upload) = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_multipart", e.body_text()))?;
        let (image, set) = read_form(form).await?;
        (query, image, set)
    } else if content_type.starts_with("application/octet-stream") {
        let image =
            Bytes::from_request(request, &state).await.map_err(|e| ApiError::new(e.status(), "body", e.body_text()))?;
        (query, image, None)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the .tflite as application/octet-stream, or a multipart/form-data form",
        ));
    };
    let version = query.version.clone();
    let set = match (set_upload, &query.validation_set) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("bad_query", "give a validation set file or a digest, not both"));
        }
        (Some((name, bytes)), None) => Some(SetSource::Upload { name, bytes }),
        (None, Some(hex)) => Some(SetSource::Known(
            parse_digest(hex).ok_or_else(|| ApiError::bad_request("bad_query", "validation_set is not a SHA-256"))?,
        )),
        (None, None) => None,
    };
    let new = NewVersion {
        model: model.clone(),
        version: version.clone(),
        device_class: query.device_class,
        image,
        set,
        min_accuracy_permille: query.min_accuracy_permille,
        max_drop_permille: query.max_drop_permille,
        raise_counter: query.raise_counter,
    };
    state.registry.add_version(new, &caller.actor).await?;
    state.metrics.uploads.inc();
    Ok((StatusCode::CREATED, Json(load_version(&state, &model, &version).await?)))
}

/// The model file and, if present, the validation set file with its name.
async fn read_form(mut form: Multipart) -> Result<(Bytes, Option<(String, Bytes)>), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_multipart", m);
    let (mut image, mut set) = (None, None);
    while let Some(field) =
        form.next_field().await.map_err(|e| ApiError::new(e.status(), "bad_multipart", e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(|e| ApiError::new(e.status(), "bad_multipart", e.body_text()))?;
        match name.as_str() {
            "model" => image = Some(bytes),
            "validation_set_file" => set = Some((file_name.unwrap_or_else(|| "validation set".into()), bytes)),
            other => return Err(bad(format!("unknown form part {other:?}; parameters go in the query"))),
        }
    }
    let image = image.ok_or_else(|| bad("the form has no `model` file".into()))?;
    Ok((image, set))
}

/// Signs a manifest for the version (optionally as a patch from `base_sha256`).
#[utoipa::path(post, path = "/v1/models/{model}/versions/{version}/manifests", tag = "models",
    params(("model" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$"), ("version" = String, Path, pattern = "^[A-Za-z0-9._+-]{1,32}$")), security(("bearer" = [])),
    request_body = ManifestRequest,
    responses((status = 201, body = SignedManifest), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn sign_manifest(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath((model, version)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ManifestRequest>,
) -> Result<(StatusCode, Json<SignedManifest>), ApiError> {
    caller.require(Role::Operator)?;
    let signed = state.registry.sign(&state.signer, &model, &version, &req, &caller.actor).await?;
    Ok((StatusCode::CREATED, Json(signed)))
}
