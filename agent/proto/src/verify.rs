//! The doors signed bytes go through on a device: [`verify()`] for an offer,
//! [`verify_command`] for a command, [`verify_revocation`] for a revocation list.
//!
//! Order matters and is fixed: size bound, envelope shape, certificate signature by a
//! compiled-in root, certificate contents, the signing key not revoked, the body's
//! signature by the certified key, and only then the body is decoded and its fields
//! judged against the device (a manifest's counter also against the certificate's
//! range). Each refusal is its own variant, so the device can report exactly why (and
//! the backend can tell an attack from a misconfigured rollout).
//!
//! Time: without a trusted clock the device cannot judge expiry. It then accepts and
//! says so in [`VerifiedOffer::time_checked`], to be reported, as Uptane's partial
//! verification does; it never guesses a time.
//!
//! Crypto: each entry point has a `_with` twin taking a [`Crypto`], through which every
//! signature check and digest goes; the plain ones use the bundled [`Software`].

use core::fmt;

use crate::certificate::{CertBody, KeyCertificate, RootSigned};
use crate::command::CommandBody;
use crate::crypto::{self, Crypto, Software};
use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::ids::{Digest, KeyId};
use crate::limits::MAX_ENVELOPE_LEN;
use crate::manifest::Manifest;
use crate::revocation::RevocationBody;
use crate::wire::Wire;

/// What a device knows about itself when an offer arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePolicy<'a> {
    /// The device's class; the manifest must name exactly this one.
    pub device_class: &'a str,
    /// The device's security counter (the highest it committed); an offer below it is
    /// a downgrade. An equal counter is accepted (MCUboot's rule: the counter rises only
    /// when a release must make older models unusable).
    pub security_counter: u32,
    /// Trusted current time in unix seconds, if the device has one.
    pub now: Option<u64>,
    /// Release keys revoked by the newest revocation list the device holds.
    pub revoked: &'a [KeyId],
    /// The device's resources.
    pub limits: Limits,
}

/// Resource bounds of a device; an offer exceeding one is refused before any download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of a model slot.
    pub max_image_bytes: u32,
    /// Largest patch the device accepts (patches stream through, so this guards time
    /// and bandwidth, not storage).
    pub max_patch_bytes: u32,
    /// Tensor arena the device can give the model.
    pub max_arena_bytes: u32,
    /// Space for a validation set.
    pub max_validation_bytes: u32,
}

/// An offer that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedOffer<'a> {
    /// The decoded manifest, borrowing from the envelope bytes.
    pub manifest: Manifest<'a>,
    /// SHA-256 of the signed manifest bytes: the identity of this offer.
    pub manifest_digest: Digest,
    /// The release key that signed it.
    pub key_id: KeyId,
    /// Whether expiry and certificate validity were checked against trusted time.
    pub time_checked: bool,
}

/// A command that passed every check of its own: what the device's state says about it
/// is the agent's to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCommand<'a> {
    /// The decoded command, borrowing from the envelope bytes.
    pub command: CommandBody<'a>,
    /// SHA-256 of the signed command bytes: the identity of this command.
    pub digest: Digest,
}

