//! The two primitives verification needs, behind a hook: Ed25519 signature checks and
//! SHA-256.
//!
//! A platform with hardware or OS crypto (PSA Crypto, a CryptoCell, a secure element)
//! implements [`Crypto`] and calls [`crate::verify_with`], [`crate::verify_command_with`],
//! [`crate::verify_revocation_with`] (and [`crate::verify_certificate_with`]): every
//! signature check and every digest computed while verifying (root key ids, the
//! certified key's id, the manifest's and the command's digests) goes through it, so
//! such a firmware links none of the bundled software crypto. [`Software`] is the
//! bundled implementation (ed25519-dalek and sha2), which [`crate::verify()`] and the
//! other functions without `_with` use.
//!
//! The trait is dyn-compatible and verification takes it as `&dyn Crypto`, so the
//! verification code exists once in flash whatever implementation is plugged in.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::ids::{Digest, KeyId};

/// Ed25519 verification and SHA-256, as offer, command and revocation verification
/// use them.
pub trait Crypto {
    /// Ed25519 (RFC 8032) verification of `sig` over `msg` under the public key `key`,
    /// strict as ed25519-dalek's `verify_strict` is: false for a key that is not a
    /// valid point, a small-order (weak) key, a non-canonical `S` (not below the group
    /// order) or a small-order `R`, and of course for a signature that does not hold.
    ///
    /// A laxer check weakens the contract: with a small-order key, one signature
    /// verifies for many messages.
    fn verify_ed25519(&self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool;

    /// SHA-256 of the bytes `input` feeds: it calls its argument once per piece, in
    /// order, e.g. `crypto.sha256(&mut |feed| feed(bytes))` for one piece.
    // Spelled out rather than behind an alias, so an implementation can copy it as is.
    #[allow(clippy::type_complexity)]
    fn sha256(&self, input: &mut dyn FnMut(&mut dyn FnMut(&[u8]))) -> Digest;
}

/// The bundled implementation, in software: ed25519-dalek's `verify_strict` and the
/// sha2 crate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Software;

impl Crypto for Software {
    fn verify_ed25519(&self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(key).is_ok_and(|key| key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
    }

    fn sha256(&self, input: &mut dyn FnMut(&mut dyn FnMut(&[u8]))) -> Digest {
        let mut hasher = Sha256::new();
        input(&mut |piece| hasher.update(piece));
        Digest(hasher.finalize().into())
    }
}

/// SHA-256 of `bytes`, through `crypto`.
pub(crate) fn digest(crypto: &dyn Crypto, bytes: &[u8]) -> Digest {
    crypto.sha256(&mut |feed| feed(bytes))
}

/// The id of a public key ([`KeyId::of`]), through `crypto`.
pub(crate) fn key_id(crypto: &dyn Crypto, public_key: &[u8; 32]) -> KeyId {
    KeyId::from_digest(&digest(crypto, public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_takes_its_input_in_pieces() {
        let whole = Software.sha256(&mut |feed| feed(b"abc"));
        assert_eq!(whole, Digest::of(b"abc"));
        let pieces = Software.sha256(&mut |feed| {
            feed(b"a");
            feed(b"");
            feed(b"bc");
        });
        assert_eq!(pieces, whole);
        assert_eq!(key_id(&Software, &[7; 32]), KeyId::of(&[7; 32]));
    }
}
