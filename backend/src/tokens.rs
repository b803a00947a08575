//! API tokens: random bearer secrets, stored only as their SHA-256, each with a role.
//!
//! Roles are ordered: a viewer reads, an operator also uploads and drives rollouts, an
//! admin also manages tokens and keys. A handler states the least role it needs.

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

/// Creates a token with `role`; returns the secret (shown once, never stored).
pub async fn create(db: &Db, name: &str, role: Role, now_ms: i64) -> Result<String, TokenError> {
    let mut conn = db.pool.acquire().await.map_err(DbError::from)?;
    Ok(insert(&mut conn, name, role, now_ms).await?.1)
}

/// Inserts a new token on `conn` (inside the caller's transaction); returns its id and
/// the secret.
pub async fn insert(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    role: Role,
    now_ms: i64,
) -> Result<(i64, String), TokenError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
    let token = format!("{PREFIX}{}", hex(&secret));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash(&token))
    .bind(now_ms)
    .fetch_one(conn)
    .await
    .map_err(DbError::from)?;
    Ok((id, token))
}

/// Who holds a live token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// What the token may do.
    pub role: Role,
    /// The name it was created with (audit events name it).
    pub name: String,
}

/// The holder of a live token, `None` for an unknown or revoked one.
pub async fn lookup(db: &Db, token: &str) -> Result<Option<Holder>, DbError> {
    if !token.starts_with(PREFIX) {
        return Ok(None);
    }
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT role, name FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(hash(token))
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.and_then(|(role, name)| Some(Holder { role: Role::parse(&role)?, name })))
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