/// Why an offer, a command or a revocation list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The envelope is longer than [`MAX_ENVELOPE_LEN`].
    EnvelopeTooLarge,
    /// The envelope (or the certificate inside it) does not decode.
    EnvelopeMalformed(DecodeError),
    /// A root key compiled into the firmware is not a valid ed25519 key. No longer
    /// produced: since the [`Crypto`] hook, which answers only yes or no, such a key
    /// fails its signature check ([`VerifyError::CertificateSignatureInvalid`],
    /// [`VerifyError::RevocationSignatureInvalid`]). Kept for its wire code.
    InvalidRootKey,
    /// The certificate names an issuer that is not one of the device's roots.
    UnknownRoot(KeyId),
    /// The certificate's signature does not verify under the named root.
    CertificateSignatureInvalid,
    /// The certificate body does not decode.
    CertificateMalformed(DecodeError),
    /// The certified key id is not the id of the certified public key.
    CertificateKeyMismatch,
    /// The certified public key is not a valid ed25519 key. No longer produced: since
    /// the [`Crypto`] hook, such a key fails the body's signature check
    /// ([`VerifyError::SignatureInvalid`]). Kept for its wire code.
    CertificateKeyInvalid,
    /// The certificate's validity ended before the trusted current time.
    CertificateExpired {
        /// The certificate's not-after time.
        not_after: u64,
    },
    /// The envelope names a signing key other than the certified one.
    UnknownKey(KeyId),
    /// The signing key is on the device's revocation list.
    KeyRevoked(KeyId),
    /// The manifest signature does not verify under the certified key.
    SignatureInvalid,
    /// The manifest does not decode (after its signature verified).
    ManifestMalformed(DecodeError),
    /// The manifest is for another class of device.
    WrongClass,
    /// The offered security counter is below the device's.
    Downgrade {
        /// The manifest's counter.
        offered: u32,
        /// The device's counter.
        current: u32,
    },
    /// The manifest's security counter is outside the range the root certified the
    /// signing key for.
    CounterOutsideCertificate {
        /// The manifest's counter.
        counter: u32,
        /// The certificate's lowest counter.
        min: u32,
        /// The certificate's highest counter.
        max: u32,
    },
    /// The command does not decode (after its signature verified).
    CommandMalformed(DecodeError),
    /// The command is for another device.
    WrongDevice,
    /// The revocation list does not decode (after its signature verified).
    RevocationMalformed(DecodeError),
    /// The revocation list's signature does not verify under the named root.
    RevocationSignatureInvalid,
    /// The manifest expired before the trusted current time.
    Expired {
        /// The manifest's expiry.
        expires_at: u64,
    },
    /// The image does not fit a slot.
    ImageTooLarge {
        /// The image size.
        size: u32,
        /// The device's bound.
        max: u32,
    },
    /// The patch exceeds the device's bound.
    PatchTooLarge {
        /// The patch size.
        size: u32,
        /// The device's bound.
        max: u32,
    },
    /// The model needs a larger tensor arena than the device has.
    ArenaTooLarge {
        /// Arena bytes the model needs.
        needed: u32,
        /// Arena bytes the device has.
        available: u32,
    },
    /// The validation set does not fit.
    ValidationSetTooLarge {
        /// The set size.
        size: u32,
        /// The device's bound.
        max: u32,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EnvelopeTooLarge => write!(f, "envelope larger than {MAX_ENVELOPE_LEN} bytes"),
            Self::EnvelopeMalformed(e) => write!(f, "malformed envelope: {e}"),
            Self::InvalidRootKey => f.write_str("a compiled-in root key is not a valid ed25519 key"),
            Self::UnknownRoot(id) => write!(f, "certificate issued by unknown root {id}"),
            Self::CertificateSignatureInvalid => f.write_str("certificate signature invalid"),
            Self::CertificateMalformed(e) => write!(f, "malformed certificate: {e}"),
            Self::CertificateKeyMismatch => f.write_str("certificate key id does not match its key"),
            Self::CertificateKeyInvalid => f.write_str("certified key is not a valid ed25519 key"),
            Self::CertificateExpired { not_after } => write!(f, "release key expired at {not_after}"),
            Self::UnknownKey(id) => write!(f, "signed by uncertified key {id}"),
            Self::KeyRevoked(id) => write!(f, "signed by revoked key {id}"),
            Self::SignatureInvalid => f.write_str("manifest signature invalid"),
            Self::ManifestMalformed(e) => write!(f, "malformed manifest: {e}"),
            Self::WrongClass => f.write_str("manifest is for another device class"),
            Self::Downgrade { offered, current } => {
                write!(f, "downgrade: security counter {offered} below {current}")
            }
            Self::CounterOutsideCertificate { counter, min, max } => {
                write!(f, "security counter {counter} outside the signing key's range {min}..={max}")
            }
            Self::CommandMalformed(e) => write!(f, "malformed command: {e}"),
            Self::WrongDevice => f.write_str("command is for another device"),
            Self::RevocationMalformed(e) => write!(f, "malformed revocation list: {e}"),
            Self::RevocationSignatureInvalid => f.write_str("revocation list signature invalid"),
            Self::Expired { expires_at } => write!(f, "manifest expired at {expires_at}"),
            Self::ImageTooLarge { size, max } => write!(f, "image of {size} bytes exceeds slot of {max}"),
            Self::PatchTooLarge { size, max } => write!(f, "patch of {size} bytes exceeds {max}"),
            Self::ArenaTooLarge { needed, available } => {
                write!(f, "model needs {needed} arena bytes, device has {available}")
            }
            Self::ValidationSetTooLarge { size, max } => {
                write!(f, "validation set of {size} bytes exceeds {max}")
            }
        }
    }
}

