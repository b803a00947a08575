//! The update path over MQTT: offers out, chunks on request, status reports in.
//!
//! An offer is recorded per device before it is published, with the artifacts its
//! manifest names, because that record is what the chunk service checks: a device is
//! served only the image, patch or validation set of a manifest it was offered, so a
//! device id cannot be used to pull arbitrary blobs. Status reports are stored
//! idempotently by (device, rollout, seq), the key a device persists, so a report re-sent
//! after a reconnect is counted once; only a newly stored report moves the attempt.
//!
//! TODO(issue 7): a chunk cache and a per-device rate limit (`Refusal::RATE_LIMITED`).

use mota_proto::limits::MAX_CHUNK_LEN;
use mota_proto::message::{Chunk, Event, Get, Refusal, Status};
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Envelope, Manifest, Wire};
use rumqttc::{AsyncClient, QoS};

use crate::blobs::{BlobError, BlobStore, Blobs, hex};
use crate::db::{Db, now_ms};

/// Why an offer was not published or a message not answered.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The envelope or its manifest does not parse.
    #[error("offer envelope: {0}")]
    Envelope(#[from] mota_proto::DecodeError),
    /// A message could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] mota_proto::EncodeError),
    /// The device id is not a valid topic level.
    #[error("device id: {0}")]
    Topic(#[from] mota_proto::topic::TopicError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The MQTT client's request queue is closed.
    #[error("MQTT publish: {0}")]
    Publish(#[from] rumqttc::ClientError),
}

/// Records that `device` was offered `envelope` (a `device_offers` row and, when the
/// manifest belongs to a rollout and the device is registered, an `offered` attempt),
/// then publishes it retained with QoS 1 on the device's offer topic. Returns the
/// manifest's SHA-256 (hex).
pub async fn publish_offer(client: &AsyncClient, db: &Db, device: &str, envelope: &[u8]) -> Result<String, OfferError> {
    let topic = Topic::new(device, Kind::Offer)?.to_string();
    let parsed = Envelope::parse(envelope)?;
    let manifest = Manifest::parse(parsed.manifest)?;
    let manifest_sha256 = hex(&mota_proto::Digest::of(parsed.manifest).0);
    let rollout = i64::try_from(manifest.rollout_id).unwrap_or(i64::MAX);
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO device_offers (device_id, manifest_sha256, rollout_id, image_sha256, patch_sha256, set_sha256, \
         offered_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (device_id, manifest_sha256) DO UPDATE SET offered_at = excluded.offered_at",
    )
    .bind(device)
    .bind(&manifest_sha256)
    .bind(rollout)
    .bind(hex(&manifest.image.sha256.0))
    .bind(manifest.delta.map(|d| hex(&d.patch_sha256.0)))
    .bind(manifest.validation.map(|v| hex(&v.set_sha256.0)))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if manifest.rollout_id != 0 {
        sqlx::query(
            "INSERT INTO attempts (rollout_id, device_id, manifest_sha256, state, updated_at) \
             SELECT $1, $2, $3, 'offered', $4 WHERE EXISTS (SELECT 1 FROM devices WHERE id = $2) \
             AND EXISTS (SELECT 1 FROM rollouts WHERE id = $1) \
             ON CONFLICT (rollout_id, device_id) DO UPDATE SET manifest_sha256 = excluded.manifest_sha256, \
             state = 'offered', error_code = NULL, accuracy_permille = NULL, latency_us = NULL, \
             updated_at = excluded.updated_at",
        )
        .bind(rollout)
        .bind(device)
        .bind(&manifest_sha256)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    client.publish(topic, QoS::AtLeastOnce, true, envelope.to_vec()).await?;
    Ok(manifest_sha256)
}

/// Answers a `get` from `device` on its chunk topic: the bytes, or a refusal.
pub async fn serve_chunk(
    client: &AsyncClient,
    db: &Db,
    blobs: &Blobs,
    device: &str,
    get: &Get,
) -> Result<(), OfferError> {
    let topic = Topic::new(device, Kind::Chunk)?.to_string();
    let data = read_chunk(db, blobs, device, get).await;
    let chunk = match &data {
        Ok(bytes) => Chunk::data(get.artifact, get.offset, bytes),
        Err(refusal) => Chunk::refused(get.artifact, get.offset, *refusal),
    };
    client.publish(topic, QoS::AtLeastOnce, false, chunk.to_vec()?).await?;
    Ok(())
}

/// The bytes a `get` may have, or why not.
async fn read_chunk(db: &Db, blobs: &Blobs, device: &str, get: &Get) -> Result<Vec<u8>, Refusal> {
    let artifact = hex(&get.artifact.0);
    let offered: Option<String> = sqlx::query_scalar(
        "SELECT manifest_sha256 FROM device_offers WHERE device_id = $1 \
         AND (image_sha256 = $2 OR patch_sha256 = $2 OR set_sha256 = $2) LIMIT 1",
    )
    .bind(device)
    .bind(&artifact)
    .fetch_optional(&db.pool)
    .await
    .map_err(|e| {
        tracing::warn!(device, "chunk: looking up the offers: {e}");
        Refusal::UNAVAILABLE
    })?;
    if offered.is_none() {
        tracing::info!(device, artifact, "chunk refused: not offered to this device");
        return Err(Refusal::NOT_OFFERED);
    }
    let len = u64::from(get.length).min(MAX_CHUNK_LEN as u64);
    match blobs.read_range(&get.artifact.0, u64::from(get.offset), len).await {
        Ok(bytes) if bytes.is_empty() => Err(Refusal::OUT_OF_RANGE),
        Ok(bytes) => Ok(bytes),
        Err(BlobError::Range { .. }) => Err(Refusal::OUT_OF_RANGE),
        Err(e) => {
            tracing::warn!(device, artifact, "chunk: reading the blob: {e}");
            Err(Refusal::UNAVAILABLE)
        }
    }
}

/// The `attempts.state` an event moves to.
pub fn state_name(event: Event) -> &'static str {
    match event {
        Event::Accepted => "accepted",
        Event::Downloading => "downloading",
        Event::Verified => "verified",
        Event::Validated => "validated",
        Event::Committed => "committed",
        Event::Rejected => "rejected",
        Event::RolledBack => "rolled_back",
        Event::Cancelled => "cancelled",
    }
}

/// Stores a status report from `device` (`raw`: its payload) once; a newly stored report
/// moves the device's attempt and, on `committed`, the device's running model. Returns
/// whether the report was new.
pub async fn ingest_status(db: &Db, device: &str, status: &Status<'_>, raw: &[u8]) -> Result<bool, sqlx::Error> {
    let rollout = i64::try_from(status.rollout_id).unwrap_or(i64::MAX);
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let stored = sqlx::query(
        "INSERT INTO device_reports (device_id, rollout_id, seq, event, payload, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id, rollout_id, seq) DO NOTHING",
    )
    .bind(device)
    .bind(rollout)
    .bind(i64::from(status.seq))
    .bind(status.event as i32)
    .bind(raw.to_vec())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if stored == 0 {
        tx.commit().await?;
        return Ok(false);
    }
    // Progress never moves a finished attempt back (reports may arrive out of order).
    sqlx::query(
        "UPDATE attempts SET state = $1, error_code = COALESCE($2, error_code), \
         accuracy_permille = COALESCE($3, accuracy_permille), latency_us = COALESCE($4, latency_us), updated_at = $5 \
         WHERE rollout_id = $6 AND device_id = $7 \
         AND state NOT IN ('committed', 'rejected', 'rolled_back', 'cancelled')",
    )
    .bind(state_name(status.event))
    .bind(status.error.map(|e| i32::from(e.0)))
    .bind(status.accuracy_permille.map(i32::from))
    .bind(status.latency_us.map(i64::from))
    .bind(now)
    .bind(rollout)
    .bind(device)
    .execute(&mut *tx)
    .await?;
    if status.event == Event::Committed {
        // The manifest the report names, else the device's latest offer in that rollout.
        let manifest: Option<String> = match status.manifest {
            Some(m) => Some(hex(&m.0)),
            None => {
                sqlx::query_scalar(
                    "SELECT manifest_sha256 FROM device_offers WHERE device_id = $1 AND rollout_id = $2 \
                     ORDER BY offered_at DESC LIMIT 1",
                )
                .bind(device)
                .bind(rollout)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        if let Some(manifest) = manifest {
            sqlx::query(
                "UPDATE devices SET running_sha256 = (SELECT v.image_sha256 FROM offers o \
                 JOIN model_versions v ON v.id = o.version_id WHERE o.manifest_sha256 = $1), \
                 running_model = (SELECT m.name FROM offers o JOIN model_versions v ON v.id = o.version_id \
                 JOIN models m ON m.id = v.model_id WHERE o.manifest_sha256 = $1), \
                 running_version = (SELECT v.version FROM offers o JOIN model_versions v ON v.id = o.version_id \
                 WHERE o.manifest_sha256 = $1), \
                 security_counter = COALESCE((SELECT v.security_counter FROM offers o \
                 JOIN model_versions v ON v.id = o.version_id WHERE o.manifest_sha256 = $1), security_counter), \
                 last_seen = $2 \
                 WHERE id = $3 AND EXISTS (SELECT 1 FROM offers WHERE manifest_sha256 = $1)",
            )
            .bind(&manifest)
            .bind(now)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}
