//! The device registry as devices describe themselves: each `hello` overwrites what the
//! backend knows of a device, because the device is the authority on what it runs; the
//! last will only flips it offline. The first hello of a device is audited once, however
//! many replicas race on it: the row that an `INSERT ... ON CONFLICT DO NOTHING` (or the
//! update that fills a provisioned row) takes decides who records the event.
//!
//! Identity is not the device's to declare: a provisioned device's class was fixed by the
//! operator (`POST /v1/devices`), and a hello that declares another one is recorded in
//! `reported_class` and not applied. A device never provisioned gets a row from its
//! first hello only with auto-registration on (the embedded single-machine default);
//! otherwise its hellos are dropped ([`Seen::Unknown`]).
//!
//! Ordering across replicas is not guaranteed by shared subscriptions: a will may be
//! handled after the hello of the reconnect that followed it. The next hello (devices
//! send one on every connect) sets it right.

use mota_proto::message::{DeviceInfo, Hello};
use sqlx::{AnyConnection, Row};

use crate::db::Db;
use crate::events;

/// What a hello says about a device, as the `devices` columns hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Device id (the topic level).
    pub id: String,
    /// Device class.
    pub device_class: String,
    /// Agent version.
    pub agent_version: String,
    /// SHA-256 of the running image, lowercase hex.
    pub running_sha256: Option<String>,
    /// Running model name.
    pub running_model: Option<String>,
    /// Running model version.
    pub running_version: Option<String>,
    /// Anti-rollback counter.
    pub security_counter: i64,
    /// Bytes of one model slot.
    pub slot_bytes: i64,
    /// Tensor arena bytes.
    pub arena_bytes: i64,
    /// Delta codecs it decodes, a bit per codec.
    pub codecs: i64,
    /// Largest chunk it asks for.
    pub max_chunk: i64,
    /// The number of its next status report (absent from older agents).
    pub next_seq: Option<i64>,
}

impl DeviceRow {
    /// The row for `info` from device `id`.
    pub fn from_info(id: &str, info: &DeviceInfo<'_>) -> Self {
        Self {
            id: id.to_owned(),
            device_class: info.device_class.to_owned(),
            agent_version: info.agent_version.to_owned(),
            running_sha256: info.running.map(|r| r.sha256.to_string()),
            running_model: info.running.map(|r| r.model.to_owned()),
            running_version: info.running.map(|r| r.version.to_owned()),
            security_counter: i64::from(info.security_counter),
            slot_bytes: i64::from(info.slot_bytes),
            arena_bytes: i64::from(info.arena_bytes),
            codecs: i64::from(info.codecs),
            max_chunk: i64::from(info.max_chunk),
            next_seq: info.next_seq.map(i64::from),
        }
    }
}

/// What a hello did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First hello of the device: row created (or a pre-registered row filled), audited.
    Registered,
    /// A known device said hello again.
    Updated,
    /// A provisioned device said hello declaring another class than its own: recorded in
    /// `reported_class`, not applied (the rest of the hello is).
    ClassMismatch,
    /// A device that is not registered, with auto-registration off: nothing stored.
    Unknown,
    /// The last will of a known device: marked offline.
    Offline,
    /// The last will of a device never seen: nothing to do.
    UnknownOffline,
}

impl Seen {
    /// The outcome's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Seen::Registered => "registered",
            Seen::Updated => "updated",
            Seen::ClassMismatch => "class_mismatch",
            Seen::Unknown => "unknown",
            Seen::Offline => "offline",
            Seen::UnknownOffline => "unknown_offline",
        }
    }
}

/// Whether a hello from a device without a row creates one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Any device that says hello is registered, with the class it declares.
    Auto,
    /// Only devices that have a row (provisioned) are taken.
    ProvisionedOnly,
}

