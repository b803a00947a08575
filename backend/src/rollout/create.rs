//! Creating a rollout: who is in it, in which cohort, and what each device will be sent.
//!
//! Membership is fixed at creation, like a hawkBit static rollout: one attempt row per
//! selected device, so "was this device ever offered this version" has one answer, and a
//! restarted or second replica finds the same cohorts. Canaries go first; the others are
//! ordered by SHA-256(seed, 0, device id), a stable hash that does not follow device
//! ids, registration order or network (hawkBit orders by creation, which users report
//! clumps one site into one group). A dry run answers the same computation without
//! writing anything, with how many devices would get a patch rather than a full image.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use utoipa::ToSchema;

use super::decide::{DeviceSnap, RolloutSnap, incompatible};
use super::states::{AttemptState as A, CohortState, CommandKind, RolloutState, sql_list};
use super::{CohortSpec, Gates, Plan, RolloutError, Selector};
use crate::db::Db;
use crate::events;

/// A rollout to create (or preview, with `dry_run`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// Model name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub model: String,
    /// The version to roll out.
    #[schema(pattern = "^[A-Za-z0-9._+-]{1,32}$")]
    pub version: String,
    /// Which devices.
    #[serde(default)]
    pub selector: Selector,
    /// Cohorts and approval.
    pub plan: Plan,
    /// When a cohort passes.
    #[serde(default)]
    pub gates: Gates,
    /// Only compute the cohorts; create nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Take selected devices out of the live rollouts still updating them (their attempts
    /// are cancelled and the devices told). Without it, such devices make the request
    /// fail with a conflict naming the rollout.
    #[serde(default)]
    pub supersede: bool,
}

/// What a rollout would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Devices selected.
    pub population: u64,
    /// Cohort sizes, in order.
    pub cohorts: Vec<CohortPreview>,
    /// Devices already running the version (they will be marked `skipped`).
    pub already_running: u64,
    /// Devices whose running image has a computed patch to the version.
    pub delta: u64,
    /// Devices that would get the full image (no patch from what they run, or unknown).
    pub full: u64,
    /// Devices offline now: they find their offer when they reconnect, and are "waiting:
    /// offline" (not failures) until the gates' offline limit.
    pub offline: u64,
    /// Devices whose hello says they cannot take the version (slot, arena, chunk size):
    /// they will be `incompatible`, never offered, never counted as failures.
    pub incompatible: Vec<Incompatible>,
    /// Devices still updating in another live rollout (creating refuses them unless
    /// `supersede`).
    pub busy: Vec<Busy>,
}

/// A device that cannot take the version, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct Incompatible {
    /// Device id.
    pub device: String,
    /// What it lacks.
    pub reason: String,
}

/// A device in another live rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct Busy {
    /// Device id.
    pub device: String,
    /// The rollout updating it.
    pub rollout: i64,
}

/// One cohort of a preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortPreview {
    /// 0-based.
    pub position: u32,
    /// Devices in it.
    pub size: u64,
    /// Canary devices in it.
    pub canaries: u64,
}

/// The version a rollout ships.
pub(crate) struct Target {
    pub version_id: i64,
    pub class: String,
    pub image_sha256: String,
    /// Slot bytes the image and its validation set take (32-byte aligned set, as stored).
    pub slot_bytes: i64,
    pub arena_bytes: i64,
}

const MAX_COHORTS: usize = 20;

fn check_ident(field: &'static str, value: &str, max: usize) -> Result<(), RolloutError> {
    mota_proto::limits::check_ident(field, value, max).map_err(|e| RolloutError::Invalid(e.to_string()))
}

