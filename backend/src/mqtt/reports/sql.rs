//! The writer's statements, each one per batch: rows of a batch travel as a `VALUES`
//! list (a common table expression where a statement joins them), written once for
//! SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::Report;
use super::fold::Change;

/// `$first, $first+1, ...` (`n` of them).
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `n` rows of `width` placeholders, numbered from `first`: `($1, $2), ($3, $4)`.
fn rows(first: usize, width: usize, n: usize) -> String {
    (0..n).map(|i| format!("({})", placeholders(first + i * width, width))).collect::<Vec<_>>().join(", ")
}

/// Inserts the reports; returns the keys that were new.
pub(super) async fn insert(
    tx: &mut AnyConnection,
    reports: &[Report<'_>],
    now: i64,
) -> Result<HashSet<(String, i64, i64)>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO device_reports (device_id, rollout_id, seq, event, payload, received_at) VALUES {} \
         ON CONFLICT (device_id, rollout_id, seq) DO NOTHING RETURNING device_id, rollout_id, seq",
        (0..reports.len())
            .map(|i| format!("(${}, ${}, ${}, ${}, ${}, $1)", 2 + 5 * i, 3 + 5 * i, 4 + 5 * i, 5 + 5 * i, 6 + 5 * i))
            .collect::<Vec<_>>()
            .join(", ")
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

/// How stale a reporting device's `last_seen` may stay: a device downloading reports
/// every few seconds, and rewriting its row for each report cost a quarter of ingest.
const SEEN_GRAIN_MS: i64 = 5_000;

/// Marks `devices` online and seen `now` (to within [`SEEN_GRAIN_MS`]).
pub(super) async fn seen(tx: &mut AnyConnection, devices: &BTreeSet<&str>, now: i64) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE devices SET online = 1, last_seen = $1 WHERE id IN ({}) AND (online = 0 OR last_seen < $2)",
        placeholders(3, devices.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now).bind(now - SEEN_GRAIN_MS);
    for d in devices {
        q = q.bind(*d);
    }
    q.execute(tx).await?;
    Ok(())
}

/// The attempts `reports` are filed under: (rollout, device) to (state, base image).
pub(super) async fn attempts(
    tx: &mut AnyConnection,
    reports: &[&Report<'_>],
) -> Result<HashMap<(i64, String), (String, Option<String>)>, sqlx::Error> {
    let devices: BTreeSet<&str> = reports.iter().map(|r| r.device).collect();
    let rollouts: BTreeSet<i64> = reports.iter().map(|r| r.rollout).collect();
    let sql = format!(
        "SELECT rollout_id, device_id, state, base_sha256 FROM attempts WHERE device_id IN ({}) \
         AND rollout_id IN ({})",
        placeholders(1, devices.len()),
        placeholders(1 + devices.len(), rollouts.len()),
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for d in &devices {
        q = q.bind(*d);
    }
    for r in &rollouts {
        q = q.bind(*r);
    }
    let mut out = HashMap::new();
    for row in q.fetch_all(&mut *tx).await? {
        out.insert((row.try_get(0)?, row.try_get(1)?), (row.try_get(2)?, row.try_get(3)?));
    }
    Ok(out)
}

/// Writes each change where the attempt is still in the state it was read in; returns
/// the attempts written (on PostgreSQL, one another replica moved since is not, and its
/// reports are folded again; SQLite has one writer at a time).
pub(super) async fn write_attempts(
    tx: &mut AnyConnection,
    changes: &BTreeMap<(i64, String), Change>,
    now: i64,
) -> Result<HashSet<(i64, String)>, sqlx::Error> {
    if changes.is_empty() {
        return Ok(HashSet::new());
    }
    const WIDTH: usize = 12;
    let sql = format!(
        "WITH v (rollout_id, device_id, from_state, to_state, error_code, accuracy, prev_accuracy, latency, \
         prev_latency, arena, bytes_done, manifest) AS (VALUES {}) \
         UPDATE attempts SET state = v.to_state, error_code = COALESCE(v.error_code, attempts.error_code), \
         accuracy_permille = COALESCE(v.accuracy, attempts.accuracy_permille), \
         prev_accuracy_permille = COALESCE(v.prev_accuracy, attempts.prev_accuracy_permille), \
         latency_us = COALESCE(v.latency, attempts.latency_us), \
         prev_latency_us = COALESCE(v.prev_latency, attempts.prev_latency_us), \
         arena_used = COALESCE(v.arena, attempts.arena_used), \
         bytes_done = COALESCE(v.bytes_done, attempts.bytes_done), \
         manifest_sha256 = COALESCE(attempts.manifest_sha256, v.manifest), \
         offered_at = COALESCE(attempts.offered_at, $1), updated_at = $1 \
         FROM v WHERE attempts.rollout_id = v.rollout_id AND attempts.device_id = v.device_id \
         AND attempts.state = v.from_state RETURNING attempts.rollout_id, attempts.device_id",
        rows(2, WIDTH, changes.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for ((rollout, device), c) in changes {
        q = q
            .bind(*rollout)
            .bind(device.as_str())
            .bind(c.from.as_str())
            .bind(c.to)
            .bind(c.error_code)
            .bind(c.accuracy_permille)
            .bind(c.prev_accuracy_permille)
            .bind(c.latency_us)
            .bind(c.prev_latency_us)
            .bind(c.arena_used)
            .bind(c.bytes_done)
            .bind(c.manifest.as_deref());
    }
    let mut written = HashSet::new();
    for row in q.fetch_all(&mut *tx).await? {
        written.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(written)
}

/// The image rollout `rollout` installs.
pub(super) async fn target_image(tx: &mut AnyConnection, rollout: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT v.image_sha256 FROM rollouts r JOIN model_versions v ON v.id = r.version_id WHERE r.id = $1",
    )
    .bind(rollout)
    .fetch_optional(tx)
    .await
}

/// Records which image each device runs now (with its model, version and counter when
/// the registry knows the image; a factory image it does not know leaves them empty).
pub(super) async fn set_running(
    tx: &mut AnyConnection,
    running: &[(String, Option<String>)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if running.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "WITH v (device_id, image) AS (VALUES {}) \
         UPDATE devices SET running_sha256 = v.image, \
         running_model = (SELECT m.name FROM model_versions mv JOIN models m ON m.id = mv.model_id \
                          WHERE mv.image_sha256 = v.image ORDER BY mv.id LIMIT 1), \
         running_version = (SELECT mv.version FROM model_versions mv WHERE mv.image_sha256 = v.image \
                            ORDER BY mv.id LIMIT 1), \
         security_counter = CASE WHEN devices.security_counter < COALESCE((SELECT MAX(mv.security_counter) \
                          FROM model_versions mv WHERE mv.image_sha256 = v.image), 0) \
                          THEN (SELECT MAX(mv.security_counter) FROM model_versions mv WHERE mv.image_sha256 = v.image) \
                          ELSE devices.security_counter END, \
         last_seen = $1 FROM v WHERE devices.id = v.device_id",
        rows(2, 2, running.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for (device, image) in running {
        q = q.bind(device.as_str()).bind(image.as_deref());
    }
    q.execute(tx).await?;
    Ok(())
}
