//! Bounds of the contract, in bytes, and the character rules of identifiers.
//!
//! Every length a peer controls has a bound here, so a device can size its buffers at
//! compile time and refuse oversize input before reading it (TUF's "endless data").

use crate::error::DecodeError;

/// Longest encoded [`crate::Manifest`].
pub const MAX_MANIFEST_LEN: usize = 1024;
/// Longest encoded [`crate::CertBody`].
pub const MAX_CERT_BODY_LEN: usize = 128;
/// Longest encoded [`crate::Envelope`] (manifest, certificate and two signatures).
pub const MAX_ENVELOPE_LEN: usize = 1536;
/// Longest model name.
pub const MAX_MODEL_NAME_LEN: usize = 64;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 32;
/// Longest device class.
pub const MAX_CLASS_LEN: usize = 32;
/// Longest device id (it is also a topic level).
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Longest free-text detail in a status report.
pub const MAX_DETAIL_LEN: usize = 96;
/// Largest chunk of an artifact carried by one message.
pub const MAX_CHUNK_LEN: usize = 16 * 1024;
/// Longest encoded small message (hello, get, status).
pub const MAX_SMALL_MESSAGE_LEN: usize = 512;
/// Longest encoded chunk message: the data plus its header.
pub const MAX_CHUNK_MESSAGE_LEN: usize = MAX_CHUNK_LEN + 64;
/// Accuracies and drops are in permille.
pub const PERMILLE: u16 = 1000;

/// Identifiers (device ids, classes, model names): non-empty, at most `max` bytes of
/// `[A-Za-z0-9._-]`. The set keeps them safe as MQTT topic levels, file names and URL
/// path segments.
pub fn check_ident(field: &'static str, value: &str, max: usize) -> Result<(), DecodeError> {
    check_len(field, value, max)?;
    if value.is_empty() || !value.bytes().all(is_ident_byte) {
        return Err(DecodeError::InvalidValue { field });
    }
    Ok(())
}

/// Version strings: like identifiers, plus `+` for semver build metadata.
pub fn check_version(field: &'static str, value: &str) -> Result<(), DecodeError> {
    check_len(field, value, MAX_VERSION_LEN)?;
    if value.is_empty() || !value.bytes().all(|b| is_ident_byte(b) || b == b'+') {
        return Err(DecodeError::InvalidValue { field });
    }
    Ok(())
}

/// Free text: bounded, printable (no control characters).
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), DecodeError> {
    check_len(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(DecodeError::InvalidValue { field });
    }
    Ok(())
}

pub(crate) fn check_permille(field: &'static str, value: u16) -> Result<(), DecodeError> {
    if value > PERMILLE {
        return Err(DecodeError::InvalidValue { field });
    }
    Ok(())
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), DecodeError> {
    if value.len() > max {
        return Err(DecodeError::FieldTooLong { field, max });
    }
    Ok(())
}

pub(crate) fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_ident("x", "dev-01.a_b", 64).is_ok());
        assert_eq!(check_ident("x", "", 64), Err(DecodeError::InvalidValue { field: "x" }));
        assert_eq!(check_ident("x", "a/b", 64), Err(DecodeError::InvalidValue { field: "x" }));
        assert_eq!(check_ident("x", "a+b", 64), Err(DecodeError::InvalidValue { field: "x" }));
        assert_eq!(check_ident("x", "abc", 2), Err(DecodeError::FieldTooLong { field: "x", max: 2 }));
        assert!(check_version("v", "1.2.0-rc1+build.5").is_ok());
        assert!(check_version("v", "1 2").is_err());
        assert!(check_text("t", "op 17 (CUSTOM) unsupported", 96).is_ok());
        assert!(check_text("t", "line\nbreak", 96).is_err());
        assert!(check_permille("p", 1000).is_ok());
        assert!(check_permille("p", 1001).is_err());
    }
}