impl core::error::Error for VerifyError {}

/// Verifies a signed offer against the device's root keys and policy, with the bundled
/// [`Software`] crypto (see [`verify_with`]).
///
/// `roots` are the ed25519 public keys compiled into firmware; a certificate must be
/// signed by one of them. Nothing inside the manifest is decoded before its signature
/// has verified.
pub fn verify<'a>(
    envelope: &'a [u8],
    roots: &[[u8; 32]],
    device: &DevicePolicy<'_>,
) -> Result<VerifiedOffer<'a>, VerifyError> {
    verify_with(&Software, envelope, roots, device)
}

/// [`verify()`] with the platform's crypto: every signature check and digest goes
/// through `crypto`.
pub fn verify_with<'a>(
    crypto: &dyn Crypto,
    envelope: &'a [u8],
    roots: &[[u8; 32]],
    device: &DevicePolicy<'_>,
) -> Result<VerifiedOffer<'a>, VerifyError> {
    let (env, cert) = open(crypto, envelope, roots, device.revoked, device.now)?;
    let manifest = Manifest::parse(env.body).map_err(VerifyError::ManifestMalformed)?;
    if !cert.allows(manifest.security_counter) {
        let (min, max) = (cert.min_counter, cert.max_counter);
        return Err(VerifyError::CounterOutsideCertificate { counter: manifest.security_counter, min, max });
    }
    check_manifest(&manifest, device)?;
    Ok(VerifiedOffer {
        manifest,
        manifest_digest: crypto::digest(crypto, env.body),
        key_id: env.key_id,
        time_checked: device.now.is_some(),
    })
}

/// Verifies a signed command for the device `device_id`, with the same key chain and
/// revocations as an offer, and the bundled [`Software`] crypto (see
/// [`verify_command_with`]). Whether it applies to the device's state is the agent's
/// judgement.
pub fn verify_command<'a>(
    envelope: &'a [u8],
    roots: &[[u8; 32]],
    revoked: &[KeyId],
    now: Option<u64>,
    device_id: &str,
) -> Result<VerifiedCommand<'a>, VerifyError> {
    verify_command_with(&Software, envelope, roots, revoked, now, device_id)
}

/// [`verify_command`] with the platform's crypto: every signature check and digest goes
/// through `crypto`.
pub fn verify_command_with<'a>(
    crypto: &dyn Crypto,
    envelope: &'a [u8],
    roots: &[[u8; 32]],
    revoked: &[KeyId],
    now: Option<u64>,
    device_id: &str,
) -> Result<VerifiedCommand<'a>, VerifyError> {
    let (env, _) = open(crypto, envelope, roots, revoked, now)?;
    let command = CommandBody::parse(env.body).map_err(VerifyError::CommandMalformed)?;
    if command.device != device_id {
        return Err(VerifyError::WrongDevice);
    }
    Ok(VerifiedCommand { command, digest: crypto::digest(crypto, env.body) })
}

/// Verifies a root-signed revocation list (its freshness, `seq`, is the caller's), with
/// the bundled [`Software`] crypto (see [`verify_revocation_with`]).
pub fn verify_revocation<'a>(bytes: &'a [u8], roots: &[[u8; 32]]) -> Result<RevocationBody<'a>, VerifyError> {
    verify_revocation_with(&Software, bytes, roots)
}

/// [`verify_revocation`] with the platform's crypto: the root's signature check and the
/// roots' key ids go through `crypto`.
pub fn verify_revocation_with<'a>(
    crypto: &dyn Crypto,
    bytes: &'a [u8],
    roots: &[[u8; 32]],
) -> Result<RevocationBody<'a>, VerifyError> {
    let signed = RootSigned::parse(bytes).map_err(VerifyError::RevocationMalformed)?;
    let body = root_signed(crypto, &signed, roots, VerifyError::RevocationSignatureInvalid)?;
    RevocationBody::parse(body).map_err(VerifyError::RevocationMalformed)
}

