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

use minicbor::{Decode, Encode};

use super::code::ErrorCode;
use crate::command::Target;
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{self, MAX_DETAIL_LEN, MAX_SMALL_MESSAGE_LEN};
use crate::wire::Wire;

/// A progress or outcome report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
#[cbor(map)]
pub struct Status<'a> {
    /// The rollout of the offer this reports on.
    #[n(0)]
    pub rollout_id: u64,
    /// Per-rollout report number; with `rollout_id`, the idempotency key.
    #[n(1)]
    pub seq: u32,
    /// What happened.
    #[n(2)]
    pub event: Event,
    /// SHA-256 of the manifest this attempt works on.
    #[n(3)]
    pub manifest: Option<Digest>,
    /// Bytes of the artifact received and written so far.
    #[n(4)]
    pub bytes_done: Option<u32>,
    /// Top-1 accuracy of the new model on the validation set.
    #[n(5)]
    pub accuracy_permille: Option<u16>,
    /// Accuracy of the model it would replace, on the same set.
    #[n(6)]
    pub previous_accuracy_permille: Option<u16>,
    /// Mean inference latency of the new model.
    #[n(7)]
    pub latency_us: Option<u32>,
    /// Mean inference latency of the model it would replace.
    #[n(8)]
    pub previous_latency_us: Option<u32>,
    /// Tensor arena bytes the new model used.
    #[n(9)]
    pub arena_used: Option<u32>,
    /// Why the attempt failed.
    #[n(10)]
    pub error: Option<ErrorCode>,
    /// A short human detail (e.g. the unsupported operator's name).
    #[b(11)]
    pub detail: Option<&'a str>,
    /// With `committed`: the model left in the other slot, which a signed rollback must
    /// name exactly (absent when there is none).
    #[n(12)]
    pub rollback_target: Option<Target>,
}

/// The steps of an update attempt, in the order a device passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
#[cbor(index_only)]
pub enum Event {
    /// The offer verified; the download starts.
    #[default]
    #[n(0)]
    Accepted,
    /// Bytes are arriving (`bytes_done`).
    #[n(1)]
    Downloading,
    /// The rebuilt image matches the manifest's digest.
    #[n(2)]
    Verified,
    /// The validation set ran (accuracy, latency, arena).
    #[n(3)]
    Validated,
    /// The new model is active. Terminal.
    #[n(4)]
    Committed,
    /// The attempt failed; the running model is untouched (`error`). Terminal.
    #[n(5)]
    Rejected,
    /// The previous model is active again. Terminal.
    #[n(6)]
    RolledBack,
    /// The backend cancelled the attempt. Terminal.
    #[n(7)]
    Cancelled,
    /// After a commit, the product never confirmed the new model within its trial boots:
    /// the previous model is active again (`error`: why). Terminal.
    #[n(8)]
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
