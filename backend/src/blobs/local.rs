//! Blobs in a local directory, the embedded default.
//!
//! A blob is written to a temporary file while it is hashed, checked against the digest
//! the caller expects (if any), flushed, and only then renamed under its digest: a crash
//! or a bad upload leaves no visible blob, and a blob, once visible, is exactly the bytes
//! of its name.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::{BlobError, BlobStore, Sha256Digest, hex, temp_path, write_temp};

/// Blobs under `root/ab/cdef…` (hex digest split after two characters); uploads in
/// progress under `root/tmp`.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    /// A store under `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = hex(digest);
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    /// Removes what interrupted uploads left in `root/tmp` (at start-up, before serving).
    pub async fn clean_temporaries(&self) -> Result<usize, BlobError> {
        let mut removed = 0;
        let mut dir = match tokio::fs::read_dir(self.root.join("tmp")).await {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = dir.next_entry().await? {
            tokio::fs::remove_file(entry.path()).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl BlobStore for LocalBlobs {
    async fn put(
        &self,
        mut body: impl AsyncRead + Send + Unpin,
        expected: Option<Sha256Digest>,
        max: u64,
    ) -> Result<(Sha256Digest, u64), BlobError> {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let tmp = temp_path(&tmp_dir);
        let result = write_temp(&mut body, &tmp, expected, max).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        let (digest, size) = result?;
        let path = self.path(&digest);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&tmp, &path).await?;
        // The rename is durable only once its directory is: the database row that names
        // the blob commits next, and must never outlive the blob in a crash.
        if let Some(dir) = path.parent() {
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok((digest, size))
    }

    async fn size(&self, digest: &Sha256Digest) -> Result<u64, BlobError> {
        match tokio::fs::metadata(self.path(digest)).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(hex(digest))),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_range(&self, digest: &Sha256Digest, offset: u64, len: u64) -> Result<Vec<u8>, BlobError> {
        let size = self.size(digest).await?;
        if offset > size {
            return Err(BlobError::Range { offset, size });
        }
        let mut file = tokio::fs::File::open(self.path(digest)).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut out = vec![0u8; len.min(size - offset) as usize];
        file.read_exact(&mut out).await?;
        Ok(out)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        tokio::fs::create_dir_all(&self.root).await?;
        tokio::fs::metadata(&self.root).await?;
        Ok(())
    }
}
