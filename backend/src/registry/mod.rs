//! The model registry: versions go in whole or not at all.
//!
//! An upload is checked before anything is written (names, duplicates, the model through
//! mota-runtime, the validation set evaluated on it), then its blobs are stored (verified
//! on write, content-addressed, so a retry or a concurrent twin writes the same bytes),
//! then one transaction inserts the rows, gives the version the model's security counter
//! (raised by one only when the upload asks: see [`NewVersion::raise_counter`]), queues
//! the delta jobs and writes the audit event. A failure at any step leaves no row; a
//! crash between the blob and the transaction leaves at most an unreferenced blob, which
//! the next identical upload reuses.

pub mod deltas;
pub mod inspect;
pub mod manifests;

use std::sync::Arc;

use bytes::Bytes;
use sha2::Digest as _;
use sqlx::Row;
use tokio::sync::Notify;

use crate::blobs::{BlobError, BlobStore, Blobs, Sha256Digest, hex};
use crate::db::{Db, now_ms};
use crate::events;
use inspect::InspectError;

/// Why an upload or a lookup was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A field is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// Devices could not use what was uploaded (422).
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The acceptance rule cannot hold (422).
    #[error("{0}")]
    Rule(String),
    /// The version exists; versions are immutable (409).
    #[error("{model} {version} exists; versions are immutable")]
    Duplicate {
        /// Model name.
        model: String,
        /// Version string.
        version: String,
    },
    /// The model exists for another device class (409).
    #[error("model {model} is for device class {existing}, not {given}")]
    ClassMismatch {
        /// Model name.
        model: String,
        /// Its class.
        existing: String,
        /// The class given.
        given: String,
    },
    /// A referenced thing does not exist (404).
    #[error("no {0}")]
    NotFound(String),
    /// Too large for a device slot (413).
    #[error("{what} is {size} bytes; the limit is {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A blocking task died.
    #[error("worker: {0}")]
    Join(String),
}

/// Where a version's validation set comes from.
#[derive(Debug, Clone)]
pub enum SetSource {
    /// Uploaded earlier (`POST /v1/validation-sets`), by digest.
    Known(Sha256Digest),
    /// Uploaded with the version.
    Upload {
        /// A label for people.
        name: String,
        /// The set.
        bytes: Bytes,
    },
}

/// A version to register.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Model name (created with the first version).
    pub model: String,
    /// Version string.
    pub version: String,
    /// Device class; required for a model's first version, checked after.
    pub device_class: Option<String>,
    /// The `.tflite` image.
    pub image: Bytes,
    /// The validation set, if any.
    pub set: Option<SetSource>,
    /// Minimum on-device accuracy; defaults to what the backend measured.
    pub min_accuracy_permille: Option<u16>,
    /// Largest accepted drop below the running model on the same set; default 1000 (off).
    pub max_drop_permille: Option<u16>,
    /// Raise the model's security counter with this version (MCUboot's semantics): a
    /// device that commits it refuses every version with a lower counter from then on,
    /// rollback to them included. For a release that fixes a security problem the older
    /// versions have. Without it the version keeps the counter of the one before, and
    /// devices may go back and forth between versions of equal counter. A model's first
    /// version gets counter 1 either way.
    pub raise_counter: bool,
}

/// A validation set's row.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SetView {
    /// SHA-256 (hex), its id.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// A label for people.
    pub name: String,
    /// Records.
    pub records: i64,
    /// Input element type.
    pub input_type: String,
    /// Input shape.
    pub input_shape: Vec<u32>,
    /// `label` or `output`.
    pub expectation: String,
    /// Classes (0 with expected outputs).
    pub classes: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The registry: the database and blob store, and limits.
#[derive(Clone)]
pub struct Registry {
    /// The database.
    pub db: Db,
    /// The blob store.
    pub blobs: Blobs,
    /// Largest model image accepted.
    pub max_model_bytes: u64,
    /// Deltas are computed from this many most recent earlier versions.
    pub delta_bases: u32,
    /// Wakes the delta worker.
    pub wake: Arc<Notify>,
}

