//! Revocation of release keys, without a firmware update.
//!
//! The root (offline) signs a [`RevocationBody`]: a sequence number and the ids of the
//! release keys it revokes. The backend publishes it, retained, on every device's
//! `trust` topic; a device keeps the newest it has verified (highest `seq`) in its state
//! record and from then on refuses offers and commands signed by a listed key. A list
//! replaces the one before it, so it names every key still revoked (at most
//! [`MAX_REVOKED`]: a release key also expires, with its certificate's `not_after`).
//!
//! | key | [`RevocationBody`] (tag [`TAG_REVOCATION`]) | type |
//! |---|---|---|
//! | 0 | format version, = [`REVOCATION_FORMAT_VERSION`] | uint |
//! | 1 | sequence number, higher replaces lower | uint32 |
//! | 2 | revoked key ids, concatenated | bstr, 8 × n, n ≤ [`MAX_REVOKED`] |
//!
//! It travels as a [`crate::certificate::RootSigned`] like a certificate.

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::certificate::RootSigned;
use crate::error::DecodeError;
use crate::ids::KeyId;
use crate::limits::MAX_CERT_BODY_LEN;
use crate::wire::{Wire, precheck_format};

/// The revocation format this build reads and writes.
pub const REVOCATION_FORMAT_VERSION: u16 = 1;
/// CBOR tag of a revocation body ("mot" + 4).
pub const TAG_REVOCATION: u64 = 0x6d6f_7404;
/// Most release keys one list revokes.
pub const MAX_REVOKED: usize = 8;

/// A root-signed revocation list.
pub type SignedRevocation<'a> = RootSigned<'a>;

/// The keys a root revokes, as of `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationBody<'a> {
    /// Always [`REVOCATION_FORMAT_VERSION`] for values this build produces.
    pub format: u16,
    /// A device keeps the list with the highest number it has verified.
    pub seq: u32,
    /// Key ids, 8 bytes each.
    pub revoked: &'a [u8],
}

impl Encode for RevocationBody<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.tag(TAG_REVOCATION);
        e.map(&[&self.format, &self.seq, &self.revoked]);
    }
}

impl<'a> Decode<'a> for RevocationBody<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        d.tag(TAG_REVOCATION)?;
        let mut v = Self { format: 0, seq: 0, revoked: &[] };
        d.map(&mut [&mut v.format, &mut v.seq, &mut v.revoked])?;
        Ok(v)
    }
}

impl RevocationBody<'_> {
    /// The revoked key ids.
    pub fn keys(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.revoked.chunks_exact(8).filter_map(|c| c.try_into().ok().map(KeyId))
    }
}

impl<'a> Wire<'a> for RevocationBody<'a> {
    const MAX_LEN: usize = MAX_CERT_BODY_LEN;
    const CANONICAL: bool = true;

    fn precheck(bytes: &[u8]) -> Result<(), DecodeError> {
        precheck_format(bytes, TAG_REVOCATION, REVOCATION_FORMAT_VERSION)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.format != REVOCATION_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedFormat { found: self.format });
        }
        if !self.revoked.len().is_multiple_of(8) || self.revoked.len() > 8 * MAX_REVOKED {
            return Err(DecodeError::InvalidValue { field: "revocation.revoked" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_matches_the_documented_number() {
        assert_eq!(TAG_REVOCATION, 1_836_020_740);
    }
}
