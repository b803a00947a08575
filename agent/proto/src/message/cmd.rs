//! `cmd`: the backend tells a device to undo or stop.
//!
//! Commands travel on the device's own topic, which the broker's ACL reserves for the
//! backend; they cannot install anything, only return to a model the device itself
//! verified and committed before, or abandon a download. Each carries an id the device
//! remembers, so a redelivered command runs once.
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | command id | uint64 |
//! | 1 | action | uint ([`Action`]) |
//! | 2 | rollout id | uint64 |

use minicbor::{Decode, Encode};

use crate::error::DecodeError;
use crate::limits::MAX_SMALL_MESSAGE_LEN;
use crate::wire::Wire;

/// A command to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Cmd {
    /// Unique per device; a device executes each id at most once.
    #[n(0)]
    pub id: u64,
    /// What to do.
    #[n(1)]
    pub action: Action,
    /// The rollout the command belongs to.
    #[n(2)]
    pub rollout_id: u64,
}

/// What a command asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum Action {
    /// Make the previous slot active again, if it still holds the previous model.
    #[n(0)]
    Rollback,
    /// Abandon the in-flight attempt of this rollout.
    #[n(1)]
    Cancel,
}

impl Wire<'_> for Cmd {
    const MAX_LEN: usize = MAX_SMALL_MESSAGE_LEN;
    const CANONICAL: bool = false;

    fn check(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}
