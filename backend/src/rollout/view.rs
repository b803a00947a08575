//! What the API shows of a rollout: its documents, and per cohort the tally of its
//! devices and each gate's current value — computed from the attempts on every read,
//! so the view and the engine can never disagree.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};
use utoipa::ToSchema;

use super::gates::{GateView, Tally, judge};
use super::states::{AttemptState as A, CohortState, RolloutState};
use super::{Gates, Plan, RolloutError, Selector};
use crate::db::Db;

/// A rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutView {
    /// Id.
    pub id: i64,
    /// Model name.
    pub model: String,
    /// The version rolled out.
    pub version: String,
    /// `running`, `paused`, `completed`, `aborted`, `rolled_back`.
    pub state: String,
    /// Why it is paused or ended.
    pub reason: Option<String>,
    /// The next cohort is waiting for `approve`.
    pub awaiting_approval: bool,
    /// Which devices.
    pub selector: Selector,
    /// Cohorts and approval.
    pub plan: Plan,
    /// When a cohort passes.
    pub gates: Gates,
    /// Who created it.
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Per cohort progress and gates.
    pub cohorts: Vec<CohortView>,
}

/// A cohort's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortView {
    /// 0-based.
    pub position: i32,
    /// `pending`, `active`, `passed`, `failed`.
    pub state: String,
    /// Devices in it.
    pub size: i64,
    /// Unix milliseconds.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Why it failed, or who accepted it.
    pub reason: Option<String>,
    /// Devices per outcome, and the measured means.
    pub tally: Tally,
    /// Each gate's limit and value.
    pub gates: Vec<GateView>,
}

/// Whose attempts to tally.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Of {
    /// Every cohort of a rollout (the view).
    Rollout(i64),
    /// One cohort (the engine judges the active one; the `attempts_cohort` index serves it).
    Cohort(i64),
}

/// Per cohort id: what its devices did.
pub(crate) async fn tallies(db: &Db, of: Of) -> Result<HashMap<i64, Tally>, sqlx::Error> {
    let (column, id) = match of {
        Of::Rollout(id) => ("rollout_id", id),
        Of::Cohort(id) => ("cohort_id", id),
    };
    let mut out: HashMap<i64, Tally> = HashMap::new();
    // An unfinished attempt whose device is offline is "waiting: offline".
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT a.cohort_id, a.state, d.online, COUNT(*) FROM attempts a JOIN devices d ON d.id = a.device_id \
         WHERE a.{column} = $1 GROUP BY a.cohort_id, a.state, d.online"
    )))
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    for r in rows {
        let t = out.entry(r.try_get(0)?).or_default();
        let n = r.try_get::<i64, _>(3)? as u64;
        t.size += n;
        let state: String = r.try_get(1)?;
        let online = r.try_get::<i32, _>(2)? != 0;
        match A::parse(&state) {
            Some(s) if s.in_flight() && !online => t.offline += n,
            Some(A::Pending) => t.pending += n,
            Some(s) if s.in_flight() => t.in_progress += n,
            Some(A::Committed) => t.committed += n,
            Some(A::Skipped) => t.skipped += n,
            Some(A::Rejected) => t.rejected += n,
            Some(A::Reverted) => t.reverted += n,
            Some(A::TimedOut) => t.timed_out += n,
            Some(A::Incompatible) => t.incompatible += n,
            _ => t.other += n,
        }
    }
    // Means over the devices that measured the new model (committed or not).
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT cohort_id, COUNT(accuracy_permille), CAST(AVG(accuracy_permille) AS DOUBLE PRECISION), \
         CAST(AVG(prev_accuracy_permille - accuracy_permille) AS DOUBLE PRECISION), \
         CAST(AVG(CASE WHEN prev_latency_us IS NOT NULL THEN latency_us END) AS DOUBLE PRECISION), \
         CAST(AVG(CASE WHEN latency_us IS NOT NULL THEN prev_latency_us END) AS DOUBLE PRECISION) \
         FROM attempts WHERE {column} = $1 AND accuracy_permille IS NOT NULL GROUP BY cohort_id"
    )))
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    for r in rows {
        let t = out.entry(r.try_get(0)?).or_default();
        t.measured = r.try_get::<i64, _>(1)? as u64;
        t.mean_accuracy_permille = r.try_get(2)?;
        t.mean_accuracy_drop_permille = r.try_get(3)?;
        let (new, old): (Option<f64>, Option<f64>) = (r.try_get(4)?, r.try_get(5)?);
        t.latency_increase_permille = match (new, old) {
            (Some(new), Some(old)) if old > 0.0 => Some((new - old) * 1000.0 / old),
            _ => None,
        };
    }
    Ok(out)
}

