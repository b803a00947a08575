//! Offers and transfers an attacker (or a broken backend) could produce. Every refused
//! offer is refused with zero flash operations; every bad chunk is dropped without a
//! write; tampered artifacts never become the running model.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use mota_proto::message::{Chunk, ErrorCode, Event};
use mota_proto::sign::{ReleaseKey, certify};
use mota_proto::topic::Kind;
use mota_proto::{Digest, Image, Manifest, Wire};

type D = Device<8, 4096>;

struct Bench {
    device: D,
    old: Vec<u8>,
    new: Vec<u8>,
}

fn bench() -> Result<Bench, BoxError> {
    let old = model("digits_cnn_v1")?;
    Ok(Bench { device: D::new(Layout::uniform(8, 0xFF), &old)?, old, new: model("digits_cnn_v2")? })
}

/// Delivers `envelope` to a freshly booted agent; returns the refusal code and asserts no
/// flash operation happened.
fn refused(b: &Bench, envelope: &[u8]) -> Result<Option<ErrorCode>, BoxError> {
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let before = b.device.ops();
    let mut net = Net::default();
    agent.handle(Kind::Offer, envelope, &mut net, &TestClock::default())?;
    assert_eq!(b.device.ops(), before, "a refused offer touched flash");
    assert!(agent.state().job.is_none());
    let mut backend = Backend::default();
    backend.take(&mut net)?;
    let refusal = backend.statuses.iter().find(|s| s.event == Event::Rejected);
    Ok(refusal.map(|s| {
        assert_eq!((s.rollout, s.seq), (0, 0), "refusals use the reserved key");
        s.error.unwrap_or(ErrorCode(0))
    }))
}

fn signed(manifest: &Manifest<'_>) -> Result<Vec<u8>, BoxError> {
    Ok(release_key()?.sign(manifest)?)
}

fn manifest(image: &[u8]) -> Result<Manifest<'static>, BoxError> {
    Ok(Manifest {
        format: mota_proto::manifest::FORMAT_VERSION,
        model: "digits_cnn",
        version: "2.0.0",
        security_counter: 2,
        device_class: CLASS,
        image: Image { size: image.len() as u32, sha256: Digest::of(image) },
        delta: None,
        validation: None,
        arena_bytes: arena_of(image)?,
        expires_at: None,
        rollout_id: 7,
    })
}

#[test]
fn offers_that_fail_a_check_are_refused_without_a_flash_operation() -> TestResult {
    let b = bench()?;
    let good = manifest(&b.new)?;
    // Signed by a root the device does not trust.
    let rogue_root = SigningKey::from_bytes(&[0x33; 32]);
    let rogue = SigningKey::from_bytes(&[0x44; 32]);
    let rogue = ReleaseKey::new(rogue.clone(), certify(&rogue_root, &rogue.verifying_key(), u64::MAX)?)
        .map_err(|e| format!("{e:?}"))?;
    let patch_of = |base: &[u8]| mota_delta::encode::make(base, &b.new);
    let wrong_base = patch_of(&b.new);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("unknown root", rogue.sign(&good)?, ErrorCode::UNKNOWN_ROOT),
        ("downgrade", signed(&Manifest { security_counter: 0, ..good })?, ErrorCode::DOWNGRADE),
        ("equal counter", signed(&Manifest { security_counter: 1, ..good })?, ErrorCode::COUNTER_NOT_INCREASED),
        ("wrong class", signed(&Manifest { device_class: "nrf52-kws", ..good })?, ErrorCode::WRONG_CLASS),
        ("expired", signed(&Manifest { expires_at: Some(1000), ..good })?, ErrorCode::EXPIRED),
        (
            "image larger than the slot",
            signed(&Manifest { image: Image { size: 32 * 1024 + 1, ..good.image }, ..good })?,
            ErrorCode::IMAGE_TOO_LARGE,
        ),
        (
            "image and set larger than the slot",
            signed(&Manifest {
                validation: Some(mota_proto::Validation {
                    set_sha256: Digest([1; 32]),
                    set_size: 32 * 1024 - 8000,
                    min_accuracy_permille: 0,
                    max_drop_permille: 0,
                }),
                ..good
            })?,
            ErrorCode::IMAGE_TOO_LARGE,
        ),
        (
            "arena larger than the device's",
            signed(&Manifest { arena_bytes: ARENA as u32 + 1, ..good })?,
            ErrorCode::ARENA_TOO_LARGE,
        ),
        (
            "delta for another base",
            signed(&Manifest {
                delta: Some(mota_proto::Delta {
                    base_sha256: Digest::of(&b.new),
                    patch_size: wrong_base.len() as u32,
                    patch_sha256: Digest::of(&wrong_base),
                    codec: u16::from(mota_delta::format::CODEC),
                }),
                ..good
            })?,
            ErrorCode::BASE_MISMATCH,
        ),
        (
            "unknown codec",
            signed(&Manifest {
                delta: Some(mota_proto::Delta {
                    base_sha256: Digest::of(&b.old),
                    patch_size: 100,
                    patch_sha256: Digest([2; 32]),
                    codec: 77,
                }),
                ..good
            })?,
            ErrorCode::UNSUPPORTED_CODEC,
        ),
        ("garbage", b"not an envelope".to_vec(), ErrorCode::ENVELOPE_MALFORMED),
        ("oversized", vec![0xA5; 4096], ErrorCode::ENVELOPE_MALFORMED),
    ];
    for (name, envelope, code) in cases {
        assert_eq!(refused(&b, &envelope)?, Some(code), "{name}");
    }
    Ok(())
}

