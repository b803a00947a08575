//! `get`: a device asks for the next piece of an artifact, at its own pace.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | artifact sha256 (image, patch or validation set) | bstr(32) |
//! | 1 | offset | uint32 |
//! | 2 | length | uint32, 1..=16384 |

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{MAX_CHUNK_LEN, MAX_SMALL_MESSAGE_LEN};
use crate::wire::Wire;

/// A chunk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Get {
    /// The artifact, by content digest.
    pub artifact: Digest,
    /// First byte wanted.
    pub offset: u32,
    /// Bytes wanted; the answer may be shorter only at the artifact's end.
    pub length: u32,
}

impl Encode for Get {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.artifact, &self.offset, &self.length]);
    }
}

impl Decode<'_> for Get {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        let mut v = Self { artifact: Digest([0; 32]), offset: 0, length: 0 };
        d.map(&mut [&mut v.artifact, &mut v.offset, &mut v.length])?;
        Ok(v)
    }
}

impl Wire<'_> for Get {
    const MAX_LEN: usize = MAX_SMALL_MESSAGE_LEN;
    const CANONICAL: bool = false;

    fn check(&self) -> Result<(), DecodeError> {
        if self.length == 0 || self.length as usize > MAX_CHUNK_LEN {
            return Err(DecodeError::InvalidValue { field: "length" });
        }
        if self.offset.checked_add(self.length).is_none() {
            return Err(DecodeError::InvalidValue { field: "offset" });
        }
        Ok(())
    }
}
