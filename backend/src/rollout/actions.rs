//! What an operator does to a running rollout, and what a broken gate does on its own.
//!
//! Each action is one transaction that checks the state it starts from in its UPDATE's
//! WHERE clause (so two replicas, or an operator racing the engine, cannot both win) and
//! writes its audit event. Messages to devices are only queued here, in the `commands`
//! outbox; the engine publishes them, so an action never waits on the broker and a
//! crash between the commit and the publish loses nothing.

use sqlx::AnyConnection;

use super::RolloutError;
use super::states::{AttemptState as A, CohortState, CommandKind, RolloutState as R, sql_list};
use crate::db::Db;
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
    let now = db.now().await?;
    let mut tx = db.begin().await?;
    let (state, old_reason): (String, Option<String>) =
        sqlx::query_as("SELECT state, reason FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| RolloutError::NotFound(format!("rollout {id}")))?;
    let reason =
        reason.map_or_else(|| format!("{} by {actor}", action.event().trim_start_matches("rollout.")), str::to_owned);
    let mut detail = serde_json::json!({ "reason": reason, "from": state });
    match action {
        Action::Pause => {
            if !set_state(&mut tx, id, &[R::Running], R::Paused, Some(&reason), now).await? {
                return Err(conflict(id, &state, action));
            }
        }
        Action::Resume => {
            if !set_state(&mut tx, id, &[R::Paused], R::Running, None, now).await? {
                return Err(conflict(id, &state, action));
            }
            // A cohort stopped by its gates is accepted by the operator who resumes.
            let accepted = sqlx::query(
                "UPDATE cohorts SET state = $1, finished_at = $2, reason = $3 WHERE rollout_id = $4 AND state = $5",
            )
            .bind(CohortState::Passed.as_str())
            .bind(now)
            .bind(format!("accepted by {actor} ({})", old_reason.unwrap_or_default()))
            .bind(id)
            .bind(CohortState::Failed.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            detail["accepted_failed_cohort"] = (accepted > 0).into();
        }
        Action::Approve => {
            if !R::parse(&state).is_some_and(|s| R::LIVE.contains(&s)) {
                return Err(conflict(id, &state, action));
            }
            let next: Option<i32> =
                sqlx::query_scalar("SELECT MIN(position) FROM cohorts WHERE rollout_id = $1 AND state = $2")
                    .bind(id)
                    .bind(CohortState::Pending.as_str())
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
            let (from, to): (&[R], R) = if action == Action::Abort {
                (R::LIVE, R::Aborted)
            } else {
                (&[R::Running, R::Paused, R::Completed, R::Aborted], R::RolledBack)
            };
            if !set_state(&mut tx, id, from, to, Some(&reason), now).await? {
                return Err(conflict(id, &state, action));
            }
            let (cancelled, (rolled, superseded)) = end(&mut tx, id, action == Action::Rollback, now).await?;
            detail["cancelled"] = cancelled.into();
            detail["rolling_back"] = rolled.into();
            detail["superseded"] = superseded.into();
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
    from: &[R],
    to: R,
    reason: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE rollouts SET state = $1, reason = $2, updated_at = $3 WHERE id = $4 AND state IN {}",
        sql_list(from)
    );
    let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(changed == 1)
}

/// Ends a rollout's attempts: unfinished ones are cancelled, and the devices that may
/// hold its offer told (a `cancel`, which also clears the retained offer); with
/// `rollback`, devices that committed it are sent a `rollback`, except those that
/// committed a later rollout since (or run something else now): sending them back would
/// replace the newer model, so their attempt is `superseded` instead. Returns how many
/// were cancelled, and how many are rolling back and superseded.
pub(crate) async fn end(
    conn: &mut AnyConnection,
    id: i64,
    rollback: bool,
    now: i64,
) -> Result<(u64, (u64, u64)), sqlx::Error> {
    // Pending attempts were never published: cancelled without a word. A device that
    // rejected the offer, or committed and then reverted it, keeps it retained; its
    // `cancel` (a no-op on the device) makes the engine reset it, so a later boot cannot
    // find the withdrawn offer again.
    tell(conn, id, A::HOLDS_OFFER, CommandKind::Cancel, now).await?;
    tell(conn, id, &[A::Rejected, A::Reverted], CommandKind::Cancel, now).await?;
    let cancelled = move_to(conn, id, A::UNFINISHED, A::Cancelled, now).await?;
    if !rollback {
        return Ok((cancelled, (0, 0)));
    }
    // Committed something later, or runs something other than this rollout's image.
    let moved_on = format!(
        "(EXISTS (SELECT 1 FROM attempts b WHERE b.device_id = attempts.device_id AND b.rollout_id > attempts.rollout_id \
         AND b.state IN {later}) OR NOT EXISTS (SELECT 1 FROM devices d JOIN rollouts r ON r.id = attempts.rollout_id \
         JOIN model_versions v ON v.id = r.version_id WHERE d.id = attempts.device_id \
         AND d.running_sha256 = v.image_sha256))",
        later = sql_list(&[A::Committed, A::RollingBack, A::RollbackFailed, A::Superseded])
    );
    let superseded = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE attempts SET {}, updated_at = $1 WHERE rollout_id = $2 AND state = '{}' AND {moved_on}",
        A::Superseded.set_sql(),
        A::Committed
    )))
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    tell(conn, id, &[A::Committed], CommandKind::Rollback, now).await?;
    let rolled = move_to(conn, id, &[A::Committed], A::RollingBack, now).await?;
    Ok((cancelled, (rolled, superseded)))
}

/// Queues `action` for the devices of rollout `id` whose attempt is in one of `from`.
async fn tell(conn: &mut AnyConnection, id: i64, from: &[A], action: CommandKind, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO commands (device_id, rollout_id, action, created_at) \
         SELECT device_id, rollout_id, $3, $1 FROM attempts WHERE rollout_id = $2 AND state IN {} ORDER BY device_id",
        sql_list(from)
    )))
    .bind(now)
    .bind(id)
    .bind(action.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves rollout `id`'s attempts in one of `from` to `to`; how many.
async fn move_to(conn: &mut AnyConnection, id: i64, from: &[A], to: A, now: i64) -> Result<u64, sqlx::Error> {
    let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE attempts SET {}, updated_at = $1 WHERE rollout_id = $2 AND state IN {}",
        to.set_sql(),
        sql_list(from)
    )))
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(moved.rows_affected())
}