const COLUMNS: &str = "r.id, m.name, v.version, r.state, r.reason, r.selector, r.plan, r.gates, r.created_by, \
                       r.created_at, r.updated_at, r.approved_through";

pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, RolloutError> {
    serde_json::from_str(json).map_err(|e| RolloutError::Invalid(format!("stored {what}: {e}")))
}

/// Rollouts newest first, from before `before` (an id), with their cohorts.
pub async fn list(db: &Db, before: Option<i64>, limit: u32) -> Result<Vec<RolloutView>, RolloutError> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM rollouts WHERE id < $1 ORDER BY id DESC LIMIT $2")
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&db.pool)
        .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(load(db, id).await?);
    }
    Ok(out)
}

/// One rollout.
pub async fn load(db: &Db, id: i64) -> Result<RolloutView, RolloutError> {
    let r = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rollouts r JOIN model_versions v ON v.id = r.version_id \
         JOIN models m ON m.id = v.model_id WHERE r.id = $1"
    )))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| RolloutError::NotFound(format!("rollout {id}")))?;
    let gates: Gates = parse("gates", &r.try_get::<String, _>(7)?)?;
    let plan: Plan = parse("plan", &r.try_get::<String, _>(6)?)?;
    let state: String = r.try_get(3)?;
    let approved: i32 = r.try_get(11)?;
    let tallies = tallies(db, Of::Rollout(id)).await?;
    let rows = sqlx::query(
        "SELECT id, position, state, size, started_at, finished_at, reason FROM cohorts WHERE rollout_id = $1 \
         ORDER BY position",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    let mut cohorts = Vec::with_capacity(rows.len());
    for c in rows {
        let tally = tallies.get(&c.try_get::<i64, _>(0)?).cloned().unwrap_or_default();
        let (_, gate_views) = judge(&gates, &tally);
        cohorts.push(CohortView {
            position: c.try_get(1)?,
            state: c.try_get(2)?,
            size: c.try_get(3)?,
            started_at: c.try_get(4)?,
            finished_at: c.try_get(5)?,
            reason: c.try_get(6)?,
            tally,
            gates: gate_views,
        });
    }
    let next = cohorts.iter().find(|c| c.state != CohortState::Passed.as_str());
    let awaiting_approval = plan.approval
        && state == RolloutState::Running.as_str()
        && next.is_some_and(|c| c.state == CohortState::Pending.as_str() && c.position > 0 && c.position > approved);
    Ok(RolloutView {
        id,
        model: r.try_get(1)?,
        version: r.try_get(2)?,
        state,
        reason: r.try_get(4)?,
        awaiting_approval,
        selector: parse("selector", &r.try_get::<String, _>(5)?)?,
        plan,
        gates,
        created_by: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        cohorts,
    })
}