fn check_names(model: &str, version: &str, class: Option<&str>) -> Result<(), RegistryError> {
    use mota_proto::limits::{MAX_CLASS_LEN, MAX_MODEL_NAME_LEN, check_ident, check_version};
    let invalid = |e: mota_proto::DecodeError| RegistryError::Invalid(e.to_string());
    check_ident("model", model, MAX_MODEL_NAME_LEN).map_err(invalid)?;
    check_version("version", version).map_err(invalid)?;
    if let Some(class) = class {
        check_ident("device_class", class, MAX_CLASS_LEN).map_err(invalid)?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RegistryError::Join(e.to_string()))
}

impl Registry {
    /// Checks and stores a validation set (idempotent: the same bytes give the same set).
    pub async fn add_set(&self, name: &str, bytes: Bytes, actor: &str) -> Result<SetView, RegistryError> {
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(RegistryError::Invalid("name: 1 to 128 printable characters".into()));
        }
        self.check_size("validation set", bytes.len())?;
        let facts = {
            let bytes = bytes.clone();
            blocking(move || inspect::set(&bytes)).await??
        };
        let (digest, size) = self.blobs.put(&bytes[..], None, self.max_model_bytes).await?;
        let mut tx = self.db.begin().await?;
        let inserted = insert_set(&mut tx, &digest, size, name, &facts).await?;
        if inserted {
            let detail = serde_json::json!({ "name": name, "records": facts.records, "size": size });
            events::record(
                &mut tx,
                actor,
                "validation_set.created",
                &format!("validation-set:{}", hex(&digest)),
                &detail,
            )
            .await?;
        }
        tx.commit().await?;
        self.set(&digest).await?.ok_or_else(|| RegistryError::NotFound("validation set".into()))
    }

    /// A set by digest.
    pub async fn set(&self, digest: &Sha256Digest) -> Result<Option<SetView>, RegistryError> {
        let row = sqlx::query(
            "SELECT s.sha256, a.size, s.name, s.records, s.input_type, s.input_shape, s.expectation, s.classes, s.created_at \
             FROM validation_sets s JOIN artifacts a ON a.sha256 = s.sha256 WHERE s.sha256 = $1",
        )
        .bind(hex(digest))
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| set_view(&r)).transpose()
    }

    fn check_size(&self, what: &'static str, size: usize) -> Result<(), RegistryError> {
        let size = size as u64;
        if size > self.max_model_bytes {
            return Err(RegistryError::TooLarge { what, size, max: self.max_model_bytes });
        }
        Ok(())
    }

    /// Registers a version; returns its id.
    pub async fn add_version(&self, new: NewVersion, actor: &str) -> Result<i64, RegistryError> {
        check_names(&new.model, &new.version, new.device_class.as_deref())?;
        self.check_size("model", new.image.len())?;
        if let Some(v) = new.min_accuracy_permille.into_iter().chain(new.max_drop_permille).find(|&v| v > 1000) {
            return Err(RegistryError::Invalid(format!("permille values are at most 1000, not {v}")));
        }
        let existing: Option<(i64, String)> = sqlx::query_as("SELECT id, device_class FROM models WHERE name = $1")
            .bind(&new.model)
            .fetch_optional(&self.db.pool)
            .await?;
        let class = match (&existing, &new.device_class) {
            (Some((_, existing)), Some(given)) if existing != given => {
                return Err(RegistryError::ClassMismatch {
                    model: new.model.clone(),
                    existing: existing.clone(),
                    given: given.clone(),
                });
            }
            (Some((_, existing)), _) => existing.clone(),
            (None, Some(given)) => given.clone(),
            (None, None) => return Err(RegistryError::Invalid("device_class is required for a new model".into())),
        };
        if let Some((model_id, _)) = existing {
            let taken: Option<i64> =
                sqlx::query_scalar("SELECT id FROM model_versions WHERE model_id = $1 AND version = $2")
                    .bind(model_id)
                    .bind(&new.version)
                    .fetch_optional(&self.db.pool)
                    .await?;
            if taken.is_some() {
                return Err(RegistryError::Duplicate { model: new.model, version: new.version });
            }
        }
        let facts = {
            let image = new.image.clone();
            blocking(move || inspect::model(&image)).await??
        };
        let set = self.resolve_set(new.set.clone()).await?;
        let mut validation = None;
        if let Some((set_bytes, _, _)) = &set {
            let (image, set_bytes, arena) = (new.image.clone(), set_bytes.clone(), facts.arena_bytes);
            let (accuracy, _) = blocking(move || inspect::evaluate(&image, arena, &set_bytes)).await??;
            let min = new.min_accuracy_permille.unwrap_or(accuracy);
            if min > accuracy {
                return Err(RegistryError::Rule(format!(
                    "the model scores {accuracy}‰ on its validation set, below the minimum of {min}‰ asked for: \
                     every device would refuse it"
                )));
            }
            validation = Some((accuracy, min, new.max_drop_permille.unwrap_or(1000)));
        }
        // Checked: store the blobs, then the rows in one transaction.
        let (image_digest, image_size) = self.blobs.put(&new.image[..], None, self.max_model_bytes).await?;
        if let Some((bytes, _, Some(_))) = &set {
            self.blobs.put(&bytes[..], None, self.max_model_bytes).await?;
        }
        let mut tx = self.db.begin().await?;
        insert_artifact(&mut tx, &image_digest, "model", image_size).await?;
        let set_digest = match &set {
            Some((bytes, digest, Some((name, facts)))) => {
                insert_set(&mut tx, digest, bytes.len() as u64, name, facts).await?;
                Some(hex(digest))
            }
            Some((_, digest, None)) => Some(hex(digest)),
            None => None,
        };
        let now = now_ms();
        sqlx::query(
            "INSERT INTO models (name, device_class, security_counter, created_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&new.model)
        .bind(&class)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The version's counter: the model's (the highest given so far, so counters never
        // decrease in registration order), raised by one when the upload asks for it or
        // for the first version (from 0, the counter of a device without the model). The
        // update locks the model's row even when it adds 0: concurrent uploads of one
        // model serialize here, so each reads the counter the one before it left.
        let row = sqlx::query(
            "UPDATE models SET security_counter = security_counter + \
             CASE WHEN security_counter = 0 THEN 1 ELSE CAST($3 AS BIGINT) END \
             WHERE name = $1 AND device_class = $2 RETURNING id, security_counter",
        )
        .bind(&new.model)
        .bind(&class)
        .bind(i64::from(new.raise_counter))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(RegistryError::ClassMismatch { model: new.model, existing: "another".into(), given: class });
        };
        let (model_id, counter): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let inserted = sqlx::query(
            "INSERT INTO model_versions (model_id, version, security_counter, image_sha256, arena_bytes, ops, \
             validation_sha256, accuracy_permille, min_accuracy_permille, max_drop_permille, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(model_id)
        .bind(&new.version)
        .bind(counter)
        .bind(hex(&image_digest))
        .bind(i64::from(facts.arena_bytes))
        .bind(serde_json::to_string(&facts.ops).unwrap_or_default())
        .bind(set_digest)
        .bind(validation.map(|v| i32::from(v.0)))
        .bind(validation.map(|v| i32::from(v.1)))
        .bind(validation.map(|v| i32::from(v.2)))
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let version_id: i64 = match inserted {
            Ok(row) => row.try_get(0)?,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(RegistryError::Duplicate { model: new.model, version: new.version });
            }
            Err(e) => return Err(e.into()),
        };
        // The most recent versions, by registration order: counters can be equal.
        let bases: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM model_versions WHERE model_id = $1 AND id <> $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(model_id)
        .bind(version_id)
        .bind(i64::from(self.delta_bases))
        .fetch_all(&mut *tx)
        .await?;
        for base in &bases {
            sqlx::query(
                "INSERT INTO delta_jobs (base_version_id, version_id, state, updated_at) VALUES ($1, $2, 'pending', $3)",
            )
            .bind(base)
            .bind(version_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let detail = serde_json::json!({
            "security_counter": counter,
            "raise_counter": new.raise_counter,
            "image_sha256": hex(&image_digest),
            "size": image_size,
            "accuracy_permille": validation.map(|v| v.0),
            "delta_bases": bases.len(),
        });
        let subject = format!("model:{}/{}", new.model, new.version);
        events::record(&mut tx, actor, "version.created", &subject, &detail).await?;
        tx.commit().await?;
        if !bases.is_empty() {
            self.wake.notify_one();
        }
        Ok(version_id)
    }

    /// The set's bytes, digest, and, when it comes with the upload, the name to register
    /// it under and what inspecting it found.
    async fn resolve_set(&self, source: Option<SetSource>) -> Result<Option<ResolvedSet>, RegistryError> {
        match source {
            None => Ok(None),
            Some(SetSource::Known(digest)) => {
                if self.set(&digest).await?.is_none() {
                    return Err(RegistryError::NotFound(format!("validation set {}", hex(&digest))));
                }
                let size = self.blobs.size(&digest).await?;
                let bytes = self.blobs.read_range(&digest, 0, size).await?;
                Ok(Some((Bytes::from(bytes), digest, None)))
            }
            Some(SetSource::Upload { name, bytes }) => {
                self.check_size("validation set", bytes.len())?;
                let checked = bytes.clone();
                let facts = blocking(move || inspect::set(&checked)).await??;
                let digest = sha2::Sha256::digest(&bytes).into();
                Ok(Some((bytes, digest, Some((name, facts)))))
            }
        }
    }
}

/// A version's validation set: bytes, digest, and name and facts when it is new.
type ResolvedSet = (Bytes, Sha256Digest, Option<(String, inspect::SetFacts)>);

/// Records a checked set and its artifact (both idempotent); whether the set is new.
async fn insert_set(
    conn: &mut sqlx::AnyConnection,
    digest: &Sha256Digest,
    size: u64,
    name: &str,
    facts: &inspect::SetFacts,
) -> Result<bool, sqlx::Error> {
    insert_artifact(conn, digest, "validation_set", size).await?;
    let inserted = sqlx::query(
        "INSERT INTO validation_sets (sha256, name, records, input_type, input_shape, expectation, classes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(hex(digest))
    .bind(name)
    .bind(i64::from(facts.records))
    .bind(facts.input_type)
    .bind(serde_json::to_string(&facts.input_shape).unwrap_or_default())
    .bind(facts.expectation)
    .bind(i64::from(facts.classes))
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

async fn insert_artifact(
    conn: &mut sqlx::AnyConnection,
    digest: &Sha256Digest,
    kind: &str,
    size: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO artifacts (sha256, kind, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING")
        .bind(hex(digest))
        .bind(kind)
        .bind(size as i64)
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

/// A set row (as selected by [`Registry::set`]) as its view.
pub(crate) fn set_view(r: &sqlx::any::AnyRow) -> Result<SetView, RegistryError> {
    let shape: String = r.try_get(5)?;
    Ok(SetView {
        sha256: r.try_get(0)?,
        size: r.try_get(1)?,
        name: r.try_get(2)?,
        records: r.try_get(3)?,
        input_type: r.try_get(4)?,
        input_shape: serde_json::from_str(&shape).unwrap_or_default(),
        expectation: r.try_get(6)?,
        classes: r.try_get(7)?,
        created_at: r.try_get(8)?,
    })
}
