//! Signing, for the host side only (backend, CLI): certify release keys and sign
//! revocation lists with a root key, sign manifests and commands with a certified
//! release key.
//!
//! Nothing here is needed to verify, so firmware never links it.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use std::ops::RangeInclusive;

use crate::certificate::{CERT_FORMAT_VERSION, CertBody, KeyCertificate, RootSigned};
use crate::command::CommandBody;
use crate::envelope::Envelope;
use crate::error::{DecodeError, EncodeError};
use crate::ids::KeyId;
use crate::manifest::Manifest;
use crate::revocation::{MAX_REVOKED, REVOCATION_FORMAT_VERSION, RevocationBody};
use crate::wire::Wire;

/// The id of a key pair's public half.
pub fn key_id(key: &SigningKey) -> KeyId {
    KeyId::of(key.verifying_key().as_bytes())
}

/// Has `root` certify `release` until `not_after` (unix seconds) for manifests whose
/// security counter lies in `counters`; returns the encoded [`KeyCertificate`].
pub fn certify(
    root: &SigningKey,
    release: &VerifyingKey,
    not_after: u64,
    counters: RangeInclusive<u32>,
) -> Result<Vec<u8>, EncodeError> {
    let body = CertBody {
        format: CERT_FORMAT_VERSION,
        key_id: KeyId::of(release.as_bytes()),
        public_key: release.to_bytes(),
        not_after,
        min_counter: *counters.start(),
        max_counter: *counters.end(),
    };
    root_sign(root, &body.to_vec()?)
}

/// Has `root` sign revocation list number `seq`, revoking `keys` (at most
/// [`MAX_REVOKED`]); returns the encoded [`crate::SignedRevocation`].
pub fn revoke(root: &SigningKey, seq: u32, keys: &[KeyId]) -> Result<Vec<u8>, EncodeError> {
    if keys.len() > MAX_REVOKED {
        return Err(EncodeError::Invalid(DecodeError::InvalidValue { field: "revocation.revoked" }));
    }
    let revoked: Vec<u8> = keys.iter().flat_map(|k| k.0).collect();
    root_sign(root, &RevocationBody { format: REVOCATION_FORMAT_VERSION, seq, revoked: &revoked }.to_vec()?)
}

fn root_sign(root: &SigningKey, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    RootSigned { body, issuer: key_id(root), signature: root.sign(body).to_bytes() }.to_vec()
}

/// A release key together with the certificate that makes devices trust it.
pub struct ReleaseKey {
    key: SigningKey,
    certificate: Vec<u8>,
}

/// A release key and a certificate that do not belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseKeyError {
    /// The certificate does not decode.
    Certificate(DecodeError),
    /// The certificate certifies another key.
    KeyMismatch,
}

impl std::fmt::Display for ReleaseKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Certificate(e) => write!(f, "invalid certificate: {e}"),
            Self::KeyMismatch => f.write_str("the certificate is for a different key"),
        }
    }
}

impl std::error::Error for ReleaseKeyError {}

impl ReleaseKey {
    /// Pairs a key with its encoded certificate, checking that they match. The
    /// certificate's signature is not checked here: that is the device's job, with
    /// its own roots.
    pub fn new(key: SigningKey, certificate: Vec<u8>) -> Result<Self, ReleaseKeyError> {
        let cert = KeyCertificate::parse(&certificate).map_err(ReleaseKeyError::Certificate)?;
        let body = CertBody::parse(cert.body).map_err(ReleaseKeyError::Certificate)?;
        if body.public_key != key.verifying_key().to_bytes() || body.key_id != key_id(&key) {
            return Err(ReleaseKeyError::KeyMismatch);
        }
        Ok(Self { key, certificate })
    }

    /// The release key's id.
    pub fn key_id(&self) -> KeyId {
        key_id(&self.key)
    }

    /// The encoded certificate.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Encodes and signs a manifest; returns the encoded [`Envelope`] (an offer payload).
    pub fn sign(&self, manifest: &Manifest<'_>) -> Result<Vec<u8>, EncodeError> {
        self.sign_bytes(&manifest.to_vec()?)
    }

    /// Signs manifest bytes encoded elsewhere (they are checked to be a valid, canonical
    /// manifest first, so a device will not refuse them for their shape).
    pub fn sign_bytes(&self, manifest: &[u8]) -> Result<Vec<u8>, EncodeError> {
        Manifest::parse(manifest).map_err(EncodeError::Invalid)?;
        self.envelope(manifest)
    }

    /// Encodes and signs a command; returns the encoded [`Envelope`] (a `cmd` payload).
    pub fn sign_command(&self, command: &CommandBody<'_>) -> Result<Vec<u8>, EncodeError> {
        self.envelope(&command.to_vec()?)
    }

    fn envelope(&self, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let certificate = KeyCertificate::parse(&self.certificate).map_err(EncodeError::Invalid)?;
        Envelope { body, key_id: self.key_id(), signature: self.key.sign(body).to_bytes(), certificate }.to_vec()
    }
}