/// A device's part in one rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// The rollout.
    pub rollout_id: i64,
    /// Model name.
    pub model: String,
    /// The version offered.
    pub version: String,
    /// The device.
    pub device_id: String,
    /// Its cohort (0-based).
    pub cohort: i32,
    /// One of `pending`, `offered`, `accepted`, `downloading`, `verified`, `validated`,
    /// `committed`, `rejected`, `timed_out`, `skipped`, `incompatible`, `cancelled`,
    /// `rolling_back`, `rolled_back`, `rollback_failed`, `superseded`, `reverted`.
    pub state: String,
    /// The device is offline (an unfinished attempt then waits: offline).
    pub device_online: bool,
    /// The image it ran when offered.
    pub base_sha256: Option<String>,
    /// Offered a patch (true) or the full image (false); absent before the offer.
    pub delta: Option<bool>,
    /// Why it failed (mota-proto error code).
    pub error_code: Option<i32>,
    /// The error code's name (`accuracy_drop`, `not_confirmed` for a `reverted` attempt,
    /// ...), absent for a code this backend does not know.
    pub error: Option<String>,
    /// On-device accuracy of the new model, ‰.
    pub accuracy_permille: Option<i32>,
    /// Of the previous model, on the same set.
    pub prev_accuracy_permille: Option<i32>,
    /// Mean inference latency of the new model, µs.
    pub latency_us: Option<i64>,
    /// Of the previous model.
    pub prev_latency_us: Option<i64>,
    /// Unix milliseconds.
    pub offered_at: Option<i64>,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// The name of a stored error code, if it is one mota-proto names.
fn error_name(code: Option<i32>) -> Option<String> {
    let code = u16::try_from(code?).ok()?;
    mota_proto::message::ErrorCode(code).name().map(str::to_owned)
}

/// A device's attempts (`by_device`, `key` its id) or a rollout's (`key` its id), in
/// `state` if given, newest rollout first, then by device; at most `limit`, after the
/// (rollout, device) cursor.
pub(crate) async fn attempts(
    db: &Db,
    by_device: bool,
    key: &str,
    state: Option<&str>,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<AttemptView>, RolloutError> {
    let mut filter = if by_device { "a.device_id = $1" } else { "a.rollout_id = CAST($1 AS BIGINT)" }.to_owned();
    if state.is_some() {
        filter.push_str(" AND a.state = $5");
    }
    let (after_rollout, after_device) = after.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT a.rollout_id, m.name, v.version, a.device_id, c.position, a.state, a.base_sha256, a.delta, \
         a.error_code, a.accuracy_permille, a.prev_accuracy_permille, a.latency_us, a.prev_latency_us, \
         a.offered_at, a.updated_at, d.online \
         FROM attempts a JOIN devices d ON d.id = a.device_id JOIN rollouts r ON r.id = a.rollout_id JOIN model_versions v ON v.id = r.version_id \
         JOIN models m ON m.id = v.model_id JOIN cohorts c ON c.id = a.cohort_id \
         WHERE {filter} AND (a.rollout_id < $2 OR (a.rollout_id = $2 AND a.device_id > $3)) \
         ORDER BY a.rollout_id DESC, a.device_id LIMIT $4"
    );
    let mut query =
        sqlx::query(AssertSqlSafe(sql)).bind(key).bind(after_rollout).bind(after_device).bind(i64::from(limit));
    if let Some(state) = state {
        query = query.bind(state);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            Ok(AttemptView {
                rollout_id: r.try_get(0)?,
                model: r.try_get(1)?,
                version: r.try_get(2)?,
                device_id: r.try_get(3)?,
                cohort: r.try_get(4)?,
                state: r.try_get(5)?,
                base_sha256: r.try_get(6)?,
                delta: r.try_get::<Option<i32>, _>(7)?.map(|d| d != 0),
                error_code: r.try_get(8)?,
                error: error_name(r.try_get(8)?),
                accuracy_permille: r.try_get(9)?,
                prev_accuracy_permille: r.try_get(10)?,
                latency_us: r.try_get(11)?,
                prev_latency_us: r.try_get(12)?,
                offered_at: r.try_get(13)?,
                updated_at: r.try_get(14)?,
                device_online: r.try_get::<i32, _>(15)? != 0,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(RolloutError::Db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_when_known() {
        assert_eq!(error_name(Some(305)).as_deref(), Some("not_confirmed"));
        assert_eq!(error_name(Some(302)).as_deref(), mota_proto::message::ErrorCode(302).name());
        assert_eq!(error_name(Some(9_999)), None);
        assert_eq!(error_name(Some(-1)), None);
        assert_eq!(error_name(None), None);
    }
}
