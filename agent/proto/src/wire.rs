//! The verbs every wire type shares: parse, check, encode.
//!
//! Types derive minicbor's `Encode`/`Decode` for the CBOR shape and implement [`Wire`]
//! for the rest of the contract: a size bound checked before parsing, domain checks
//! after it, and, for signed structures, canonical form. Canonical form is checked by
//! re-encoding the decoded value against the input through a comparing writer, which
//! needs no buffer: one byte string per meaning, with no second decoder to keep in step.

use minicbor::encode::Write;
use minicbor::{Decode, Decoder, Encode};

use crate::error::{DecodeError, EncodeError};

/// A value with a wire encoding in the mota contract.
pub trait Wire<'a>: Sized + Encode<()> + Decode<'a, ()> {
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
        let value: Self = decoder.decode()?;
        if decoder.position() != bytes.len() {
            return Err(DecodeError::TrailingBytes);
        }
        value.check()?;
        if Self::CANONICAL {
            let mut expect = Expect { rest: bytes };
            if minicbor::encode(&value, &mut expect).is_err() || !expect.rest.is_empty() {
                return Err(DecodeError::NonCanonical);
            }
        }
        Ok(value)
    }

    /// Encodes into `buf` and returns the number of bytes written.
    fn encode_into(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        self.check().map_err(EncodeError::Invalid)?;
        let mut cursor = minicbor::encode::write::Cursor::new(buf);
        minicbor::encode(self, &mut cursor).map_err(|_| EncodeError::BufferTooSmall)?;
        Ok(cursor.position())
    }

    /// The exact length [`Wire::encode_into`] will write.
    fn encoded_len(&self) -> usize {
        let mut count = Count(0);
        // ok: writing to a counter cannot fail, and our types' Encode impls never fail.
        let _ = minicbor::encode(self, &mut count);
        count.0
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

/// A writer that compares what is written with the expected bytes.
struct Expect<'a> {
    rest: &'a [u8],
}

/// The written bytes differ from the expected ones.
#[derive(Debug)]
struct Mismatch;

impl Write for Expect<'_> {
    type Error = Mismatch;

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Mismatch> {
        match self.rest.split_at_checked(buf.len()) {
            Some((head, tail)) if head == buf => {
                self.rest = tail;
                Ok(())
            }
            _ => Err(Mismatch),
        }
    }
}

/// A writer that only counts.
struct Count(usize);

impl Write for Count {
    type Error = core::convert::Infallible;

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0 += buf.len();
        Ok(())
    }
}

/// Reads the format version that every versioned structure keeps as its first map
/// entry (key 0), after an optional tag, without decoding the rest.
pub(crate) fn precheck_format(bytes: &[u8], tag: Option<u64>, supported: u16) -> Result<(), DecodeError> {
    let mut d = Decoder::new(bytes);
    if let Some(expected) = tag
        && d.tag()?.as_u64() != expected
    {
        return Err(DecodeError::Malformed);
    }
    d.map()?;
    if d.u64()? != 0 {
        return Err(DecodeError::Malformed);
    }
    let found = d.u16()?;
    if found != supported {
        return Err(DecodeError::UnsupportedFormat { found });
    }
    Ok(())
}
