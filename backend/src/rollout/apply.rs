//! Decisions executed. Every write is a compare-and-set: it names the state it expects
//! in its `WHERE`, so a decision taken on a snapshot another replica (or an operator)
//! has since changed does nothing, and the audit event is written only by the write
//! that won, in its transaction.
//!
//! Offers are claimed before they are published. The offer is first recorded for the
//! chunk service (committed: the device asks for chunks the moment it has the offer);
//! then one transaction locks the rollout's row while it is `running` (an abort or
//! rollback waits for it, and finds it ended otherwise), moves each attempt
//! `pending -> offered`, and queues the retained publish; only then does it commit. So once an abort
//! or a rollback has returned, no offer of that rollout is published again: an offer
//! queued before it is followed by the `cancel` the abort queued, which clears it. If
//! the commit fails after the publish, the attempt is still `pending` and the next step
//! publishes the same (identical, idempotent) envelope again.

use std::collections::HashMap;

use serde_json::json;
use sqlx::AnyConnection;

use super::decide::{Decision, Silence, Snapshot};
use super::states::{AttemptState as A, CohortState, RolloutState, sql_list};
use super::{RolloutError, actions};
use crate::db::Db;
use crate::events;
use crate::mqtt::offers::{publish_offer, record_offer};
use crate::mqtt::publish::Publisher;
use crate::registry::Registry;
use crate::registry::manifests::ManifestRequest;
use crate::signing::Signer;

/// The actor of the engine's own audit events.
pub const ACTOR: &str = "engine";

/// Offers claimed and published per transaction (the rollout's row stays locked that long).
const OFFERS_PER_TX: usize = 256;

