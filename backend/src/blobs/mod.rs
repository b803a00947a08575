//! Content-addressed blob storage: models, patches and validation sets under their SHA-256.
//!
//! One small contract, two stores: the local directory (the embedded default) and an
//! S3-compatible bucket (production). Both verify on write (a blob, once visible, is
//! exactly the bytes of its name; a bad or interrupted upload leaves nothing visible) and
//! read by range, for chunk serving and `Range` requests. The server holds a [`Blobs`],
//! which dispatches to the configured store, so every code path above runs on both.

mod local;
mod s3;

use std::future::Future;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

pub use local::LocalBlobs;
pub use s3::S3Blobs;

/// A SHA-256, the name of a blob.
pub type Sha256Digest = [u8; 32];

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under that digest.
    #[error("no blob {0}")]
    NotFound(String),
    /// The bytes do not hash to the digest the caller gave.
    #[error("content is {actual}, not the expected {expected}")]
    DigestMismatch {
        /// What the caller expected.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// More bytes than allowed arrived.
    #[error("blob larger than {0} bytes")]
    TooLarge(u64),
    /// The range starts past the end.
    #[error("range starts at {offset}, blob has {size} bytes")]
    Range {
        /// Requested start.
        offset: u64,
        /// Blob size.
        size: u64,
    },
    /// The storage failed.
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 store failed or refused (the message names the request and the object).
    #[error("S3: {0}")]
    S3(String),
}

/// What every blob store does.
pub trait BlobStore {
    /// Stores what `body` yields (at most `max` bytes, checked against `expected` when
    /// given); returns its digest and size. Storing a blob that exists is a no-op success.
    fn put(
        &self,
        body: impl AsyncRead + Send + Unpin,
        expected: Option<Sha256Digest>,
        max: u64,
    ) -> impl Future<Output = Result<(Sha256Digest, u64), BlobError>> + Send;

    /// Size of a blob, or [`BlobError::NotFound`].
    fn size(&self, digest: &Sha256Digest) -> impl Future<Output = Result<u64, BlobError>> + Send;

    /// Up to `len` bytes from `offset` (fewer at the end; none at exactly the end).
    fn read_range(
        &self,
        digest: &Sha256Digest,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, BlobError>> + Send;

    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), BlobError>> + Send;
}

/// The configured store.
#[derive(Debug, Clone)]
pub enum Blobs {
    /// A local directory.
    Local(LocalBlobs),
    /// An S3-compatible bucket.
    S3(S3Blobs),
}

impl Blobs {
    /// The store `config` names: the S3 bucket when one is set (uploads spooled in
    /// `DATA_DIR/blobs-tmp`), otherwise the local directory `DATA_DIR/blobs`.
    pub async fn open(config: &Config) -> Result<Self, BlobError> {
        let blobs = match &config.s3_bucket {
            Some(bucket) => Self::S3(S3Blobs::connect(config, bucket, config.data_dir.join("blobs-tmp")).await),
            None => Self::Local(LocalBlobs::new(config.data_dir.join("blobs"))),
        };
        Ok(blobs)
    }
}

impl BlobStore for Blobs {
    async fn put(
        &self,
        body: impl AsyncRead + Send + Unpin,
        expected: Option<Sha256Digest>,
        max: u64,
    ) -> Result<(Sha256Digest, u64), BlobError> {
        match self {
            Self::Local(s) => s.put(body, expected, max).await,
            Self::S3(s) => s.put(body, expected, max).await,
        }
    }

    async fn size(&self, digest: &Sha256Digest) -> Result<u64, BlobError> {
        match self {
            Self::Local(s) => s.size(digest).await,
            Self::S3(s) => s.size(digest).await,
        }
    }

    async fn read_range(&self, digest: &Sha256Digest, offset: u64, len: u64) -> Result<Vec<u8>, BlobError> {
        match self {
            Self::Local(s) => s.read_range(digest, offset, len).await,
            Self::S3(s) => s.read_range(digest, offset, len).await,
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        match self {
            Self::Local(s) => s.ping().await,
            Self::S3(s) => s.ping().await,
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The digest a lowercase or uppercase hex string names, if it is one.
pub fn parse_digest(hex: &str) -> Option<Sha256Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new name for a temporary file in `dir`, unique across processes and uploads.
fn temp_path(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Writes `body` to the new file `tmp` while hashing it, refusing more than `max` bytes
/// and a digest other than `expected`; returns the digest and size. The caller removes
/// `tmp` on error.
async fn write_temp(
    body: &mut (impl AsyncRead + Unpin),
    tmp: &Path,
    expected: Option<Sha256Digest>,
    max: u64,
) -> Result<(Sha256Digest, u64), BlobError> {
    let mut file = tokio::fs::File::create(tmp).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max {
            return Err(BlobError::TooLarge(max));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
    }
    file.sync_all().await?;
    let digest: Sha256Digest = hasher.finalize().into();
    if let Some(expected) = expected
        && expected != digest
    {
        return Err(BlobError::DigestMismatch { expected: hex(&expected), actual: hex(&digest) });
    }
    Ok((digest, size))
}
