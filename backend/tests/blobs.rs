//! The local blob store: verified on write, invisible until complete, ranged reads.

use mota_backend::blobs::{BlobError, BlobStore, LocalBlobs, hex};
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[tokio::test]
async fn a_blob_is_stored_under_its_digest_and_read_by_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = LocalBlobs::new(dir.path());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let (d, size) = store.put(&data[..], Some(digest(&data)), 1 << 20).await?;
    assert_eq!((d, size), (digest(&data), data.len() as u64));
    assert_eq!(store.size(&d).await?, data.len() as u64);
    assert_eq!(store.read_range(&d, 1000, 4096).await?, data[1000..5096]);
    assert_eq!(store.read_range(&d, 199_990, 4096).await?, data[199_990..], "short at the end");
    assert!(store.read_range(&d, 200_000, 10).await?.is_empty());
    assert!(matches!(store.read_range(&d, 200_001, 10).await, Err(BlobError::Range { .. })));
    // Stored twice: same name, same bytes.
    store.put(&data[..], None, 1 << 20).await?;
    assert!(dir.path().join(&hex(&d)[..2]).join(&hex(&d)[2..]).exists());
    Ok(())
}

#[tokio::test]
async fn bad_uploads_leave_nothing_behind() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = LocalBlobs::new(dir.path());
    let data = vec![5u8; 10_000];
    let wrong = digest(b"something else");
    assert!(matches!(store.put(&data[..], Some(wrong), 1 << 20).await, Err(BlobError::DigestMismatch { .. })));
    assert!(matches!(store.put(&data[..], None, 9_999).await, Err(BlobError::TooLarge(9_999))));
    assert!(matches!(store.size(&digest(&data)).await, Err(BlobError::NotFound(_))));
    let leftovers = std::fs::read_dir(dir.path().join("tmp"))?.count();
    assert_eq!(leftovers, 0, "temporary files are removed");
    Ok(())
}
