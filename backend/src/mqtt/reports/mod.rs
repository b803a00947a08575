//! Status reports in, in batches.
//!
//! A report is stored once by (device, rollout, seq), the key a device persists, so a
//! report re-sent after a reconnect or delivered twice counts once; only a newly stored
//! report moves the device's attempt (through [`crate::rollout::states`]). Reports are
//! written in batches, a fixed handful of statements each whatever its size, because a
//! fleet's reports arrive in bursts (a cohort starts, validates, commits together) and
//! statements per report made the database's round trips, not the broker, the limit.
//! On PostgreSQL several writers run at once, each owning a share of the devices (by a
//! hash of the id), so one device's reports stay in order and the database works on one
//! batch while the next is gathered; SQLite takes one writer at a time, so it gets one.
//! The MQTT loop hands a report over and goes on; the writer tells it once the batch is
//! committed, and only then is the message acknowledged (in the order messages arrived,
//! as MQTT requires and rumqttd enforces), so a report is never acknowledged before it
//! is stored.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use mota_proto::Wire;
use mota_proto::message::{Event, Status};
use rumqttc::Publish;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::blobs::hex;
use crate::db::{Db, Engine};
use crate::metrics::Metrics;
use crate::rollout::states::CommandKind;

mod fold;
mod sql;

/// Reports per transaction at most.
const MAX_BATCH: usize = 1024;

/// Reports waiting for a writer; beyond, the MQTT loop waits (back-pressure on the broker).
const QUEUE: usize = 4096;

/// Writers on PostgreSQL: enough to keep a batch in the database while the next one is
/// gathered and the last one acknowledged (BENCHMARKS.md, issue 7; 2 and 8 measured slower).
const POSTGRES_WRITERS: usize = 4;

/// A report to store: the device, its message, and who to tell whether it was stored.
pub(crate) type Queued = (String, Publish, oneshot::Sender<bool>);

/// The running writers, each with its queue.
#[derive(Debug)]
pub(crate) struct Writers {
    queues: Vec<mpsc::Sender<Queued>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts the writers for `db`'s engine.
    pub(crate) fn start(db: &Db, metrics: &Arc<Metrics>, wake: &Arc<Notify>) -> Self {
        let n = match db.engine {
            Engine::Sqlite => 1,
            Engine::Postgres => POSTGRES_WRITERS,
        };
        let (queues, tasks) = (0..n)
            .map(|_| {
                let (queue, inbox) = mpsc::channel(QUEUE / n);
                (queue, tokio::spawn(writer(db.clone(), metrics.clone(), wake.clone(), inbox)))
            })
            .unzip();
        Self { queues, tasks }
    }

    /// Queues a report with the writer that owns its device; waits while that one is full.
    pub(crate) async fn send(&self, report: Queued) -> Result<(), mpsc::error::SendError<Queued>> {
        let mut hasher = std::hash::DefaultHasher::new();
        report.0.hash(&mut hasher);
        let shard = (hasher.finish() % self.queues.len() as u64) as usize;
        self.queues[shard].send(report).await
    }

    /// Stops the writers (what they hold is not acknowledged, so the broker sends it again).
    pub(crate) fn abort(&self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// A writer: stores what arrives on `queue` in batches, says so, wakes the engine.
async fn writer(db: Db, metrics: Arc<Metrics>, wake: Arc<Notify>, mut queue: mpsc::Receiver<Queued>) {
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

/// Times a batch reads and folds again the attempts other replicas moved under it.
const MAX_ROUNDS: usize = 4;

/// Why a batch was not stored (nothing of it was: the transaction rolled back).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Other replicas kept moving these attempts between each read and write.
    #[error("{0} attempts kept changing under the batch")]
    Contended(usize),
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
///
/// A batch costs a fixed handful of statements, whatever its size: the insert, the
/// devices seen, the attempts read, one write of the attempts that moved (read and
/// written again for any another replica moved in between), and one write of the
/// devices whose model changed.
pub async fn ingest(db: &Db, reports: &[(&str, &[u8])]) -> Result<usize, IngestError> {
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
    let now = db.now().await?;
    let mut tx = db.begin().await?;
    let mut fresh = sql::insert(&mut tx, db.engine, &parsed, now).await?;
    // Only the first copy of a key in the batch is new.
    let new: Vec<&Report<'_>> = parsed.iter().filter(|r| fresh.remove(&key(r))).collect();
    if new.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    // A device that reports is online, whatever its last will said: replicas sharing the
    // hello topic may handle a reconnecting device's hello before its old connection's will.
    let devices: BTreeSet<&str> = new.iter().map(|r| r.device).collect();
    sql::seen(&mut tx, db.engine, &devices, now).await?;
    let filed: Vec<&Report<'_>> = new.into_iter().filter(|r| r.rollout != 0).collect();
    if filed.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    // Optimistic: read the attempts, fold, write where each is still in the state read.
    // An attempt another replica moved in between is read again and folded again; no
    // row is locked for the reports that move nothing (most progress reports).
    // A commit of an aborted or rolled-back rollout is sent back, and a device that
    // reverts one it kept has the withdrawn offer cleared (see `fold`).
    let changing: BTreeSet<i64> = filed
        .iter()
        .filter(|r| matches!(r.status.event, Event::Committed | Event::Reverted))
        .map(|r| r.rollout)
        .collect();
    let withdrawn = sql::withdrawn(&mut tx, &changing).await?;
    let mut pending = filed;
    let mut running = Vec::new();
    let mut sent_back = Vec::new();
    let mut cleared = Vec::new();
    let mut changed_model = Vec::new();
    let mut targets = HashMap::new();
    let mut moved = 0;
    for _ in 0..MAX_ROUNDS {
        let attempts = sql::attempts(&mut tx, db.engine, &pending).await?;
        let state_now = |k: &(i64, String)| attempts.get(k).map(|(state, _)| state.as_str());
        let changes = fold::fold(
            state_now,
            |rollout| withdrawn.contains(&rollout),
            pending.iter().map(|r| ((r.rollout, r.device), &r.status)),
        );
        let written = sql::write_attempts(&mut tx, db.engine, &changes, now).await?;
        for (key, change) in &changes {
            if !written.contains(key) {
                continue;
            }
            moved += change.moves;
            if change.send_back {
                sent_back.push(key.clone());
            }
            if change.clear_offer {
                cleared.push(key.clone());
            }
            let image = match change.running {
                None => continue,
                Some(fold::Running::Base) => attempts.get(key).and_then(|(_, base)| base.clone()),
                Some(fold::Running::Target) => {
                    if let Entry::Vacant(slot) = targets.entry(key.0) {
                        slot.insert(sql::target_image(&mut tx, key.0).await?);
                    }
                    targets.get(&key.0).cloned().flatten()
                }
            };
            running.push((key.1.clone(), image, change.running_seq));
            changed_model.push(key.clone());
        }
        pending.retain(|r| {
            let key = (r.rollout, r.device.to_owned());
            changes.contains_key(&key) && !written.contains(&key)
        });
        if pending.is_empty() {
            sql::set_running(&mut tx, db.engine, &running, now).await?;
            sql::queue(&mut tx, CommandKind::Rollback, &sent_back, now).await?;
            sql::queue(&mut tx, CommandKind::Cancel, &cleared, now).await?;
            sql::moot_rollbacks(&mut tx, db.engine, &changed_model, now).await?;
            tx.commit().await?;
            return Ok(moved);
        }
    }
    Err(IngestError::Contended(pending.len()))
}

fn key(r: &Report<'_>) -> (String, i64, i64) {
    (r.device.to_owned(), r.rollout, i64::from(r.status.seq))
}
