//! `status`: progress and outcome of an update attempt.
//!
//! A device numbers its reports per rollout (`seq`) and persists the number, so a
//! report re-sent after a reconnect or a power cut carries the same (rollout id, seq) and
//! the backend counts it once.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | rollout id | uint64 |
//! | 1 | seq | uint32 |
//! | 2 | event | uint ([`Event`]) |
//! | 3 | manifest sha256 (optional) | bstr(32) |
//! | 4 | bytes written so far (optional) | uint32 |
//! | 5 | accuracy on the validation set, ‰ (optional) | uint16 |
//! | 6 | accuracy of the running model on the same set, ‰ (optional) | uint16 |
//! | 7 | mean inference latency, µs (optional) | uint32 |
//! | 8 | the running model's latency, µs (optional) | uint32 |
//! | 9 | tensor arena used, bytes (optional) | uint32 |
//! | 10 | error code (optional) | uint16 ([`ErrorCode`]) |
//! | 11 | detail (optional) | text, ≤ 96 |
//! | 12 | with `committed`: the model a rollback would return to (optional) | [`Target`] map |

use super::code::ErrorCode;
use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::command::Target;
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{self, MAX_DETAIL_LEN, MAX_SMALL_MESSAGE_LEN};
use crate::wire::Wire;

/// A progress or outcome report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status<'a> {
    /// The rollout of the offer this reports on.
    pub rollout_id: u64,
    /// Per-rollout report number; with `rollout_id`, the idempotency key.
    pub seq: u32,
    /// What happened.
    pub event: Event,
    /// SHA-256 of the manifest this attempt works on.
    pub manifest: Option<Digest>,
    /// Bytes of the artifact received and written so far.
    pub bytes_done: Option<u32>,
    /// Top-1 accuracy of the new model on the validation set.
    pub accuracy_permille: Option<u16>,
    /// Accuracy of the model it would replace, on the same set.
    pub previous_accuracy_permille: Option<u16>,
    /// Mean inference latency of the new model.
    pub latency_us: Option<u32>,
    /// Mean inference latency of the model it would replace.
    pub previous_latency_us: Option<u32>,
    /// Tensor arena bytes the new model used.
    pub arena_used: Option<u32>,
    /// Why the attempt failed.
    pub error: Option<ErrorCode>,
    /// A short human detail (e.g. the unsupported operator's name).
    pub detail: Option<&'a str>,
    /// With `committed`: the model left in the other slot, which a signed rollback must
    /// name exactly (absent when there is none).
    pub rollback_target: Option<Target>,
}

/// The steps of an update attempt, in the order a device passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Event {
    /// The offer verified; the download starts.
    #[default]
    Accepted,
    /// Bytes are arriving (`bytes_done`).
    Downloading,
    /// The rebuilt image matches the manifest's digest.
    Verified,
    /// The validation set ran (accuracy, latency, arena).
    Validated,
    /// The new model is active. Terminal.
    Committed,
    /// The attempt failed; the running model is untouched (`error`). Terminal.
    Rejected,
    /// The previous model is active again. Terminal.
    RolledBack,
    /// The backend cancelled the attempt. Terminal.
    Cancelled,
    /// After a commit, the product never confirmed the new model within its trial boots:
    /// the previous model is active again (`error`: why). Terminal.
    Reverted,
}

impl Event {
    /// Every event, in wire order (each one's index is its code).
    pub const ALL: [Self; 9] = [
        Self::Accepted,
        Self::Downloading,
        Self::Verified,
        Self::Validated,
        Self::Committed,
        Self::Rejected,
        Self::RolledBack,
        Self::Cancelled,
        Self::Reverted,
    ];

    /// Whether the attempt has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Committed | Self::Rejected | Self::RolledBack | Self::Cancelled | Self::Reverted)
    }
}

/// An event travels as its index in [`Event::ALL`]; an index this build does not know
/// is malformed.
impl Encode for Event {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.uint(*self as u64);
    }
}

impl Decode<'_> for Event {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        let index = usize::try_from(d.uint()?).map_err(|_| Malformed)?;
        Self::ALL.get(index).copied().ok_or(Malformed)
    }
}

impl Encode for Status<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[
            &self.rollout_id,
            &self.seq,
            &self.event,
            &self.manifest,
            &self.bytes_done,
            &self.accuracy_permille,
            &self.previous_accuracy_permille,
            &self.latency_us,
            &self.previous_latency_us,
            &self.arena_used,
            &self.error,
            &self.detail,
            &self.rollback_target,
        ]);
    }
}

impl<'a> Decode<'a> for Status<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let mut v = Self::default();
        d.map(&mut [
            &mut v.rollout_id,
            &mut v.seq,
            &mut v.event,
            &mut v.manifest,
            &mut v.bytes_done,
            &mut v.accuracy_permille,
            &mut v.previous_accuracy_permille,
            &mut v.latency_us,
            &mut v.previous_latency_us,
            &mut v.arena_used,
            &mut v.error,
            &mut v.detail,
            &mut v.rollback_target,
        ])?;
        Ok(v)
    }
}

impl<'a> Wire<'a> for Status<'a> {
    const MAX_LEN: usize = MAX_SMALL_MESSAGE_LEN;
    const CANONICAL: bool = false;

    fn check(&self) -> Result<(), DecodeError> {
        if let Some(a) = self.accuracy_permille {
            limits::check_permille("accuracy_permille", a)?;
        }
        if let Some(a) = self.previous_accuracy_permille {
            limits::check_permille("previous_accuracy_permille", a)?;
        }
        if let Some(detail) = self.detail {
            limits::check_text("detail", detail, MAX_DETAIL_LEN)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_travels_as_its_index_in_all() {
        for (index, event) in Event::ALL.into_iter().enumerate() {
            assert_eq!(event as usize, index);
            let bytes = crate::cbor::to_vec(&event);
            assert_eq!(Event::decode(&mut Decoder::new(&bytes)), Ok(event));
        }
        let unknown = crate::cbor::to_vec(&(Event::ALL.len() as u64));
        assert_eq!(Event::decode(&mut Decoder::new(&unknown)), Err(Malformed));
    }
}
