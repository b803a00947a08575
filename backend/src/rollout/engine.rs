//! The rollout engine: each replica runs one, on a one-second tick and whenever a device
//! report moves an attempt.
//!
//! A step takes the rollout's lease (one replica steps a given rollout at a time; the
//! lease only saves work, correctness never rests on it), loads a [`Snapshot`], asks
//! [`decide`] what to do and hands the decisions to [`Apply`], again until nothing moves
//! (a passed cohort lets the next start in the same step). Counting is never
//! incremental: tallies are recomputed from the attempts, which reports move once each
//! (stored by their idempotency key first), so a report delivered twice or handled by two
//! replicas cannot be counted twice. What the engine publishes (offers, commands) is
//! deterministic and idempotent on the device, so a replica that crashes between its
//! commit and its publish is covered by the next step publishing again. Time comes from
//! the database's clock ([`Db::now`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use mota_proto::command::COMMAND_FORMAT_VERSION;
use mota_proto::message::ErrorCode;
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Action, CommandBody, Digest, Target};
use sqlx::Row;
use tokio::sync::Notify;

use super::RolloutError;
pub use super::apply::ACTOR;
use super::apply::{Apply, ApplyError};
use super::decide::{AttemptSnap, CohortSnap, DeviceSnap, RolloutSnap, Snapshot, decide};
use super::states::{AttemptState as A, CohortState, CommandKind, RolloutState, sql_list};
use super::view::{Of, parse, tallies};
use crate::db::Db;
use crate::mqtt::publish::{PublishError, Publisher};
use crate::registry::Registry;
use crate::revocations;
use crate::signing::Signer;

/// How often every rollout is looked at even without reports (stuck timeouts, soak).
pub const TICK: Duration = Duration::from_secs(1);

/// Shortest time between two steps.
const MIN_GAP: Duration = Duration::from_millis(200);

/// Attempts loaded per kind per step (the rest on the next step).
const PER_STEP: i64 = 2000;
/// An unfinished attempt quiet this long gets its offer published again (see `nudge`).
const QUIET: Duration = Duration::from_secs(30);
/// How long a replica holds a rollout's lease after its last step.
const LEASE: Duration = Duration::from_secs(15);

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
    pub publisher: Arc<dyn Publisher>,
    /// Notified when a report moved an attempt.
    pub wake: Arc<Notify>,
    /// The MQTT side's count of sessions the broker did not have.
    fresh_sessions: Arc<AtomicU64>,
    /// The count the engine last re-published for.
    republished: Arc<AtomicU64>,
    /// When quiet devices were last asked again (Unix ms).
    nudged: Arc<AtomicI64>,
    /// This engine's name on the leases it holds.
    owner: String,
}

/// Why a step failed (logged; the next tick tries again).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A stored document does not parse.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying a decision failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A message could not be queued.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A message could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] mota_proto::EncodeError),
}

impl Engine {
    /// The engine of the replica serving `state`, publishing through `mqtt`.
    pub fn new(state: &crate::server::AppState, mqtt: &crate::mqtt::Mqtt) -> Self {
        let mut engine = Self::with_publisher(state, Arc::new(mqtt.client()));
        engine.fresh_sessions = mqtt.fresh_sessions();
        engine
    }

