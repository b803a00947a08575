//! API tokens: random bearer secrets, stored only as their SHA-256, each with a role.
//!
//! Roles are ordered: a viewer reads, an operator also uploads and drives rollouts, an
//! admin also manages tokens and keys. A handler states the least role it needs.
//!
//! A token may expire (`expires_at`): past it, it is refused as expired, which callers
//! are told apart from an unknown or revoked token so they know to ask for a new one.
//! Expiry is judged by [`Db::now`], the control plane's clock, so replicas agree.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::blobs::hex;
use crate::db::{Db, DbError};

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read.
    Viewer,
    /// Read, upload models, drive rollouts.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Its name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Viewer, Self::Operator, Self::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

/// Prefix of every token, so leaked ones are easy to recognise (and to scan for).
pub const PREFIX: &str = "mota_";

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No randomness from the operating system.
    #[error("no randomness: {0}")]
    Random(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Creates a token with `role` that never expires; returns the secret (shown once, never
/// stored).
pub async fn create(db: &Db, name: &str, role: Role, now_ms: i64) -> Result<String, TokenError> {
    create_expiring(db, name, role, now_ms, None).await
}

/// Creates a token with `role`, valid until `expires_at` (Unix milliseconds) if given;
/// returns the secret.
pub async fn create_expiring(
    db: &Db,
    name: &str,
    role: Role,
    now_ms: i64,
    expires_at: Option<i64>,
) -> Result<String, TokenError> {
    let mut conn = db.pool.acquire().await.map_err(DbError::from)?;
    Ok(insert(&mut conn, name, role, now_ms, expires_at).await?.1)
}

/// Inserts a new token on `conn` (inside the caller's transaction), valid until
/// `expires_at` if given; returns its id and the secret.
pub async fn insert(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    role: Role,
    now_ms: i64,
    expires_at: Option<i64>,
) -> Result<(i64, String), TokenError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
    let token = format!("{PREFIX}{}", hex(&secret));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (name, role, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash(&token))
    .bind(now_ms)
    .bind(expires_at)
    .fetch_one(conn)
    .await
    .map_err(DbError::from)?;
    Ok((id, token))
}

/// Who holds a live token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The token's id.
    pub id: i64,
    /// What the token may do.
    pub role: Role,
    /// The name it was created with (audit events name it).
    pub name: String,
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live token, and who holds it.
    Live(Holder),
    /// A token we made, past its expiry (and not revoked).
    Expired {
        /// When it expired, Unix milliseconds.
        at: i64,
    },
    /// Not a token of ours, or a revoked one.
    Unknown,
}

/// How long a token's `last_used_at` may lag behind its real last use, in milliseconds.
///
/// Recording every use would make every authenticated request, reads included, a write
/// (on SQLite a turn at the one write lock; on PostgreSQL a new row version and WAL):
/// instead a use is recorded only when the stored one is older than this, so a busy
/// token costs one write a minute. Ops read `last_used_at` to find tokens nobody uses
/// any more, for which a minute is precise enough.
pub const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// What `token` is, judged at `db.now()`; records the use of a live token (at most once
/// per [`LAST_USED_GRANULARITY_MS`]).
pub async fn lookup(db: &Db, token: &str) -> Result<Lookup, DbError> {
    if !token.starts_with(PREFIX) {
        return Ok(Lookup::Unknown);
    }
    // id, role, name, expires_at, last_used_at.
    type Row = (i64, String, String, Option<i64>, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, role, name, expires_at, last_used_at FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_optional(&db.pool)
    .await?;
    let Some((id, role, name, expires_at, last_used_at)) = row else { return Ok(Lookup::Unknown) };
    let Some(role) = Role::parse(&role) else { return Ok(Lookup::Unknown) };
    let now = db.now().await?;
    if let Some(at) = expires_at.filter(|&at| at <= now) {
        return Ok(Lookup::Expired { at });
    }
    if last_used_at.is_none_or(|t| t <= now - LAST_USED_GRANULARITY_MS) {
        // The read above decides whether to write at all, so most requests write
        // nothing; the condition is repeated in the update so that replicas racing on
        // one token write once. A failure here must not refuse a valid token: the use
        // is bookkeeping, the authentication already succeeded.
        let touched = sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - LAST_USED_GRANULARITY_MS)
        .execute(&db.pool)
        .await;
        if let Err(e) = touched {
            tracing::warn!(token = id, error = %e, "could not record the token's use");
        }
    }
    Ok(Lookup::Live(Holder { id, role, name }))
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
