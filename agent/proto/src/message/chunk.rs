//! `chunk`: the backend's answer to a [`super::Get`]: bytes, or a refusal with a reason.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | artifact sha256 | bstr(32) |
//! | 1 | offset | uint32 |
//! | 2 | data (exclusive with 3) | bstr, ≤ 16384 |
//! | 3 | refusal (exclusive with 2) | uint16 code |

use minicbor::{Decode, Encode};

use super::code::{code_names, code_type};
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{MAX_CHUNK_LEN, MAX_CHUNK_MESSAGE_LEN};
use crate::wire::Wire;

/// A piece of an artifact, or the reason it is not coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Chunk<'a> {
    /// The artifact, as requested.
    #[n(0)]
    pub artifact: Digest,
    /// Offset of `data`, as requested.
    #[n(1)]
    pub offset: u32,
    /// The bytes, when served.
    #[cbor(b(2), with = "opt_bytes", has_nil)]
    pub data: Option<&'a [u8]>,
    /// Why not, when refused.
    #[n(3)]
    pub refusal: Option<Refusal>,
}

code_type!(
    /// Why the backend refused a chunk request.
    Refusal
);

code_names!(Refusal {
    /// The artifact was never offered to this device.
    NOT_OFFERED = 1, "not_offered";
    /// The offset is at or past the artifact's end.
    OUT_OF_RANGE = 2, "out_of_range";
    /// The device asks faster than its rate limit; retry later.
    RATE_LIMITED = 3, "rate_limited";
    /// The backend cannot read the artifact right now; retry later.
    UNAVAILABLE = 4, "unavailable";
});

/// `Option<&[u8]>` as an absent-or-bstr map value (minicbor's generic `bytes` helpers
/// leave the `nil` type ambiguous under `has_nil`).
mod opt_bytes {
    use minicbor::decode::{Decoder, Error as DecError};
    use minicbor::encode::{Encoder, Error as EncError, Write};

    pub fn encode<C, W: Write>(v: &Option<&[u8]>, e: &mut Encoder<W>, _: &mut C) -> Result<(), EncError<W::Error>> {
        match v {
            Some(bytes) => e.bytes(bytes)?,
            None => e.null()?,
        };
        Ok(())
    }

    pub fn decode<'b, C>(d: &mut Decoder<'b>, _: &mut C) -> Result<Option<&'b [u8]>, DecError> {
        d.bytes().map(Some)
    }

    pub fn nil<'b>() -> Option<Option<&'b [u8]>> {
        Some(None)
    }

    pub fn is_nil(v: &Option<&[u8]>) -> bool {
        v.is_none()
    }
}

impl<'a> Chunk<'a> {
    /// Bytes served.
    pub fn data(artifact: Digest, offset: u32, data: &'a [u8]) -> Self {
        Self { artifact, offset, data: Some(data), refusal: None }
    }

    /// A refusal.
    pub fn refused(artifact: Digest, offset: u32, refusal: Refusal) -> Self {
        Self { artifact, offset, data: None, refusal: Some(refusal) }
    }
}

impl<'a> Wire<'a> for Chunk<'a> {
    const MAX_LEN: usize = MAX_CHUNK_MESSAGE_LEN;
    const CANONICAL: bool = false;

    fn check(&self) -> Result<(), DecodeError> {
        match (self.data, self.refusal) {
            (Some(data), None) if data.len() > MAX_CHUNK_LEN => {
                Err(DecodeError::FieldTooLong { field: "data", max: MAX_CHUNK_LEN })
            }
            (Some([]), None) => Err(DecodeError::InvalidValue { field: "data" }),
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(DecodeError::InvalidValue { field: "data" }),
        }
    }
}
