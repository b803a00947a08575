//! The rollout engine: each replica runs one, on a one-second tick and whenever a device
//! report moves an attempt.
//!
//! A step reads a rollout's rows, decides, and writes the decision as a conditional
//! update (`... WHERE state = 'active'`); only the replica whose update changed the row
//! goes on to act (publish the next cohort's offers, record the event). Counting is
//! never incremental: tallies are recomputed from the attempts, which reports move once
//! each (stored by their idempotency key first), so a report delivered twice or handled
//! by two replicas cannot be counted twice. What the engine publishes (offers, commands)
//! is deterministic and idempotent on the device, so a replica that crashes between its
//! commit and its publish is covered by the next step re-publishing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mota_proto::Wire;
use mota_proto::message::{Action, Cmd};
use mota_proto::topic::{Kind, Topic};
use rumqttc::{AsyncClient, QoS};
use sqlx::Row;
use tokio::sync::Notify;

use super::gates::{Verdict, judge};
use super::view::{Of, parse, tallies};
use super::{Gates, OnFailure, Plan, RolloutError, actions, rollout_state as rs, states};
use crate::db::{Db, now_ms};
use crate::events;
use crate::mqtt::offers::publish_offer;
use crate::registry::Registry;
use crate::registry::manifests::ManifestRequest;
use crate::signing::Signer;

/// The actor of the engine's own audit events.
pub const ACTOR: &str = "engine";

/// How often every rollout is looked at even without reports (stuck timeouts, soak).
pub const TICK: Duration = Duration::from_secs(1);

/// Shortest time between two steps.
const MIN_GAP: Duration = Duration::from_millis(200);

/// Offers published per cohort per step (the rest on the next step).
const OFFERS_PER_STEP: i64 = 2000;
/// An unfinished attempt quiet this long gets its offer published again (see `nudge`).
const QUIET: Duration = Duration::from_secs(30);

/// One replica's engine.
#[derive(Clone)]
pub struct Engine {
    /// The database.
    pub db: Db,
    /// Signs the offers.
    pub registry: Registry,
    /// The release key.
    pub signer: Arc<Signer>,
    /// Publishes offers and commands.
    pub client: AsyncClient,
    /// Notified when a report moved an attempt.
    pub wake: Arc<Notify>,
    /// The MQTT side's count of sessions the broker did not have.
    fresh_sessions: Arc<AtomicU64>,
    /// The count the engine last re-published for.
    republished: Arc<AtomicU64>,
    /// When quiet devices were last asked again (Unix ms).
    nudged: Arc<std::sync::atomic::AtomicI64>,
}

