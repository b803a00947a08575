//! `mota keys` end to end: the files the CLI writes are the ones the backend will load,
//! and a release key certified by a root verifies under that root only.

use std::path::Path;
use std::process::{Command, Output};

use mota_proto::keys::KeyFile;
use mota_proto::sign::ReleaseKey;
use mota_proto::{DevicePolicy, Digest, Image, KeyId, Limits, Manifest, VerifyError, verify, verify_revocation};

fn mota(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mota")).current_dir(dir).args(args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = mota(dir, args);
    assert!(out.status.success(), "mota {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn read(dir: &Path, name: &str) -> KeyFile {
    KeyFile::from_pem(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn public_root(dir: &Path, name: &str) -> [u8; 32] {
    match read(dir, name) {
        KeyFile::Public(key) => key.to_bytes(),
        _ => panic!("{name} is not a public key"),
    }
}

fn release(dir: &Path, prefix: &str) -> ReleaseKey {
    let KeyFile::Private(key) = read(dir, &format!("{prefix}.key.pem")) else { panic!("not a private key") };
    let KeyFile::Certificate(cert) = read(dir, &format!("{prefix}.cert.pem")) else { panic!("not a certificate") };
    ReleaseKey::new(key, cert).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

const MANIFEST: Manifest<'static> = Manifest {
    format: 1,
    model: "digits",
    version: "2.0.0",
    security_counter: 2,
    device_class: "sim",
    image: Image { size: 1000, sha256: Digest([9; 32]) },
    delta: None,
    validation: None,
    arena_bytes: 2048,
    expires_at: None,
    rollout_id: 1,
};

const POLICY: DevicePolicy<'static> = DevicePolicy {
    device_class: "sim",
    security_counter: 1,
    now: None,
    revoked: &[],
    limits: Limits { max_image_bytes: 4096, max_patch_bytes: 4096, max_arena_bytes: 4096, max_validation_bytes: 4096 },
};

#[test]
fn release_keys_verify_under_their_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let printed = ok(d, &["keys", "root-new", "--out", "a"]);
    ok(d, &["keys", "root-new", "--out", "b"]);
    ok(d, &["keys", "release-new", "--root", "a.key.pem", "--days", "30", "--out", "rel-a"]);
    ok(d, &["keys", "release-new", "--root", "b.key.pem", "--days", "30", "--out", "rel-b"]);

    // The key id printed at creation is the one `show` reports, for both key files.
    let shown = json(d, &["keys", "show", "a.key.pem", "--json"]);
    assert_eq!(shown["kind"], "private_key");
    assert!(printed.contains(shown["key_id"].as_str().unwrap()));
    assert_eq!(json(d, &["keys", "show", "a.pub.pem", "--json"])["key_id"], shown["key_id"]);
    assert!(!printed.contains("PRIVATE"), "no secret on stdout");

    let (root_a, root_b) = (public_root(d, "a.pub.pem"), public_root(d, "b.pub.pem"));
    let offer_a = release(d, "rel-a").sign(&MANIFEST).unwrap();
    assert_eq!(verify(&offer_a, &[root_a], &POLICY).unwrap().manifest, MANIFEST);
    assert!(matches!(verify(&offer_a, &[root_b], &POLICY), Err(VerifyError::UnknownRoot(_))));
    let offer_b = release(d, "rel-b").sign(&MANIFEST).unwrap();
    assert!(matches!(verify(&offer_b, &[root_a], &POLICY), Err(VerifyError::UnknownRoot(_))));
    assert!(verify(&offer_b, &[root_a, root_b], &POLICY).is_ok(), "a device may trust several roots");

    // `show` on the certificate names its issuer and checks it against a root.
    let cert = json(d, &["keys", "show", "rel-a.cert.pem", "--root", "a.pub.pem", "--json"]);
    assert_eq!(cert["kind"], "certificate");
    assert_eq!(cert["issuer"], shown["key_id"]);
    assert_eq!(cert["expired"], false);
    assert!(cert["root_check"].as_str().unwrap().starts_with("valid"), "{cert}");
    let wrong = json(d, &["keys", "show", "rel-a.cert.pem", "--root", "b.pub.pem", "--json"]);
    assert!(wrong["root_check"].as_str().unwrap().starts_with("INVALID"), "{wrong}");
    let days = (cert["not_after"].as_u64().unwrap() as i64 - now() as i64) / 86_400;
    assert!((29..=30).contains(&days), "certified for {days} days");
    assert_eq!(cert["counters"], serde_json::json!([0, 1000]), "the default counter range");
}

#[test]
fn a_release_key_signs_only_its_counter_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keys", "root-new"]);
    let args = ["keys", "release-new", "--root", "root.key.pem", "--min-counter", "2", "--max-counter", "5"];
    assert!(ok(d, &args).contains("counters    2..=5"));
    let root = public_root(d, "root.pub.pem");
    let policy = DevicePolicy { security_counter: 0, ..POLICY };
    let release = release(d, "release");
    assert!(verify(&release.sign(&MANIFEST).unwrap(), &[root], &policy).is_ok());
    let beyond = Manifest { security_counter: 6, ..MANIFEST };
    let signed = release.sign(&beyond).unwrap();
    let refused = verify(&signed, &[root], &policy);
    assert_eq!(refused.unwrap_err(), VerifyError::CounterOutsideCertificate { counter: 6, min: 2, max: 5 });
    let empty = mota(
        d,
        &["keys", "release-new", "--root", "root.key.pem", "--min-counter", "6", "--max-counter", "5", "--out", "x"],
    );
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("above --max-counter"));
}

