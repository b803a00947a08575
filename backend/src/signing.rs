//! The release key the backend signs manifests with.
//!
//! Production: a release key and its certificate, made with `mota keys release-new` from a
//! root kept offline, given as files (`--release-key`, `--release-cert`; a Kubernetes
//! Secret mounts them). Embedded default: on first start a development root and a release
//! key certified by it are generated into `DATA_DIR/keys/` and reused afterwards, with a
//! loud log line: devices must then trust `dev-root.pub.pem`, which no production fleet
//! should.

use std::path::{Path, PathBuf};

use mota_proto::keys::{
    KeyFile, KeyFileError, certificate_pem, generate, private_key_pem, public_key_pem, write_secret_file,
};
use mota_proto::sign::{ReleaseKey, certify};
use mota_proto::{CertBody, KeyCertificate, Wire};

use crate::blobs::hex;
use crate::db::{Db, DbError};

/// Days a generated development certificate is valid.
const DEV_DAYS: u64 = 3650;
/// Security counters a generated development key may sign: all of them (a development
/// root is trusted by development devices only; production release keys are certified
/// for a bounded range, `mota keys release-new --max-counter`).
const DEV_COUNTERS: std::ops::RangeInclusive<u32> = 0..=u32::MAX;

/// Why no signing key is available.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A key file could not be read or written.
    #[error("{0}: {1}")]
    File(PathBuf, #[source] std::io::Error),
    /// A key file is not what it should be.
    #[error("{0}: {1}")]
    Key(PathBuf, String),
    /// The key and the certificate do not belong together.
    #[error("the release key does not match its certificate")]
    Mismatch,
    /// Only one of the two files was given.
    #[error("give both --release-key and --release-cert, or neither")]
    Half,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The release key in use.
pub struct Signer {
    /// The key and its certificate.
    pub release: ReleaseKey,
    /// The certificate's end of validity (Unix seconds).
    pub not_after: u64,
    /// The security counters the certificate lets the key sign.
    pub counters: std::ops::RangeInclusive<u32>,
    /// Whether it is the generated development key.
    pub development: bool,
    /// The root public key, when the backend has it (`--root-public-key`, or the
    /// development root): uploaded revocation lists are then checked against it.
    pub root: Option<[u8; 32]>,
}

/// The key files given: the release key and its certificate (both or neither), and
/// optionally the root's public key.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyFiles<'a> {
    /// The release key (`--release-key`).
    pub key: Option<&'a Path>,
    /// Its certificate (`--release-cert`).
    pub cert: Option<&'a Path>,
    /// The root public key the certificate chains to (`--root-public-key`).
    pub root: Option<&'a Path>,
}

/// Loads the release key from files, or the development key from the data dir (making it
/// on first start); records its public part in the database. With the root public key
/// (given, or the development one) the certificate must verify under it.
pub async fn load(files: KeyFiles<'_>, data_dir: &Path, db: &Db, now: u64) -> Result<Signer, SigningError> {
    let (key_path, cert_path, development) = match (files.key, files.cert) {
        (Some(k), Some(c)) => (k.to_path_buf(), c.to_path_buf(), false),
        (None, None) => {
            let dir = data_dir.join("keys");
            let (k, c) = (dir.join("release.key.pem"), dir.join("release.cert.pem"));
            if !k.exists() || !c.exists() {
                create_development_keys(&dir, now)?;
            }
            (k, c, true)
        }
        _ => return Err(SigningError::Half),
    };
    let release_key = match read(&key_path)? {
        KeyFile::Private(k) => k,
        _ => return Err(SigningError::Key(key_path, "not a private key".into())),
    };
    let certificate = match read(&cert_path)? {
        KeyFile::Certificate(c) => c,
        _ => return Err(SigningError::Key(cert_path, "not a mota key certificate".into())),
    };
    let unreadable = || SigningError::Key(cert_path.clone(), "unreadable certificate".into());
    let cert = KeyCertificate::parse(&certificate).map_err(|_| unreadable())?;
    let body = CertBody::parse(cert.body).map_err(|_| unreadable())?;
    let release = ReleaseKey::new(release_key, certificate.clone()).map_err(|_| SigningError::Mismatch)?;
    if development {
        tracing::warn!(
            "signing with a DEVELOPMENT key generated in {}: devices must trust {}/dev-root.pub.pem; \
             give --release-key and --release-cert for production",
            data_dir.join("keys").display(),
            data_dir.join("keys").display()
        );
    }
    sqlx::query(
        "INSERT INTO signing_keys (key_id, public_key, certificate, not_after, active, created_at) \
         VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (key_id) DO UPDATE SET active = 1",
    )
    .bind(hex(&release.key_id().0))
    .bind(hex(&body.public_key))
    .bind(release.certificate().to_vec())
    .bind(body.not_after as i64)
    .bind((now * 1000) as i64)
    .execute(&db.pool)
    .await
    .map_err(DbError::from)?;
    sqlx::query("UPDATE signing_keys SET active = 0 WHERE key_id <> $1")
        .bind(hex(&release.key_id().0))
        .execute(&db.pool)
        .await
        .map_err(DbError::from)?;
    let root_path = match (files.root, development) {
        (Some(path), _) => Some(path.to_path_buf()),
        (None, true) => Some(data_dir.join("keys").join("dev-root.pub.pem")),
        (None, false) => None,
    };
    let root = match root_path {
        Some(path) => {
            let KeyFile::Public(root) = read(&path)? else {
                return Err(SigningError::Key(path, "not a public key (root.pub.pem)".into()));
            };
            mota_proto::verify_certificate(&cert, &[root.to_bytes()], Some(now)).map_err(|e| {
                SigningError::Key(cert_path.clone(), format!("does not verify under {}: {e}", path.display()))
            })?;
            Some(root.to_bytes())
        }
        None => None,
    };
    let counters = body.min_counter..=body.max_counter;
    Ok(Signer { release, not_after: body.not_after, counters, development, root })
}

fn read(path: &Path) -> Result<KeyFile, SigningError> {
    let text = std::fs::read_to_string(path).map_err(|e| SigningError::File(path.to_path_buf(), e))?;
    KeyFile::from_pem(&text).map_err(|e| SigningError::Key(path.to_path_buf(), e.to_string()))
}

fn create_development_keys(dir: &Path, now: u64) -> Result<(), SigningError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| SigningError::File(p, e)
    };
    let key = |p: &Path| {
        let p = p.to_path_buf();
        move |e: KeyFileError| SigningError::Key(p, e.to_string())
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let root = generate().map_err(key(dir))?;
    let release = generate().map_err(key(dir))?;
    let cert = certify(&root, &release.verifying_key(), now + DEV_DAYS * 86_400, DEV_COUNTERS)
        .map_err(|e| SigningError::Key(dir.to_path_buf(), e.to_string()))?;
    let files = [
        ("dev-root.key.pem", private_key_pem(&root).map_err(key(dir))?, true),
        ("dev-root.pub.pem", public_key_pem(&root.verifying_key()).map_err(key(dir))?, false),
        ("release.key.pem", private_key_pem(&release).map_err(key(dir))?, true),
        ("release.cert.pem", certificate_pem(&cert).map_err(key(dir))?, false),
    ];
    for (name, text, secret) in files {
        let path = dir.join(name);
        let written = if secret { write_secret_file(&path, &text) } else { std::fs::write(&path, &text) };
        written.map_err(io(&path))?;
    }
    Ok(())
}
