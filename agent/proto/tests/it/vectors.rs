//! The hex vectors under `tests/vectors/` pin every encoding of the contract.
//!
//! Each vector is checked three ways: the fixture value encodes to exactly the file's
//! bytes, the file's bytes decode to exactly the fixture value, and re-encoding the
//! decoded value gives the file's bytes again. Run with `MOTA_BLESS=1` to rewrite the
//! files after a deliberate change of the format (and say so in the commit).

use std::fmt::Debug;
use std::path::PathBuf;

use mota_proto::message::{Chunk, Get, Hello, Status};
use mota_proto::{CertBody, CommandBody, Envelope, KeyCertificate, Manifest, RevocationBody, RootSigned, Wire};

use crate::fixtures;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(format!("{name}.hex"))
}

/// Reads a vector: hex, whitespace ignored, `#` starts a comment line.
pub fn read(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("vector {name}: {e}"));
    let hex: String = text.lines().filter(|l| !l.starts_with('#')).flat_map(|l| l.split_whitespace()).collect();
    hex::decode(hex).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

fn write(name: &str, what: &str, bytes: &[u8]) {
    let mut text = format!("# {what}\n# {} bytes; regenerate with MOTA_BLESS=1 (see README.md)\n", bytes.len());
    for line in hex::encode(bytes).as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap());
        text.push('\n');
    }
    std::fs::write(path(name), text).unwrap();
}

fn check<'a, T: Wire<'a> + PartialEq + Debug>(name: &str, what: &str, expected: &T, encoded: &'a [u8]) {
    let bytes = expected.to_vec().unwrap();
    if std::env::var_os("MOTA_BLESS").is_some() {
        write(name, what, &bytes);
    }
    assert_eq!(hex::encode(&bytes), hex::encode(encoded), "{name}: encoding drifted from the vector");
    let decoded = T::parse(encoded).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&decoded, expected, "{name}: decoded value differs");
    assert_eq!(decoded.to_vec().unwrap(), encoded, "{name}: re-encoding differs");
    assert_eq!(decoded.encoded_len(), encoded.len(), "{name}: encoded_len wrong");
}

/// Loads a vector, or, when blessing, the fresh encoding (the file is written by `check`).
fn load<'a, T: Wire<'a>>(name: &str, value: &T) -> Vec<u8> {
    if std::env::var_os("MOTA_BLESS").is_some() { value.to_vec().unwrap() } else { read(name) }
}

#[test]
fn manifests() {
    let full = fixtures::manifest();
    check("manifest_full", "Manifest with every optional field", &full, &load("manifest_full", &full));
    let minimal = fixtures::manifest_minimal();
    check("manifest_minimal", "Manifest without optional fields", &minimal, &load("manifest_minimal", &minimal));
}

#[test]
fn certificate_and_envelope() {
    let envelope_bytes = fixtures::envelope();
    let envelope = Envelope::parse(&envelope_bytes).unwrap();
    let cert: KeyCertificate = envelope.certificate;
    let body = CertBody::parse(cert.body).unwrap();
    let what = "CertBody: release key 0x33.. certified until 1900000000 for counters 1..=99";
    check("cert_body", what, &body, &load("cert_body", &body));
    check("certificate", "KeyCertificate of cert_body, signed by root 0x11..", &cert, &load("certificate", &cert));
    check("envelope", "Envelope of manifest_full signed by the release key", &envelope, &load("envelope", &envelope));
    let manifest = Manifest::parse(envelope.body).unwrap();
    assert_eq!(manifest, fixtures::manifest());
}

#[test]
fn commands_and_revocations() {
    let rollback = fixtures::command_rollback();
    let what = "CommandBody: rollback of rollout 42 on kws-0042 from manifest e5.. to image b2.. (manifest f6..)";
    check("command_rollback", what, &rollback, &load("command_rollback", &rollback));
    let cancel = fixtures::command_cancel();
    let what = "CommandBody: cancel of rollout 42's download of manifest e5.. on kws-0042";
    check("command_cancel", what, &cancel, &load("command_cancel", &cancel));
    let signed = fixtures::cmd_rollback();
    let envelope = Envelope::parse(&signed).unwrap();
    check(
        "cmd_rollback",
        "Envelope of command_rollback signed by the release key",
        &envelope,
        &load("cmd_rollback", &envelope),
    );
    assert_eq!(CommandBody::parse(envelope.body).unwrap(), rollback);

    let signed = fixtures::revocation();
    let revocation = RootSigned::parse(&signed).unwrap();
    let body = RevocationBody::parse(revocation.body).unwrap();
    let what = "RevocationBody 2: the release key 0x33.. and key 9999999999999999";
    check("revocation_body", what, &body, &load("revocation_body", &body));
    let what = "SignedRevocation of revocation_body, signed by root 0x11..";
    check("revocation", what, &revocation, &load("revocation", &revocation));
}