/// Why a step failed (logged; the next tick tries again).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The database or signing failed.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Publishing failed.
    #[error("publishing: {0}")]
    Offer(#[from] crate::mqtt::offers::OfferError),
    /// The MQTT client's queue is closed.
    #[error("MQTT: {0}")]
    Mqtt(#[from] rumqttc::ClientError),
    /// A message could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] mota_proto::EncodeError),
}

struct Rollout {
    id: i64,
    state: String,
    gates: Gates,
    plan: Plan,
    approved_through: i32,
    model: String,
    version: String,
    image_sha256: String,
}

impl Engine {
    /// The engine of the replica serving `state`, publishing through `mqtt`.
    pub fn new(state: &crate::server::AppState, mqtt: &crate::mqtt::Mqtt) -> Self {
        Self {
            db: state.db.clone(),
            registry: state.registry.clone(),
            signer: state.signer.clone(),
            client: mqtt.client(),
            wake: state.engine_wake.clone(),
            fresh_sessions: mqtt.fresh_sessions(),
            republished: Arc::new(AtomicU64::new(0)),
            // 0: a starting replica asks quiet devices at once (it may have missed their news).
            nudged: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("rollout engine: {e}");
            }
            // Reports arriving meanwhile are judged together in the next step: a step
            // re-tallies the active cohort, so one step per report would cost more than
            // storing the reports (a benchmark found the engine taking most of the CPU).
            tokio::time::sleep(MIN_GAP).await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK - MIN_GAP) => {}
            }
        }
    }

    /// One pass: queued commands, then every unfinished rollout.
    pub async fn tick(&self) -> Result<(), EngineError> {
        let sessions = self.fresh_sessions.load(Ordering::SeqCst);
        if sessions != self.republished.load(Ordering::SeqCst) {
            self.republish().await?;
            self.republished.store(sessions, Ordering::SeqCst);
        }
        let now = now_ms();
        if now - self.nudged.load(Ordering::SeqCst) >= QUIET.as_millis() as i64 {
            self.nudged.store(now, Ordering::SeqCst);
            self.nudge(now).await?;
        }
        self.send_commands().await?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM rollouts WHERE state IN ('running', 'paused') ORDER BY id")
                .fetch_all(&self.db.pool)
                .await?;
        for id in ids {
            if let Err(e) = self.step(id).await {
                tracing::warn!(rollout = id, "rollout step: {e}");
            }
        }
        Ok(())
    }

    async fn load(&self, id: i64) -> Result<Rollout, EngineError> {
        let r = sqlx::query(
            "SELECT r.state, r.gates, r.plan, r.approved_through, m.name, v.version, v.image_sha256 FROM rollouts r \
             JOIN model_versions v ON v.id = r.version_id JOIN models m ON m.id = v.model_id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(Rollout {
            id,
            state: r.try_get(0)?,
            gates: parse("gates", &r.try_get::<String, _>(1)?)?,
            plan: parse("plan", &r.try_get::<String, _>(2)?)?,
            approved_through: r.try_get(3)?,
            model: r.try_get(4)?,
            version: r.try_get(5)?,
            image_sha256: r.try_get(6)?,
        })
    }

    /// Moves one rollout as far as its rows allow now.
    pub async fn step(&self, id: i64) -> Result<(), EngineError> {
        let r = self.load(id).await?;
        self.time_out(&r).await?;
        if r.state != rs::RUNNING {
            return Ok(());
        }
        // Each pass settles at most one cohort; a passed cohort lets the next start at once.
        for _ in 0..=r.plan.cohorts.len() {
            let cohorts: Vec<(i64, i32, String, Option<i64>)> = sqlx::query_as(
                "SELECT id, position, state, ready_at FROM cohorts WHERE rollout_id = $1 ORDER BY position",
            )
            .bind(id)
            .fetch_all(&self.db.pool)
            .await?;
            let Some((cohort, position, state, ready_at)) = cohorts.into_iter().find(|c| c.2 != "passed") else {
                self.transition(&r, rs::COMPLETED, "every cohort passed", "rollout.completed").await?;
                return Ok(());
            };
            match state.as_str() {
                "pending" => {
                    if position > 0 && r.plan.approval && r.approved_through < position {
                        return Ok(()); // awaiting approval
                    }
                    self.start_cohort(&r, cohort, position).await?;
                }
                "active" => {
                    self.offer(&r, cohort).await?;
                    if !self.judge(&r, cohort, position, ready_at).await? {
                        return Ok(());
                    }
                }
                _ => return Ok(()), // failed: the rollout is paused or ended
            }
        }
        Ok(())
    }

    /// Marks silent devices `timed_out`: silence past the deadline counts as failure.
    async fn time_out(&self, r: &Rollout) -> Result<(), EngineError> {
        let now = now_ms();
        let cutoff = now - i64::try_from(r.gates.stuck_timeout_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut tx = self.db.begin().await?;
        let timed = sqlx::query(
            "UPDATE attempts SET state = $1, updated_at = $2 WHERE rollout_id = $3 \
             AND state IN ('offered', 'accepted', 'downloading', 'verified', 'validated') AND offered_at < $4",
        )
        .bind(states::TIMED_OUT)
        .bind(now)
        .bind(r.id)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if timed > 0 {
            let detail = serde_json::json!({ "devices": timed, "stuck_timeout_s": r.gates.stuck_timeout_s });
            events::record(&mut tx, ACTOR, "attempts.timed_out", &format!("rollout:{}", r.id), &detail).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn start_cohort(&self, r: &Rollout, cohort: i64, position: i32) -> Result<(), EngineError> {
        let mut tx = self.db.begin().await?;
        let won =
            sqlx::query("UPDATE cohorts SET state = 'active', started_at = $1 WHERE id = $2 AND state = 'pending'")
                .bind(now_ms())
                .bind(cohort)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if won == 1 {
            let detail = serde_json::json!({ "cohort": position });
            events::record(&mut tx, ACTOR, "cohort.started", &format!("rollout:{}", r.id), &detail).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Publishes the offers of the cohort's pending devices: a patch from what each device
    /// runs when one is computed (and smaller), else the full image; a device already
    /// running the version is skipped.
    async fn offer(&self, r: &Rollout, cohort: i64) -> Result<(), EngineError> {
        let pending: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT a.device_id, d.running_sha256 FROM attempts a JOIN devices d ON d.id = a.device_id \
             WHERE a.cohort_id = $1 AND a.state = 'pending' ORDER BY a.device_id LIMIT $2",
        )
        .bind(cohort)
        .bind(OFFERS_PER_STEP)
        .fetch_all(&self.db.pool)
        .await?;
        let mut signed: HashMap<Option<String>, (Vec<u8>, String, bool)> = HashMap::new();
        for (device, running) in pending {
            let now = now_ms();
            if running.as_deref() == Some(r.image_sha256.as_str()) {
                sqlx::query("UPDATE attempts SET state = $1, updated_at = $2 WHERE cohort_id = $3 AND device_id = $4 AND state = 'pending'")
                    .bind(states::SKIPPED)
                    .bind(now)
                    .bind(cohort)
                    .bind(&device)
                    .execute(&self.db.pool)
                    .await?;
                continue;
            }
            if !signed.contains_key(&running) {
                let request = ManifestRequest {
                    base_sha256: running.clone(),
                    rollout_id: Some(u64::try_from(r.id).unwrap_or_default()),
                    expires_at: None,
                };
                let m = self
                    .registry
                    .sign(&self.signer, &r.model, &r.version, &request, ACTOR)
                    .await
                    .map_err(RolloutError::from)?;
                let envelope: Vec<u8> = sqlx::query_scalar("SELECT envelope FROM offers WHERE manifest_sha256 = $1")
                    .bind(&m.manifest_sha256)
                    .fetch_one(&self.db.pool)
                    .await?;
                signed.insert(running.clone(), (envelope, m.manifest_sha256, m.delta.is_some()));
            }
            let Some((envelope, manifest, delta)) = signed.get(&running) else { continue };
            publish_offer(&self.client, &self.db, &device, envelope).await?;
            // The device may answer before this update runs (its first report moves the
            // attempt past `pending`): what was offered is recorded whatever the state,
            // only the state itself moves from `pending` alone.
            sqlx::query(
                "UPDATE attempts SET state = CASE WHEN state = 'pending' THEN $1 ELSE state END, \
                 offered_at = COALESCE(offered_at, $2), manifest_sha256 = $3, base_sha256 = $4, delta = $5, \
                 updated_at = $2 WHERE cohort_id = $6 AND device_id = $7",
            )
            .bind(states::OFFERED)
            .bind(now)
            .bind(manifest)
            .bind(running.clone())
            .bind(i32::from(*delta))
            .bind(cohort)
            .bind(&device)
            .execute(&self.db.pool)
            .await?;
        }
        Ok(())
    }

    /// Judges the active cohort; returns whether it passed (so the next may start).
    async fn judge(&self, r: &Rollout, cohort: i64, position: i32, ready_at: Option<i64>) -> Result<bool, EngineError> {
        let tally = tallies(&self.db, Of::Cohort(cohort)).await?.remove(&cohort).unwrap_or_default();
        let (verdict, views) = judge(&r.gates, &tally);
        let now = now_ms();
        let subject = format!("rollout:{}", r.id);
        match verdict {
            Verdict::Wait => Ok(false),
            Verdict::Fail(why) => {
                let mut tx = self.db.begin().await?;
                let won = sqlx::query(
                    "UPDATE cohorts SET state = 'failed', finished_at = $1, reason = $2 WHERE id = $3 AND state = 'active'",
                )
                .bind(now)
                .bind(&why)
                .bind(cohort)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if won == 1 {
                    let detail =
                        serde_json::json!({ "cohort": position, "reason": why, "tally": tally, "gates": views });
                    events::record(&mut tx, ACTOR, "cohort.failed", &subject, &detail).await?;
                    // People count cohorts from 1 (positions in the API are 0-based).
                    let reason = format!("cohort {} failed its gates: {why}", position + 1);
                    let (to, kind) = match r.gates.on_failure {
                        OnFailure::Pause => (rs::PAUSED, "rollout.paused"),
                        OnFailure::Abort => (rs::ABORTED, "rollout.aborted"),
                        OnFailure::Rollback => (rs::ROLLED_BACK, "rollout.rolled_back"),
                    };
                    if actions::set_state(&mut tx, r.id, &[rs::RUNNING], to, Some(&reason)).await? {
                        let mut detail = serde_json::json!({ "reason": reason });
                        if to != rs::PAUSED {
                            let (cancelled, rolling_back) = actions::end(&mut tx, r.id, to == rs::ROLLED_BACK).await?;
                            detail["cancelled"] = cancelled.into();
                            detail["rolling_back"] = rolling_back.into();
                        }
                        events::record(&mut tx, ACTOR, kind, &subject, &detail).await?;
                    }
                }
                tx.commit().await?;
                tracing::info!(rollout = r.id, cohort = position, "cohort failed: {why}");
                Ok(false)
            }
            Verdict::Pass => {
                let ready = match ready_at {
                    Some(t) => t,
                    None => {
                        sqlx::query("UPDATE cohorts SET ready_at = $1 WHERE id = $2 AND ready_at IS NULL")
                            .bind(now)
                            .bind(cohort)
                            .execute(&self.db.pool)
                            .await?;
                        now
                    }
                };
                let soak_ms = i64::try_from(r.gates.soak_s.saturating_mul(1000)).unwrap_or(i64::MAX);
                if now < ready.saturating_add(soak_ms) {
                    return Ok(false);
                }
                let mut tx = self.db.begin().await?;
                let won = sqlx::query(
                    "UPDATE cohorts SET state = 'passed', finished_at = $1 WHERE id = $2 AND state = 'active'",
                )
                .bind(now)
                .bind(cohort)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if won == 1 {
                    let detail = serde_json::json!({ "cohort": position, "tally": tally, "gates": views });
                    events::record(&mut tx, ACTOR, "cohort.passed", &subject, &detail).await?;
                }
                tx.commit().await?;
                Ok(won == 1)
            }
        }
    }

    /// Moves a running rollout to `to` with its event, once.
    async fn transition(&self, r: &Rollout, to: &str, reason: &str, kind: &str) -> Result<(), EngineError> {
        let mut tx = self.db.begin().await?;
        if actions::set_state(&mut tx, r.id, &[rs::RUNNING], to, Some(reason)).await? {
            let detail = serde_json::json!({ "reason": reason });
            events::record(&mut tx, ACTOR, kind, &format!("rollout:{}", r.id), &detail).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Publishes again what a broker that lost its state no longer retains: the offers of
    /// unfinished attempts and the commands of the last day that no later rollout of the
    /// device superseded (a device runs each command id once, and takes an offer it
    /// already works on as a no-op).
    async fn republish(&self) -> Result<(), EngineError> {
        let offers: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT a.device_id, o.envelope FROM attempts a JOIN rollouts r ON r.id = a.rollout_id \
             JOIN offers o ON o.manifest_sha256 = a.manifest_sha256 WHERE r.state IN ('running', 'paused') \
             AND a.state IN ('offered', 'accepted', 'downloading', 'verified', 'validated', 'timed_out')",
        )
        .fetch_all(&self.db.pool)
        .await?;
        for (device, envelope) in &offers {
            if let Ok(topic) = Topic::new(device, Kind::Offer) {
                self.client.publish(topic.to_string(), QoS::AtLeastOnce, true, envelope.clone()).await?;
            }
        }
        let day_ago = now_ms() - 86_400_000;
        // Not a command a later rollout of the device superseded (a cancel clears the offer).
        let resent = sqlx::query(
            "UPDATE commands SET sent_at = NULL WHERE sent_at IS NOT NULL AND created_at > $1 AND NOT EXISTS \
             (SELECT 1 FROM attempts a WHERE a.device_id = commands.device_id AND a.rollout_id > commands.rollout_id)",
        )
        .bind(day_ago)
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        tracing::info!(offers = offers.len(), commands = resent, "the broker had no session: re-publishing");
        Ok(())
    }

    /// Publishes again the offers of unfinished attempts that have said nothing for
    /// [`QUIET`]. A device still working takes an offer it already works on as a no-op;
    /// one that finished answers a repeated offer with its terminal report again. That
    /// recovers a report the broker dropped, as Mosquitto does after a restart with the
    /// messages of a shared subscription no replica has rejoined yet (found by the
    /// scale-out test), and an offer a device missed.
    async fn nudge(&self, now: i64) -> Result<(), EngineError> {
        let offers: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT a.device_id, o.envelope FROM attempts a JOIN rollouts r ON r.id = a.rollout_id \
             JOIN offers o ON o.manifest_sha256 = a.manifest_sha256 WHERE r.state IN ('running', 'paused') \
             AND a.state IN ('offered', 'accepted', 'downloading', 'verified', 'validated', 'timed_out') \
             AND a.updated_at < $1 ORDER BY a.updated_at LIMIT $2",
        )
        .bind(now - QUIET.as_millis() as i64)
        .bind(OFFERS_PER_STEP)
        .fetch_all(&self.db.pool)
        .await?;
        for (device, envelope) in &offers {
            if let Ok(topic) = Topic::new(device, Kind::Offer) {
                self.client.publish(topic.to_string(), QoS::AtLeastOnce, true, envelope.clone()).await?;
            }
        }
        if !offers.is_empty() {
            tracing::info!(offers = offers.len(), "asking quiet devices again");
        }
        Ok(())
    }

    /// Publishes queued commands (retained: an offline device finds its latest command;
    /// ids only grow, so it runs each once). A `cancel` also clears the device's retained
    /// offer so a reconnecting device does not start it again.
    async fn send_commands(&self) -> Result<(), EngineError> {
        let queued: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT id, device_id, rollout_id, action FROM commands WHERE sent_at IS NULL ORDER BY id LIMIT 1000",
        )
        .fetch_all(&self.db.pool)
        .await?;
        for (id, device, rollout, action) in queued {
            let action = if action == "rollback" { Action::Rollback } else { Action::Cancel };
            let (Ok(cmd_topic), Ok(offer_topic)) = (Topic::new(&device, Kind::Cmd), Topic::new(&device, Kind::Offer))
            else {
                continue;
            };
            if action == Action::Cancel {
                self.client.publish(offer_topic.to_string(), QoS::AtLeastOnce, true, Vec::new()).await?;
            }
            let cmd = Cmd {
                id: u64::try_from(id).unwrap_or_default(),
                action,
                rollout_id: u64::try_from(rollout).unwrap_or_default(),
            };
            self.client.publish(cmd_topic.to_string(), QoS::AtLeastOnce, true, cmd.to_vec()?).await?;
            sqlx::query("UPDATE commands SET sent_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(&self.db.pool)
                .await?;
        }
        Ok(())
    }
}
