//! The blob stores' one contract: verified on write, invisible until complete, ranged
//! reads. Every contract test runs on the local directory, and on S3 when
//! `MOTA_TEST_S3_ENDPOINT` names a server (CI starts s3s-fs: `.ci/s3.sh`), in a bucket of
//! its own.

mod common;

use std::path::Path;

use mota_backend::Config;
use mota_backend::blobs::{BlobError, BlobStore, Blobs, LocalBlobs, hex};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use common::{BoxError, TestResult};

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Runs each contract test, `async fn NAME(&Blobs, data_dir: &Path)`, as `NAME::local`
/// and `NAME::s3`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn local() -> super::TestResult {
                let dir = tempfile::tempdir()?;
                let store = super::Blobs::open(&super::Config::embedded(dir.path().into())).await?;
                super::$name(&store, dir.path()).await
            }

            #[tokio::test]
            async fn s3() -> super::TestResult {
                match super::s3_store(&stringify!($name).replace('_', "-")).await? {
                    Some((dir, store, _)) => super::$name(&store, dir.path()).await,
                    None => Ok(()),
                }
            }
        }
    )*};
}

on_both_stores!(
    round_trip,
    an_empty_blob,
    storing_again_is_fine,
    bad_uploads_leave_nothing,
    unknown_is_not_found,
    ping
);