#[test]
fn the_command_and_revocation_vectors_verify() {
    let bytes = read("cmd_rollback");
    let verified =
        mota_proto::verify_command(&bytes, &fixtures::roots(), &[], Some(fixtures::NOW), fixtures::DEVICE).unwrap();
    assert_eq!(verified.command, fixtures::command_rollback());
    let bytes = read("revocation");
    let list = mota_proto::verify_revocation(&bytes, &fixtures::roots()).unwrap();
    assert_eq!(list.seq, 2);
    assert_eq!(list.keys().next(), Some(fixtures::release().key_id()));
}

#[test]
fn messages() {
    let hello = fixtures::hello_online();
    check("hello_online", "Hello from an online device", &hello, &load("hello_online", &hello));
    check("hello_offline", "Hello last will", &Hello::OFFLINE, &load("hello_offline", &Hello::OFFLINE));
    let get = fixtures::get();
    check::<Get>("get", "Get 4096 bytes at 4096", &get, &load("get", &get));
    let chunk = fixtures::chunk_data();
    check::<Chunk>("chunk_data", "Chunk carrying data", &chunk, &load("chunk_data", &chunk));
    let refused = fixtures::chunk_refused();
    check::<Chunk>("chunk_refused", "Chunk refused: not offered", &refused, &load("chunk_refused", &refused));
    for (name, what, status) in [
        ("status_progress", "Status: downloading", fixtures::status_progress()),
        ("status_committed", "Status: committed with accuracy and latency", fixtures::status_committed()),
        ("status_rejected", "Status: rejected with error code and detail", fixtures::status_rejected()),
    ] {
        check::<Status>(name, what, &status, &load(name, &status));
    }
}

#[test]
fn the_envelope_vector_verifies() {
    let bytes = read("envelope");
    let offer = mota_proto::verify(&bytes, &fixtures::roots(), &fixtures::policy()).unwrap();
    assert_eq!(offer.manifest, fixtures::manifest());
    assert_eq!(offer.key_id, fixtures::release().key_id());
    assert!(offer.time_checked);
}

#[test]
fn payload_dispatch_by_topic_kind() {
    use mota_proto::message::Payload;
    use mota_proto::topic::Kind;
    assert_eq!(Payload::parse(Kind::Hello, &read("hello_online")), Ok(Payload::Hello(fixtures::hello_online())));
    assert_eq!(Payload::parse(Kind::Get, &read("get")), Ok(Payload::Get(fixtures::get())));
    assert_eq!(Payload::parse(Kind::Chunk, &read("chunk_data")), Ok(Payload::Chunk(fixtures::chunk_data())));
    assert_eq!(
        Payload::parse(Kind::Status, &read("status_rejected")),
        Ok(Payload::Status(fixtures::status_rejected()))
    );
    let cmd = read("cmd_rollback");
    assert!(matches!(Payload::parse(Kind::Cmd, &cmd), Ok(Payload::Cmd(e)) if CommandBody::parse(e.body).is_ok()));
    let revocation = read("revocation");
    assert!(matches!(Payload::parse(Kind::Trust, &revocation), Ok(Payload::Trust(_))));
    let envelope = read("envelope");
    assert!(matches!(Payload::parse(Kind::Offer, &envelope), Ok(Payload::Offer(_))));
    assert_eq!(Payload::parse(Kind::Offer, &[]), Ok(Payload::OfferCleared));
    // A payload on the wrong topic is refused, not misread.
    assert!(Payload::parse(Kind::Get, &read("status_rejected")).is_err());
    assert!(Payload::parse(Kind::Hello, &[]).is_err());
}
