//! Every way an offer, a command or a revocation list can be refused gives its own
//! error, and nothing else gets in.

use ed25519_dalek::Signer;
use mota_proto::limits::{MAX_ENVELOPE_LEN, MAX_MODEL_NAME_LEN};
use mota_proto::manifest::TAG_MANIFEST;
use mota_proto::sign::{ReleaseKey, certify, key_id, revoke};
use mota_proto::testkit::{decode_unchecked, encode_unchecked};
use mota_proto::{
    CommandBody, DecodeError, DevicePolicy, Envelope, KeyCertificate, KeyId, Manifest, VerifyError, Wire, verify,
    verify_command, verify_revocation,
};

use crate::fixtures::{self, CERT_NOT_AFTER, COUNTERS, DEVICE, NOW};

fn verify_with(envelope: &[u8], policy: &DevicePolicy<'_>) -> Result<Manifest<'static>, VerifyError> {
    verify(envelope, &fixtures::roots(), policy).map(|offer| {
        assert_eq!(offer.manifest, fixtures::manifest());
        fixtures::manifest()
    })
}

/// Signs arbitrary manifest bytes with the fixture release key, bypassing the checks
/// `ReleaseKey::sign` makes, as an attacker holding a release key could.
fn sign_raw(manifest: &[u8]) -> Vec<u8> {
    let release = fixtures::release();
    let certificate = KeyCertificate::parse(release.certificate()).unwrap();
    let signature = fixtures::release_signing().sign(manifest).to_bytes();
    Envelope { body: manifest, key_id: release.key_id(), signature, certificate }.to_vec().unwrap()
}

fn refused(manifest: &Manifest<'_>) -> VerifyError {
    verify(&fixtures::release().sign(manifest).unwrap(), &fixtures::roots(), &fixtures::policy()).unwrap_err()
}

#[test]
fn a_good_offer_verifies() {
    let envelope = fixtures::envelope();
    let offer = verify(&envelope, &fixtures::roots(), &fixtures::policy()).unwrap();
    assert_eq!(offer.manifest, fixtures::manifest());
    assert_eq!(offer.manifest_digest, mota_proto::Digest::of(&fixtures::manifest().to_vec().unwrap()));
    assert!(offer.time_checked);
}

#[test]
fn without_trusted_time_expiry_is_unchecked_and_said_so() {
    let policy = DevicePolicy { now: None, ..fixtures::policy() };
    let expired = Manifest { expires_at: Some(1), ..fixtures::manifest() };
    let envelope = fixtures::release().sign(&expired).unwrap();
    let offer = verify(&envelope, &fixtures::roots(), &policy).unwrap();
    assert!(!offer.time_checked);
}

#[test]
fn counter_may_not_go_down() {
    let downgrade = Manifest { security_counter: 5, ..fixtures::manifest() };
    assert_eq!(refused(&downgrade), VerifyError::Downgrade { offered: 5, current: 6 });
    // Equal is a release that did not raise the counter (MCUboot's rule): accepted.
    let equal = Manifest { security_counter: 6, ..fixtures::manifest() };
    let envelope = fixtures::release().sign(&equal).unwrap();
    assert_eq!(verify(&envelope, &fixtures::roots(), &fixtures::policy()).map(|o| o.manifest), Ok(equal));
    let max = DevicePolicy { security_counter: u32::MAX, ..fixtures::policy() };
    assert_eq!(verify_with(&fixtures::envelope(), &max), Err(VerifyError::Downgrade { offered: 7, current: u32::MAX }));
}

#[test]
fn class_and_expiry() {
    assert_eq!(refused(&Manifest { device_class: "esp32s3", ..fixtures::manifest() }), VerifyError::WrongClass);
    let expired = Manifest { expires_at: Some(NOW), ..fixtures::manifest() };
    assert_eq!(refused(&expired), VerifyError::Expired { expires_at: NOW });
}

#[test]
fn resource_limits() {
    let limits = fixtures::policy().limits;
    let big = |m: Manifest<'static>| refused(&m);
    let base = fixtures::manifest();
    assert_eq!(
        big(Manifest { image: mota_proto::Image { size: limits.max_image_bytes + 1, ..base.image }, ..base }),
        VerifyError::ImageTooLarge { size: limits.max_image_bytes + 1, max: limits.max_image_bytes }
    );
    let delta = base.delta.unwrap();
    assert_eq!(
        big(Manifest { delta: Some(mota_proto::Delta { patch_size: limits.max_patch_bytes + 1, ..delta }), ..base }),
        VerifyError::PatchTooLarge { size: limits.max_patch_bytes + 1, max: limits.max_patch_bytes }
    );
    assert_eq!(
        big(Manifest { arena_bytes: limits.max_arena_bytes + 1, ..base }),
        VerifyError::ArenaTooLarge { needed: limits.max_arena_bytes + 1, available: limits.max_arena_bytes }
    );
    let validation = base.validation.unwrap();
    assert_eq!(
        big(Manifest {
            validation: Some(mota_proto::Validation { set_size: limits.max_validation_bytes + 1, ..validation }),
            ..base
        }),
        VerifyError::ValidationSetTooLarge { size: limits.max_validation_bytes + 1, max: limits.max_validation_bytes }
    );
}

#[test]
fn key_chain() {
    // A release key certified by another root.
    let foreign = fixtures::release_by(&fixtures::other_root(), CERT_NOT_AFTER).sign(&fixtures::manifest()).unwrap();
    let other_id = KeyId::of(&fixtures::other_root().verifying_key().to_bytes());
    assert_eq!(verify_with(&foreign, &fixtures::policy()), Err(VerifyError::UnknownRoot(other_id)));

    // The same, but claiming to be issued by our root.
    let forged = {
        let key = fixtures::release_signing().verifying_key();
        let cert_bytes = certify(&fixtures::other_root(), &key, CERT_NOT_AFTER, COUNTERS).unwrap();
        let mut cert = KeyCertificate::parse(&cert_bytes).unwrap();
        cert.issuer = KeyId::of(&fixtures::root().verifying_key().to_bytes());
        ReleaseKey::new(fixtures::release_signing(), cert.to_vec().unwrap())
            .unwrap()
            .sign(&fixtures::manifest())
            .unwrap()
    };
    assert_eq!(verify_with(&forged, &fixtures::policy()), Err(VerifyError::CertificateSignatureInvalid));

    // An expired release key.
    let old = fixtures::release_by(&fixtures::root(), NOW - 1).sign(&fixtures::manifest()).unwrap();
    assert_eq!(verify_with(&old, &fixtures::policy()), Err(VerifyError::CertificateExpired { not_after: NOW - 1 }));

    // A signature by a key other than the certified one, under its own id.
    let good = fixtures::envelope();
    let mut envelope = Envelope::parse(&good).unwrap();
    let intruder = ed25519_dalek::SigningKey::from_bytes(&[0x44; 32]);
    envelope.key_id = KeyId::of(&intruder.verifying_key().to_bytes());
    envelope.signature = intruder.sign(envelope.body).to_bytes();
    assert_eq!(
        verify_with(&envelope.to_vec().unwrap(), &fixtures::policy()),
        Err(VerifyError::UnknownKey(envelope.key_id))
    );

    // The certified key id, but not its signature.
    let mut envelope = Envelope::parse(&good).unwrap();
    envelope.signature = intruder.sign(envelope.body).to_bytes();
    assert_eq!(verify_with(&envelope.to_vec().unwrap(), &fixtures::policy()), Err(VerifyError::SignatureInvalid));

    // A root list holding a non-key.
    let bad_root = [[0xff; 32]];
    let release = fixtures::release();
    let mut cert = KeyCertificate::parse(release.certificate()).unwrap();
    cert.issuer = KeyId::of(&bad_root[0]);
    let release = ReleaseKey::new(fixtures::release_signing(), cert.to_vec().unwrap()).unwrap();
    let envelope = release.sign(&fixtures::manifest()).unwrap();
    let result = verify(&envelope, &bad_root, &fixtures::policy());
    assert!(
        matches!(result, Err(VerifyError::InvalidRootKey | VerifyError::CertificateSignatureInvalid)),
        "{result:?}"
    );
}

#[test]
fn malformed_and_oversize_inputs() {
    assert_eq!(verify_with(&vec![0; MAX_ENVELOPE_LEN + 1], &fixtures::policy()), Err(VerifyError::EnvelopeTooLarge));
    assert_eq!(verify_with(&[], &fixtures::policy()), Err(VerifyError::EnvelopeMalformed(DecodeError::Malformed)));
    let good = fixtures::envelope();
    assert_eq!(
        verify_with(&good[..good.len() - 1], &fixtures::policy()),
        Err(VerifyError::EnvelopeMalformed(DecodeError::Malformed))
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        verify_with(&trailing, &fixtures::policy()),
        Err(VerifyError::EnvelopeMalformed(DecodeError::TrailingBytes))
    );

    // Validly signed, but the model name is over its bound.
    let long_name = "m".repeat(MAX_MODEL_NAME_LEN + 1);
    let manifest = Manifest { model: &long_name, ..fixtures::manifest() };
    assert!(manifest.to_vec().is_err(), "the encoder refuses what a device would refuse");
    let raw = encode_unchecked(&manifest);
    assert_eq!(
        verify_with(&sign_raw(&raw), &fixtures::policy()),
        Err(VerifyError::ManifestMalformed(DecodeError::FieldTooLong { field: "model", max: MAX_MODEL_NAME_LEN }))
    );

    // Validly signed, unknown format version.
    let raw = encode_unchecked(&Manifest { format: 2, ..fixtures::manifest() });
    assert_eq!(
        verify_with(&sign_raw(&raw), &fixtures::policy()),
        Err(VerifyError::ManifestMalformed(DecodeError::UnsupportedFormat { found: 2 }))
    );

    // Validly signed, same meaning, non-canonical map header (0xb8 0x0b for 0xab).
    let canonical = fixtures::manifest().to_vec().unwrap();
    assert_eq!(canonical[..5], [0xda, 0x6d, 0x6f, 0x74, 0x01], "tag {TAG_MANIFEST:#x} comes first");
    assert_eq!(canonical[5], 0xab, "an 11-entry map");
    let mut raw = canonical[..5].to_vec();
    raw.extend([0xb8, 0x0b]);
    raw.extend(&canonical[6..]);
    assert_eq!(decode_unchecked::<Manifest>(&raw).unwrap(), fixtures::manifest(), "same meaning");
    assert_eq!(
        verify_with(&sign_raw(&raw), &fixtures::policy()),
        Err(VerifyError::ManifestMalformed(DecodeError::NonCanonical))
    );
}

#[test]
fn nothing_inside_the_manifest_is_read_before_its_signature_verifies() {
    let release = fixtures::release();
    let certificate = KeyCertificate::parse(release.certificate()).unwrap();
    // Garbage that would fail to decode, under a signature that does not verify: the
    // refusal must be about the signature.
    let garbage = [0xff; 64];
    let envelope = Envelope { body: &garbage, key_id: release.key_id(), signature: [7; 64], certificate };
    assert_eq!(verify_with(&envelope.to_vec().unwrap(), &fixtures::policy()), Err(VerifyError::SignatureInvalid));
    // The same garbage, validly signed, is refused for its shape.
    assert_eq!(
        verify_with(&sign_raw(&garbage), &fixtures::policy()),
        Err(VerifyError::ManifestMalformed(DecodeError::Malformed))
    );
}

#[test]
fn every_single_bit_flip_of_the_envelope_vector_is_refused() {
    let good = crate::vectors::read("envelope");
    let roots = fixtures::roots();
    let policy = fixtures::policy();
    assert!(verify(&good, &roots, &policy).is_ok());
    let mut flipped = good.clone();
    for bit in 0..good.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(verify(&flipped, &roots, &policy).is_err(), "flipping bit {bit} was accepted");
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
}

#[test]
fn a_release_key_signs_only_its_certified_counters() {
    // A leaked key certified for 1..=99 cannot push a device to u32::MAX...
    let leaked = fixtures::release();
    let lockout = Manifest { security_counter: u32::MAX, ..fixtures::manifest() };
    let signed = leaked.sign(&lockout).unwrap();
    let result = verify(&signed, &fixtures::roots(), &fixtures::policy());
    assert_eq!(result.unwrap_err(), VerifyError::CounterOutsideCertificate { counter: u32::MAX, min: 1, max: 99 });
    // ...nor below its range...
    let narrow = fixtures::release_for(&fixtures::root(), CERT_NOT_AFTER, 10..=20);
    let below = narrow.sign(&fixtures::manifest()).unwrap();
    assert_eq!(
        verify_with(&below, &fixtures::policy()),
        Err(VerifyError::CounterOutsideCertificate { counter: 7, min: 10, max: 20 })
    );
    // ...and a device it pushed to its top still takes the next key's releases.
    let topped = DevicePolicy { security_counter: 99, ..fixtures::policy() };
    let next = fixtures::release_for(&fixtures::root(), CERT_NOT_AFTER, 100..=199);
    let release = Manifest { security_counter: 100, ..fixtures::manifest() };
    assert!(verify(&next.sign(&release).unwrap(), &fixtures::roots(), &topped).is_ok());
    // A root cannot certify an empty range.
    let key = fixtures::release_signing().verifying_key();
    #[allow(clippy::reversed_empty_ranges)]
    let empty = certify(&fixtures::root(), &key, CERT_NOT_AFTER, 5..=4);
    assert!(empty.is_err());
}

#[test]
fn a_revoked_key_is_refused_for_offers_and_commands() {
    let revoked = [key_id(&fixtures::release_signing())];
    let policy = DevicePolicy { revoked: &revoked, ..fixtures::policy() };
    assert_eq!(verify_with(&fixtures::envelope(), &policy), Err(VerifyError::KeyRevoked(revoked[0])));
    let cmd = fixtures::cmd_rollback();
    let result = verify_command(&cmd, &fixtures::roots(), &revoked, None, DEVICE);
    assert_eq!(result.unwrap_err(), VerifyError::KeyRevoked(revoked[0]));
    // Another key's revocation does not touch this one.
    let others = [KeyId([0x99; 8])];
    assert!(verify_command(&cmd, &fixtures::roots(), &others, None, DEVICE).is_ok());
}

#[test]
fn commands_verify_like_offers_and_bind_the_device() {
    let roots = fixtures::roots();
    let cmd = fixtures::cmd_rollback();
    let ok = verify_command(&cmd, &roots, &[], Some(NOW), DEVICE).unwrap();
    assert_eq!(ok.command, fixtures::command_rollback());
    assert_eq!(ok.digest, mota_proto::Digest::of(&fixtures::command_rollback().to_vec().unwrap()));
    // For another device.
    assert_eq!(verify_command(&cmd, &roots, &[], None, "kws-0043"), Err(VerifyError::WrongDevice));
    // Signed by a key of another root.
    let foreign = fixtures::release_by(&fixtures::other_root(), CERT_NOT_AFTER);
    let foreign = foreign.sign_command(&fixtures::command_rollback()).unwrap();
    let other_id = KeyId::of(&fixtures::other_root().verifying_key().to_bytes());
    assert_eq!(verify_command(&foreign, &roots, &[], None, DEVICE), Err(VerifyError::UnknownRoot(other_id)));
    // A manifest is not a command, nor a command an offer (the tags differ).
    let offer = fixtures::envelope();
    assert!(matches!(verify_command(&offer, &roots, &[], None, DEVICE), Err(VerifyError::CommandMalformed(_))));
    assert!(matches!(verify_with(&cmd, &fixtures::policy()), Err(VerifyError::ManifestMalformed(_))));
    // Every bit flip is refused.
    let mut flipped = cmd.clone();
    for bit in 0..cmd.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(verify_command(&flipped, &roots, &[], None, DEVICE).is_err(), "flipping bit {bit} was accepted");
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
    // A rollback without a target, or a cancel with one, does not decode.
    let bad = CommandBody { target: None, ..fixtures::command_rollback() };
    assert!(bad.to_vec().is_err());
    let raw = encode_unchecked(&bad);
    let release = fixtures::release();
    let certificate = KeyCertificate::parse(release.certificate()).unwrap();
    let signature = fixtures::release_signing().sign(&raw).to_bytes();
    let signed = Envelope { body: &raw, key_id: release.key_id(), signature, certificate }.to_vec().unwrap();
    assert_eq!(
        verify_command(&signed, &roots, &[], None, DEVICE),
        Err(VerifyError::CommandMalformed(DecodeError::InvalidValue { field: "command.target" }))
    );
}

#[test]
fn revocation_lists_need_a_root_signature() {
    let roots = fixtures::roots();
    let list = fixtures::revocation();
    assert_eq!(verify_revocation(&list, &roots).map(|l| l.seq), Ok(2));
    // Signed by a release key (not a root): refused.
    let by_release = revoke(&fixtures::release_signing(), 3, &[]).unwrap();
    let id = key_id(&fixtures::release_signing());
    assert_eq!(verify_revocation(&by_release, &roots), Err(VerifyError::UnknownRoot(id)));
    // Tampered.
    let mut flipped = list.clone();
    for bit in 0..list.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(verify_revocation(&flipped, &roots).is_err(), "flipping bit {bit} was accepted");
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
    // A certificate is not a revocation list (the tags differ), though both are root-signed.
    let cert = fixtures::release().certificate().to_vec();
    assert!(matches!(verify_revocation(&cert, &roots), Err(VerifyError::RevocationMalformed(_))));
    // At most 8 keys.
    assert!(revoke(&fixtures::root(), 4, &[KeyId([1; 8]); 9]).is_err());
}
