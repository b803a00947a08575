//! Key and certificate files, as text (host only; the caller does the file I/O).
//!
//! Private keys are PKCS#8 PEM (`PRIVATE KEY`), public keys SubjectPublicKeyInfo PEM
//! (`PUBLIC KEY`), the formats OpenSSL and every KMS import and export for ed25519.
//! Certificates are mota's own CBOR ([`crate::KeyCertificate`]) under the PEM label
//! [`CERT_PEM_LABEL`], so all three kinds are text files a user can tell apart.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::certificate::KeyCertificate;
use crate::wire::Wire;

/// PEM label of a mota key certificate.
pub const CERT_PEM_LABEL: &str = "MOTA KEY CERTIFICATE";

/// A parsed key or certificate file.
pub enum KeyFile {
    /// A private key (its public half is derivable).
    Private(SigningKey),
    /// A public key.
    Public(VerifyingKey),
    /// An encoded, well-formed [`KeyCertificate`].
    Certificate(Vec<u8>),
}

/// Why a key file could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Not PEM at all.
    NotPem,
    /// PEM with a label mota does not use.
    UnknownLabel(String),
    /// PEM with a known label whose contents are not a valid key or certificate.
    Invalid(&'static str),
    /// The operating system's random source failed.
    Random,
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotPem => f.write_str("not a PEM file"),
            Self::UnknownLabel(label) => write!(f, "unexpected PEM label `{label}`"),
            Self::Invalid(what) => write!(f, "invalid {what}"),
            Self::Random => f.write_str("the system random source failed"),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// A new key pair from the operating system's random source.
pub fn generate() -> Result<SigningKey, KeyFileError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| KeyFileError::Random)?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// PKCS#8 PEM of a private key. Handle the result as a secret.
pub fn private_key_pem(key: &SigningKey) -> Result<String, KeyFileError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_owned())
        .map_err(|_| KeyFileError::Invalid("private key"))
}

/// Writes secret text (a private key's PEM) readable by its owner only (mode 0600 on
/// Unix, also when the file already existed).
pub fn write_secret_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created; an existing one is restricted here.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// SubjectPublicKeyInfo PEM of a public key.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyFileError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|_| KeyFileError::Invalid("public key"))
}

/// PEM of an encoded certificate.
pub fn certificate_pem(certificate: &[u8]) -> Result<String, KeyFileError> {
    KeyCertificate::parse(certificate).map_err(|_| KeyFileError::Invalid("certificate"))?;
    pem_rfc7468::encode_string(CERT_PEM_LABEL, LineEnding::LF, certificate)
        .map_err(|_| KeyFileError::Invalid("certificate"))
}

impl KeyFile {
    /// Parses any of the three kinds, told apart by their PEM label.
    pub fn from_pem(text: &str) -> Result<Self, KeyFileError> {
        let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes()).map_err(|_| KeyFileError::NotPem)?;
        match label {
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der)
                .map(Self::Private)
                .map_err(|_| KeyFileError::Invalid("PKCS#8 ed25519 private key")),
            "PUBLIC KEY" => VerifyingKey::from_public_key_der(&der)
                .map(Self::Public)
                .map_err(|_| KeyFileError::Invalid("ed25519 public key")),
            CERT_PEM_LABEL => match KeyCertificate::parse(&der) {
                Ok(_) => Ok(Self::Certificate(der)),
                Err(_) => Err(KeyFileError::Invalid("certificate")),
            },
            other => Err(KeyFileError::UnknownLabel(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::certify;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn every_kind_round_trips_through_pem() -> Result {
        let key = SigningKey::from_bytes(&[7; 32]);
        let pem = private_key_pem(&key)?;
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(matches!(KeyFile::from_pem(&pem), Ok(KeyFile::Private(k)) if k.to_bytes() == key.to_bytes()));

        let public = public_key_pem(&key.verifying_key())?;
        assert!(matches!(KeyFile::from_pem(&public), Ok(KeyFile::Public(k)) if k == key.verifying_key()));

        let cert = certify(&key, &SigningKey::from_bytes(&[8; 32]).verifying_key(), 1_900_000_000, 1..=9)?;
        let cert_pem = certificate_pem(&cert)?;
        assert!(cert_pem.starts_with("-----BEGIN MOTA KEY CERTIFICATE-----"));
        assert!(matches!(KeyFile::from_pem(&cert_pem), Ok(KeyFile::Certificate(c)) if c == cert));
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_ours() -> Result {
        assert_eq!(KeyFile::from_pem("hello").err(), Some(KeyFileError::NotPem));
        let other = pem_rfc7468::encode_string("CERTIFICATE", LineEnding::LF, b"x")?;
        assert_eq!(KeyFile::from_pem(&other).err(), Some(KeyFileError::UnknownLabel("CERTIFICATE".into())));
        let bad = pem_rfc7468::encode_string(CERT_PEM_LABEL, LineEnding::LF, b"\xa0")?;
        assert_eq!(KeyFile::from_pem(&bad).err(), Some(KeyFileError::Invalid("certificate")));
        Ok(())
    }

    #[test]
    fn generated_keys_differ() -> Result {
        assert_ne!(generate()?.to_bytes(), generate()?.to_bytes());
        Ok(())
    }
}