/// Why applying a decision failed (the next step decides again).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Signing an offer failed, or a stored document does not parse.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Publishing failed.
    #[error("publishing: {0}")]
    Offer(#[from] crate::mqtt::offers::OfferError),
    /// A message could not be queued.
    #[error(transparent)]
    Publish(#[from] crate::mqtt::publish::PublishError),
    /// A stored envelope is not hex.
    #[error("stored envelope: {0}")]
    Hex(#[from] hex::FromHexError),
}

/// What applying needs.
pub struct Apply<'a> {
    /// The database.
    pub db: &'a Db,
    /// Where offers go.
    pub publisher: &'a dyn Publisher,
    /// Signs the offers.
    pub registry: &'a Registry,
    /// The release key.
    pub signer: &'a Signer,
}

impl Apply<'_> {
    /// Executes `decisions`, taken on `s`.
    pub async fn run(&self, s: &Snapshot, decisions: &[Decision]) -> Result<(), ApplyError> {
        let id = s.rollout.id;
        let subject = format!("rollout:{id}");
        let now = s.now;
        let mut offers = Vec::new();
        let mut timeouts = Vec::new();
        let mut retries = Vec::new();
        for d in decisions {
            match d {
                Decision::TimeOut { device, why, heard_at } => timeouts.push((device, *why, *heard_at)),
                Decision::Retry { device } => retries.push(device.as_str()),
                Decision::Offer { device, base } => offers.push((device.as_str(), base.clone())),
                Decision::Skip { device } => {
                    self.finish_pending(id, device, A::Skipped, now).await?;
                }
                Decision::Incompatible { device, why } => {
                    let mut tx = self.db.begin().await?;
                    if finish_pending(&mut tx, id, device, A::Incompatible, now).await? {
                        let detail = json!({ "device": device, "reason": why });
                        events::record(&mut tx, ACTOR, "attempt.incompatible", &subject, &detail).await?;
                    }
                    tx.commit().await?;
                }
                Decision::StartCohort { cohort, position } => {
                    let mut tx = self.db.begin().await?;
                    if cohort_cas(&mut tx, *cohort, CohortState::Pending, CohortState::Active, now, None).await? {
                        events::record(&mut tx, ACTOR, "cohort.started", &subject, &json!({ "cohort": position }))
                            .await?;
                    }
                    tx.commit().await?;
                }
                Decision::MarkReady { cohort } => {
                    sqlx::query("UPDATE cohorts SET ready_at = $1 WHERE id = $2 AND ready_at IS NULL")
                        .bind(now)
                        .bind(cohort)
                        .execute(&self.db.pool)
                        .await?;
                }
                Decision::PassCohort { cohort, position } => {
                    let mut tx = self.db.begin().await?;
                    if cohort_cas(&mut tx, *cohort, CohortState::Active, CohortState::Passed, now, None).await? {
                        let detail = json!({ "cohort": position, "tally": s.tally });
                        events::record(&mut tx, ACTOR, "cohort.passed", &subject, &detail).await?;
                    }
                    tx.commit().await?;
                }
                Decision::FailCohort { cohort, position, why, then } => {
                    self.fail(s, *cohort, *position, why, *then).await?;
                }
                Decision::Complete => {
                    let mut tx = self.db.begin().await?;
                    let reason = "every cohort passed";
                    if actions::set_state(
                        &mut tx,
                        id,
                        &[RolloutState::Running],
                        RolloutState::Completed,
                        Some(reason),
                        now,
                    )
                    .await?
                    {
                        // What a retry left unfinished is cancelled (and its offer cleared).
                        let (cancelled, _) = actions::end(&mut tx, id, false, now).await?;
                        let detail = json!({ "reason": reason, "cancelled": cancelled });
                        events::record(&mut tx, ACTOR, "rollout.completed", &subject, &detail).await?;
                    }
                    tx.commit().await?;
                }
            }
        }
        if !timeouts.is_empty() {
            self.time_out(id, &timeouts, now).await?;
        }
        if !retries.is_empty() {
            self.retry(s, &retries).await?;
        }
        if !offers.is_empty() {
            self.offer(s, &offers).await?;
        }
        Ok(())
    }

    async fn finish_pending(&self, id: i64, device: &str, to: A, now: i64) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let done = finish_pending(&mut tx, id, device, to, now).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Times out attempts not heard from since the decision's snapshot.
    async fn time_out(&self, id: i64, timeouts: &[(&String, Silence, i64)], now: i64) -> Result<(), ApplyError> {
        let sql = format!(
            "UPDATE attempts SET {}, updated_at = $1 WHERE rollout_id = $2 AND device_id = $3 AND state IN {} \
             AND updated_at <= $4 AND NOT EXISTS (SELECT 1 FROM device_reports r WHERE r.device_id = $3 \
             AND r.rollout_id = $2 AND r.received_at > $4)",
            A::TimedOut.set_sql(),
            sql_list(A::IN_FLIGHT)
        );
        let mut tx = self.db.begin().await?;
        let (mut stuck, mut offline) = (Vec::new(), Vec::new());
        for &(device, why, heard_at) in timeouts {
            let moved = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now)
                .bind(id)
                .bind(device)
                .bind(heard_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 1 {
                match why {
                    Silence::Stuck => stuck.push(device),
                    Silence::Offline => offline.push(device),
                }
            }
        }
        if !stuck.is_empty() || !offline.is_empty() {
            let detail = json!({ "devices": stuck.len() + offline.len(), "silent": stuck, "offline": offline });
            events::record(&mut tx, ACTOR, "attempts.timed_out", &format!("rollout:{id}"), &detail).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sends timed-out devices their offer again (claimed like a first offer).
    async fn retry(&self, s: &Snapshot, devices: &[&str]) -> Result<(), ApplyError> {
        let id = s.rollout.id;
        // The offers they hold (recorded for the chunk service when first offered).
        let mut envelopes = Vec::new();
        for &device in devices {
            let envelope: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT o.envelope FROM attempts a JOIN offers o ON o.manifest_sha256 = a.manifest_sha256 \
                 WHERE a.rollout_id = $1 AND a.device_id = $2",
            )
            .bind(id)
            .bind(device)
            .fetch_optional(&self.db.pool)
            .await?;
            if let Some(envelope) = envelope {
                envelopes.push((device, envelope));
            }
        }
        let mut tx = self.db.begin().await?;
        if !lock_running(&mut tx, id).await? {
            return Ok(());
        }
        let sql = format!(
            "UPDATE attempts SET {}, retries = retries + 1, updated_at = $1 WHERE rollout_id = $2 AND device_id = $3 \
             AND state = '{}' AND retries < $4",
            A::Offered.set_sql(),
            A::TimedOut
        );
        for (device, envelope) in &envelopes {
            let claimed = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(s.now)
                .bind(id)
                .bind(*device)
                .bind(i64::from(s.rollout.gates.max_retries))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if claimed == 1 {
                publish_offer(self.publisher, device, envelope).await?;
            }
        }
        events::record(&mut tx, ACTOR, "attempts.retried", &format!("rollout:{id}"), &json!({ "devices": devices }))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims and publishes offers, in transactions that hold the rollout `running`.
    async fn offer(&self, s: &Snapshot, offers: &[(&str, Option<String>)]) -> Result<(), ApplyError> {
        let r = &s.rollout;
        // Signed before any transaction: signing writes the offer row itself.
        let mut signed: HashMap<Option<String>, (Vec<u8>, String, bool)> = HashMap::new();
        for (_, base) in offers {
            if signed.contains_key(base) {
                continue;
            }
            let request = ManifestRequest {
                base_sha256: base.clone(),
                rollout_id: Some(u64::try_from(r.id).unwrap_or_default()),
                expires_at: None,
            };
            let m = self
                .registry
                .sign(self.signer, &r.model, &r.version, &request, ACTOR)
                .await
                .map_err(RolloutError::from)?;
            signed.insert(base.clone(), (hex::decode(&m.envelope_hex)?, m.manifest_sha256, m.delta.is_some()));
        }
        let claim = format!(
            "UPDATE attempts SET {}, offered_at = COALESCE(offered_at, $1), manifest_sha256 = $2, base_sha256 = $3, \
             delta = $4, updated_at = $1 WHERE rollout_id = $5 AND device_id = $6 AND state = '{}'",
            A::Offered.set_sql(),
            A::Pending
        );
        for batch in offers.chunks(OFFERS_PER_TX) {
            // Recorded for the chunk service and committed before any of them goes out.
            let mut tx = self.db.begin().await?;
            for (device, base) in batch {
                if let Some((envelope, _, _)) = signed.get(base) {
                    record_offer(&mut tx, device, envelope, s.now).await?;
                }
            }
            tx.commit().await?;
            let mut tx = self.db.begin().await?;
            if !lock_running(&mut tx, r.id).await? {
                return Ok(()); // paused or ended meanwhile: nothing is offered
            }
            for (device, base) in batch {
                let Some((envelope, manifest, delta)) = signed.get(base) else { continue };
                let claimed = sqlx::query(sqlx::AssertSqlSafe(claim.clone()))
                    .bind(s.now)
                    .bind(manifest)
                    .bind(base.clone())
                    .bind(i32::from(*delta))
                    .bind(r.id)
                    .bind(*device)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 1 {
                    publish_offer(self.publisher, device, envelope).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Fails the cohort and moves the rollout as its gates say.
    async fn fail(
        &self,
        s: &Snapshot,
        cohort: i64,
        position: i32,
        why: &str,
        then: RolloutState,
    ) -> Result<(), ApplyError> {
        let id = s.rollout.id;
        let subject = format!("rollout:{id}");
        let mut tx = self.db.begin().await?;
        if cohort_cas(&mut tx, cohort, CohortState::Active, CohortState::Failed, s.now, Some(why)).await? {
            let detail = json!({ "cohort": position, "reason": why, "tally": s.tally });
            events::record(&mut tx, ACTOR, "cohort.failed", &subject, &detail).await?;
            // People count cohorts from 1 (positions in the API are 0-based).
            let reason = format!("cohort {} failed its gates: {why}", position + 1);
            if actions::set_state(&mut tx, id, &[RolloutState::Running], then, Some(&reason), s.now).await? {
                let mut detail = json!({ "reason": reason });
                if then != RolloutState::Paused {
                    let (cancelled, rolling_back) =
                        actions::end(&mut tx, id, then == RolloutState::RolledBack, s.now).await?;
                    detail["cancelled"] = cancelled.into();
                    detail["rolling_back"] = rolling_back.0.into();
                    detail["superseded"] = rolling_back.1.into();
                }
                let kind = match then {
                    RolloutState::Aborted => "rollout.aborted",
                    RolloutState::RolledBack => "rollout.rolled_back",
                    _ => "rollout.paused",
                };
                events::record(&mut tx, ACTOR, kind, &subject, &detail).await?;
            }
        }
        tx.commit().await?;
        tracing::info!(rollout = id, cohort = position, "cohort failed: {why}");
        Ok(())
    }
}

/// Locks the rollout's row for the transaction if it is `running`; false otherwise.
/// An operator's action (an `UPDATE` of the same row) waits for the transaction.
async fn lock_running(tx: &mut AnyConnection, id: i64) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query("UPDATE rollouts SET updated_at = updated_at WHERE id = $1 AND state = $2")
        .bind(id)
        .bind(RolloutState::Running.as_str())
        .execute(tx)
        .await?
        .rows_affected();
    Ok(locked == 1)
}

/// Moves a pending attempt to a finished state; whether it did.
async fn finish_pending(tx: &mut AnyConnection, id: i64, device: &str, to: A, now: i64) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE attempts SET {}, updated_at = $1 WHERE rollout_id = $2 AND device_id = $3 AND state = '{}'",
        to.set_sql(),
        A::Pending
    );
    let moved = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(id).bind(device).execute(tx).await?;
    Ok(moved.rows_affected() == 1)
}

/// Moves a cohort from `from` to `to`; whether this call did.
async fn cohort_cas(
    tx: &mut AnyConnection,
    cohort: i64,
    from: CohortState,
    to: CohortState,
    now: i64,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let column = if to == CohortState::Active { "started_at" } else { "finished_at" };
    let sql = format!(
        "UPDATE cohorts SET state = $1, {column} = $2, reason = COALESCE($3, reason) WHERE id = $4 AND state = $5"
    );
    let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(now)
        .bind(reason)
        .bind(cohort)
        .bind(from.as_str())
        .execute(tx)
        .await?;
    Ok(moved.rows_affected() == 1)
}
