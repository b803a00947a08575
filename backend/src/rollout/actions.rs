//! What an operator does to a running rollout, and what a broken gate does on its own.
//!
//! Each action is one transaction that checks the state it starts from in its UPDATE's
//! WHERE clause (so two replicas, or an operator racing the engine, cannot both win) and
//! writes its audit event. Messages to devices are only queued here, in the `commands`
//! outbox; the engine publishes them, so an action never waits on the broker and a
//! crash between the commit and the publish loses nothing.

use sqlx::AnyConnection;

use super::{RolloutError, rollout_state as rs, states};
use crate::db::{Db, now_ms};
use crate::events;

/// An operator's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop offering new cohorts; in-flight devices finish.
    Pause,
    /// Continue; a cohort that failed its gates is accepted as passed.
    Resume,
    /// Let the next cohort start (plans with `approval`).
    Approve,
    /// End the rollout; cancel what has not finished.
    Abort,
    /// End it and send every device that took the version back to its previous model.
    Rollback,
}

impl Action {
    /// The audit event kind.
    pub fn event(self) -> &'static str {
        match self {
            Self::Pause => "rollout.paused",
            Self::Resume => "rollout.resumed",
            Self::Approve => "rollout.approved",
            Self::Abort => "rollout.aborted",
            Self::Rollback => "rollout.rolled_back",
        }
    }
}

fn conflict(id: i64, state: &str, action: Action) -> RolloutError {
    RolloutError::Conflict(format!("rollout {id} is {state}: cannot {action:?}").to_lowercase())
}

/// Applies `action` to rollout `id` on behalf of `actor`.
pub async fn apply(db: &Db, id: i64, action: Action, actor: &str, reason: Option<&str>) -> Result<(), RolloutError> {
    let mut tx = db.begin().await?;
    let (state, old_reason): (String, Option<String>) =
        sqlx::query_as("SELECT state, reason FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| RolloutError::NotFound(format!("rollout {id}")))?;
    let now = now_ms();
    let reason =
        reason.map_or_else(|| format!("{} by {actor}", action.event().trim_start_matches("rollout.")), str::to_owned);
    let mut detail = serde_json::json!({ "reason": reason, "from": state });
    match action {
        Action::Pause => {
            if !set_state(&mut tx, id, &[rs::RUNNING], rs::PAUSED, Some(&reason)).await? {
                return Err(conflict(id, &state, action));
            }
        }
        Action::Resume => {
            if !set_state(&mut tx, id, &[rs::PAUSED], rs::RUNNING, None).await? {
                return Err(conflict(id, &state, action));
            }
            // A cohort stopped by its gates is accepted by the operator who resumes.
            let accepted = sqlx::query(
                "UPDATE cohorts SET state = 'passed', finished_at = $1, reason = $2 WHERE rollout_id = $3 AND state = 'failed'",
            )
            .bind(now)
            .bind(format!("accepted by {actor} ({})", old_reason.unwrap_or_default()))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            detail["accepted_failed_cohort"] = (accepted > 0).into();
        }
        Action::Approve => {
            if state != rs::RUNNING && state != rs::PAUSED {
                return Err(conflict(id, &state, action));
            }
            let next: Option<i32> =
                sqlx::query_scalar("SELECT MIN(position) FROM cohorts WHERE rollout_id = $1 AND state = 'pending'")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            let Some(next) = next else {
                return Err(RolloutError::Conflict(format!("rollout {id} has no cohort left to approve")));
            };
            sqlx::query(
                "UPDATE rollouts SET approved_through = $1, updated_at = $2 WHERE id = $3 AND approved_through < $1",
            )
            .bind(next)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            detail["cohort"] = next.into();
        }
        Action::Abort | Action::Rollback => {
            let from: &[&str] = if action == Action::Abort {
                &[rs::RUNNING, rs::PAUSED]
            } else {
                &[rs::RUNNING, rs::PAUSED, rs::COMPLETED, rs::ABORTED]
            };
            let to = if action == Action::Abort { rs::ABORTED } else { rs::ROLLED_BACK };
            if !set_state(&mut tx, id, from, to, Some(&reason)).await? {
                return Err(conflict(id, &state, action));
            }
            let (cancelled, rolled) = end(&mut tx, id, action == Action::Rollback).await?;
            detail["cancelled"] = cancelled.into();
            detail["rolling_back"] = rolled.into();
        }
    }
    events::record(&mut tx, actor, action.event(), &format!("rollout:{id}"), &detail).await?;
    tx.commit().await?;
    Ok(())
}

/// Moves the rollout from one of `from` to `to`; false if it was in none of them.
pub(crate) async fn set_state(
    conn: &mut AnyConnection,
    id: i64,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let list = from.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let sql =
        format!("UPDATE rollouts SET state = $1, reason = $2, updated_at = $3 WHERE id = $4 AND state IN ({list})");
    let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to)
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(changed == 1)
}

/// Ends a rollout's attempts: never-offered ones are cancelled here; offered ones are
/// cancelled and their devices told (a `cancel`, which also clears the retained offer);
/// with `rollback`, devices that committed are sent a `rollback`. Returns how many of
/// each.
pub(crate) async fn end(conn: &mut AnyConnection, id: i64, rollback: bool) -> Result<(u64, u64), sqlx::Error> {
    let now = now_ms();
    let in_flight = "('offered', 'accepted', 'downloading', 'verified', 'validated', 'timed_out')";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO commands (device_id, rollout_id, action, created_at) \
         SELECT device_id, rollout_id, 'cancel', $1 FROM attempts WHERE rollout_id = $2 AND state IN {in_flight} \
         ORDER BY device_id"
    )))
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let cancelled = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE attempts SET state = $1, updated_at = $2 WHERE rollout_id = $3 AND (state = 'pending' OR state IN {in_flight})"
    )))
    .bind(states::CANCELLED)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let mut rolled = 0;
    if rollback {
        sqlx::query(
            "INSERT INTO commands (device_id, rollout_id, action, created_at) \
             SELECT device_id, rollout_id, 'rollback', $1 FROM attempts WHERE rollout_id = $2 AND state = $3 \
             ORDER BY device_id",
        )
        .bind(now)
        .bind(id)
        .bind(states::COMMITTED)
        .execute(&mut *conn)
        .await?;
        rolled = sqlx::query("UPDATE attempts SET state = $1, updated_at = $2 WHERE rollout_id = $3 AND state = $4")
            .bind(states::ROLLING_BACK)
            .bind(now)
            .bind(id)
            .bind(states::COMMITTED)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok((cancelled, rolled))
}
