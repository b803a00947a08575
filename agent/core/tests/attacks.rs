//! Offers, commands, revocations and transfers an attacker (or a broken backend) could
//! produce. Every refused offer or command is refused with zero flash operations; every
//! bad chunk is dropped without a write; tampered artifacts never become the running
//! model.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use mota_proto::message::{Chunk, ErrorCode, Event};
use mota_proto::sign::{ReleaseKey, certify, revoke};
use mota_proto::topic::Kind;
use mota_proto::{CommandBody, Digest, Image, KeyId, Manifest, Target, Wire};

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
    let rogue = ReleaseKey::new(rogue.clone(), certify(&rogue_root, &rogue.verifying_key(), u64::MAX, 0..=99)?)
        .map_err(|e| format!("{e:?}"))?;
    let patch_of = |base: &[u8]| mota_delta::encode::make(base, &b.new);
    let wrong_base = patch_of(&b.new);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("unknown root", rogue.sign(&good)?, ErrorCode::UNKNOWN_ROOT),
        ("downgrade", signed(&Manifest { security_counter: 0, ..good })?, ErrorCode::DOWNGRADE),
        (
            "counter beyond the key's certified range (a leaked key locking devices out)",
            signed(&Manifest { security_counter: u32::MAX, ..good })?,
            ErrorCode::COUNTER_OUTSIDE_CERTIFICATE,
        ),
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

/// A device that committed an update (counter unchanged, so the factory model stays a
/// valid rollback target), the offer it committed, and the agent's state then.
fn updated(b: &Bench) -> Result<Offer, BoxError> {
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let update = offer(&b.new, OfferSpec { counter: 1, ..OfferSpec::default() })?;
    let mut backend = Backend::default();
    backend.publish_offer(&update);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&b.new)));
    Ok(update)
}

/// Delivers a `cmd` payload to a freshly booted agent; returns the refusal (its code and
/// the manifest it names) and asserts that neither flash nor the record changed.
fn refused_cmd(b: &Bench, payload: &[u8]) -> Result<(Option<ErrorCode>, Option<Digest>), BoxError> {
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let (ops, state) = (b.device.ops(), *agent.state());
    let mut net = Net::default();
    agent.handle(Kind::Cmd, payload, &mut net, &TestClock::default())?;
    assert_eq!((b.device.ops(), *agent.state()), (ops, state), "a refused command changed the device");
    let mut backend = Backend::default();
    backend.take(&mut net)?;
    let refusal = backend.statuses.iter().find(|s| s.event == Event::Rejected).ok_or("no refusal")?;
    assert_eq!((refusal.rollout, refusal.seq), (0, 0), "refusals use the reserved key");
    Ok((refusal.error, refusal.manifest))
}

#[test]
fn commands_that_fail_a_check_are_refused_without_a_flash_operation() -> TestResult {
    let b = bench()?;
    let update = updated(&b)?;
    let home = factory_target(&b.old);
    let good = rollback(&update, home);
    let sign = |c: &CommandBody<'_>| -> Result<Vec<u8>, BoxError> { Ok(release_key()?.sign_command(c)?) };
    let rogue_root = SigningKey::from_bytes(&[0x33; 32]);
    let rogue = SigningKey::from_bytes(&[0x44; 32]);
    let rogue = ReleaseKey::new(rogue.clone(), certify(&rogue_root, &rogue.verifying_key(), u64::MAX, 0..=99)?)
        .map_err(|e| format!("{e:?}"))?;
    // The command format before signatures: {0: id u64::MAX, 1: rollback, 2: rollout 7}.
    let unsigned_max_id =
        vec![0xA3, 0x00, 0x1B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x02, 0x07];
    let genuine = sign(&good)?;
    let mut envelope = mota_proto::Envelope::parse(&genuine)?;
    envelope.signature[0] ^= 1;
    let tampered = envelope.to_vec()?;
    let subject = Some(update.manifest);
    let cases: Vec<(&str, Vec<u8>, ErrorCode, Option<Digest>)> = vec![
        ("unsigned, id u64::MAX", unsigned_max_id, ErrorCode::ENVELOPE_MALFORMED, None),
        ("forged: a key of another root", rogue.sign_command(&good)?, ErrorCode::UNKNOWN_ROOT, None),
        ("tampered signature", tampered, ErrorCode::SIGNATURE_INVALID, None),
        ("for another device", sign(&CommandBody { device: "dev-other", ..good })?, ErrorCode::WRONG_DEVICE, None),
        (
            "from a model the device does not run",
            sign(&CommandBody { subject: Digest([7; 32]), ..good })?,
            ErrorCode::COMMAND_STALE,
            None,
        ),
        ("cancel with no download", sign(&cancel(&update))?, ErrorCode::COMMAND_STALE, None),
        (
            "to another model than the one in the other slot",
            sign(&rollback(&update, Target { image: Digest([5; 32]), manifest: None }))?,
            ErrorCode::ROLLBACK_TARGET_MISMATCH,
            subject,
        ),
        (
            "to the right image under another manifest",
            sign(&rollback(&update, Target { manifest: Some(Digest([6; 32])), ..home }))?,
            ErrorCode::ROLLBACK_TARGET_MISMATCH,
            subject,
        ),
        ("garbage", b"not a command".to_vec(), ErrorCode::ENVELOPE_MALFORMED, None),
    ];
    for (name, payload, code, named) in cases {
        assert_eq!(refused_cmd(&b, &payload)?, (Some(code), named), "{name}");
    }
    // After all of them, the genuine command still works.
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    agent.handle(Kind::Cmd, &sign(&good)?, &mut Net::default(), &TestClock::default())?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&b.old)));
    Ok(())
}