/// A store on the test S3 server in a new bucket (named after `tag`), its data dir, and
/// its configuration; `None`, said on stdout, without a server.
async fn s3_store(tag: &str) -> Result<Option<(TempDir, Blobs, Config)>, BoxError> {
    let Some(s3) = common::s3_from_env() else {
        println!("MOTA_TEST_S3_ENDPOINT is not set: S3 not tested (CI starts a server: .ci/s3.sh)");
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let mut config = Config::embedded(dir.path().into());
    s3.configure(&mut config, &s3.create_bucket(tag).await?);
    let store = Blobs::open(&config).await?;
    Ok(Some((dir, store, config)))
}

/// Files left in the stores' temporary directories under `data_dir`.
fn temporaries(data_dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for dir in [data_dir.join("blobs/tmp"), data_dir.join("blobs-tmp")] {
        match std::fs::read_dir(dir) {
            Ok(entries) => n += entries.count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

async fn round_trip(store: &Blobs, _: &Path) -> TestResult {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let (d, size) = store.put(&data[..], Some(digest(&data)), 1 << 20).await?;
    assert_eq!((d, size), (digest(&data), data.len() as u64));
    assert_eq!(store.size(&d).await?, data.len() as u64);
    assert_eq!(store.read_range(&d, 0, 10).await?, data[..10]);
    assert_eq!(store.read_range(&d, 1000, 4096).await?, data[1000..5096]);
    assert_eq!(store.read_range(&d, 199_990, 4096).await?, data[199_990..], "short at the end");
    assert_eq!(store.read_range(&d, 0, u64::MAX).await?, data, "all of it");
    assert!(store.read_range(&d, 5, 0).await?.is_empty());
    assert!(store.read_range(&d, 200_000, 10).await?.is_empty(), "none at exactly the end");
    for offset in [200_001, u64::MAX] {
        let past = store.read_range(&d, offset, 10).await;
        assert!(matches!(past, Err(BlobError::Range { size: 200_000, .. })), "{past:?}");
    }
    Ok(())
}

async fn an_empty_blob(store: &Blobs, _: &Path) -> TestResult {
    let (d, size) = store.put(&b""[..], Some(digest(b"")), 10).await?;
    assert_eq!(size, 0);
    assert_eq!(store.size(&d).await?, 0);
    assert!(store.read_range(&d, 0, 10).await?.is_empty());
    assert!(matches!(store.read_range(&d, 1, 10).await, Err(BlobError::Range { offset: 1, size: 0 })));
    Ok(())
}

async fn storing_again_is_fine(store: &Blobs, _: &Path) -> TestResult {
    let data = b"the same bytes, twice";
    let first = store.put(&data[..], None, 100).await?;
    let second = store.put(&data[..], Some(digest(data)), 100).await?;
    assert_eq!(first, second);
    assert_eq!(store.read_range(&first.0, 0, 100).await?, data);
    Ok(())
}

async fn bad_uploads_leave_nothing(store: &Blobs, data_dir: &Path) -> TestResult {
    let data = vec![5u8; 10_000];
    let wrong = digest(b"something else");
    assert!(matches!(store.put(&data[..], Some(wrong), 1 << 20).await, Err(BlobError::DigestMismatch { .. })));
    assert!(matches!(store.put(&data[..], None, 9_999).await, Err(BlobError::TooLarge(9_999))));
    for d in [digest(&data), wrong] {
        assert!(matches!(store.size(&d).await, Err(BlobError::NotFound(_))));
    }
    assert_eq!(temporaries(data_dir)?, 0, "temporary files are removed");
    store.put(&data[..], None, 10_000).await?; // the limit itself is allowed
    assert_eq!(temporaries(data_dir)?, 0, "also after an upload");
    Ok(())
}

async fn unknown_is_not_found(store: &Blobs, _: &Path) -> TestResult {
    let d = digest(b"never stored");
    assert!(matches!(store.size(&d).await, Err(BlobError::NotFound(_))));
    for len in [10, 0] {
        assert!(matches!(store.read_range(&d, 0, len).await, Err(BlobError::NotFound(_))));
    }
    Ok(())
}

async fn ping(store: &Blobs, _: &Path) -> TestResult {
    store.ping().await?;
    Ok(())
}

#[tokio::test]
async fn local_blobs_are_files_named_by_digest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = LocalBlobs::new(dir.path());
    let (d, _) = store.put(&b"model"[..], None, 100).await?;
    assert_eq!(std::fs::read(dir.path().join(&hex(&d)[..2]).join(&hex(&d)[2..]))?, b"model");
    Ok(())
}

#[tokio::test]
async fn s3_objects_are_named_prefix_and_digest() -> TestResult {
    let Some(s3) = common::s3_from_env() else {
        println!("MOTA_TEST_S3_ENDPOINT is not set: S3 not tested (CI starts a server: .ci/s3.sh)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let mut config = Config::embedded(dir.path().into());
    let bucket = s3.create_bucket("prefix").await?;
    s3.configure(&mut config, &bucket);
    config.s3_prefix = "models/".into();
    let store = Blobs::open(&config).await?;
    let (d, _) = store.put(&b"model"[..], None, 100).await?;
    assert!(store.put(&b"model"[..], Some(digest(b"other")), 100).await.is_err());
    let listed = s3.client().list_objects_v2().bucket(&bucket).send().await?;
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [format!("models/{}", hex(&d))]);
    Ok(())
}

#[tokio::test]
async fn s3_refusals_are_errors() -> TestResult {
    let Some((dir, store, config)) = s3_store("refusals").await? else { return Ok(()) };
    // A wrong secret: every operation fails (an unknown blob is not "not found").
    let wrong_secret =
        Blobs::open(&Config { s3_secret_access_key: Some("not-the-secret-key".into()), ..config.clone() }).await?;
    let d = store.put(&b"model"[..], None, 100).await?.0;
    let errors = [
        wrong_secret.ping().await.err(),
        wrong_secret.put(&b"other"[..], None, 100).await.err(),
        wrong_secret.size(&d).await.err(),
        wrong_secret.read_range(&d, 0, 10).await.err(),
    ];
    for e in errors {
        let e = e.ok_or("a wrong secret was accepted")?;
        println!("wrong secret: {e}");
        assert!(matches!(e, BlobError::S3(_)), "{e:?}");
        assert!(!e.to_string().contains("not-the-secret-key"), "the secret is not shown: {e}");
    }
    assert_eq!(temporaries(dir.path())?, 0);
    // A bucket that does not exist: not ready.
    let missing = Config { s3_bucket: Some("mota-no-such-bucket".into()), ..config };
    let e = Blobs::open(&missing).await?.ping().await.err().ok_or("a missing bucket answered")?;
    println!("missing bucket: {e}");
    assert!(matches!(e, BlobError::S3(_)), "{e:?}");
    Ok(())
}
