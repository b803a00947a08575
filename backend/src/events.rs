//! The audit log: every change an operator or the backend itself makes, written in the
//! same transaction as the change, so the log never claims what did not happen and never
//! misses what did.

use serde::Serialize;
use sqlx::AnyConnection;

use crate::db::now_ms;

/// Appends one event. `detail` is serialized as JSON.
pub async fn record(
    conn: &mut AnyConnection,
    actor: &str,
    kind: &str,
    subject: &str,
    detail: &impl Serialize,
) -> Result<(), sqlx::Error> {
    let detail = serde_json::to_string(detail).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO events (at, actor, kind, subject, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(now_ms())
        .bind(actor)
        .bind(kind)
        .bind(subject)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}