#[test]
fn every_bit_flip_of_a_signed_command_is_refused_without_a_flash_operation() -> TestResult {
    let b = bench()?;
    let update = updated(&b)?;
    let command = release_key()?.sign_command(&rollback(&update, factory_target(&b.old)))?;
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let (ops, state) = (b.device.ops(), *agent.state());
    let mut flipped = command.clone();
    for bit in 0..command.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        agent.handle(Kind::Cmd, &flipped, &mut Net::default(), &TestClock::default())?;
        assert_eq!(*agent.state(), state, "bit {bit} accepted");
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
    assert_eq!(b.device.ops(), ops);
    Ok(())
}

#[test]
fn a_revoked_release_key_moves_nothing_and_a_stale_list_cannot_unrevoke_it() -> TestResult {
    let b = bench()?;
    let update = updated(&b)?;
    let root = SigningKey::from_bytes(&[0x11; 32]);
    let leaked = release_key()?.key_id();
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let clock = TestClock::default();
    // A list signed by anything but a root is ignored.
    let by_release = revoke(&SigningKey::from_bytes(&[0x22; 32]), 5, &[leaked])?;
    agent.handle(Kind::Trust, &by_release, &mut Net::default(), &clock)?;
    assert_eq!(agent.state().revoked.seq, 0);
    // The root revokes the key; the list is kept across a reboot.
    agent.handle(Kind::Trust, &revoke(&root, 2, &[leaked])?, &mut Net::default(), &clock)?;
    drop(agent);
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    assert_eq!((agent.state().revoked.seq, agent.state().revoked.keys()), (2, &[leaked][..]));
    // An older (replayed) list, which did not name the key, changes nothing.
    let ops = b.device.ops();
    agent.handle(Kind::Trust, &revoke(&root, 1, &[])?, &mut Net::default(), &clock)?;
    assert_eq!((b.device.ops(), agent.state().revoked.seq), (ops, 2));
    drop(agent);
    // Offers and commands signed by the revoked key: refused, nothing written.
    let command = release_key()?.sign_command(&rollback(&update, factory_target(&b.old)))?;
    assert_eq!(refused_cmd(&b, &command)?, (Some(ErrorCode::KEY_REVOKED), None));
    let envelope = offer(&b.old, OfferSpec { counter: 3, ..OfferSpec::default() })?.envelope;
    assert_eq!(refused(&b, &envelope)?, Some(ErrorCode::KEY_REVOKED));
    // A newer list that no longer names it lifts the revocation (the root decides).
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    agent.handle(Kind::Trust, &revoke(&root, 3, &[KeyId([9; 8])])?, &mut Net::default(), &clock)?;
    agent.handle(Kind::Cmd, &command, &mut Net::default(), &clock)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&b.old)));
    Ok(())
}

#[test]
fn revoking_the_key_of_a_download_in_flight_abandons_it() -> TestResult {
    let b = bench()?;
    let config = config(&b.old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = b.device.boot(&config, &mut arena)?;
    let clock = TestClock::default();
    let mut backend = Backend::default();
    let update = offer(&b.new, OfferSpec::default())?;
    backend.publish_offer(&update);
    let mut net = Net::default();
    agent.handle(Kind::Offer, &update.envelope, &mut net, &clock)?;
    assert!(agent.state().job.is_some());
    let root = SigningKey::from_bytes(&[0x11; 32]);
    agent.handle(Kind::Trust, &revoke(&root, 1, &[release_key()?.key_id()])?, &mut net, &clock)?;
    agent.poll(&mut net, &clock)?;
    backend.take(&mut net)?;
    assert!(agent.state().job.is_none(), "the job of a revoked key goes on");
    let t = backend.terminal()?;
    assert_eq!((t[0].rollout, t[0].event, t[0].error), (7, Event::Rejected, Some(ErrorCode::KEY_REVOKED)));
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&b.old)));
    // The retained offer, delivered again, is not taken up again.
    let ops = b.device.ops();
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!((b.device.ops(), agent.state().job), (ops, None));
    Ok(())
}
