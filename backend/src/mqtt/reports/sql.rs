//! The writer's statements, one of each per batch, whatever its size.
//!
//! A batch's rows reach a statement as a table `v` (a common table expression). For a
//! large batch on PostgreSQL it is built by `unnest` from one array parameter per
//! column, so the statement's text is the same for every large batch and is parsed once
//! per connection, where a `VALUES` list of a thousand rows cost more to parse and plan
//! than to run. A small batch (a rollout's reports trickle in one or two at a time)
//! gets the `VALUES` list: PostgreSQL plans it with the real row count, where the
//! array's plan, made for any length, cost more to plan each time than its custom plan
//! saved, and a generic plan ran three times slower (BENCHMARKS.md, issue 7). SQLite has
//! no arrays and always gets the `VALUES` list. The statements around `v` are written
//! once for both.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row};

use super::Report;
use super::fold::Change;
use crate::db::Engine;
use crate::rollout::states::{AttemptState, CommandKind, RolloutState, sql_list};

/// One value of a batch's row.
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Vec<u8>),
}

/// A batch's rows for a statement: its columns (name and PostgreSQL type) and cells.
struct Rows {
    columns: &'static [(&'static str, &'static str)],
    cells: Vec<Cell>,
}

/// Rows from which a PostgreSQL batch travels as arrays.
const ARRAYS_FROM: usize = 64;

impl Rows {
    fn new(columns: &'static [(&'static str, &'static str)]) -> Self {
        Self { columns, cells: Vec::new() }
    }

    fn push(&mut self, row: impl IntoIterator<Item = Cell>) {
        self.cells.extend(row);
    }

    /// Whether the rows travel as arrays.
    fn arrays(&self, engine: Engine) -> bool {
        engine == Engine::Postgres && self.cells.len() / self.columns.len() >= ARRAYS_FROM
    }

    /// `WITH v (columns) AS (...)`, its parameters numbered from `first`.
    fn cte(&self, engine: Engine, first: usize) -> String {
        let names = self.columns.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
        let width = self.columns.len();
        let mut body = String::new();
        if self.arrays(engine) {
            body.push_str("SELECT * FROM unnest(");
            for (i, (_, ty)) in self.columns.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                let _ = write!(body, "{sep}${}::{ty}[]", first + i);
            }
            body.push(')');
        } else {
            body.push_str("VALUES ");
            for row in 0..self.cells.len() / width {
                body.push_str(if row > 0 { ", (" } else { "(" });
                for col in 0..width {
                    let sep = if col > 0 { ", " } else { "" };
                    let _ = write!(body, "{sep}${}", first + row * width + col);
                }
                body.push(')');
            }
        }
        format!("WITH v ({names}) AS ({body}) ")
    }

    /// Binds the rows after whatever `q` has bound: an array literal per column, or
    /// every cell in row order.
    fn bind<'q>(self, engine: Engine, mut q: Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments> {
        if self.arrays(engine) {
            let width = self.columns.len();
            for col in 0..width {
                q = q.bind(array(self.cells.iter().skip(col).step_by(width)));
            }
        } else {
            for cell in self.cells {
                q = match cell {
                    Cell::Text(v) => q.bind(v),
                    Cell::Int(v) => q.bind(v),
                    Cell::Bytes(v) => q.bind(v),
                };
            }
        }
        q
    }
}