#[test]
fn revocation_lists_are_signed_by_the_root_and_name_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keys", "root-new"]);
    ok(d, &["keys", "release-new", "--root", "root.key.pem"]);
    let id = json(d, &["keys", "show", "release.key.pem", "--json"])["key_id"].as_str().unwrap().to_owned();
    let printed = ok(d, &["keys", "revoke", "--root", "root.key.pem", "--seq", "3", &id]);
    assert!(printed.contains(&id) && printed.contains("revocation-push"), "{printed}");
    let bytes = std::fs::read(d.join("revocation.cbor")).unwrap();
    let list = verify_revocation(&bytes, &[public_root(d, "root.pub.pem")]).unwrap();
    assert_eq!((list.seq, list.keys().collect::<Vec<_>>()), (3, vec![id.parse::<KeyId>().unwrap()]));
    // Not the root: refused; nine keys: refused; a bad key id: a usage error.
    let by_release = mota(d, &["keys", "revoke", "--root", "release.cert.pem", "--seq", "4", "--out", "x.cbor"]);
    assert_eq!(by_release.status.code(), Some(1));
    let nine: Vec<String> = (0..9).map(|i| format!("{i:016x}")).collect();
    let mut args = vec!["keys", "revoke", "--root", "root.key.pem", "--seq", "4", "--out", "y.cbor"];
    args.extend(nine.iter().map(String::as_str));
    assert!(String::from_utf8_lossy(&mota(d, &args).stderr).contains("at most 8"));
    let bad = mota(d, &["keys", "revoke", "--root", "root.key.pem", "--seq", "4", "not-hex"]);
    assert_eq!(bad.status.code(), Some(2));
    // The file is not overwritten without --force.
    let again = mota(d, &["keys", "revoke", "--root", "root.key.pem", "--seq", "5"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(d.join("revocation.cbor")).unwrap(), bytes);
}

#[cfg(unix)]
#[test]
fn private_keys_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["keys", "root-new"]);
    let mode = std::fs::metadata(dir.path().join("root.key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keys", "root-new"]);
    let before = std::fs::read(d.join("root.key.pem")).unwrap();

    let again = mota(d, &["keys", "root-new"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(d.join("root.key.pem")).unwrap(), before, "nothing overwritten");

    let public_as_root = mota(d, &["keys", "release-new", "--root", "root.pub.pem"]);
    assert_eq!(public_as_root.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&public_as_root.stderr).contains("expected the root's private key"));
    assert!(!d.join("release.key.pem").exists());

    let zero_days = mota(d, &["keys", "release-new", "--root", "root.key.pem", "--days", "0"]);
    assert_eq!(zero_days.status.code(), Some(2), "usage error");

    std::fs::write(d.join("junk.pem"), "not a key").unwrap();
    let junk = mota(d, &["keys", "show", "junk.pem"]);
    assert_eq!(junk.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&junk.stderr).contains("not a mota key or certificate file"));
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