/// Refuses plans that cannot mean anything.
fn check(new: &NewRollout) -> Result<(), RolloutError> {
    let invalid = |m: String| Err(RolloutError::Invalid(m));
    let plan = &new.plan;
    if plan.cohorts.is_empty() || plan.cohorts.len() > MAX_COHORTS {
        return invalid(format!("a plan has 1 to {MAX_COHORTS} cohorts"));
    }
    let mut last = 0;
    for c in &plan.cohorts {
        match *c {
            CohortSpec::Percent { percent } if percent == 0 || percent > 100 || percent <= last => {
                return invalid("cohort percentages are cumulative: increasing, 1 to 100".into());
            }
            CohortSpec::Percent { percent } => last = percent,
            CohortSpec::Count { count: 0 } => return invalid("a cohort count is at least 1".into()),
            CohortSpec::Count { .. } => {}
        }
    }
    let g = &new.gates;
    if g.max_failure_permille > 1000
        || g.min_accuracy_permille.is_some_and(|v| v > 1000)
        || g.max_accuracy_drop_permille.is_some_and(|v| v > 1000)
    {
        return invalid("permille values are at most 1000".into());
    }
    if g.min_reports == 0 {
        return invalid("min_reports is at least 1".into());
    }
    if g.stuck_timeout_s == 0 || g.stuck_timeout_s > 30 * 86400 || g.soak_s > 30 * 86400 {
        return invalid("stuck_timeout_s is 1 s to 30 days and soak_s at most 30 days".into());
    }
    if g.offline_limit_s == 0 || g.offline_limit_s > 30 * 86400 || g.max_retries > 10 {
        return invalid("offline_limit_s is 1 s to 30 days and max_retries at most 10".into());
    }
    if g.max_latency_increase_permille.is_some_and(|v| v > 100_000) {
        return invalid("max_latency_increase_permille is at most 100000".into());
    }
    let s = &new.selector;
    if s.tags.len() > 16 || s.ids.len() > 10_000 || plan.canary.len() > 1000 {
        return invalid("at most 16 tags, 10000 ids and 1000 canaries".into());
    }
    for t in &s.tags {
        check_ident("tag", t, 64)?;
    }
    for id in s.ids.iter().chain(&plan.canary) {
        check_ident("device id", id, mota_proto::limits::MAX_DEVICE_ID_LEN)?;
    }
    if plan.seed.as_ref().is_some_and(|s| s.len() > 64) {
        return invalid("seed is at most 64 bytes".into());
    }
    Ok(())
}

/// The stable hash that orders non-canary devices.
fn rank(seed: &str, device: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(device.as_bytes());
    h.finalize().into()
}

/// Cohort sizes for `population` devices (the first at least `canaries`).
pub(crate) fn sizes(cohorts: &[CohortSpec], population: u64, canaries: u64) -> Result<Vec<u64>, RolloutError> {
    let mut out = Vec::with_capacity(cohorts.len());
    let mut reached = 0u64;
    for (i, c) in cohorts.iter().enumerate() {
        let mut target = match *c {
            CohortSpec::Percent { percent } => (population * u64::from(percent)).div_ceil(100),
            CohortSpec::Count { count } => reached + u64::from(count),
        }
        .min(population);
        if i == 0 {
            target = target.max(canaries);
        }
        if target <= reached {
            return Err(RolloutError::Invalid(format!(
                "cohort {} would be empty: {reached} of {population} selected devices are already in earlier cohorts",
                i + 1
            )));
        }
        out.push(target - reached);
        reached = target;
    }
    Ok(out)
}