/// A PostgreSQL array literal of `cells`: `{"a","b\"c",NULL}`, `{1,NULL}`, `{"\\x0a0b"}`.
fn array<'a>(cells: impl Iterator<Item = &'a Cell>) -> String {
    let mut out = String::from("{");
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        match cell {
            Cell::Text(None) | Cell::Int(None) => out.push_str("NULL"),
            Cell::Text(Some(text)) => {
                out.push('"');
                for c in text.chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Cell::Int(Some(n)) => {
                let _ = write!(out, "{n}");
            }
            Cell::Bytes(bytes) => {
                out.push_str("\"\\\\x");
                out.push_str(&crate::blobs::hex(bytes));
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

fn text(s: &str) -> Cell {
    Cell::Text(Some(s.to_owned()))
}

/// Inserts the reports; returns the keys that were new.
pub(super) async fn insert(
    tx: &mut AnyConnection,
    engine: Engine,
    reports: &[Report<'_>],
    now: i64,
) -> Result<HashSet<(String, i64, i64)>, sqlx::Error> {
    let mut rows = Rows::new(&[
        ("device_id", "text"),
        ("rollout_id", "bigint"),
        ("seq", "bigint"),
        ("event", "integer"),
        ("payload", "bytea"),
    ]);
    for r in reports {
        rows.push([
            text(r.device),
            Cell::Int(Some(r.rollout)),
            Cell::Int(Some(i64::from(r.status.seq))),
            Cell::Int(Some(r.status.event as i64)),
            Cell::Bytes(r.raw.to_vec()),
        ]);
    }
    // `WHERE true`: SQLite's grammar needs it between a SELECT and ON CONFLICT.
    let sql = format!(
        "{}INSERT INTO device_reports (device_id, rollout_id, seq, event, payload, received_at) \
         SELECT device_id, rollout_id, seq, event, payload, $1 FROM v WHERE true \
         ON CONFLICT (device_id, rollout_id, seq) DO NOTHING RETURNING device_id, rollout_id, seq",
        rows.cte(engine, 2)
    );
    let q = rows.bind(engine, sqlx::query(AssertSqlSafe(sql)).bind(now));
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
pub(super) async fn seen(
    tx: &mut AnyConnection,
    engine: Engine,
    devices: &BTreeSet<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut rows = Rows::new(&[("id", "text")]);
    for d in devices {
        rows.push([text(d)]);
    }
    let sql = format!(
        "{}UPDATE devices SET online = 1, last_seen = $1 WHERE id IN (SELECT id FROM v) \
         AND (online = 0 OR last_seen < $2)",
        rows.cte(engine, 3)
    );
    let q = rows.bind(engine, sqlx::query(AssertSqlSafe(sql)).bind(now).bind(now - SEEN_GRAIN_MS));
    q.execute(tx).await?;
    Ok(())
}

/// The attempts `reports` are filed under: (rollout, device) to (state, base image).
pub(super) async fn attempts(
    tx: &mut AnyConnection,
    engine: Engine,
    reports: &[&Report<'_>],
) -> Result<HashMap<(i64, String), (String, Option<String>)>, sqlx::Error> {
    let keys: BTreeSet<(i64, &str)> = reports.iter().map(|r| (r.rollout, r.device)).collect();
    let mut rows = Rows::new(&[("rollout_id", "bigint"), ("device_id", "text")]);
    for (rollout, device) in keys {
        rows.push([Cell::Int(Some(rollout)), text(device)]);
    }
    let sql = format!(
        "{}SELECT a.rollout_id, a.device_id, a.state, a.base_sha256 FROM attempts a \
         JOIN v ON a.rollout_id = v.rollout_id AND a.device_id = v.device_id",
        rows.cte(engine, 1)
    );
    let q = rows.bind(engine, sqlx::query(AssertSqlSafe(sql)));
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
    engine: Engine,
    changes: &BTreeMap<(i64, String), Change>,
    now: i64,
) -> Result<HashSet<(i64, String)>, sqlx::Error> {
    if changes.is_empty() {
        return Ok(HashSet::new());
    }
    let mut rows = Rows::new(&[
        ("rollout_id", "bigint"),
        ("device_id", "text"),
        ("from_state", "text"),
        ("to_state", "text"),
        ("error_code", "integer"),
        ("accuracy", "integer"),
        ("prev_accuracy", "integer"),
        ("latency", "bigint"),
        ("prev_latency", "bigint"),
        ("arena", "bigint"),
        ("bytes_done", "bigint"),
        ("manifest", "text"),
        ("rollback_image", "text"),
        ("rollback_manifest", "text"),
    ]);
    for ((rollout, device), c) in changes {
        rows.push([
            Cell::Int(Some(*rollout)),
            text(device),
            text(&c.from),
            text(c.to.as_str()),
            Cell::Int(c.error_code.map(i64::from)),
            Cell::Int(c.accuracy_permille.map(i64::from)),
            Cell::Int(c.prev_accuracy_permille.map(i64::from)),
            Cell::Int(c.latency_us),
            Cell::Int(c.prev_latency_us),
            Cell::Int(c.arena_used),
            Cell::Int(c.bytes_done),
            Cell::Text(c.manifest.clone()),
            Cell::Text(c.rollback_to.as_ref().map(|t| t.0.clone())),
            Cell::Text(c.rollback_to.as_ref().and_then(|t| t.1.clone())),
        ]);
    }
    let sql = format!(
        "{}UPDATE attempts SET state = v.to_state, \
         open_device = CASE WHEN v.to_state IN {unfinished} THEN attempts.open_device END, error_code = COALESCE(v.error_code, attempts.error_code), \
         accuracy_permille = COALESCE(v.accuracy, attempts.accuracy_permille), \
         prev_accuracy_permille = COALESCE(v.prev_accuracy, attempts.prev_accuracy_permille), \
         latency_us = COALESCE(v.latency, attempts.latency_us), \
         prev_latency_us = COALESCE(v.prev_latency, attempts.prev_latency_us), \
         arena_used = COALESCE(v.arena, attempts.arena_used), \
         bytes_done = COALESCE(v.bytes_done, attempts.bytes_done), \
         manifest_sha256 = COALESCE(attempts.manifest_sha256, v.manifest), \
         rollback_image = CASE WHEN v.rollback_image IS NULL THEN attempts.rollback_image ELSE v.rollback_image END, \
         rollback_manifest = CASE WHEN v.rollback_image IS NULL THEN attempts.rollback_manifest ELSE v.rollback_manifest END, \
         offered_at = COALESCE(attempts.offered_at, $1), updated_at = $1 \
         FROM v WHERE attempts.rollout_id = v.rollout_id AND attempts.device_id = v.device_id \
         AND attempts.state = v.from_state RETURNING attempts.rollout_id, attempts.device_id",
        rows.cte(engine, 2),
        unfinished = sql_list(AttemptState::UNFINISHED),
    );
    let q = rows.bind(engine, sqlx::query(AssertSqlSafe(sql)).bind(now));
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

/// What the registry knows of an image: the model and version of its first upload and the
/// highest security counter it was uploaded with (`None` for a factory image it does
/// not know).
async fn image_info(tx: &mut AnyConnection, image: &str) -> Result<Option<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.name, v.version, CAST((SELECT MAX(w.security_counter) FROM model_versions w \
         WHERE w.image_sha256 = $1) AS BIGINT) FROM model_versions v JOIN models m ON m.id = v.model_id \
         WHERE v.image_sha256 = $1 ORDER BY v.id LIMIT 1",
    )
    .bind(image)
    .fetch_optional(tx)
    .await
}

/// Records which image each device runs now, with its model, version and counter when
/// the registry knows the image (looked up once per image, not per device).
pub(super) async fn set_running(
    tx: &mut AnyConnection,
    engine: Engine,
    running: &[(String, Option<String>, Option<i64>)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if running.is_empty() {
        return Ok(());
    }
    let mut known = HashMap::new();
    for image in running.iter().filter_map(|(_, image, _)| image.as_deref()) {
        if let Entry::Vacant(slot) = known.entry(image) {
            slot.insert(image_info(&mut *tx, image).await?);
        }
    }
    let mut rows = Rows::new(&[
        ("device_id", "text"),
        ("image", "text"),
        ("model", "text"),
        ("version", "text"),
        ("counter", "bigint"),
        ("seq", "bigint"),
    ]);
    for (device, image, seq) in running {
        let info = image.as_deref().and_then(|i| known.get(i)).and_then(Option::as_ref);
        rows.push([
            text(device),
            Cell::Text(image.clone()),
            Cell::Text(info.map(|(model, _, _)| model.clone())),
            Cell::Text(info.map(|(_, version, _)| version.clone())),
            Cell::Int(info.map(|(_, _, counter)| *counter)),
            Cell::Int(*seq),
        ]);
    }
    // The counter only rises: a device rolled back to an older model keeps its counter.
    let sql = format!(
        "{}UPDATE devices SET running_sha256 = v.image, running_model = v.model, running_version = v.version, \
         security_counter = CASE WHEN devices.security_counter < COALESCE(v.counter, 0) THEN v.counter \
         ELSE devices.security_counter END, running_seq = v.seq, last_seen = $1 FROM v WHERE devices.id = v.device_id",
        rows.cte(engine, 2)
    );
    let q = rows.bind(engine, sqlx::query(AssertSqlSafe(sql)).bind(now));
    q.execute(tx).await?;
    Ok(())
}

/// Which of `rollouts` were aborted or rolled back.
pub(super) async fn withdrawn(tx: &mut AnyConnection, rollouts: &BTreeSet<i64>) -> Result<HashSet<i64>, sqlx::Error> {
    let mut out = HashSet::new();
    let withdrawn: Vec<RolloutState> = RolloutState::ALL.iter().copied().filter(|s| s.withdrawn()).collect();
    let sql = format!("SELECT 1 FROM rollouts WHERE id = $1 AND state IN {}", sql_list(&withdrawn));
    for &id in rollouts {
        if sqlx::query(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(&mut *tx).await?.is_some() {
            out.insert(id);
        }
    }
    Ok(out)
}

/// A device whose model another rollout's report just changed (it committed, rolled
/// back or reverted) is past any rollback still on its way for an earlier rollout: that
/// attempt is `superseded`. Its answer to that rollback may never come (the agent
/// refuses a rollback during a job, and its next terminal report replaces the refusal);
/// sending the rollback again could not help either, since a device that did roll back
/// would be refused anyway: it names the model the device has since left.
pub(super) async fn moot_rollbacks(
    tx: &mut AnyConnection,
    engine: Engine,
    changed: &[(i64, String)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if changed.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(&[("rollout_id", "bigint"), ("device_id", "text")]);
    for (rollout, device) in changed {
        rows.push([Cell::Int(Some(*rollout)), text(device)]);
    }
    let sql = format!(
        "{}UPDATE attempts SET {}, updated_at = $1 FROM v WHERE attempts.device_id = v.device_id \
         AND attempts.rollout_id <> v.rollout_id AND attempts.state = '{}'",
        rows.cte(engine, 2),
        AttemptState::Superseded.set_sql(),
        AttemptState::RollingBack
    );
    rows.bind(engine, sqlx::query(AssertSqlSafe(sql)).bind(now)).execute(tx).await?;
    Ok(())
}

/// Queues `kind` for each (rollout, device): a `rollback` for those that committed a
/// withdrawn rollout, a `cancel` for those that reverted an aborted rollout they kept.
pub(super) async fn queue(
    tx: &mut AnyConnection,
    kind: CommandKind,
    to: &[(i64, String)],
    now: i64,
) -> Result<(), sqlx::Error> {
    for (rollout, device) in to {
        sqlx::query("INSERT INTO commands (device_id, rollout_id, action, created_at) VALUES ($1, $2, $3, $4)")
            .bind(device)
            .bind(rollout)
            .bind(kind.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_what_postgresql_would_misread() {
        let cells =
            [text("dev-1"), text(r#"a"b\c"#), Cell::Text(None), Cell::Int(Some(-3)), Cell::Bytes(vec![0x0a, 0xff])];
        assert_eq!(array(cells.iter()), r#"{"dev-1","a\"b\\c",NULL,-3,"\\x0aff"}"#);
    }

    #[test]
    fn a_large_batch_is_arrays_on_postgresql_and_values_elsewhere() {
        let mut rows = Rows::new(&[("a", "bigint"), ("b", "text")]);
        rows.push([Cell::Int(Some(1)), text("x")]);
        rows.push([Cell::Int(None), text("y")]);
        let values = "WITH v (a, b) AS (VALUES ($2, $3), ($4, $5)) ";
        assert_eq!(rows.cte(Engine::Postgres, 2), values, "two rows");
        assert_eq!(rows.cte(Engine::Sqlite, 2), values);
        for i in 2..ARRAYS_FROM {
            rows.push([Cell::Int(Some(i as i64)), text("z")]);
        }
        assert_eq!(rows.cte(Engine::Postgres, 2), "WITH v (a, b) AS (SELECT * FROM unnest($2::bigint[], $3::text[])) ");
        assert!(rows.cte(Engine::Sqlite, 2).starts_with("WITH v (a, b) AS (VALUES ($2, $3), "));
    }
}
