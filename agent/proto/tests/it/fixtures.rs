//! Deterministic keys and values shared by every test of the contract.
//!
//! Keys come from fixed seeds and ed25519 signatures are deterministic, so every
//! encoding below (signed ones included) is the same on every run: that is what lets
//! the hex vectors pin them.

use ed25519_dalek::SigningKey;
use mota_proto::message::{Chunk, DeviceInfo, ErrorCode, Event, Get, Hello, Refusal, RunningModel, Status};
use mota_proto::sign::{ReleaseKey, certify, key_id, revoke};
use mota_proto::{Action, CommandBody, Delta, DevicePolicy, Digest, Image, Manifest, Target, Validation};

/// A trusted time inside every fixture's validity.
pub use mota_proto::testkit::NOW;
/// The release key's certificate ends here.
pub const CERT_NOT_AFTER: u64 = 1_900_000_000;
/// The security counters the release key is certified for.
pub const COUNTERS: std::ops::RangeInclusive<u32> = 1..=99;
/// The device the command fixtures are for.
pub const DEVICE: &str = "kws-0042";

pub fn root() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

pub fn other_root() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32])
}

pub fn release_signing() -> SigningKey {
    SigningKey::from_bytes(&[0x33; 32])
}

pub fn roots() -> [[u8; 32]; 1] {
    assert_eq!(root().verifying_key().to_bytes(), mota_proto::testkit::ROOT, "testkit root is the 0x11 seed");
    [mota_proto::testkit::ROOT]
}

/// A release key certified by `issuer` until `not_after`.
pub fn release_by(issuer: &SigningKey, not_after: u64) -> ReleaseKey {
    release_for(issuer, not_after, COUNTERS)
}

/// A release key certified by `issuer` until `not_after` for `counters`.
pub fn release_for(issuer: &SigningKey, not_after: u64, counters: std::ops::RangeInclusive<u32>) -> ReleaseKey {
    let key = release_signing();
    let cert = certify(issuer, &key.verifying_key(), not_after, counters).unwrap();
    ReleaseKey::new(key, cert).unwrap()
}

pub fn release() -> ReleaseKey {
    release_by(&root(), CERT_NOT_AFTER)
}

/// A manifest with every optional field present.
pub fn manifest() -> Manifest<'static> {
    Manifest {
        format: 1,
        model: "kws-dscnn",
        version: "1.4.0+ft.2",
        security_counter: 7,
        device_class: "stm32f4-kws",
        image: Image { size: 52_344, sha256: Digest([0xa1; 32]) },
        delta: Some(Delta {
            base_sha256: Digest([0xb2; 32]),
            patch_size: 4_321,
            patch_sha256: Digest([0xc3; 32]),
            codec: 1,
        }),
        validation: Some(Validation {
            set_sha256: Digest([0xd4; 32]),
            set_size: 12_800,
            min_accuracy_permille: 900,
            max_drop_permille: 15,
        }),
        arena_bytes: 23_552,
        expires_at: Some(1_850_000_000),
        rollout_id: 42,
    }
}

/// A manifest with no optional field.
pub fn manifest_minimal() -> Manifest<'static> {
    Manifest { delta: None, validation: None, expires_at: None, ..manifest() }
}

/// A device that should accept [`manifest`].
pub fn policy() -> DevicePolicy<'static> {
    mota_proto::testkit::POLICY
}

/// The signed offer of [`manifest`].
pub fn envelope() -> Vec<u8> {
    release().sign(&manifest()).unwrap()
}

pub fn hello_online() -> Hello<'static> {
    Hello::online(DeviceInfo {
        device_class: "stm32f4-kws",
        agent_version: "0.1.0",
        running: Some(RunningModel { model: "kws-dscnn", version: "1.3.2", sha256: Digest([0xb2; 32]) }),
        security_counter: 6,
        slot_bytes: 256 * 1024,
        arena_bytes: 64 * 1024,
        codecs: 0b10,
        max_chunk: 4096,
        next_seq: Some(12),
        revocation_seq: Some(2),
    })
}

pub fn get() -> Get {
    Get { artifact: Digest([0xc3; 32]), offset: 4096, length: 4096 }
}

pub const CHUNK_DATA: &[u8] = b"\x54\x46\x4c\x33 a few bytes of a patch";

pub fn chunk_data() -> Chunk<'static> {
    Chunk::data(Digest([0xc3; 32]), 4096, CHUNK_DATA)
}

pub fn chunk_refused() -> Chunk<'static> {
    Chunk::refused(Digest([0xc3; 32]), 8192, Refusal::NOT_OFFERED)
}

pub fn status_progress() -> Status<'static> {
    Status {
        rollout_id: 42,
        seq: 3,
        event: Event::Downloading,
        manifest: Some(Digest([0xe5; 32])),
        bytes_done: Some(2048),
        ..Status::default()
    }
}

pub fn status_committed() -> Status<'static> {
    Status {
        rollout_id: 42,
        seq: 7,
        event: Event::Committed,
        manifest: Some(Digest([0xe5; 32])),
        accuracy_permille: Some(937),
        previous_accuracy_permille: Some(921),
        latency_us: Some(18_250),
        previous_latency_us: Some(18_400),
        arena_used: Some(22_016),
        rollback_target: Some(target()),
        ..Status::default()
    }
}

pub fn status_rejected() -> Status<'static> {
    Status {
        rollout_id: 42,
        seq: 5,
        event: Event::Rejected,
        manifest: Some(Digest([0xe5; 32])),
        error: Some(ErrorCode::MODEL_INVALID),
        detail: Some("operator 17 (CUSTOM) unsupported"),
        ..Status::default()
    }
}

/// The model a rollback returns to: the one the committed fixture replaced.
pub fn target() -> Target {
    Target { image: Digest([0xb2; 32]), manifest: Some(Digest([0xf6; 32])) }
}

/// A rollback of rollout 42 on [`DEVICE`], from manifest 0xe5.. to [`target`].
pub fn command_rollback() -> CommandBody<'static> {
    CommandBody {
        format: 1,
        device: DEVICE,
        rollout_id: 42,
        action: Action::Rollback,
        subject: Digest([0xe5; 32]),
        target: Some(target()),
    }
}

/// A cancel of rollout 42's download of manifest 0xe5.. on [`DEVICE`].
pub fn command_cancel() -> CommandBody<'static> {
    CommandBody { action: Action::Cancel, target: None, ..command_rollback() }
}

/// The signed rollback (a `cmd` payload).
pub fn cmd_rollback() -> Vec<u8> {
    release().sign_command(&command_rollback()).unwrap()
}

/// Revocation list 2 of the root: the release key and one other id.
pub fn revocation() -> Vec<u8> {
    revoke(&root(), 2, &[key_id(&release_signing()), mota_proto::KeyId([0x99; 8])]).unwrap()
}