/// The selected devices, in offer order, with what each declared.
async fn members(
    db: &Db,
    new: &NewRollout,
    target: &Target,
    seed: &str,
) -> Result<Vec<(String, DeviceSnap)>, RolloutError> {
    let mut sql = String::from(
        "SELECT d.id, d.running_sha256, d.online, d.last_seen, d.slot_bytes, d.arena_bytes, d.codecs, d.max_chunk \
         FROM devices d WHERE d.device_class = $1",
    );
    for i in 0..new.selector.tags.len() {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = ${})",
            i + 2
        ));
    }
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(&target.class);
    for t in &new.selector.tags {
        query = query.bind(t);
    }
    let rows = query.fetch_all(&db.pool).await?;
    let ids: HashSet<&str> = new.selector.ids.iter().map(String::as_str).collect();
    let mut found: HashMap<String, DeviceSnap> = HashMap::new();
    for r in rows {
        let id: String = r.try_get(0)?;
        if ids.is_empty() || ids.contains(id.as_str()) {
            let device = DeviceSnap {
                running_sha256: r.try_get(1)?,
                online: r.try_get::<i32, _>(2)? != 0,
                last_seen: r.try_get(3)?,
                slot_bytes: r.try_get(4)?,
                arena_bytes: r.try_get(5)?,
                codecs: r.try_get::<Option<i32>, _>(6)?.map(i64::from),
                max_chunk: r.try_get(7)?,
            };
            found.insert(id, device);
        }
    }
    let mut out = Vec::with_capacity(found.len());
    let mut seen = HashSet::new();
    for c in &new.plan.canary {
        let running = found.remove(c).ok_or_else(|| {
            RolloutError::Invalid(format!("canary {c} is not among the selected devices (class {})", target.class))
        })?;
        if seen.insert(c.clone()) {
            out.push((c.clone(), running));
        }
    }
    let mut rest: Vec<_> = found.into_iter().map(|(id, running)| (rank(seed, &id), id, running)).collect();
    rest.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out.extend(rest.into_iter().map(|(_, id, running)| (id, running)));
    Ok(out)
}

pub(crate) async fn target(db: &Db, model: &str, version: &str) -> Result<Target, RolloutError> {
    let row = sqlx::query(
        "SELECT v.id, m.device_class, v.image_sha256, img.size, s.size, v.arena_bytes FROM model_versions v \
         JOIN models m ON m.id = v.model_id JOIN artifacts img ON img.sha256 = v.image_sha256 \
         LEFT JOIN artifacts s ON s.sha256 = v.validation_sha256 WHERE m.name = $1 AND v.version = $2",
    )
    .bind(model)
    .bind(version)
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| RolloutError::NotFound(format!("version {version} of model {model}")))?;
    let image: i64 = row.try_get(3)?;
    let set: Option<i64> = row.try_get(4)?;
    Ok(Target {
        version_id: row.try_get(0)?,
        class: row.try_get(1)?,
        image_sha256: row.try_get(2)?,
        slot_bytes: super::decide::slot_need(image, set),
        arena_bytes: row.try_get(5)?,
    })
}

/// What creating `new` would do, or the id of the rollout it created (`None` for a dry run).
pub async fn create(db: &Db, new: &NewRollout, actor: &str) -> Result<(Preview, Option<i64>), RolloutError> {
    check(new)?;
    let target = target(db, &new.model, &new.version).await?;
    if new.selector.class.as_ref().is_some_and(|c| *c != target.class) {
        return Err(RolloutError::Invalid(format!("model {} is for device class {}", new.model, target.class)));
    }
    let seed = new.plan.seed.clone().unwrap_or_else(|| new.model.clone());
    let members = members(db, new, &target, &seed).await?;
    if members.is_empty() {
        return Err(RolloutError::Invalid("no registered device matches the selector".into()));
    }
    let sizes = sizes(&new.plan.cohorts, members.len() as u64, new.plan.canary.len() as u64)?;
    let bases: HashSet<String> = sqlx::query_scalar("SELECT base_sha256 FROM deltas WHERE version_id = $1")
        .bind(target.version_id)
        .fetch_all(&db.pool)
        .await?
        .into_iter()
        .collect();
    // The same judgement the engine makes before offering (decide::incompatible).
    let needs = RolloutSnap {
        id: 0,
        state: RolloutState::Running,
        model: new.model.clone(),
        version: new.version.clone(),
        plan: new.plan.clone(),
        gates: new.gates.clone(),
        approved_through: 0,
        image_sha256: target.image_sha256.clone(),
        slot_bytes: target.slot_bytes,
        arena_bytes: target.arena_bytes,
    };
    let running = |d: &DeviceSnap| d.running_sha256.as_deref() == Some(target.image_sha256.as_str());
    let incompatible: Vec<Incompatible> = members
        .iter()
        .filter(|(_, d)| !running(d))
        .filter_map(|(id, d)| incompatible(&needs, d).map(|reason| Incompatible { device: id.clone(), reason }))
        .collect();
    let refused: HashSet<&str> = incompatible.iter().map(|i| i.device.as_str()).collect();
    let offered = || members.iter().filter(|(id, d)| !running(d) && !refused.contains(id.as_str()));
    let delta = offered().filter(|(_, d)| d.running_sha256.as_ref().is_some_and(|r| bases.contains(r))).count() as u64;
    let canaries = new.plan.canary.len() as u64;
    let busy = busy(&mut *db.pool.acquire().await?, &members).await?;
    let preview = Preview {
        population: members.len() as u64,
        cohorts: sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| CohortPreview { position: i as u32, size, canaries: if i == 0 { canaries } else { 0 } })
            .collect(),
        already_running: members.iter().filter(|(_, d)| running(d)).count() as u64,
        delta,
        full: offered().count() as u64 - delta,
        offline: members.iter().filter(|(_, d)| !d.online).count() as u64,
        incompatible,
        busy,
    };
    if new.dry_run {
        return Ok((preview, None));
    }
    let id = insert(db, new, &target, &members, &sizes, actor).await?;
    Ok((preview, Some(id)))
}

