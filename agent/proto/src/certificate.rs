//! Release-key certificates: how a root key compiled into firmware vouches for the
//! release key that signs manifests, so release keys rotate without a firmware update
//! and the root key can stay offline.
//!
//! A certificate is the signed bytes of a [`CertBody`] plus the issuing root's key id and
//! the root's ed25519 signature over exactly those bytes ([`RootSigned`], the shape of
//! everything a root signs: a revocation list is the other). As with the envelope, the
//! body stays bytes until its signature has been checked.
//!
//! The root bounds what a release key can do: its certificate names the range of
//! security counters the key may sign. A leaked release key can then raise a device's
//! counter at most to the range's top, and a release key certified above that range
//! (by the root, kept offline) still updates the device: a key compromise never locks a
//! fleet out for ever.
//!
//! | key | [`RootSigned`] | [`CertBody`] (tag [`TAG_CERT_BODY`]) |
//! |---|---|---|
//! | 0 | body: bstr (encoded body) | format version: uint, = [`CERT_FORMAT_VERSION`] |
//! | 1 | issuer: root key id, bstr(8) | key id of the certified key, bstr(8) |
//! | 2 | signature: bstr(64) | ed25519 public key, bstr(32) |
//! | 3 | | not after: uint64 unix seconds |
//! | 4 | | lowest security counter the key may sign: uint32 |
//! | 5 | | highest security counter the key may sign: uint32 |

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::error::DecodeError;
use crate::ids::KeyId;
use crate::limits::{MAX_CERT_BODY_LEN, MAX_ENVELOPE_LEN};
use crate::wire::{Wire, precheck_format};

/// The certificate format this build reads and writes (2: the counter range).
pub const CERT_FORMAT_VERSION: u16 = 2;
/// CBOR tag of a certificate body ("mot" + 2).
pub const TAG_CERT_BODY: u64 = 0x6d6f_7402;

/// Bytes a root key signed: a release-key certificate ([`KeyCertificate`], body
/// [`CertBody`]) or a revocation list (body [`crate::RevocationBody`]). The body's CBOR
/// tag says which, so one can never pass for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootSigned<'a> {
    /// The encoded body: signed bytes, decoded only after the signature holds.
    pub body: &'a [u8],
    /// Which root key signed it.
    pub issuer: KeyId,
    /// ed25519 signature by the issuer over `body`.
    pub signature: [u8; 64],
}

impl RootSigned<'_> {
    /// What a decoder starts from.
    pub(crate) const EMPTY: RootSigned<'static> = RootSigned { body: &[], issuer: KeyId([0; 8]), signature: [0; 64] };
}

impl Encode for RootSigned<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.body, &self.issuer, &self.signature]);
    }
}

impl<'a> Decode<'a> for RootSigned<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let mut v = RootSigned::EMPTY;
        d.map(&mut [&mut v.body, &mut v.issuer, &mut v.signature])?;
        Ok(v)
    }
}

/// A root's signature over a release key.
pub type KeyCertificate<'a> = RootSigned<'a>;

/// What a root certifies: this key, under this id, until this time, for this range of
/// security counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertBody {
    /// Always [`CERT_FORMAT_VERSION`] for values this build produces.
    pub format: u16,
    /// Id of `public_key` (must equal [`KeyId::of`] of it).
    pub key_id: KeyId,
    /// The certified ed25519 release public key.
    pub public_key: [u8; 32],
    /// Unix seconds after which the key is no longer valid (checked with trusted time).
    pub not_after: u64,
    /// The lowest security counter the key may sign.
    pub min_counter: u32,
    /// The highest security counter the key may sign.
    pub max_counter: u32,
}

impl Encode for CertBody {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.tag(TAG_CERT_BODY);
        e.map(&[&self.format, &self.key_id, &self.public_key, &self.not_after, &self.min_counter, &self.max_counter]);
    }
}

impl Decode<'_> for CertBody {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        d.tag(TAG_CERT_BODY)?;
        let mut v = Self {
            format: 0,
            key_id: KeyId([0; 8]),
            public_key: [0; 32],
            not_after: 0,
            min_counter: 0,
            max_counter: 0,
        };
        d.map(&mut [
            &mut v.format,
            &mut v.key_id,
            &mut v.public_key,
            &mut v.not_after,
            &mut v.min_counter,
            &mut v.max_counter,
        ])?;
        Ok(v)
    }
}

impl CertBody {
    /// Whether the key may sign a manifest with this security counter.
    pub fn allows(&self, counter: u32) -> bool {
        (self.min_counter..=self.max_counter).contains(&counter)
    }
}

impl<'a> Wire<'a> for RootSigned<'a> {
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
        precheck_format(bytes, TAG_CERT_BODY, CERT_FORMAT_VERSION)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.format != CERT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedFormat { found: self.format });
        }
        if self.min_counter > self.max_counter {
            return Err(DecodeError::InvalidValue { field: "certificate.counters" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_matches_the_documented_number() {
        assert_eq!(TAG_CERT_BODY, 1_836_020_738);
    }
}
