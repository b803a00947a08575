//! The signed envelope: the payload of an `offer` (body: a manifest) and of a `cmd`
//! (body: a [`crate::CommandBody`]).
//!
//! The body travels as the exact bytes that were signed, so a device verifies the
//! signature over them before it decodes a single field (SUIT's rule), and the
//! certificate of the signing key travels with it, so a device needs nothing but its root
//! keys to decide. The body's CBOR tag says what it is, so a signed command can never
//! pass for a manifest, nor a manifest for a command.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | body: an encoded [`crate::Manifest`] or [`crate::CommandBody`] | bstr, ≤ 1024 |
//! | 1 | key id of the signing release key | bstr(8) |
//! | 2 | ed25519 signature over the body bytes | bstr(64) |
//! | 3 | certificate of the release key | [`KeyCertificate`] map |

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::certificate::{KeyCertificate, RootSigned};
use crate::error::DecodeError;
use crate::ids::KeyId;
use crate::limits::{MAX_ENVELOPE_LEN, MAX_MANIFEST_LEN};
use crate::wire::Wire;

/// A signed body, its signature and the key chain behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The encoded manifest or command, exactly as signed.
    pub body: &'a [u8],
    /// Id of the release key that signed `body`.
    pub key_id: KeyId,
    /// ed25519 signature over `body`.
    pub signature: [u8; 64],
    /// The root's certificate for the release key.
    pub certificate: KeyCertificate<'a>,
}

impl Encode for Envelope<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.body, &self.key_id, &self.signature, &self.certificate]);
    }
}

impl<'a> Decode<'a> for Envelope<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let mut v = Self { body: &[], key_id: KeyId([0; 8]), signature: [0; 64], certificate: RootSigned::EMPTY };
        d.map(&mut [&mut v.body, &mut v.key_id, &mut v.signature, &mut v.certificate])?;
        Ok(v)
    }
}

impl<'a> Wire<'a> for Envelope<'a> {
    const MAX_LEN: usize = MAX_ENVELOPE_LEN;
    const CANONICAL: bool = true;

    fn check(&self) -> Result<(), DecodeError> {
        if self.body.len() > MAX_MANIFEST_LEN {
            return Err(DecodeError::FieldTooLong { field: "envelope.body", max: MAX_MANIFEST_LEN });
        }
        self.certificate.check()
    }
}