/// The common part: envelope shape, key chain, revocation, the body's signature.
fn open<'a>(
    crypto: &dyn Crypto,
    envelope: &'a [u8],
    roots: &[[u8; 32]],
    revoked: &[KeyId],
    now: Option<u64>,
) -> Result<(Envelope<'a>, CertBody), VerifyError> {
    if envelope.len() > MAX_ENVELOPE_LEN {
        return Err(VerifyError::EnvelopeTooLarge);
    }
    let env = Envelope::parse(envelope).map_err(VerifyError::EnvelopeMalformed)?;
    let cert = verify_certificate_with(crypto, &env.certificate, roots, now)?;
    if env.key_id != cert.key_id {
        return Err(VerifyError::UnknownKey(env.key_id));
    }
    if revoked.contains(&cert.key_id) {
        return Err(VerifyError::KeyRevoked(cert.key_id));
    }
    if !crypto.verify_ed25519(&cert.public_key, env.body, &env.signature) {
        return Err(VerifyError::SignatureInvalid);
    }
    Ok((env, cert))
}

/// Checks a release-key certificate against the roots and, when known, the time, and
/// returns what it certifies, with the bundled [`Software`] crypto. [`verify()`] checks
/// certificates this way; the CLI uses it to inspect files.
pub fn verify_certificate(
    cert: &KeyCertificate<'_>,
    roots: &[[u8; 32]],
    now: Option<u64>,
) -> Result<CertBody, VerifyError> {
    verify_certificate_with(&Software, cert, roots, now)
}

/// [`verify_certificate`] with the platform's crypto.
pub fn verify_certificate_with(
    crypto: &dyn Crypto,
    cert: &KeyCertificate<'_>,
    roots: &[[u8; 32]],
    now: Option<u64>,
) -> Result<CertBody, VerifyError> {
    let body = root_signed(crypto, cert, roots, VerifyError::CertificateSignatureInvalid)?;
    let body = CertBody::parse(body).map_err(VerifyError::CertificateMalformed)?;
    if crypto::key_id(crypto, &body.public_key) != body.key_id {
        return Err(VerifyError::CertificateKeyMismatch);
    }
    if now.is_some_and(|now| now > body.not_after) {
        return Err(VerifyError::CertificateExpired { not_after: body.not_after });
    }
    Ok(body)
}

/// The body of bytes a root signed, once the signature holds.
fn root_signed<'a>(
    crypto: &dyn Crypto,
    signed: &RootSigned<'a>,
    roots: &[[u8; 32]],
    bad_signature: VerifyError,
) -> Result<&'a [u8], VerifyError> {
    let root = roots
        .iter()
        .find(|root| crypto::key_id(crypto, root) == signed.issuer)
        .ok_or(VerifyError::UnknownRoot(signed.issuer))?;
    if !crypto.verify_ed25519(root, signed.body, &signed.signature) {
        return Err(bad_signature);
    }
    Ok(signed.body)
}

/// Judges a verified manifest against the device.
fn check_manifest(m: &Manifest<'_>, device: &DevicePolicy<'_>) -> Result<(), VerifyError> {
    if m.device_class != device.device_class {
        return Err(VerifyError::WrongClass);
    }
    let current = device.security_counter;
    if m.security_counter < current {
        return Err(VerifyError::Downgrade { offered: m.security_counter, current });
    }
    if let (Some(now), Some(expires_at)) = (device.now, m.expires_at)
        && now >= expires_at
    {
        return Err(VerifyError::Expired { expires_at });
    }
    let limits = &device.limits;
    if m.image.size > limits.max_image_bytes {
        return Err(VerifyError::ImageTooLarge { size: m.image.size, max: limits.max_image_bytes });
    }
    if let Some(delta) = &m.delta
        && delta.patch_size > limits.max_patch_bytes
    {
        return Err(VerifyError::PatchTooLarge { size: delta.patch_size, max: limits.max_patch_bytes });
    }
    if m.arena_bytes > limits.max_arena_bytes {
        return Err(VerifyError::ArenaTooLarge { needed: m.arena_bytes, available: limits.max_arena_bytes });
    }
    if let Some(v) = &m.validation
        && v.set_size > limits.max_validation_bytes
    {
        return Err(VerifyError::ValidationSetTooLarge { size: v.set_size, max: limits.max_validation_bytes });
    }
    Ok(())
}