/// Applies a (well-formed) hello from device `id`.
pub async fn hello(db: &Db, id: &str, hello: &Hello<'_>, registration: Registration) -> Result<Seen, sqlx::Error> {
    let now = db.now().await?;
    let Some(info) = hello.info.filter(|_| hello.online) else {
        let marked = sqlx::query("UPDATE devices SET online = 0, last_seen = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&db.pool)
            .await?
            .rows_affected();
        return Ok(if marked == 0 { Seen::UnknownOffline } else { Seen::Offline });
    };
    let row = DeviceRow::from_info(id, &info);
    let mut tx = db.begin().await?;
    let insert = sqlx::query(
        "INSERT INTO devices (id, device_class, agent_version, online, running_sha256, running_model, \
         running_version, security_counter, slot_bytes, arena_bytes, first_seen, last_seen, codecs, max_chunk) \
         VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
    );
    let created = match registration {
        Registration::Auto => bind_row(insert, &row, now).execute(&mut *tx).await?.rows_affected() == 1,
        Registration::ProvisionedOnly => false,
    };
    // A provisioned row has no agent version until its device first says hello.
    let filled = if created { None } else { update(&mut tx, &row, now, " AND agent_version IS NULL").await? };
    let first = created || filled.is_some();
    let updated = if first { filled } else { update(&mut tx, &row, now, "").await? };
    let Some(mismatch) = updated.or(created.then_some(false)) else {
        tx.rollback().await?;
        return Ok(Seen::Unknown);
    };
    if first {
        let detail = serde_json::json!({
            "device_class": row.device_class,
            "agent_version": row.agent_version,
            "running_model": row.running_model,
            "running_version": row.running_version,
            "pre_registered": !created,
        });
        events::record(&mut tx, "backend", "device.registered", &format!("device:{id}"), &detail).await?;
    }
    tx.commit().await?;
    if mismatch {
        tracing::warn!(device = id, declared = %row.device_class, "hello declares another class than the one provisioned; not applied");
    }
    Ok(match (first, mismatch) {
        (_, true) => Seen::ClassMismatch,
        (true, false) => Seen::Registered,
        (false, false) => Seen::Updated,
    })
}

/// Binds `$1`..`$12` of the insert and the update: the row's columns, `now`, then the
/// capabilities.
fn bind_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    row: &'q DeviceRow,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(&row.id)
        .bind(&row.device_class)
        .bind(&row.agent_version)
        .bind(&row.running_sha256)
        .bind(&row.running_model)
        .bind(&row.running_version)
        .bind(row.security_counter)
        .bind(row.slot_bytes)
        .bind(row.arena_bytes)
        .bind(now)
        .bind(row.codecs)
        .bind(row.max_chunk)
}

/// Overwrites the row with `row` where `condition` holds (the class only if the device
/// was not provisioned); `None` if no row was, else whether the hello's class differs
/// from a provisioned device's.
async fn update(
    conn: &mut AnyConnection,
    row: &DeviceRow,
    now: i64,
    condition: &str,
) -> Result<Option<bool>, sqlx::Error> {
    // A hello older than the report that last set the running model (the device had not
    // sent it yet) does not take the model back: replicas handle the two in any order.
    let fresh = "(CAST($13 AS BIGINT) IS NULL OR running_seq IS NULL OR $13 > running_seq)";
    let sql = format!(
        "UPDATE devices SET device_class = CASE WHEN provisioned_at IS NULL THEN $2 ELSE device_class END, \
         reported_class = CASE WHEN provisioned_at IS NULL OR device_class = $2 THEN NULL ELSE $2 END, \
         agent_version = $3, online = 1, \
         running_sha256 = CASE WHEN {fresh} THEN $4 ELSE running_sha256 END, \
         running_model = CASE WHEN {fresh} THEN $5 ELSE running_model END, \
         running_version = CASE WHEN {fresh} THEN $6 ELSE running_version END, \
         security_counter = CASE WHEN {fresh} THEN $7 ELSE security_counter END, slot_bytes = $8, \
         arena_bytes = $9, last_seen = $10, codecs = $11, max_chunk = $12 WHERE id = $1{condition} \
         RETURNING reported_class"
    );
    let done =
        bind_row(sqlx::query(sqlx::AssertSqlSafe(sql)), row, now).bind(row.next_seq).fetch_optional(conn).await?;
    done.map(|r| r.try_get::<Option<String>, _>(0).map(|class| class.is_some())).transpose()
}

#[cfg(test)]
mod tests {
    use mota_proto::Digest;
    use mota_proto::message::RunningModel;

    use super::*;

    #[test]
    fn hello_maps_onto_the_row() {
        let info = DeviceInfo {
            device_class: "mcu",
            agent_version: "0.1.0",
            running: Some(RunningModel { model: "digits", version: "1.2.0", sha256: Digest([0xab; 32]) }),
            security_counter: u32::MAX,
            slot_bytes: 512 * 1024,
            arena_bytes: 40_000,
            codecs: 1,
            max_chunk: 4096,
            next_seq: Some(7),
            revocation_seq: None,
        };
        let row = DeviceRow::from_info("dev-1", &info);
        assert_eq!(row.running_sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!((row.running_model.as_deref(), row.running_version.as_deref()), (Some("digits"), Some("1.2.0")));
        assert_eq!((row.security_counter, row.slot_bytes, row.arena_bytes), (i64::from(u32::MAX), 524_288, 40_000));
        assert_eq!((row.codecs, row.max_chunk, row.next_seq), (1, 4096, Some(7)));
        let bare = DeviceRow::from_info("dev-2", &DeviceInfo { running: None, ..info });
        assert_eq!((bare.running_sha256, bare.running_model, bare.running_version), (None, None, None));
        assert_eq!((bare.device_class.as_str(), bare.agent_version.as_str()), ("mcu", "0.1.0"));
    }
}
