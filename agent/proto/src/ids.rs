//! Fixed-size identifiers: SHA-256 digests of artifacts and the ids of signing keys.
//!
//! Both travel as CBOR byte strings of exactly their length; any other length is
//! malformed. They print as lowercase hex, the form users see in the CLI and the API.

use core::fmt;

use sha2::{Digest as _, Sha256};

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};

/// A SHA-256 digest: the identity of every artifact (model image, patch, validation set).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

/// The id of a signing key: the first 8 bytes of the SHA-256 of its 32-byte ed25519
/// public key. Self-certifying: given the key, anyone recomputes the id, so an id can
/// never be paired with the wrong key unnoticed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of an ed25519 public key.
    pub fn of(public_key: &[u8; 32]) -> Self {
        Self::from_digest(&Digest::of(public_key))
    }

    /// The id whose key has SHA-256 `digest`: its first 8 bytes.
    pub(crate) fn from_digest(digest: &Digest) -> Self {
        let [a, b, c, d, e, f, g, h, ..] = digest.0;
        Self([a, b, c, d, e, f, g, h])
    }
}

macro_rules! fixed_bytes {
    ($ty:ident, $len:literal) => {
        impl Encode for $ty {
            fn encode(&self, e: &mut Encoder<'_>) {
                e.bytes(&self.0);
            }
        }

        impl Decode<'_> for $ty {
            fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
                <[u8; $len]>::decode(d).map(Self)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }

        impl core::str::FromStr for $ty {
            type Err = ParseHexError;

            fn from_str(s: &str) -> Result<Self, ParseHexError> {
                let mut out = [0u8; $len];
                parse_hex(s, &mut out)?;
                Ok(Self(out))
            }
        }
    };
}

fixed_bytes!(Digest, 32);
fixed_bytes!(KeyId, 8);

/// A hex string of the wrong length or with a non-hex character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseHexError;

impl fmt::Display for ParseHexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected lowercase or uppercase hex of the exact length")
    }
}

impl core::error::Error for ParseHexError {}

fn parse_hex(s: &str, out: &mut [u8]) -> Result<(), ParseHexError> {
    if s.len() != out.len() * 2 {
        return Err(ParseHexError);
    }
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let nibble = |c: u8| (c as char).to_digit(16).ok_or(ParseHexError);
        // to_digit(16) is below 16, so the byte cannot overflow.
        *byte = (nibble(pair[0])? * 16 + nibble(pair[1])?) as u8;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_known_constant() {
        let expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::of(b"").to_string(), expected);
        assert_eq!(expected.parse::<Digest>(), Ok(Digest::of(b"")));
    }

    #[test]
    fn hex_parsing_refuses_bad_input() {
        assert_eq!("00".parse::<KeyId>(), Err(ParseHexError));
        assert_eq!("zz00000000000000".parse::<KeyId>(), Err(ParseHexError));
        assert_eq!("00112233445566Ff".parse::<KeyId>(), Ok(KeyId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0xff])));
    }

    #[test]
    fn wrong_length_bytes_do_not_decode() {
        // A 3-byte byte string where 8 are due.
        assert!(KeyId::decode(&mut Decoder::new(&[0x43, 1, 2, 3])).is_err());
        assert!(KeyId::decode(&mut Decoder::new(&[0x48, 1, 2, 3, 4, 5, 6, 7, 8])).is_ok());
    }
}
