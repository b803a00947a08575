//! What the firmware supplies: a way to publish, a clock and a validator. Flash comes in
//! as embedded-storage `NorFlash` regions, so any HAL driver (or a partition of one) fits.

use mota_proto::message::ErrorCode;
use mota_proto::topic::Kind;

/// Publishes on the device's own topics (`mota/v1/dev/{device}/{kind}`); the firmware's
/// MQTT client owns the connection, the topic prefix and the subscriptions
/// ([`crate::SUBSCRIPTIONS`]).
pub trait Transport {
    /// Why a publish failed (the agent retries later).
    type Error;
    /// Queues `payload` on the topic of `kind` (QoS 1).
    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Self::Error>;
}

/// Time, as the agent needs it.
pub trait Clock {
    /// Milliseconds from any fixed origin, never going back (for retry timers).
    fn now_ms(&self) -> u64;
    /// Trusted Unix seconds (RTC synchronised over an authenticated channel), or `None`:
    /// then expiry cannot be checked and reports say so.
    fn unix_time(&self) -> Option<u64>;
}

/// Bytes in a slot: `len` bytes from `offset` of slot `slot` (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Slot index.
    pub slot: u8,
    /// Offset in the slot.
    pub offset: u32,
    /// Length.
    pub len: u32,
}

/// What a validation run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measurement {
    /// Top-1 accuracy on the set (`None` without a set).
    pub accuracy_permille: Option<u16>,
    /// Mean inference latency.
    pub latency_us: Option<u32>,
    /// Tensor arena the model used.
    pub arena_used: Option<u32>,
}

/// A validation run in progress: the agent keeps it between `poll` calls (RAM only: a
/// reset starts the run again, and counts as one of the update's trials).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Run {
    /// Records done (the index of the next one).
    pub done: u32,
    /// Of those, the ones the model got right.
    pub correct: u32,
    /// Their summed latency.
    pub latency_us: u64,
}

/// Loads a model from its slot and runs a validation set through it. The bundled
/// [`crate::RuntimeValidator`] (feature `runtime`) uses mota-runtime; firmware with its
/// own inference engine implements this instead.
pub trait Validator {
    /// Runs the next records of `set` (or, without one, one inference on a zero input)
    /// through `model`, whose plan needs `arena_bytes`, in `arena` (the tensor arena the
    /// firmware gave the agent): at most `budget` records (0: all), advancing `run`.
    /// `Ok(None)` while records remain; the measurement once the set is done. A validator
    /// that cannot split its work ignores `budget` and `run` and measures at once.
    /// `Err` carries the reason to report (3xx codes: [`ErrorCode::MODEL_INVALID`],
    /// [`ErrorCode::VALIDATION_SET_INVALID`]).
    fn validate(
        &mut self,
        model: Located,
        arena_bytes: u32,
        set: Option<Located>,
        arena: &mut [u8],
        run: &mut Run,
        budget: u32,
    ) -> Result<Option<Measurement>, ErrorCode>;
}
