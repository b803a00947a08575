//! Status reports in, in batches.
//!
//! A report is stored once by (device, rollout, seq), the key a device persists, so a
//! report re-sent after a reconnect or delivered twice counts once; only a newly stored
//! report moves the device's attempt (through [`crate::rollout::states`]). Reports are
//! written by one task per replica in batches (one transaction, one multi-row insert, one
//! lookup of the attempts), because a fleet's reports arrive in bursts (a cohort starts,
//! validates, commits together) and a transaction per report made the database's
//! round trips, not the broker, the limit. The MQTT loop hands a report over and goes on;
//! the writer tells it once the batch is committed, and only then is the message
//! acknowledged (in the order messages arrived, as MQTT requires and rumqttd enforces),
//! so a report is never acknowledged before it is stored.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mota_proto::Wire;
use mota_proto::message::{Event, Status};
use rumqttc::Publish;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::blobs::hex;
use crate::db::{Db, now_ms};
use crate::metrics::Metrics;
use crate::rollout::states;

/// Reports per transaction at most.
const MAX_BATCH: usize = 256;

/// Reports waiting for the writer; beyond, the MQTT loop waits (back-pressure on the broker).
pub(crate) const QUEUE: usize = 4096;

/// A report to store: the device, its message, and who to tell whether it was stored.
pub(crate) type Queued = (String, Publish, oneshot::Sender<bool>);

/// The writer: stores what arrives on `queue` in batches, says so, wakes the engine.
pub(crate) async fn writer(db: Db, metrics: Arc<Metrics>, wake: Arc<Notify>, mut queue: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let reports: Vec<(&str, &[u8])> = batch.iter().map(|(d, p, _)| (d.as_str(), &p.payload[..])).collect();
        let mut pause = Duration::from_millis(100);
        let stored = loop {
            match ingest(&db, &reports).await {
                Ok(moved) => break Some(moved),
                // A few quick retries ride out a busy SQLite file or a PostgreSQL fail-over.
                Err(e) if pause <= Duration::from_secs(2) => {
                    tracing::warn!(reports = reports.len(), retry_in = ?pause, "storing status reports: {e}");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                Err(e) => {
                    tracing::error!(reports = reports.len(), "storing status reports: {e}; left unacknowledged");
                    break None;
                }
            }
        };
        match stored {
            Some(moved) => {
                metrics.reports("moved", moved as u64);
                metrics.reports("unchanged", (reports.len() - moved) as u64);
                if moved > 0 {
                    wake.notify_one();
                }
            }
            None => metrics.reports("failed", reports.len() as u64),
        }
        for (_, _, done) in batch.drain(..) {
            let _ = done.send(stored.is_some());
        }
    }
}

/// A parsed report and where it is filed.
struct Report<'a> {
    device: &'a str,
    rollout: i64,
    status: Status<'a>,
    raw: &'a [u8],
}

/// Stores `reports` (device, payload) in one transaction; returns how many moved an
/// attempt. A device reports a refused offer under rollout 0, seq 0 and the manifest's
/// digest; it is filed under the rollout that offered that manifest to the device, so
/// the refusal counts there, once.
pub async fn ingest(db: &Db, reports: &[(&str, &[u8])]) -> Result<usize, sqlx::Error> {
    let mut parsed = Vec::with_capacity(reports.len());
    for &(device, raw) in reports {
        let Ok(status) = Status::parse(raw) else { continue };
        let mut rollout = i64::try_from(status.rollout_id).unwrap_or(i64::MAX);
        if rollout == 0
            && let Some(m) = status.manifest
        {
            rollout = sqlx::query_scalar(
                "SELECT rollout_id FROM device_offers WHERE device_id = $1 AND manifest_sha256 = $2",
            )
            .bind(device)
            .bind(hex(&m.0))
            .fetch_optional(&db.pool)
            .await?
            .unwrap_or(0);
        }
        parsed.push(Report { device, rollout, status, raw });
    }
    if parsed.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut fresh = insert(&mut tx, &parsed, now).await?;
    let devices: Vec<&str> = {
        let set: HashSet<&str> = parsed.iter().filter(|r| fresh.contains(&key(r))).map(|r| r.device).collect();
        set.into_iter().collect()
    };
    if devices.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    // A device that reports is online, whatever its last will said: replicas sharing the
    // hello topic may handle a reconnecting device's hello before its old connection's will.
    let list = placeholders(2, devices.len());
    let mut q =
        sqlx::query(AssertSqlSafe(format!("UPDATE devices SET online = 1, last_seen = $1 WHERE id IN ({list})")))
            .bind(now);
    for d in &devices {
        q = q.bind(*d);
    }
    q.execute(&mut *tx).await?;
    let mut attempts = attempts(&mut tx, &devices).await?;
    let mut moved = 0;
    for r in &parsed {
        // Only the first copy of a key in the batch is new.
        if r.rollout == 0 || !fresh.remove(&key(r)) {
            continue;
        }
        let Some((current, base)) = attempts.get_mut(&(r.rollout, r.device.to_owned())) else { continue };
        let Some(next) = states::after(current, r.status.event, r.status.error) else { continue };
        if advance(&mut tx, r, current, next, now).await? {
            moved += 1;
            match r.status.event {
                Event::Committed => {
                    let image: Option<String> = sqlx::query_scalar(
                        "SELECT v.image_sha256 FROM rollouts r JOIN model_versions v ON v.id = r.version_id WHERE r.id = $1",
                    )
                    .bind(r.rollout)
                    .fetch_optional(&mut *tx)
                    .await?;
                    set_running(&mut tx, r.device, image.as_deref(), now).await?;
                }
                Event::RolledBack => set_running(&mut tx, r.device, base.as_deref(), now).await?,
                _ => {}
            }
            *current = next.to_owned();
        }
    }
    tx.commit().await?;
    Ok(moved)
}

