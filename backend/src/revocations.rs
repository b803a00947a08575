//! Revocation of release keys: root-signed lists (made offline with `mota keys revoke`)
//! the backend stores and publishes, retained, on every device's `trust` topic.
//!
//! The backend cannot sign one (the root stays offline) and does not need to trust one:
//! devices verify the root's signature themselves. It checks what it can before it
//! publishes, so an operator's mistake is caught at upload: the list decodes, comes
//! from the root that certified the release key in use, and is newer than the last;
//! its signature too when the backend has the root's public key (`--root-public-key`,
//! or the development root).

use mota_proto::{KeyCertificate, RootSigned, Wire, verify_revocation};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{Db, DbError};
use crate::events;
use crate::signing::Signer;

/// Why a revocation list was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Not a revocation list.
    #[error("not a mota revocation list: {0}")]
    Malformed(String),
    /// Issued by a root other than the one that certified the release key in use.
    #[error("issued by root {found}; the release key in use was certified by {expected}")]
    WrongRoot {
        /// The list's issuer.
        found: String,
        /// The release certificate's issuer.
        expected: String,
    },
    /// Not newer than the last list.
    #[error("sequence number {seq} is not above the current list's {current}")]
    NotNewer {
        /// The list's number.
        seq: u32,
        /// The newest stored.
        current: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for RevocationError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e.into())
    }
}

/// A stored revocation list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevocationView {
    /// Its sequence number: devices keep the highest.
    pub seq: i64,
    /// The release key ids it revokes.
    pub revoked: Vec<String>,
    /// Unix milliseconds of the upload.
    pub created_at: i64,
    /// Unix milliseconds at which it was published to every device known then.
    pub published_at: Option<i64>,
}

/// Checks and stores `statement`, for the engine to publish; audited as `actor`.
pub async fn add(db: &Db, signer: &Signer, statement: &[u8], actor: &str) -> Result<RevocationView, RevocationError> {
    let malformed = |e: &dyn std::fmt::Display| RevocationError::Malformed(e.to_string());
    let signed = RootSigned::parse(statement).map_err(|e| malformed(&e))?;
    let certificate = KeyCertificate::parse(signer.release.certificate()).map_err(|e| malformed(&e))?;
    if signed.issuer != certificate.issuer {
        return Err(RevocationError::WrongRoot {
            found: signed.issuer.to_string(),
            expected: certificate.issuer.to_string(),
        });
    }
    let body = match signer.root {
        Some(root) => verify_revocation(statement, &[root]).map_err(|e| malformed(&e))?,
        None => mota_proto::RevocationBody::parse(signed.body).map_err(|e| malformed(&e))?,
    };
    let revoked: Vec<String> = body.keys().map(|k| k.to_string()).collect();
    let now = db.now().await?;
    let mut tx = db.begin().await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocations").fetch_one(&mut *tx).await?;
    if let Some(current) = current.filter(|&c| c >= i64::from(body.seq)) {
        return Err(RevocationError::NotNewer { seq: body.seq, current });
    }
    sqlx::query("INSERT INTO revocations (seq, statement, revoked, created_at) VALUES ($1, $2, $3, $4)")
        .bind(i64::from(body.seq))
        .bind(statement)
        .bind(revoked.join(","))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let view = RevocationView { seq: i64::from(body.seq), revoked, created_at: now, published_at: None };
    events::record(&mut tx, actor, "revocation.added", &body.seq.to_string(), &view).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(view)
}

/// Every stored list, newest first.
pub async fn list(db: &Db) -> Result<Vec<RevocationView>, RevocationError> {
    let rows: Vec<(i64, String, i64, Option<i64>)> =
        sqlx::query_as("SELECT seq, revoked, created_at, published_at FROM revocations ORDER BY seq DESC")
            .fetch_all(&db.pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, revoked, created_at, published_at)| RevocationView {
            seq,
            revoked: revoked.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect(),
            created_at,
            published_at,
        })
        .collect())
}

/// The newest list, if it is newer than `held` (what a device declares it holds): its
/// bytes. Most hellos find none and read no bytes.
pub async fn newer_than(db: &Db, held: u32) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT statement FROM revocations WHERE seq > $1 ORDER BY seq DESC LIMIT 1")
        .bind(i64::from(held))
        .fetch_optional(&db.pool)
        .await
}

/// The newest list if it is still to be published to every device.
pub async fn unpublished(db: &Db) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, statement FROM revocations WHERE published_at IS NULL ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&db.pool)
        .await
}

/// Marks list `seq` (and any older) published at `now`.
pub async fn published(db: &Db, seq: i64, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE revocations SET published_at = $1 WHERE seq <= $2 AND published_at IS NULL")
        .bind(now)
        .bind(seq)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Makes the newest list due again (a broker lost what it retained).
pub async fn republish(db: &Db) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE revocations SET published_at = NULL WHERE seq = (SELECT MAX(seq) FROM revocations)")
        .execute(&db.pool)
        .await?;
    Ok(())
}
