//! The update agent that lives inside product firmware.
//!
//! It takes a signed offer, rebuilds the new model (full image or delta) into the
//! inactive half of a dual slot, checks its digest, runs a validation set through it, and
//! either commits with one atomic state write or leaves the running model untouched; it
//! reports the outcome exactly once, even across power cuts. The firmware owns the
//! network and the clock and calls the agent from its main loop; the agent owns the two
//! slot regions and the state region (embedded-storage `NorFlash`), and never allocates.
//! See the crate README for the integration guide.
#![cfg_attr(not(test), no_std)]

mod agent;
mod config;
mod lease;
mod platform;
pub mod record;
pub mod slot;
pub mod state;
pub mod store;
#[cfg(feature = "runtime")]
mod validator;

pub use agent::{ActiveModel, Agent, AgentError, SUBSCRIPTIONS};
pub use config::{Config, Factory, Work};
pub use lease::{Lease, Leases};
pub use platform::{Clock, Located, Measurement, Run, Transport, Validator};
pub use store::{JournalStore, MapStore, StateStore, StoreError};
#[cfg(feature = "runtime")]
pub use validator::{RuntimeValidator, SlotMemory};
