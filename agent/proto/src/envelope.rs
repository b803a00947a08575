//! The signed envelope: the payload of an `offer`.
//!
//! The manifest travels as the exact bytes that were signed, so a device verifies the
//! signature over them before it decodes a single field of the manifest (SUIT's rule),
//! and the certificate of the signing key travels with it, so a device needs nothing but
//! its root keys to decide.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | manifest | bstr, an encoded [`crate::Manifest`], ≤ 1024 |
//! | 1 | key id of the signing release key | bstr(8) |
//! | 2 | ed25519 signature over the manifest bytes | bstr(64) |
//! | 3 | certificate of the release key | [`KeyCertificate`] map |

use minicbor::{Decode, Encode};

use crate::certificate::KeyCertificate;
use crate::error::DecodeError;
use crate::ids::KeyId;
use crate::limits::{MAX_ENVELOPE_LEN, MAX_MANIFEST_LEN};
use crate::wire::Wire;

/// A manifest, its signature and the key chain behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Envelope<'a> {
    /// The encoded manifest, exactly as signed.
    #[cbor(b(0), with = "minicbor::bytes")]
    pub manifest: &'a [u8],
    /// Id of the release key that signed `manifest`.
    #[n(1)]
    pub key_id: KeyId,
    /// ed25519 signature over `manifest`.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub signature: [u8; 64],
    /// The root's certificate for the release key.
    #[b(3)]
    pub certificate: KeyCertificate<'a>,
}

impl<'a> Wire<'a> for Envelope<'a> {
    const MAX_LEN: usize = MAX_ENVELOPE_LEN;
    const CANONICAL: bool = true;

    fn check(&self) -> Result<(), DecodeError> {
        if self.manifest.len() > MAX_MANIFEST_LEN {
            return Err(DecodeError::FieldTooLong { field: "manifest", max: MAX_MANIFEST_LEN });
        }
        self.certificate.check()
    }
}
