//! Release-key certificates: how a root key compiled into firmware vouches for the
//! release key that signs manifests, so release keys rotate without a firmware update
//! and the root key can stay offline.
//!
//! A certificate is the signed bytes of a [`CertBody`] plus the issuing root's key id and
//! the root's ed25519 signature over exactly those bytes. As with the envelope, the body
//! stays bytes until its signature has been checked.
//!
//! | key | [`KeyCertificate`] | [`CertBody`] (tag [`TAG_CERT_BODY`]) |
//! |---|---|---|
//! | 0 | body: bstr (encoded `CertBody`) | format version: uint, = [`CERT_FORMAT_VERSION`] |
//! | 1 | issuer: root key id, bstr(8) | key id of the certified key, bstr(8) |
//! | 2 | signature: bstr(64) | ed25519 public key, bstr(32) |
//! | 3 | | not after: uint64 unix seconds |

use minicbor::{Decode, Encode};

use crate::error::DecodeError;
use crate::ids::KeyId;
use crate::limits::{MAX_CERT_BODY_LEN, MAX_ENVELOPE_LEN};
use crate::wire::{Wire, precheck_format};

/// The certificate format this build reads and writes.
pub const CERT_FORMAT_VERSION: u16 = 1;
/// CBOR tag of a certificate body ("mot" + 2).
pub const TAG_CERT_BODY: u64 = 0x6d6f_7402;

/// A root's signature over a release key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct KeyCertificate<'a> {
    /// The encoded [`CertBody`]: signed bytes, decoded only after the signature holds.
    #[cbor(b(0), with = "minicbor::bytes")]
    pub body: &'a [u8],
    /// Which root key signed it.
    #[n(1)]
    pub issuer: KeyId,
    /// ed25519 signature by the issuer over `body`.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub signature: [u8; 64],
}

/// What a root certifies: this key, under this id, until this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map, tag(1836020738))]
pub struct CertBody {
    /// Always [`CERT_FORMAT_VERSION`] for values this build produces.
    #[n(0)]
    pub format: u16,
    /// Id of `public_key` (must equal [`KeyId::of`] of it).
    #[n(1)]
    pub key_id: KeyId,
    /// The certified ed25519 release public key.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub public_key: [u8; 32],
    /// Unix seconds after which the key is no longer valid (checked with trusted time).
    #[n(3)]
    pub not_after: u64,
}

impl<'a> Wire<'a> for KeyCertificate<'a> {
    // A certificate alone never exceeds what fits inside an envelope.
    const MAX_LEN: usize = MAX_ENVELOPE_LEN;
    const CANONICAL: bool = true;

    fn check(&self) -> Result<(), DecodeError> {
        if self.body.len() > MAX_CERT_BODY_LEN {
            return Err(DecodeError::FieldTooLong { field: "certificate.body", max: MAX_CERT_BODY_LEN });
        }
        Ok(())
    }
}

impl Wire<'_> for CertBody {
    const MAX_LEN: usize = MAX_CERT_BODY_LEN;
    const CANONICAL: bool = true;

    fn precheck(bytes: &[u8]) -> Result<(), DecodeError> {
        precheck_format(bytes, Some(TAG_CERT_BODY), CERT_FORMAT_VERSION)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.format != CERT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedFormat { found: self.format });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_attribute_matches_the_constant() {
        assert_eq!(TAG_CERT_BODY, 1_836_020_738);
    }
}
