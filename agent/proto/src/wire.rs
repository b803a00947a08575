//! The verbs every wire type shares: parse, check, encode.
//!
//! Each type implements the CBOR shape by hand ([`crate::cbor`]: its fields listed once
//! for the encoder and once for the decoder) and [`Wire`] for the rest of the contract:
//! a size bound checked before parsing, domain checks after it, and, for signed
//! structures, canonical form. Canonical form is checked by re-encoding the decoded
//! value against the input through a comparing writer, which needs no buffer: one byte
//! string per meaning, with no second decoder to keep in step.

use crate::cbor::{self, Decode, Decoder, Encode};
use crate::error::{DecodeError, EncodeError};

/// A value with a wire encoding in the mota contract.
///
/// Implemented by the crate's wire types only (its CBOR supertraits are private).
pub trait Wire<'a>: Sized + Encode + Decode<'a> {
    /// The longest encoding [`Wire::parse`] accepts; longer input is refused unread.
    const MAX_LEN: usize;
    /// Whether only the canonical encoding is accepted (true for everything that is
    /// signed, where a second encoding of the same meaning must not exist). Other
    /// messages skip unknown keys so peers can add optional fields.
    const CANONICAL: bool;

    /// Domain rules beyond the CBOR shape: bounds, character sets, ranges.
    fn check(&self) -> Result<(), DecodeError>;

    /// A look at the raw bytes before the full decode (used to report an unknown
    /// format version as such rather than as a shape error).
    fn precheck(_bytes: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }

    /// Decodes one value that spans all of `bytes`, borrowing strings and byte fields.
    fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(DecodeError::TooLarge { len: bytes.len(), max: Self::MAX_LEN });
        }
        Self::precheck(bytes)?;
        let mut decoder = Decoder::new(bytes);
        let value = Self::decode(&mut decoder)?;
        if !decoder.at_end() {
            return Err(DecodeError::TrailingBytes);
        }
        value.check()?;
        if Self::CANONICAL && !cbor::encodes_to(&value, bytes) {
            return Err(DecodeError::NonCanonical);
        }
        Ok(value)
    }

    /// Encodes into `buf` and returns the number of bytes written.
    fn encode_into(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        self.check().map_err(EncodeError::Invalid)?;
        cbor::encode_into(self, buf).ok_or(EncodeError::BufferTooSmall)
    }

    /// The exact length [`Wire::encode_into`] will write.
    fn encoded_len(&self) -> usize {
        cbor::encoded_len(self)
    }

    /// Encodes into a new vector (host only).
    #[cfg(feature = "std")]
    fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = vec![0; self.encoded_len()];
        let n = self.encode_into(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// Reads the format version that every versioned structure keeps as its first map
/// entry (key 0), after its tag, without decoding the rest.
pub(crate) fn precheck_format(bytes: &[u8], tag: u64, supported: u16) -> Result<(), DecodeError> {
    let mut d = Decoder::new(bytes);
    d.tag(tag)?;
    d.map_header()?;
    if d.uint()? != 0 {
        return Err(DecodeError::Malformed);
    }
    let found = u16::decode(&mut d)?;
    if found != supported {
        return Err(DecodeError::UnsupportedFormat { found });
    }
    Ok(())
}
