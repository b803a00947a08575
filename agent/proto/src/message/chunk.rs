//! `chunk`: the backend's answer to a [`super::Get`]: bytes, or a refusal with a reason.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | artifact sha256 | bstr(32) |
//! | 1 | offset | uint32 |
//! | 2 | data (exclusive with 3) | bstr, ≤ 16384 |
//! | 3 | refusal (exclusive with 2) | uint16 code |

use super::code::{code_names, code_type};
use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{MAX_CHUNK_LEN, MAX_CHUNK_MESSAGE_LEN};
use crate::wire::Wire;

/// A piece of an artifact, or the reason it is not coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The artifact, as requested.
    pub artifact: Digest,
    /// Offset of `data`, as requested.
    pub offset: u32,
    /// The bytes, when served.
    pub data: Option<&'a [u8]>,
    /// Why not, when refused.
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

impl Encode for Chunk<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.artifact, &self.offset, &self.data, &self.refusal]);
    }
}

/// The data field: optional, but a byte string when present (`null` is malformed, as
/// it was with minicbor's derive).
struct Data<'a>(Option<&'a [u8]>);

impl<'a> Decode<'a> for Data<'a> {
    const OPTIONAL: bool = true;

    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        d.bytes().map(|bytes| Self(Some(bytes)))
    }
}

impl<'a> Decode<'a> for Chunk<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let (mut artifact, mut offset, mut data, mut refusal) = (Digest([0; 32]), 0, Data(None), None);
        d.map(&mut [&mut artifact, &mut offset, &mut data, &mut refusal])?;
        Ok(Self { artifact, offset, data: data.0, refusal })
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
