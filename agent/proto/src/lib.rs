//! The one definition of every byte the mota backend and the mota agent exchange.
//!
//! Both sides link this crate, so they cannot drift apart: the backend encodes with the
//! same code the device decodes with, and the hex vectors under `tests/vectors/` pin the
//! encoding so that a change to it is a visible, deliberate act.
//!
//! What lives here:
//! - [`Manifest`]: what an update is (model, version, security counter, image and delta
//!   digests, validation rule, arena size, expiry, rollout).
//! - [`Envelope`] and [`KeyCertificate`]: the signature over the manifest and the key chain
//!   from a root key compiled into firmware to the release key that signed it.
//! - [`CommandBody`]: a rollback or cancel, signed like a manifest; [`RevocationBody`]:
//!   the release keys a root revokes.
//! - [`verify()`], [`verify_command`], [`verify_revocation`]: the entry points a device
//!   uses to accept or refuse an offer, a command, a revocation list; their `_with`
//!   twins take the platform's [`Crypto`] (hardware or OS Ed25519 and SHA-256) instead
//!   of the bundled software one.
//! - [`message`]: the payload of every MQTT topic, and [`topic`]: the topic names.
//!
//! Invariants: no I/O, no allocation (the `std` feature adds host conveniences only),
//! no panics on any input, and every decoder borrows from its input and bounds every
//! length. Signed structures are decoded only in their canonical form, so one signed
//! meaning has exactly one byte string.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

mod cbor;
pub mod certificate;
pub mod command;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod limits;
pub mod manifest;
pub mod message;
pub mod revocation;
pub mod topic;
pub mod verify;
mod wire;

#[cfg(feature = "std")]
pub mod keys;
#[cfg(feature = "std")]
pub mod sign;
#[cfg(feature = "_testkit")]
pub mod testkit;

pub use certificate::{CertBody, KeyCertificate, RootSigned};
pub use command::{Action, CommandBody, Target};
pub use crypto::{Crypto, Software};
pub use envelope::Envelope;
pub use error::{DecodeError, EncodeError};
pub use ids::{Digest, KeyId};
pub use manifest::{Delta, Image, Manifest, Validation};
pub use revocation::{RevocationBody, SignedRevocation};
pub use verify::{
    DevicePolicy, Limits, VerifiedCommand, VerifiedOffer, VerifyError, verify, verify_certificate,
    verify_certificate_with, verify_command, verify_command_with, verify_revocation, verify_revocation_with,
    verify_with,
};
pub use wire::Wire;
