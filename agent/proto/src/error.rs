//! Errors of the encoding boundary.
//!
//! They are small `Copy` enums rather than wrappers of a CBOR library's error, so a
//! device can store, compare and report them without formatting machinery, and so tests
//! can match on the exact reason an input was refused.

use core::fmt;

/// Why bytes could not be decoded into a mota-proto value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the type allows; nothing was parsed.
    TooLarge {
        /// The input length.
        len: usize,
        /// The type's bound.
        max: usize,
    },
    /// Not well-formed CBOR, or CBOR of the wrong shape (missing field, wrong type,
    /// truncated input).
    Malformed,
    /// Bytes follow the encoded value.
    TrailingBytes,
    /// A signed structure was not in canonical form: keys out of order, unknown or
    /// duplicate keys, or non-minimal integer or length encodings.
    NonCanonical,
    /// The structure declares a format version this build does not understand.
    UnsupportedFormat {
        /// The version found in the input.
        found: u16,
    },
    /// A string or byte field is longer than its bound.
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its bound in bytes.
        max: usize,
    },
    /// A field holds a value outside its domain (empty identifier, forbidden character,
    /// permille above 1000, zero size...).
    InvalidValue {
        /// The field's name.
        field: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "input of {len} bytes exceeds {max}"),
            Self::Malformed => f.write_str("malformed or truncated CBOR"),
            Self::TrailingBytes => f.write_str("trailing bytes after the value"),
            Self::NonCanonical => f.write_str("not in canonical encoding"),
            Self::UnsupportedFormat { found } => write!(f, "unsupported format version {found}"),
            Self::FieldTooLong { field, max } => write!(f, "field `{field}` longer than {max}"),
            Self::InvalidValue { field } => write!(f, "field `{field}` has an invalid value"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; [`crate::Wire::encoded_len`] says how much is needed.
    BufferTooSmall,
    /// The value breaks a bound or domain rule of the contract, so no peer would accept it.
    Invalid(DecodeError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("output buffer too small"),
            Self::Invalid(e) => write!(f, "value violates the contract: {e}"),
        }
    }
}

impl core::error::Error for EncodeError {}