    /// An engine publishing through `publisher` (the tests' in-memory bus).
    pub fn with_publisher(state: &crate::server::AppState, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            db: state.db.clone(),
            registry: state.registry.clone(),
            signer: state.signer.clone(),
            publisher,
            wake: state.engine_wake.clone(),
            fresh_sessions: Arc::new(AtomicU64::new(0)),
            republished: Arc::new(AtomicU64::new(0)),
            // 0: a starting replica asks quiet devices at once (it may have missed their news).
            nudged: Arc::new(AtomicI64::new(0)),
            owner: lease_owner(),
        }
    }

    /// The count of sessions the broker did not have (the MQTT side bumps it on such a
    /// connection; the next tick publishes again what the broker retained).
    pub fn fresh_sessions(&self) -> Arc<AtomicU64> {
        self.fresh_sessions.clone()
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

    /// One pass: queued commands, then every live rollout.
    pub async fn tick(&self) -> Result<(), EngineError> {
        let sessions = self.fresh_sessions.load(Ordering::SeqCst);
        if sessions != self.republished.load(Ordering::SeqCst) {
            self.republish().await?;
            self.republished.store(sessions, Ordering::SeqCst);
        }
        let now = self.db.now().await?;
        if now - self.nudged.load(Ordering::SeqCst) >= QUIET.as_millis() as i64 {
            self.nudged.store(now, Ordering::SeqCst);
            self.nudge(now).await?;
        }
        self.send_commands().await?;
        self.send_revocation().await?;
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM rollouts WHERE state IN {} ORDER BY id",
            sql_list(RolloutState::LIVE)
        )))
        .fetch_all(&self.db.pool)
        .await?;
        for id in ids {
            if let Err(e) = self.step(id).await {
                tracing::warn!(rollout = id, "rollout step: {e}");
            }
        }
        Ok(())
    }

    /// Moves one rollout as far as its rows allow now, if this replica holds its lease.
    pub async fn step(&self, id: i64) -> Result<(), EngineError> {
        if !self.lease(id).await? {
            return Ok(());
        }
        // Each pass settles at most one cohort; a passed cohort lets the next start at once.
        for _ in 0..24 {
            let Some(snapshot) = self.snapshot(id).await? else { return Ok(()) };
            let decisions = decide(&snapshot);
            if decisions.is_empty() {
                break;
            }
            self.apply(&snapshot, &decisions).await?;
            if !decisions.iter().any(super::decide::Decision::moves_on) {
                break;
            }
        }
        Ok(())
    }

    /// Executes `decisions` taken on `snapshot` (a step's second half; tests call it on
    /// its own to interleave an operator between deciding and applying).
    pub async fn apply(&self, snapshot: &Snapshot, decisions: &[super::decide::Decision]) -> Result<(), EngineError> {
        let apply = Apply { db: &self.db, publisher: &*self.publisher, registry: &self.registry, signer: &self.signer };
        Ok(apply.run(snapshot, decisions).await?)
    }

    /// Takes or renews the rollout's lease; false while another replica holds it.
    async fn lease(&self, id: i64) -> Result<bool, EngineError> {
        let now = self.db.now().await?;
        let taken = sqlx::query(
            "UPDATE rollouts SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
        )
        .bind(&self.owner)
        .bind(now + LEASE.as_millis() as i64)
        .bind(id)
        .bind(now)
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// What a step sees of rollout `id` now (`None`: no such rollout).
    pub async fn snapshot(&self, id: i64) -> Result<Option<Snapshot>, EngineError> {
        let now = self.db.now().await?;
        let Some(r) = sqlx::query(
            "SELECT r.state, r.gates, r.plan, r.approved_through, m.name, v.version, v.image_sha256, v.arena_bytes, \
             img.size, s.size FROM rollouts r JOIN model_versions v ON v.id = r.version_id \
             JOIN models m ON m.id = v.model_id JOIN artifacts img ON img.sha256 = v.image_sha256 \
             LEFT JOIN artifacts s ON s.sha256 = v.validation_sha256 WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        else {
            return Ok(None);
        };
        let state: String = r.try_get(0)?;
        let image: i64 = r.try_get(8)?;
        let set: Option<i64> = r.try_get(9)?;
        let rollout = RolloutSnap {
            id,
            state: RolloutState::parse(&state)
                .ok_or_else(|| RolloutError::Invalid(format!("stored rollout state {state:?}")))?,
            gates: parse("gates", &r.try_get::<String, _>(1)?)?,
            plan: parse("plan", &r.try_get::<String, _>(2)?)?,
            approved_through: r.try_get(3)?,
            model: r.try_get(4)?,
            version: r.try_get(5)?,
            image_sha256: r.try_get(6)?,
            arena_bytes: r.try_get(7)?,
            slot_bytes: super::decide::slot_need(image, set),
        };
        let mut cohorts = Vec::new();
        for row in
            sqlx::query("SELECT id, position, state, ready_at FROM cohorts WHERE rollout_id = $1 ORDER BY position")
                .bind(id)
                .fetch_all(&self.db.pool)
                .await?
        {
            let state: String = row.try_get(2)?;
            cohorts.push(CohortSnap {
                id: row.try_get(0)?,
                position: row.try_get(1)?,
                state: CohortState::parse(&state)
                    .ok_or_else(|| RolloutError::Invalid(format!("stored cohort state {state:?}")))?,
                ready_at: row.try_get(3)?,
            });
        }
        let active = cohorts.iter().find(|c| c.state == CohortState::Active).map(|c| c.id);
        let mut attempts = Vec::new();
        if let Some(cohort) = active {
            let sql = format!(
                "{ATTEMPTS} WHERE a.cohort_id = $1 AND a.state = '{}' ORDER BY a.device_id LIMIT $2",
                A::Pending
            );
            let rows =
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cohort).bind(PER_STEP).fetch_all(&self.db.pool).await?;
            for row in rows {
                attempts.push(attempt(&row)?);
            }
        }
        // Unfinished attempts silent long enough for a timeout, and timed-out ones that
        // may be retried; `decide` applies the rules.
        let g = &rollout.gates;
        let shortest = g.stuck_timeout_s.min(g.offline_limit_s).saturating_mul(1000);
        let cutoff = now.saturating_sub(i64::try_from(shortest).unwrap_or(i64::MAX));
        let sql = format!(
            "{ATTEMPTS} WHERE a.rollout_id = $1 AND ((a.state IN {} AND a.updated_at <= $2) \
             OR (a.state = '{}' AND a.retries < $3 AND d.online = 1)) ORDER BY a.updated_at LIMIT $4",
            sql_list(A::IN_FLIGHT),
            A::TimedOut
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(cutoff)
            .bind(i64::from(g.max_retries))
            .bind(PER_STEP)
            .fetch_all(&self.db.pool)
            .await?;
        for row in rows {
            attempts.push(attempt(&row)?);
        }
        let tally = match active {
            Some(cohort) => tallies(&self.db, Of::Cohort(cohort)).await?.remove(&cohort),
            None => None,
        };
        Ok(Some(Snapshot { now, rollout, cohorts, attempts, tally }))
    }
}