/// Rows per multi-row INSERT (6 parameters each, well under both engines' limits).
const BATCH: usize = 400;

/// Which of `members` are still in an unfinished attempt (of a live rollout: ending one
/// finishes its attempts).
async fn busy(conn: &mut AnyConnection, members: &[(String, DeviceSnap)]) -> Result<Vec<Busy>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT device_id, rollout_id FROM attempts WHERE open_device IS NOT NULL ORDER BY device_id")
            .fetch_all(conn)
            .await?;
    let wanted: HashSet<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    Ok(rows
        .into_iter()
        .filter(|(d, _)| wanted.contains(d.as_str()))
        .map(|(device, rollout)| Busy { device, rollout })
        .collect())
}

async fn insert(
    db: &Db,
    new: &NewRollout,
    target: &Target,
    members: &[(String, DeviceSnap)],
    sizes: &[u64],
    actor: &str,
) -> Result<i64, RolloutError> {
    let now = db.now().await?;
    let mut tx = db.begin().await?;
    // A device is in at most one unfinished attempt: two rollouts would race for its slot.
    // The unique index on `open_device` enforces it; this names the rollout in the way.
    let busy = busy(&mut tx, members).await?;
    let superseded = if let Some(first) = busy.first() {
        if !new.supersede {
            return Err(RolloutError::Conflict(format!(
                "{} selected devices are still updating in another rollout (e.g. {} in rollout {}); \
                 abort it, wait for it to finish, or create this one with supersede",
                busy.len(),
                first.device,
                first.rollout
            )));
        }
        supersede(&mut tx, &busy, now).await?
    } else {
        0
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO rollouts (version_id, selector, plan, gates, state, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
    )
    .bind(target.version_id)
    .bind(json(&new.selector))
    .bind(json(&new.plan))
    .bind(json(&new.gates))
    .bind(RolloutState::Running.as_str())
    .bind(actor)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let mut start = 0usize;
    for (position, (&size, spec)) in sizes.iter().zip(&new.plan.cohorts).enumerate() {
        let cohort: i64 = sqlx::query_scalar(
            "INSERT INTO cohorts (rollout_id, position, target, state, size) VALUES ($1, $2, $3, $5, $4) \
             RETURNING id",
        )
        .bind(id)
        .bind(position as i32)
        .bind(json(spec))
        .bind(size as i64)
        .bind(CohortState::Pending.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let end = start + size as usize;
        for batch in members[start..end].chunks(BATCH) {
            let values: Vec<String> = (0..batch.len())
                .map(|i| format!("($1, $2, ${}, ${}, '{}', $3, ${})", 4 + 3 * i, 5 + 3 * i, A::Pending, 6 + 3 * i))
                .collect();
            let sql = format!(
                "INSERT INTO attempts (rollout_id, cohort_id, device_id, base_sha256, state, updated_at, open_device) \
                 VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id).bind(cohort).bind(now);
            for (device, d) in batch {
                q = q.bind(device).bind(d.running_sha256.clone()).bind(device);
            }
            if let Err(e) = q.execute(&mut *tx).await {
                // Another rollout took one of these devices since `busy` read them.
                return Err(match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        RolloutError::Conflict("a selected device joined another rollout meanwhile; try again".into())
                    }
                    _ => e.into(),
                });
            }
        }
        start = end;
    }
    let detail = serde_json::json!({
        "model": new.model, "version": new.version, "devices": members.len(), "cohorts": sizes,
        "selector": new.selector, "plan": new.plan, "gates": new.gates, "superseded": superseded,
    });
    events::record(&mut tx, actor, "rollout.created", &format!("rollout:{id}"), &detail).await?;
    tx.commit().await?;
    Ok(id)
}

/// Cancels the `busy` devices' attempts in their other rollouts (the devices that may
/// hold an offer are sent a `cancel`, which also clears it); how many.
async fn supersede(tx: &mut AnyConnection, busy: &[Busy], now: i64) -> Result<u64, sqlx::Error> {
    let command = format!(
        "INSERT INTO commands (device_id, rollout_id, action, created_at) SELECT device_id, rollout_id, '{cancel}', $1 \
         FROM attempts WHERE rollout_id = $2 AND device_id = $3 AND state IN {}",
        sql_list(A::HOLDS_OFFER),
        cancel = CommandKind::Cancel,
    );
    let cancel = format!(
        "UPDATE attempts SET {}, updated_at = $1 WHERE rollout_id = $2 AND device_id = $3 AND state IN {}",
        A::Cancelled.set_sql(),
        sql_list(A::UNFINISHED)
    );
    let mut cancelled = 0;
    for b in busy {
        sqlx::query(AssertSqlSafe(command.clone())).bind(now).bind(b.rollout).bind(&b.device).execute(&mut *tx).await?;
        cancelled += sqlx::query(AssertSqlSafe(cancel.clone()))
            .bind(now)
            .bind(b.rollout)
            .bind(&b.device)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let detail = serde_json::json!({ "device": b.device, "reason": "superseded by a new rollout" });
        events::record(&mut *tx, "engine", "attempt.superseded", &format!("rollout:{}", b.rollout), &detail).await?;
    }
    Ok(cancelled)
}

/// A stored document as JSON (plain structs: serializing cannot fail).
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_percentages_and_counts_become_cohort_sizes() {
        let p = |percent| CohortSpec::Percent { percent };
        let c = |count| CohortSpec::Count { count };
        assert_eq!(sizes(&[p(10), p(50), p(100)], 50, 0).ok(), Some(vec![5, 20, 25]));
        assert_eq!(sizes(&[p(1), p(10), p(100)], 50, 0).ok(), Some(vec![1, 4, 45]), "1 % of 50 rounds up");
        assert_eq!(sizes(&[p(10), p(100)], 50, 8).ok(), Some(vec![8, 42]), "the first cohort holds the canaries");
        assert_eq!(sizes(&[c(3), c(10), p(100)], 50, 0).ok(), Some(vec![3, 10, 37]));
        assert_eq!(sizes(&[c(3), c(10)], 50, 0).ok(), Some(vec![3, 10]), "a plan may cover part of the fleet");
        assert!(sizes(&[p(50), c(5), p(60)], 10, 0).is_err(), "60 % of 10 is already reached");
        assert!(sizes(&[p(100), c(1)], 10, 0).is_err());
    }

    #[test]
    fn the_order_is_stable_and_follows_the_seed() {
        let order = |seed: &str| {
            let mut ids: Vec<String> = (0..20).map(|i| format!("dev-{i:02}")).collect();
            ids.sort_by_key(|id| rank(seed, id));
            ids
        };
        assert_eq!(order("digits"), order("digits"));
        assert_ne!(order("digits"), order("other"));
        let sorted: Vec<String> = (0..20).map(|i| format!("dev-{i:02}")).collect();
        assert_ne!(order("digits"), sorted, "not the id order");
    }
}