#[test]
fn every_bit_flip_of_a_valid_envelope_is_refused_without_a_flash_operation() -> TestResult {
    let b = bench()?;
    let envelope = signed(&manifest(&b.new)?)?;
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let before = b.device.ops();
    let mut flipped = envelope.clone();
    for bit in 0..envelope.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        agent.handle(Kind::Offer, &flipped, &mut Net::default(), &TestClock::default())?;
        assert!(agent.state().job.is_none(), "bit {bit} accepted");
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
    assert_eq!(b.device.ops(), before);
    // The intact envelope still goes through.
    agent.handle(Kind::Offer, &envelope, &mut Net::default(), &TestClock::default())?;
    assert!(agent.state().job.is_some());
    Ok(())
}

#[test]
fn stray_chunks_are_dropped_without_a_write() -> TestResult {
    let b = bench()?;
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    let o = offer(&b.new, OfferSpec::default())?;
    backend.publish_offer(&o);
    let clock = TestClock::default();
    let mut net = Net::default();
    agent.handle(Kind::Offer, &o.envelope, &mut net, &clock)?;
    let first = backend.take(&mut net)?;
    agent.handle(Kind::Chunk, &first[0], &mut net, &clock)?;
    backend.take(&mut net)?; // the request for offset 1024
    let id = Digest::of(&b.new);
    let size = b.new.len();
    let strays: Vec<(&str, Vec<u8>)> = vec![
        ("duplicate", first[0].clone()),
        ("reordered (ahead)", Chunk::data(id, 2048, &b.new[2048..3072]).to_vec()?),
        ("out of range", Chunk::data(id, size as u32, &[1, 2, 3]).to_vec()?),
        ("longer than asked", Chunk::data(id, 1024, &[0u8; 1025]).to_vec()?),
        ("past the declared size", Chunk::data(id, 1024, &vec![0u8; size]).to_vec()?),
        ("another artifact", Chunk::data(Digest([9; 32]), 1024, &b.new[1024..2048]).to_vec()?),
        ("garbage", vec![0xFF; 40]),
    ];
    for (name, payload) in strays {
        let before = b.device.ops();
        agent.handle(Kind::Chunk, &payload, &mut net, &clock)?;
        assert_eq!(b.device.ops(), before, "{name} wrote");
        assert!(agent.state().job.is_some(), "{name} ended the job");
    }
    // Nothing lost: the transfer completes once the backend answers again.
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(id));
    Ok(())
}

#[test]
fn tampered_artifacts_never_run() -> TestResult {
    let b = bench()?;
    let set = set("digits_cnn_v2", 50)?;
    let cases: [(&str, Option<&[u8]>, usize, ErrorCode); 3] = [
        ("image byte", None, 0, ErrorCode::IMAGE_DIGEST_MISMATCH),
        ("patch byte", Some(&b.old), 1, ErrorCode::PATCH_CORRUPT),
        ("set byte", None, 1, ErrorCode::VALIDATION_SET_INVALID),
    ];
    for (name, base, artifact, code) in cases {
        let device = D::new(Layout::uniform(8, 0xFF), &b.old)?;
        let config = config(&b.old)?;
        let mut arena = vec![0u8; ARENA];
        let mut agent = device.boot(&config, &mut arena)?;
        let o = offer(&b.new, OfferSpec { base, set: Some(&set), ..Default::default() })?;
        let mut backend = Backend::default();
        backend.publish_offer(&o);
        let target = Digest::of(&o.artifacts[artifact]);
        let bytes = backend.artifacts.get_mut(&target).ok_or("artifact")?;
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        drive(&mut agent, &mut backend, &TestClock::default())?;
        let t = backend.terminal()?;
        assert_eq!(t.len(), 1, "{name}");
        // A flipped patch byte either breaks its coding or rebuilds a wrong image.
        let ok = t[0].error == Some(code) || (base.is_some() && t[0].error == Some(ErrorCode::IMAGE_DIGEST_MISMATCH));
        assert!(t[0].event == Event::Rejected && ok, "{name}: {t:?}");
        let m = agent.active_model().ok_or("no model")?;
        assert_eq!((m.image.slot, m.installed.sha256), (0, Digest::of(&b.old)), "{name}");
    }
    Ok(())
}

#[test]
fn malformed_messages_of_every_kind_change_nothing() -> TestResult {
    let b = bench()?;
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let before = (b.device.ops(), *agent.state());
    let mut seed = 0x1234_5678_u64;
    for kind in Kind::ALL {
        for len in [0usize, 1, 7, 64, 300, 2000] {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            agent.handle(kind, &payload, &mut Net::default(), &TestClock::default())?;
        }
    }
    assert_eq!((b.device.ops(), *agent.state()), before);
    Ok(())
}