fn key(r: &Report<'_>) -> (String, i64, i64) {
    (r.device.to_owned(), r.rollout, i64::from(r.status.seq))
}

/// `$first, $first+1, ...` (`n` of them).
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Inserts the reports; returns the keys that were new.
async fn insert(
    tx: &mut AnyConnection,
    reports: &[Report<'_>],
    now: i64,
) -> Result<HashSet<(String, i64, i64)>, sqlx::Error> {
    let rows: Vec<String> = (0..reports.len())
        .map(|i| format!("(${}, ${}, ${}, ${}, ${}, $1)", 2 + 5 * i, 3 + 5 * i, 4 + 5 * i, 5 + 5 * i, 6 + 5 * i))
        .collect();
    let sql = format!(
        "INSERT INTO device_reports (device_id, rollout_id, seq, event, payload, received_at) VALUES {} \
         ON CONFLICT (device_id, rollout_id, seq) DO NOTHING RETURNING device_id, rollout_id, seq",
        rows.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for r in reports {
        q = q
            .bind(r.device)
            .bind(r.rollout)
            .bind(i64::from(r.status.seq))
            .bind(r.status.event as i32)
            .bind(r.raw.to_vec());
    }
    let mut fresh = HashSet::new();
    for row in q.fetch_all(&mut *tx).await? {
        fresh.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(fresh)
}

/// The attempts of `devices` in unfinished or recent rollouts: (rollout, device) to
/// (state, base image).
async fn attempts(
    tx: &mut AnyConnection,
    devices: &[&str],
) -> Result<HashMap<(i64, String), (String, Option<String>)>, sqlx::Error> {
    let sql = format!(
        "SELECT rollout_id, device_id, state, base_sha256 FROM attempts WHERE device_id IN ({})",
        placeholders(1, devices.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for d in devices {
        q = q.bind(*d);
    }
    let mut out = HashMap::new();
    for row in q.fetch_all(&mut *tx).await? {
        out.insert((row.try_get(0)?, row.try_get(1)?), (row.try_get(2)?, row.try_get(3)?));
    }
    Ok(out)
}

/// Moves the attempt from `current` to `next` with the report's measurements; whether it
/// moved (another replica may have moved it first).
async fn advance(
    tx: &mut AnyConnection,
    r: &Report<'_>,
    current: &str,
    next: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let s = &r.status;
    let moved = sqlx::query(
        "UPDATE attempts SET state = $1, error_code = COALESCE($2, error_code), \
         accuracy_permille = COALESCE($3, accuracy_permille), prev_accuracy_permille = COALESCE($4, prev_accuracy_permille), \
         latency_us = COALESCE($5, latency_us), prev_latency_us = COALESCE($6, prev_latency_us), \
         arena_used = COALESCE($7, arena_used), bytes_done = COALESCE($8, bytes_done), \
         manifest_sha256 = COALESCE(manifest_sha256, $9), offered_at = COALESCE(offered_at, $10), updated_at = $10 \
         WHERE rollout_id = $11 AND device_id = $12 AND state = $13",
    )
    .bind(next)
    .bind(s.error.map(|e| i32::from(e.0)))
    .bind(s.accuracy_permille.map(i32::from))
    .bind(s.previous_accuracy_permille.map(i32::from))
    .bind(s.latency_us.map(i64::from))
    .bind(s.previous_latency_us.map(i64::from))
    .bind(s.arena_used.map(i64::from))
    .bind(s.bytes_done.map(i64::from))
    .bind(s.manifest.map(|m| hex(&m.0)))
    .bind(now)
    .bind(r.rollout)
    .bind(r.device)
    .bind(current)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Records that `device` runs `image` now (with its model, version and counter when the
/// registry knows the image; a factory image it does not know leaves them empty).
async fn set_running(tx: &mut AnyConnection, device: &str, image: Option<&str>, now: i64) -> Result<(), sqlx::Error> {
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
