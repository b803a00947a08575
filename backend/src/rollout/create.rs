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
use sqlx::{AssertSqlSafe, Row};
use utoipa::ToSchema;

use super::{CohortSpec, Gates, Plan, RolloutError, Selector, rollout_state, states};
use crate::db::{Db, now_ms};
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

/// The selected devices, in offer order, with what each runs.
async fn members(
    db: &Db,
    new: &NewRollout,
    target: &Target,
    seed: &str,
) -> Result<Vec<(String, Option<String>)>, RolloutError> {
    let mut sql = String::from("SELECT d.id, d.running_sha256 FROM devices d WHERE d.device_class = $1");
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
    let mut found: HashMap<String, Option<String>> = HashMap::new();
    for r in rows {
        let id: String = r.try_get(0)?;
        if ids.is_empty() || ids.contains(id.as_str()) {
            found.insert(id, r.try_get(1)?);
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
    rest.sort();
    out.extend(rest.into_iter().map(|(_, id, running)| (id, running)));
    Ok(out)
}

pub(crate) async fn target(db: &Db, model: &str, version: &str) -> Result<Target, RolloutError> {
    let row = sqlx::query(
        "SELECT v.id, m.device_class, v.image_sha256 FROM model_versions v JOIN models m ON m.id = v.model_id \
         WHERE m.name = $1 AND v.version = $2",
    )
    .bind(model)
    .bind(version)
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| RolloutError::NotFound(format!("version {version} of model {model}")))?;
    Ok(Target { version_id: row.try_get(0)?, class: row.try_get(1)?, image_sha256: row.try_get(2)? })
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
    let running = |r: &Option<String>| r.as_deref() == Some(target.image_sha256.as_str());
    let already_running = members.iter().filter(|(_, r)| running(r)).count() as u64;
    let delta = members.iter().filter(|(_, r)| !running(r) && r.as_ref().is_some_and(|r| bases.contains(r))).count();
    let canaries = new.plan.canary.len() as u64;
    let preview = Preview {
        population: members.len() as u64,
        cohorts: sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| CohortPreview { position: i as u32, size, canaries: if i == 0 { canaries } else { 0 } })
            .collect(),
        already_running,
        delta: delta as u64,
        full: members.len() as u64 - already_running - delta as u64,
    };
    if new.dry_run {
        return Ok((preview, None));
    }
    let id = insert(db, new, &target, &members, &sizes, actor).await?;
    Ok((preview, Some(id)))
}

/// Rows per multi-row INSERT (5 parameters each, well under both engines' limits).
const BATCH: usize = 500;

async fn insert(
    db: &Db,
    new: &NewRollout,
    target: &Target,
    members: &[(String, Option<String>)],
    sizes: &[u64],
    actor: &str,
) -> Result<i64, RolloutError> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    // A device is in at most one unfinished rollout: two would race for its slot.
    let busy: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.device_id, a.rollout_id FROM attempts a JOIN rollouts r ON r.id = a.rollout_id \
         WHERE r.state IN ('running', 'paused') AND a.state IN ('pending', 'offered', 'accepted', 'downloading', \
         'verified', 'validated')",
    )
    .fetch_all(&mut *tx)
    .await?;
    let wanted: HashSet<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    if let Some((device, rollout)) = busy.iter().find(|(d, _)| wanted.contains(d.as_str())) {
        let n = busy.iter().filter(|(d, _)| wanted.contains(d.as_str())).count();
        return Err(RolloutError::Conflict(format!(
            "{n} selected devices are still updating in another rollout (e.g. {device} in rollout {rollout}); \
             abort it or wait for it to finish"
        )));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO rollouts (version_id, selector, plan, gates, state, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
    )
    .bind(target.version_id)
    .bind(json(&new.selector))
    .bind(json(&new.plan))
    .bind(json(&new.gates))
    .bind(rollout_state::RUNNING)
    .bind(actor)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let mut start = 0usize;
    for (position, (&size, spec)) in sizes.iter().zip(&new.plan.cohorts).enumerate() {
        let cohort: i64 = sqlx::query_scalar(
            "INSERT INTO cohorts (rollout_id, position, target, state, size) VALUES ($1, $2, $3, 'pending', $4) \
             RETURNING id",
        )
        .bind(id)
        .bind(position as i32)
        .bind(json(spec))
        .bind(size as i64)
        .fetch_one(&mut *tx)
        .await?;
        let end = start + size as usize;
        for batch in members[start..end].chunks(BATCH) {
            let values: Vec<String> = (0..batch.len())
                .map(|i| format!("($1, $2, ${}, ${}, '{}', $3)", 4 + 2 * i, 5 + 2 * i, states::PENDING))
                .collect();
            let sql = format!(
                "INSERT INTO attempts (rollout_id, cohort_id, device_id, base_sha256, state, updated_at) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id).bind(cohort).bind(now);
            for (device, running) in batch {
                q = q.bind(device).bind(running.clone());
            }
            q.execute(&mut *tx).await?;
        }
        start = end;
    }
    let detail = serde_json::json!({
        "model": new.model, "version": new.version, "devices": members.len(), "cohorts": sizes,
        "selector": new.selector, "plan": new.plan, "gates": new.gates,
    });
    events::record(&mut tx, actor, "rollout.created", &format!("rollout:{id}"), &detail).await?;
    tx.commit().await?;
    Ok(id)
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
