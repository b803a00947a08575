//! The crypto hook: every signature check and digest of verification goes through the
//! platform's [`Crypto`], and the bundled [`Software`] keeps `verify_strict`'s rules.

use std::cell::Cell;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use mota_proto::{
    Crypto, Digest, KeyCertificate, Software, VerifyError, Wire, verify, verify_certificate_with, verify_command,
    verify_command_with, verify_revocation, verify_revocation_with, verify_with,
};

use crate::fixtures::{self, DEVICE, NOW};

/// [`Software`], counting the calls it gets.
#[derive(Default)]
struct Counting {
    signatures: Cell<usize>,
    digests: Cell<usize>,
}

impl Crypto for Counting {
    fn verify_ed25519(&self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        self.signatures.set(self.signatures.get() + 1);
        Software.verify_ed25519(key, msg, sig)
    }

    fn sha256(&self, input: &mut dyn FnMut(&mut dyn FnMut(&[u8]))) -> Digest {
        self.digests.set(self.digests.get() + 1);
        Software.sha256(input)
    }
}

impl Counting {
    fn calls(&self) -> (usize, usize) {
        (self.signatures.replace(0), self.digests.replace(0))
    }
}

/// Software's digests, and a signature verdict of its own: yes only for the keys
/// `accept` names.
struct Judge<F: Fn(&[u8; 32]) -> bool>(F);

impl<F: Fn(&[u8; 32]) -> bool> Crypto for Judge<F> {
    fn verify_ed25519(&self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        (self.0)(key) && Software.verify_ed25519(key, msg, sig)
    }

    fn sha256(&self, input: &mut dyn FnMut(&mut dyn FnMut(&[u8]))) -> Digest {
        Software.sha256(input)
    }
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".hex").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 18, "{names:?}");
    names.into_iter().map(|name| (name.clone(), crate::vectors::read(&name))).collect()
}

#[test]
fn every_check_goes_through_the_hook_with_identical_results() {
    let roots = fixtures::roots();
    let policy = fixtures::policy();
    let hook = Counting::default();
    for (name, bytes) in vectors() {
        assert_eq!(verify_with(&hook, &bytes, &roots, &policy), verify(&bytes, &roots, &policy), "{name}");
        let (signatures, digests) = hook.calls();
        if name == "envelope" {
            // Certificate and manifest signatures; the root's id, the certified key's
            // id and the manifest digest.
            assert_eq!((signatures, digests), (2, 3), "{name}");
        }
        assert_eq!(
            verify_command_with(&hook, &bytes, &roots, &[], Some(NOW), DEVICE),
            verify_command(&bytes, &roots, &[], Some(NOW), DEVICE),
            "{name}"
        );
        let (signatures, digests) = hook.calls();
        if name == "cmd_rollback" {
            assert_eq!((signatures, digests), (2, 3), "{name}");
        }
        assert_eq!(verify_revocation_with(&hook, &bytes, &roots), verify_revocation(&bytes, &roots), "{name}");
        let (signatures, digests) = hook.calls();
        if name == "revocation" {
            assert_eq!((signatures, digests), (1, 1), "{name}");
        }
    }
    // The digests the hook computed are the ones reported.
    let envelope = crate::vectors::read("envelope");
    let offer = verify_with(&hook, &envelope, &roots, &policy).unwrap();
    assert_eq!(offer.manifest_digest, Digest::of(&fixtures::manifest().to_vec().unwrap()));
}

#[test]
fn a_hook_that_refuses_signatures_refuses_everything() {
    let roots = fixtures::roots();
    let no = Judge(|_: &[u8; 32]| false);
    let envelope = crate::vectors::read("envelope");
    assert_eq!(verify_with(&no, &envelope, &roots, &fixtures::policy()), Err(VerifyError::CertificateSignatureInvalid));
    let cmd = crate::vectors::read("cmd_rollback");
    assert_eq!(
        verify_command_with(&no, &cmd, &roots, &[], None, DEVICE),
        Err(VerifyError::CertificateSignatureInvalid)
    );
    let revocation = crate::vectors::read("revocation");
    assert_eq!(verify_revocation_with(&no, &revocation, &roots), Err(VerifyError::RevocationSignatureInvalid));
    let release = fixtures::release();
    let cert = KeyCertificate::parse(release.certificate()).unwrap();
    assert_eq!(verify_certificate_with(&no, &cert, &roots, None), Err(VerifyError::CertificateSignatureInvalid));

    // Yes to the root, no to the release key: the body's signature is what fails.
    let root_only = Judge(|key: &[u8; 32]| *key == roots[0]);
    assert_eq!(verify_with(&root_only, &envelope, &roots, &fixtures::policy()), Err(VerifyError::SignatureInvalid));
    assert_eq!(verify_command_with(&root_only, &cmd, &roots, &[], None, DEVICE), Err(VerifyError::SignatureInvalid));
    assert!(verify_revocation_with(&root_only, &revocation, &roots).is_ok());
}

#[test]
fn software_keeps_verify_strict_semantics() {
    let key = SigningKey::from_bytes(&[0x33; 32]);
    let public = key.verifying_key().to_bytes();
    let msg = b"a manifest";
    let sig = key.sign(msg).to_bytes();
    assert!(Software.verify_ed25519(&public, msg, &sig));
    assert!(!Software.verify_ed25519(&public, b"another manifest", &sig));
    let mut flipped = sig;
    flipped[10] ^= 1;
    assert!(!Software.verify_ed25519(&public, msg, &flipped));

    // A non-canonical S (S + L, the same scalar mod L) is refused.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut malleated = sig;
    let mut carry = 0u16;
    for (s, l) in malleated[32..].iter_mut().zip(l) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 32 bytes");
    assert!(!Software.verify_ed25519(&public, msg, &malleated));

    // A small-order key (the identity) with R = identity and S = 0 satisfies the plain
    // equation for every message; the strict check refuses it.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut weak_sig = [0u8; 64];
    weak_sig[0] = 1;
    let lax = VerifyingKey::from_bytes(&identity).unwrap();
    assert!(lax.verify(msg, &ed25519_dalek::Signature::from_bytes(&weak_sig)).is_ok(), "the lax check takes it");
    assert!(!Software.verify_ed25519(&identity, msg, &weak_sig));
    assert!(!Software.verify_ed25519(&identity, b"anything", &weak_sig));

    // A key that is not a point is a refusal, not a panic.
    let not_a_point = (0..=255u8).map(|b| [b; 32]).find(|k| VerifyingKey::from_bytes(k).is_err()).unwrap();
    assert!(!Software.verify_ed25519(&not_a_point, msg, &sig));
}
