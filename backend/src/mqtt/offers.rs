//! The update path over MQTT: offers out, status reports in (chunks: [`super::chunks`]).
//!
//! An offer is recorded per device before it is published, with the artifacts its
//! manifest names, because that record is what the chunk service checks. Status reports are stored
//! idempotently by (device, rollout, seq), the key a device persists, so a report re-sent
//! after a reconnect is counted once; only a newly stored report moves the attempt.

use mota_proto::message::Status;
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Envelope, Manifest, Wire};
use rumqttc::{AsyncClient, QoS};

use crate::blobs::hex;
use crate::db::{Db, now_ms};
use crate::rollout::states;

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

/// Records that `device` was offered `envelope` (the `device_offers` row the chunk
/// service checks), then publishes it retained with QoS 1 on the device's offer topic.
/// Returns the manifest's SHA-256 (hex). The rollout engine moves the attempt.
pub async fn publish_offer(client: &AsyncClient, db: &Db, device: &str, envelope: &[u8]) -> Result<String, OfferError> {
    let topic = Topic::new(device, Kind::Offer)?.to_string();
    let parsed = Envelope::parse(envelope)?;
    let manifest = Manifest::parse(parsed.manifest)?;
    let manifest_sha256 = hex(&mota_proto::Digest::of(parsed.manifest).0);
    let rollout = i64::try_from(manifest.rollout_id).unwrap_or(i64::MAX);
    let now = now_ms();
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
    .execute(&db.pool)
    .await?;
    client.publish(topic, QoS::AtLeastOnce, true, envelope.to_vec()).await?;
    Ok(manifest_sha256)
}

/// Stores a status report from `device` (`raw`: its payload) once; a newly stored report
/// moves the device's attempt (see [`crate::rollout::states`]) and, on `committed` or
/// `rolled_back`, the device's running model. Returns whether the attempt moved.
///
/// A device reports a refused offer under rollout 0, seq 0 and the manifest's digest;
/// the rollout is then the one the backend offered that manifest in, so the refusal
/// counts in that rollout, once.
pub async fn ingest_status(db: &Db, device: &str, status: &Status<'_>, raw: &[u8]) -> Result<bool, sqlx::Error> {
    let mut rollout = i64::try_from(status.rollout_id).unwrap_or(i64::MAX);
    if rollout == 0
        && let Some(m) = status.manifest
    {
        let offered: Option<i64> =
            sqlx::query_scalar("SELECT rollout_id FROM device_offers WHERE device_id = $1 AND manifest_sha256 = $2")
                .bind(device)
                .bind(hex(&m.0))
                .fetch_optional(&db.pool)
                .await?;
        rollout = offered.unwrap_or(0);
    }
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
    // A device that reports is online, whatever its last will said: replicas sharing the
    // hello topic may handle a reconnecting device's hello before its old connection's will.
    if stored == 1 {
        sqlx::query("UPDATE devices SET online = 1, last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(device)
            .execute(&mut *tx)
            .await?;
    }
    let current: Option<(String, Option<String>)> = if stored == 0 || rollout == 0 {
        None
    } else {
        sqlx::query_as("SELECT state, base_sha256 FROM attempts WHERE rollout_id = $1 AND device_id = $2")
            .bind(rollout)
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?
    };
    let Some((current, base)) = current else {
        tx.commit().await?;
        return Ok(false);
    };
    let Some(next) = states::after(&current, status.event, status.error) else {
        tx.commit().await?;
        return Ok(false);
    };
    let moved = sqlx::query(
        "UPDATE attempts SET state = $1, error_code = COALESCE($2, error_code), \
         accuracy_permille = COALESCE($3, accuracy_permille), prev_accuracy_permille = COALESCE($4, prev_accuracy_permille), \
         latency_us = COALESCE($5, latency_us), prev_latency_us = COALESCE($6, prev_latency_us), \
         arena_used = COALESCE($7, arena_used), bytes_done = COALESCE($8, bytes_done), \
         manifest_sha256 = COALESCE(manifest_sha256, $9), offered_at = COALESCE(offered_at, $10), updated_at = $10 \
         WHERE rollout_id = $11 AND device_id = $12 AND state = $13",
    )
    .bind(next)
    .bind(status.error.map(|e| i32::from(e.0)))
    .bind(status.accuracy_permille.map(i32::from))
    .bind(status.previous_accuracy_permille.map(i32::from))
    .bind(status.latency_us.map(i64::from))
    .bind(status.previous_latency_us.map(i64::from))
    .bind(status.arena_used.map(i64::from))
    .bind(status.bytes_done.map(i64::from))
    .bind(status.manifest.map(|m| hex(&m.0)))
    .bind(now)
    .bind(rollout)
    .bind(device)
    .bind(&current)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    match next {
        states::COMMITTED if moved == 1 => {
            let image: Option<String> = sqlx::query_scalar(
                "SELECT v.image_sha256 FROM rollouts r JOIN model_versions v ON v.id = r.version_id WHERE r.id = $1",
            )
            .bind(rollout)
            .fetch_optional(&mut *tx)
            .await?;
            set_running(&mut tx, device, image.as_deref(), now).await?;
        }
        states::ROLLED_BACK if moved == 1 => set_running(&mut tx, device, base.as_deref(), now).await?,
        _ => {}
    }
    tx.commit().await?;
    Ok(moved == 1)
}

/// Records that `device` runs `image` now (with its model, version and counter when the
/// registry knows the image; a factory image it does not know leaves them empty).
async fn set_running(
    tx: &mut sqlx::AnyConnection,
    device: &str,
    image: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET running_sha256 = $1, \
         running_model = (SELECT m.name FROM model_versions v JOIN models m ON m.id = v.model_id \
                          WHERE v.image_sha256 = $1 ORDER BY v.id LIMIT 1), \
         running_version = (SELECT v.version FROM model_versions v WHERE v.image_sha256 = $1 ORDER BY v.id LIMIT 1), \
         security_counter = CASE WHEN security_counter < COALESCE((SELECT MAX(v.security_counter) \
                          FROM model_versions v WHERE v.image_sha256 = $1), 0) \
                          THEN (SELECT MAX(v.security_counter) FROM model_versions v WHERE v.image_sha256 = $1) \
                          ELSE security_counter END, \
         last_seen = $2 WHERE id = $3",
    )
    .bind(image)
    .bind(now)
    .bind(device)
    .execute(tx)
    .await?;
    Ok(())
}