/// A name for this engine's leases: never shared by two replicas, or two engines of one
/// process (tests run several).
fn lease_owner() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random); // the process id and counter still tell engines apart
    format!("{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), crate::blobs::hex(&random))
}

/// The attempt columns a snapshot reads, with the device's and the last report's time.
const ATTEMPTS: &str = "SELECT a.device_id, a.cohort_id, a.state, a.updated_at, a.retries, d.online, d.last_seen, \
     d.running_sha256, d.slot_bytes, d.arena_bytes, d.codecs, d.max_chunk, \
     (SELECT MAX(r.received_at) FROM device_reports r WHERE r.device_id = a.device_id AND r.rollout_id = a.rollout_id) \
     FROM attempts a JOIN devices d ON d.id = a.device_id";

fn attempt(row: &sqlx::any::AnyRow) -> Result<AttemptSnap, EngineError> {
    let state: String = row.try_get(2)?;
    let updated: i64 = row.try_get(3)?;
    let reported: Option<i64> = row.try_get(12)?;
    Ok(AttemptSnap {
        device: row.try_get(0)?,
        cohort: row.try_get::<Option<i64>, _>(1)?.unwrap_or_default(),
        state: A::parse(&state).ok_or_else(|| RolloutError::Invalid(format!("stored attempt state {state:?}")))?,
        heard_at: reported.map_or(updated, |r| r.max(updated)),
        retries: u32::try_from(row.try_get::<i32, _>(4)?).unwrap_or_default(),
        device_info: DeviceSnap {
            online: row.try_get::<i32, _>(5)? != 0,
            last_seen: row.try_get(6)?,
            running_sha256: row.try_get(7)?,
            slot_bytes: row.try_get(8)?,
            arena_bytes: row.try_get(9)?,
            codecs: row.try_get::<Option<i32>, _>(10)?.map(i64::from),
            max_chunk: row.try_get(11)?,
        },
    })
}

