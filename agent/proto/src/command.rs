//! Commands: what the backend may tell a device outside an offer, signed like a manifest.
//!
//! A command travels in an [`crate::Envelope`] on the device's `cmd` topic: the body is
//! an encoded [`CommandBody`] (its CBOR tag, [`TAG_COMMAND`], keeps it from passing for a
//! manifest), signed by a release key the root certified. It names the device, the
//! rollout, and the exact state it applies to, so it carries no sequence number a
//! database restore could reuse or exhaust:
//!
//! - `cancel` applies while the device downloads or validates the manifest `subject`;
//! - `rollback` applies while the device runs the manifest `subject`, and returns it to
//!   exactly the model `target` names (image digest, and manifest digest unless that
//!   model was installed at the factory).
//!
//! Once executed, a command no longer applies (the job is gone, or the device runs the
//! target), so a replay changes nothing: the agent answers the very same command again
//! with its terminal report, and refuses any other stale one without a flash write.
//!
//! | key | [`CommandBody`] (tag [`TAG_COMMAND`]) | type |
//! |---|---|---|
//! | 0 | format version, = [`COMMAND_FORMAT_VERSION`] | uint |
//! | 1 | device id | text, ≤ 64, `[A-Za-z0-9._-]` |
//! | 2 | rollout id | uint64 |
//! | 3 | action | uint ([`Action`]) |
//! | 4 | subject: the manifest the command is about | bstr(32) |
//! | 5 | rollback target (rollback only) | [`Target`] map |
//!
//! | key | [`Target`] | type |
//! |---|---|---|
//! | 0 | SHA-256 of the model image | bstr(32) |
//! | 1 | SHA-256 of its manifest (absent for a factory-installed model) | bstr(32) |

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{MAX_DEVICE_ID_LEN, MAX_MANIFEST_LEN, check_ident};
use crate::wire::{Wire, precheck_format};

/// The command format this build reads and writes.
pub const COMMAND_FORMAT_VERSION: u16 = 1;
/// CBOR tag of a command body ("mot" + 3).
pub const TAG_COMMAND: u64 = 0x6d6f_7403;

/// What a command asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Make the other slot active again, if it holds exactly the named target.
    Rollback,
    /// Abandon the attempt at the subject manifest.
    Cancel,
}

/// An action travels as its index (rollback 0, cancel 1); another index is malformed.
impl Encode for Action {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.uint(*self as u64);
    }
}

impl Decode<'_> for Action {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        match d.uint()? {
            0 => Ok(Self::Rollback),
            1 => Ok(Self::Cancel),
            _ => Err(Malformed),
        }
    }
}

impl Encode for Target {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.image, &self.manifest]);
    }
}

impl Decode<'_> for Target {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        let mut v = Self { image: Digest([0; 32]), manifest: None };
        d.map(&mut [&mut v.image, &mut v.manifest])?;
        Ok(v)
    }
}

/// The model a rollback returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// SHA-256 of the model image.
    pub image: Digest,
    /// SHA-256 of the manifest it was installed by; `None` for the factory model.
    pub manifest: Option<Digest>,
}

/// A signed instruction to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandBody<'a> {
    /// Always [`COMMAND_FORMAT_VERSION`] for values this build produces.
    pub format: u16,
    /// The one device that may act on it.
    pub device: &'a str,
    /// The rollout it belongs to (reports about it are filed there).
    pub rollout_id: u64,
    /// What to do.
    pub action: Action,
    /// The manifest the command is about: the download to cancel, or the committed
    /// model to roll back from.
    pub subject: Digest,
    /// Where a rollback returns to; absent for a cancel.
    pub target: Option<Target>,
}

impl Encode for CommandBody<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.tag(TAG_COMMAND);
        e.map(&[&self.format, &self.device, &self.rollout_id, &self.action, &self.subject, &self.target]);
    }
}

impl<'a> Decode<'a> for CommandBody<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        d.tag(TAG_COMMAND)?;
        let mut v = Self {
            format: 0,
            device: "",
            rollout_id: 0,
            action: Action::Rollback,
            subject: Digest([0; 32]),
            target: None,
        };
        d.map(&mut [&mut v.format, &mut v.device, &mut v.rollout_id, &mut v.action, &mut v.subject, &mut v.target])?;
        Ok(v)
    }
}

impl<'a> Wire<'a> for CommandBody<'a> {
    // A command body travels where a manifest would, within the same bound.
    const MAX_LEN: usize = MAX_MANIFEST_LEN;
    const CANONICAL: bool = true;

    fn precheck(bytes: &[u8]) -> Result<(), DecodeError> {
        precheck_format(bytes, TAG_COMMAND, COMMAND_FORMAT_VERSION)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.format != COMMAND_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedFormat { found: self.format });
        }
        check_ident("command.device", self.device, MAX_DEVICE_ID_LEN)?;
        match (self.action, self.target) {
            (Action::Rollback, Some(_)) | (Action::Cancel, None) => Ok(()),
            _ => Err(DecodeError::InvalidValue { field: "command.target" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_matches_the_documented_number() {
        assert_eq!(TAG_COMMAND, 1_836_020_739);
    }
}
