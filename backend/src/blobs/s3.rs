//! Blobs in an S3-compatible bucket, so that several replicas share them and no disk of
//! the backend's needs to last.
//!
//! S3 has no rename, so the local store's way to keep bad uploads invisible does not carry
//! over. Instead, an upload is spooled to a local temporary file while it is hashed and
//! size-checked, and only a verified file is sent. PutObject is atomic, and the request
//! carries the SHA-256 (`x-amz-checksum-sha256`), so the server rejects bytes damaged on
//! the way instead of storing them. Keys are the hex digest: an object already there holds
//! those bytes and is not sent again. Reads are ranged GetObjects, one request per range.
//!
//! s3s-fs 0.14.1, the S3 server CI tests against, checks `x-amz-checksum-sha256` only after
//! it has moved the new object into place. A mismatch is answered with `BadDigest`, but the
//! bad bytes stay stored under the key (replacing what was there), while AWS S3 documents
//! that it rejects such a request without storing anything. Since this store sends the
//! digest of the very file it sends, only bytes damaged on the way can differ.

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::AsyncRead;

use super::{BlobError, BlobStore, Sha256Digest, hex, temp_path, write_temp};
use crate::config::Config;

/// Blobs under `{prefix}{hex digest}` in a bucket; uploads spooled in a local directory.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    prefix: String,
    tmp_dir: PathBuf,
}

impl S3Blobs {
    /// The store in `bucket`, reached as `config` says (endpoint, region, addressing, key
    /// prefix; static credentials or the AWS default chain); uploads spool in `tmp_dir`
    /// (created when needed). Nothing is sent yet: [`BlobStore::ping`] checks the bucket.
    pub async fn connect(config: &Config, bucket: &str, tmp_dir: PathBuf) -> Self {
        let mut shared = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(config.s3_region.clone()));
        if let (Some(id), Some(secret)) = (&config.s3_access_key_id, &config.s3_secret_access_key) {
            shared = shared.credentials_provider(Credentials::new(id, secret, None, None, "mota-config"));
        }
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared.load().await).force_path_style(config.s3_path_style);
        if let Some(endpoint) = &config.s3_endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(s3.build()),
            bucket: bucket.to_owned(),
            prefix: config.s3_prefix.clone(),
            tmp_dir,
        }
    }

    fn key(&self, digest: &Sha256Digest) -> String {
        format!("{}{}", self.prefix, hex(digest))
    }

    /// The object's metadata, `None` when there is none under `key`.
    async fn head(&self, key: &str, checksum: Option<ChecksumMode>) -> Result<Option<HeadObjectOutput>, BlobError> {
        let head = self.client.head_object().bucket(&self.bucket).key(key).set_checksum_mode(checksum);
        match head.send().await {
            Ok(out) => Ok(Some(out)),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(self.error("HeadObject", key, e)),
        }
    }

    /// The bytes of a ranged GetObject's answer, checked to start at `offset`.
    async fn ranged_body(&self, key: &str, offset: u64, out: GetObjectOutput) -> Result<Vec<u8>, BlobError> {
        let start = out.content_range().and_then(|r| r.strip_prefix("bytes ")?.split_once('-')?.0.parse::<u64>().ok());
        if start != Some(offset) {
            return Err(BlobError::S3(format!(
                "GetObject {}: asked for bytes from {offset}, got Content-Range {:?}",
                self.url(key),
                out.content_range()
            )));
        }
        let bytes = out.body.collect().await.map_err(|e| {
            BlobError::S3(format!("GetObject {}: reading the body: {}", self.url(key), DisplayErrorContext(e)))
        })?;
        Ok(bytes.into_bytes().to_vec())
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// What went wrong, for logs and operators: the request, the object, and the server's
    /// status and error code, or the client's reason (connection, timeout, credentials).
    fn error<E>(&self, request: &str, key: &str, e: SdkError<E, HttpResponse>) -> BlobError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let why = match &e {
            SdkError::ServiceError(s) => {
                let status = s.raw().status().as_u16();
                match (s.err().code(), s.err().message()) {
                    (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
                    (Some(code), None) => format!("HTTP {status} {code}"),
                    // Answers to HEAD requests have no body, hence no code.
                    _ if status == 403 => format!("HTTP {status}: access denied (wrong credentials or no permission)"),
                    _ => format!("HTTP {status}"),
                }
            }
            other => DisplayErrorContext(other).to_string(),
        };
        BlobError::S3(format!("{request} {}: {why}", self.url(key)))
    }
}

/// A temporary file, removed when dropped: after the upload, on every error, and when the
/// request is abandoned half-way.
struct TempFile(PathBuf);

impl TempFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl BlobStore for S3Blobs {
    async fn put(
        &self,
        mut body: impl AsyncRead + Send + Unpin,
        expected: Option<Sha256Digest>,
        max: u64,
    ) -> Result<(Sha256Digest, u64), BlobError> {
        tokio::fs::create_dir_all(&self.tmp_dir).await?;
        let tmp = TempFile(temp_path(&self.tmp_dir));
        let (digest, size) = write_temp(&mut body, tmp.path(), expected, max).await?;
        let key = self.key(&digest);
        let checksum = BASE64.encode(digest);
        if let Some(existing) = self.head(&key, Some(ChecksumMode::Enabled)).await? {
            // Objects put here carry their SHA-256; one written otherwise is judged by size,
            // and one that differs is replaced.
            let same = match existing.checksum_sha256() {
                Some(stored) => stored == checksum,
                None => existing.content_length().and_then(|n| u64::try_from(n).ok()) == Some(size),
            };
            if same {
                return Ok((digest, size));
            }
        }
        let file = ByteStream::from_path(tmp.path())
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(DisplayErrorContext(e).to_string())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(file)
            .checksum_sha256(checksum)
            .send()
            .await
            .map_err(|e| self.error("PutObject", &key, e))?;
        Ok((digest, size))
    }

    async fn size(&self, digest: &Sha256Digest) -> Result<u64, BlobError> {
        let key = self.key(digest);
        let head = self.head(&key, None).await?.ok_or_else(|| BlobError::NotFound(hex(digest)))?;
        head.content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| BlobError::S3(format!("HeadObject {}: no Content-Length", self.url(&key))))
    }

    async fn read_range(&self, digest: &Sha256Digest, offset: u64, len: u64) -> Result<Vec<u8>, BlobError> {
        let key = self.key(digest);
        // Servers refuse range positions past i64::MAX (they parse them signed); no blob
        // comes near, so offsets that far are answered from the size alone.
        let last_position = i64::MAX as u64;
        if len > 0 && offset <= last_position {
            let range = format!("bytes={offset}-{}", offset.saturating_add(len - 1).min(last_position));
            match self.client.get_object().bucket(&self.bucket).key(&key).range(&range).send().await {
                Ok(out) => return self.ranged_body(&key, offset, out).await,
                Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => {
                    return Err(BlobError::NotFound(hex(digest)));
                }
                // 416: the range starts at or past the end (an empty blob has no byte to
                // start at); the size tells which, below.
                Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 416 => {}
                Err(e) => return Err(self.error("GetObject", &key, e)),
            }
        }
        let size = self.size(digest).await?;
        if offset > size {
            return Err(BlobError::Range { offset, size });
        }
        if offset == size || len == 0 {
            return Ok(Vec::new());
        }
        Err(BlobError::S3(format!("GetObject {}: range from {offset} refused, size is {size}", self.url(&key))))
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| self.error("HeadBucket", "", e))?;
        Ok(())
    }
}
