//! Numeric codes that cross the wire: open sets, so a newer peer's code still decodes.

use crate::verify::VerifyError;

/// Declares a `u16` code newtype that encodes as a CBOR unsigned integer.
macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u16);

        impl $crate::cbor::Encode for $name {
            fn encode(&self, e: &mut $crate::cbor::Encoder<'_>) {
                e.uint(u64::from(self.0));
            }
        }

        impl $crate::cbor::Decode<'_> for $name {
            fn decode(d: &mut $crate::cbor::Decoder<'_>) -> Result<Self, $crate::cbor::Malformed> {
                <u16 as $crate::cbor::Decode>::decode(d).map(Self)
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    Some(name) => write!(f, "{}({name})", stringify!($name)),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "code {}", self.0),
                }
            }
        }
    };
}
pub(crate) use code_type;

/// Declares the named values of a code type and its `name()` lookup.
macro_rules! code_names {
    ($name:ident { $($(#[$doc:meta])* $konst:ident = $value:literal, $text:literal;)* }) => {
        impl $name {
            $($(#[$doc])* pub const $konst: Self = Self($value);)*

            /// The code's stable name, or `None` for a code this build does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use code_names;

code_type!(
    /// Why an update attempt failed, reported in [`super::Status`]. 1xx: the offer was
    /// refused by [`crate::verify()`]; 2xx: transfer and flash; 3xx: validation; 4xx: the
    /// agent's own state.
    ErrorCode
);

code_names!(ErrorCode {
    /// See [`VerifyError::EnvelopeTooLarge`].
    ENVELOPE_TOO_LARGE = 100, "envelope_too_large";
    /// See [`VerifyError::EnvelopeMalformed`].
    ENVELOPE_MALFORMED = 101, "envelope_malformed";
    /// See [`VerifyError::InvalidRootKey`].
    INVALID_ROOT_KEY = 102, "invalid_root_key";
    /// See [`VerifyError::UnknownRoot`].
    UNKNOWN_ROOT = 103, "unknown_root";
    /// See [`VerifyError::CertificateSignatureInvalid`].
    CERTIFICATE_SIGNATURE_INVALID = 104, "certificate_signature_invalid";
    /// See [`VerifyError::CertificateMalformed`].
    CERTIFICATE_MALFORMED = 105, "certificate_malformed";
    /// See [`VerifyError::CertificateKeyMismatch`].
    CERTIFICATE_KEY_MISMATCH = 106, "certificate_key_mismatch";
    /// See [`VerifyError::CertificateKeyInvalid`].
    CERTIFICATE_KEY_INVALID = 107, "certificate_key_invalid";
    /// See [`VerifyError::CertificateExpired`].
    CERTIFICATE_EXPIRED = 108, "certificate_expired";
    /// See [`VerifyError::UnknownKey`].
    UNKNOWN_KEY = 109, "unknown_key";
    /// See [`VerifyError::SignatureInvalid`].
    SIGNATURE_INVALID = 110, "signature_invalid";
    /// See [`VerifyError::ManifestMalformed`].
    MANIFEST_MALFORMED = 111, "manifest_malformed";
    /// See [`VerifyError::WrongClass`].
    WRONG_CLASS = 112, "wrong_class";
    /// See [`VerifyError::Downgrade`].
    DOWNGRADE = 113, "downgrade";
    /// See [`VerifyError::Expired`].
    EXPIRED = 115, "expired";
    /// See [`VerifyError::ImageTooLarge`].
    IMAGE_TOO_LARGE = 116, "image_too_large";
    /// See [`VerifyError::PatchTooLarge`].
    PATCH_TOO_LARGE = 117, "patch_too_large";
    /// See [`VerifyError::ArenaTooLarge`].
    ARENA_TOO_LARGE = 118, "arena_too_large";
    /// See [`VerifyError::ValidationSetTooLarge`].
    VALIDATION_SET_TOO_LARGE = 119, "validation_set_too_large";
    /// See [`VerifyError::KeyRevoked`].
    KEY_REVOKED = 120, "key_revoked";
    /// See [`VerifyError::CounterOutsideCertificate`].
    COUNTER_OUTSIDE_CERTIFICATE = 121, "counter_outside_certificate";
    /// See [`VerifyError::CommandMalformed`].
    COMMAND_MALFORMED = 122, "command_malformed";
    /// See [`VerifyError::WrongDevice`].
    WRONG_DEVICE = 123, "wrong_device";
    /// See [`VerifyError::RevocationMalformed`].
    REVOCATION_MALFORMED = 124, "revocation_malformed";
    /// See [`VerifyError::RevocationSignatureInvalid`].
    REVOCATION_SIGNATURE_INVALID = 125, "revocation_signature_invalid";
    /// The active slot does not hold the delta's base image.
    BASE_MISMATCH = 200, "base_mismatch";
    /// The rebuilt image's SHA-256 differs from the manifest's.
    IMAGE_DIGEST_MISMATCH = 201, "image_digest_mismatch";
    /// The patch could not be decoded.
    PATCH_CORRUPT = 202, "patch_corrupt";
    /// The delta codec is not built into this agent.
    UNSUPPORTED_CODEC = 203, "unsupported_codec";
    /// A flash operation failed.
    FLASH_ERROR = 204, "flash_error";
    /// The backend refused a chunk or stopped answering.
    TRANSFER_FAILED = 205, "transfer_failed";
    /// The runtime could not load the model (unsupported op, malformed model).
    MODEL_INVALID = 300, "model_invalid";
    /// The validation set could not be read.
    VALIDATION_SET_INVALID = 301, "validation_set_invalid";
    /// Accuracy below the manifest's minimum.
    ACCURACY_BELOW_MINIMUM = 302, "accuracy_below_minimum";
    /// Accuracy dropped more than allowed below the running model's.
    ACCURACY_DROP = 303, "accuracy_drop";
    /// The device restarted during validation more often than allowed (a crash, hang or
    /// watchdog reset while the new model ran).
    VALIDATION_INTERRUPTED = 304, "validation_interrupted";
    /// After its commit, the product did not confirm the new model within its trial
    /// boots (a crash, hang or watchdog reset in the product's own use of it): reverted.
    NOT_CONFIRMED = 305, "not_confirmed";
    /// Another update or a trial is in progress.
    BUSY = 400, "busy";
    /// A rollback was asked for but the previous model is no longer in its slot.
    ROLLBACK_UNAVAILABLE = 401, "rollback_unavailable";
    /// The backend cancelled the attempt.
    CANCELLED = 402, "cancelled";
    /// A signed command that does not apply to the device's state: the download it
    /// cancels or the model it rolls back from is not the device's (a replay of a
    /// command already carried out, or one overtaken by later events). Nothing changed.
    COMMAND_STALE = 403, "command_stale";
    /// The rollback target's security counter is below the device's: it would be a
    /// downgrade. Nothing changed.
    ROLLBACK_BELOW_COUNTER = 404, "rollback_below_counter";
    /// The other slot holds a model other than the one the rollback names. Nothing changed.
    ROLLBACK_TARGET_MISMATCH = 405, "rollback_target_mismatch";
});

impl From<&VerifyError> for ErrorCode {
    fn from(e: &VerifyError) -> Self {
        match e {
            VerifyError::EnvelopeTooLarge => Self::ENVELOPE_TOO_LARGE,
            VerifyError::EnvelopeMalformed(_) => Self::ENVELOPE_MALFORMED,
            VerifyError::InvalidRootKey => Self::INVALID_ROOT_KEY,
            VerifyError::UnknownRoot(_) => Self::UNKNOWN_ROOT,
            VerifyError::CertificateSignatureInvalid => Self::CERTIFICATE_SIGNATURE_INVALID,
            VerifyError::CertificateMalformed(_) => Self::CERTIFICATE_MALFORMED,
            VerifyError::CertificateKeyMismatch => Self::CERTIFICATE_KEY_MISMATCH,
            VerifyError::CertificateKeyInvalid => Self::CERTIFICATE_KEY_INVALID,
            VerifyError::CertificateExpired { .. } => Self::CERTIFICATE_EXPIRED,
            VerifyError::UnknownKey(_) => Self::UNKNOWN_KEY,
            VerifyError::SignatureInvalid => Self::SIGNATURE_INVALID,
            VerifyError::ManifestMalformed(_) => Self::MANIFEST_MALFORMED,
            VerifyError::WrongClass => Self::WRONG_CLASS,
            VerifyError::Downgrade { .. } => Self::DOWNGRADE,
            VerifyError::KeyRevoked(_) => Self::KEY_REVOKED,
            VerifyError::CounterOutsideCertificate { .. } => Self::COUNTER_OUTSIDE_CERTIFICATE,
            VerifyError::CommandMalformed(_) => Self::COMMAND_MALFORMED,
            VerifyError::WrongDevice => Self::WRONG_DEVICE,
            VerifyError::RevocationMalformed(_) => Self::REVOCATION_MALFORMED,
            VerifyError::RevocationSignatureInvalid => Self::REVOCATION_SIGNATURE_INVALID,
            VerifyError::Expired { .. } => Self::EXPIRED,
            VerifyError::ImageTooLarge { .. } => Self::IMAGE_TOO_LARGE,
            VerifyError::PatchTooLarge { .. } => Self::PATCH_TOO_LARGE,
            VerifyError::ArenaTooLarge { .. } => Self::ARENA_TOO_LARGE,
            VerifyError::ValidationSetTooLarge { .. } => Self::VALIDATION_SET_TOO_LARGE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_survive_and_print() -> Result<(), Box<dyn std::error::Error>> {
        let code = ErrorCode(999);
        assert_eq!(code.name(), None);
        assert_eq!(format!("{code}"), "code 999");
        assert_eq!(format!("{}", ErrorCode::DOWNGRADE), "downgrade");
        let bytes = crate::cbor::to_vec(&code);
        let decoded = <ErrorCode as crate::cbor::Decode>::decode(&mut crate::cbor::Decoder::new(&bytes));
        assert_eq!(decoded, Ok(code));
        Ok(())
    }
}