impl Engine {
    /// Unfinished attempts of live rollouts whose offers a device may still need, with
    /// their envelopes; `quiet_before`: only those unchanged since then.
    async fn live_offers(&self, quiet_before: Option<i64>) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let sql = format!(
            "SELECT a.device_id, o.envelope FROM attempts a JOIN rollouts r ON r.id = a.rollout_id \
             JOIN offers o ON o.manifest_sha256 = a.manifest_sha256 WHERE r.state IN {} AND a.state IN {} \
             AND a.updated_at < $1 ORDER BY a.updated_at LIMIT $2",
            sql_list(RolloutState::LIVE),
            sql_list(A::HOLDS_OFFER),
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(quiet_before.unwrap_or(i64::MAX))
            .bind(if quiet_before.is_some() { PER_STEP } else { i64::MAX })
            .fetch_all(&self.db.pool)
            .await?)
    }

    async fn publish_offers(&self, offers: &[(String, Vec<u8>)]) -> Result<(), EngineError> {
        for (device, envelope) in offers {
            if let Ok(topic) = Topic::new(device, Kind::Offer) {
                self.publisher.publish(topic.to_string(), envelope.clone(), true).await?;
            }
        }
        Ok(())
    }

    /// Publishes the newest revocation list, retained, on the trust topic of every device
    /// known now, once (a device that registers later declares in its hello that it holds
    /// none, and the MQTT side sends it then).
    async fn send_revocation(&self) -> Result<(), EngineError> {
        let Some((seq, statement)) = revocations::unpublished(&self.db).await? else { return Ok(()) };
        let devices: Vec<String> = sqlx::query_scalar("SELECT id FROM devices").fetch_all(&self.db.pool).await?;
        for device in &devices {
            if let Ok(topic) = Topic::new(device, Kind::Trust) {
                self.publisher.publish(topic.to_string(), statement.clone(), true).await?;
            }
        }
        revocations::published(&self.db, seq, self.db.now().await?).await?;
        tracing::info!(seq, devices = devices.len(), "revocation list published");
        Ok(())
    }

    /// Publishes again what a broker that lost its state no longer retains: the offers of
    /// unfinished attempts, the commands of the last day that no later rollout of the
    /// device superseded (a device answers a command it carried out with its report, and
    /// takes an offer it already works on as a no-op), and the revocation list.
    async fn republish(&self) -> Result<(), EngineError> {
        revocations::republish(&self.db).await?;
        let offers = self.live_offers(None).await?;
        self.publish_offers(&offers).await?;
        let day_ago = self.db.now().await? - 86_400_000;
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
    /// scale-out test), and an offer a device missed. An attempt that finished (cancelled
    /// by an abort or a superseding rollout) is never asked again.
    async fn nudge(&self, now: i64) -> Result<(), EngineError> {
        let offers = self.live_offers(Some(now - QUIET.as_millis() as i64)).await?;
        self.publish_offers(&offers).await?;
        if !offers.is_empty() {
            tracing::info!(offers = offers.len(), "asking quiet devices again");
        }
        Ok(())
    }

    /// Publishes queued commands, signed (retained: an offline device finds its latest
    /// command). Each names the state it applies to, from the attempt: the manifest the
    /// device was offered and, for a rollback, the model its commit said it left. A
    /// command that cannot name them is not sent: a cancel before any offer has nothing
    /// to cancel, a rollback without a known target ends the attempt `rollback_failed`
    /// at once (no device would obey it), and a rollback whose attempt is no longer
    /// `rolling_back` has nothing left to do (the device reverted on its own, answered
    /// it already, or a later rollout superseded it). Each also leaves the device's
    /// retained offer as the device's current offer, or nothing: a device that
    /// reconnects after a `cancel` or `rollback` must not find the withdrawn offer, and
    /// clearing it blindly would wipe the offer of a rollout that has taken the device
    /// since.
    pub async fn send_commands(&self) -> Result<(), EngineError> {
        type Queued = (i64, String, i64, String, Option<String>, Option<String>, Option<String>, Option<String>);
        let queued: Vec<Queued> = sqlx::query_as(
            "SELECT c.id, c.device_id, c.rollout_id, c.action, a.manifest_sha256, a.rollback_image, \
             a.rollback_manifest, a.state FROM commands c LEFT JOIN attempts a \
             ON a.device_id = c.device_id AND a.rollout_id = c.rollout_id \
             WHERE c.sent_at IS NULL ORDER BY c.id LIMIT 1000",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let current = format!(
            "SELECT o.envelope FROM attempts a JOIN offers o ON o.manifest_sha256 = a.manifest_sha256 \
             WHERE a.open_device = $1 AND a.state IN {}",
            sql_list(A::HOLDS_OFFER)
        );
        for (id, device, rollout, action, subject, image, manifest, state) in queued {
            let digest = |hex: Option<&String>| hex.and_then(|h| h.parse::<Digest>().ok());
            let target = digest(image.as_ref()).map(|image| Target { image, manifest: digest(manifest.as_ref()) });
            let rolling_back = state.as_deref() == Some(A::RollingBack.as_str());
            // What to sign (`Some(None)`: nothing, but the withdrawn offer is still
            // cleared). The column's CHECK allows only the kinds there are.
            let command = match (CommandKind::parse(&action), digest(subject.as_ref()), target) {
                (Some(CommandKind::Cancel), Some(subject), _) => Some(Some((Action::Cancel, subject, None))),
                (Some(CommandKind::Rollback), Some(_), _) if !rolling_back => Some(None),
                (Some(CommandKind::Rollback), Some(subject), Some(target)) => {
                    Some(Some((Action::Rollback, subject, Some(target))))
                }
                (Some(CommandKind::Rollback), ..) => {
                    self.rollback_unavailable(&device, rollout).await?;
                    None
                }
                // A cancel before any offer: nothing to cancel.
                _ => None,
            };
            let topics = (Topic::new(&device, Kind::Cmd), Topic::new(&device, Kind::Offer));
            if let (Some(command), (Ok(cmd_topic), Ok(offer_topic))) = (command, topics) {
                let offer: Option<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(current.clone()))
                    .bind(&device)
                    .fetch_optional(&self.db.pool)
                    .await?;
                self.publisher.publish(offer_topic.to_string(), offer.unwrap_or_default(), true).await?;
                if let Some((action, subject, target)) = command {
                    let body = CommandBody {
                        format: COMMAND_FORMAT_VERSION,
                        device: &device,
                        rollout_id: u64::try_from(rollout).unwrap_or_default(),
                        action,
                        subject,
                        target,
                    };
                    let signed = self.signer.release.sign_command(&body)?;
                    self.publisher.publish(cmd_topic.to_string(), signed, true).await?;
                } else {
                    tracing::info!(device, rollout, state, "rollback not sent: the attempt no longer waits for it");
                }
            }
            sqlx::query("UPDATE commands SET sent_at = $1 WHERE id = $2")
                .bind(self.db.now().await?)
                .bind(id)
                .execute(&self.db.pool)
                .await?;
        }
        Ok(())
    }

    /// A rollback no device could obey (its commit named no model to return to: it had
    /// none, or an agent before signed commands) ends the attempt here, with the code a
    /// device would have reported.
    async fn rollback_unavailable(&self, device: &str, rollout: i64) -> Result<(), EngineError> {
        let sql = format!(
            "UPDATE attempts SET {}, error_code = $1, updated_at = $2 \
             WHERE device_id = $3 AND rollout_id = $4 AND state = '{}'",
            A::RollbackFailed.set_sql(),
            A::RollingBack
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i32::from(ErrorCode::ROLLBACK_UNAVAILABLE.0))
            .bind(self.db.now().await?)
            .bind(device)
            .bind(rollout)
            .execute(&self.db.pool)
            .await?;
        tracing::warn!(device, rollout, "no rollback target known for the device: rollback_failed");
        Ok(())
    }
}
