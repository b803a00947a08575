//! What the firmware tells the agent about the device, fixed at build time.

use mota_proto::{Crypto, Limits};

use crate::lease::Leases;

/// The device's identity, trust anchors and limits.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    /// The device's id (its MQTT topic level); commands must name exactly this one.
    pub device_id: &'a str,
    /// Device class; offers must name exactly this one.
    pub device_class: &'a str,
    /// Firmware/agent version string for `hello`.
    pub agent_version: &'a str,
    /// Root public keys compiled into the firmware.
    pub roots: &'a [[u8; 32]],
    /// Ed25519 and SHA-256: `&mota_proto::Software` (ed25519-dalek and sha2, bundled), or
    /// the platform's own (PSA Crypto, a CryptoCell, a secure element), which then links
    /// none of the bundled crypto. Every signature and digest the agent checks goes
    /// through it.
    pub crypto: &'a (dyn Crypto + Sync),
    /// Largest patch and validation set accepted, tensor arena available. Image size is
    /// bounded by the slot itself.
    pub limits: Limits,
    /// The value of an erased byte in the slots (0xFF on most parts).
    pub erased: u8,
    /// Bytes asked for per chunk request (at most `mota_proto::limits::MAX_CHUNK_LEN`);
    /// the transport must receive messages this large plus 64 bytes.
    pub chunk_bytes: u32,
    /// Milliseconds without an answer before a chunk request is sent again.
    pub retry_ms: u64,
    /// Boots that may start validating one update before it is rejected (a model that
    /// crashes or hangs the device is given up after this many watchdog resets).
    pub max_trials: u8,
    /// The model flashed at the factory into slot 0, adopted on the very first boot.
    pub factory: Option<Factory<'a>>,
    /// Boots the product may start on a newly committed model before it calls
    /// [`crate::Agent::confirm`]; on the next one the agent reverts to the previous model
    /// and reports `reverted`. 0: no trial in the product (the validation set was the
    /// trial; the counter rises at commit).
    pub trial_boots: u8,
    /// Work done per [`crate::Agent::poll`], so the firmware keeps serving its network and
    /// watchdog during an update.
    pub work: Work,
    /// The lease table the product's inference shares with the agent, if it runs the
    /// model while the agent works ([`Leases`]).
    pub leases: Option<&'a Leases>,
}

impl core::fmt::Debug for Config<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("device_id", &self.device_id)
            .field("device_class", &self.device_class)
            .field("limits", &self.limits)
            .field("trial_boots", &self.trial_boots)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

/// Bounds on the flash and inference work of one call (0: no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Bytes of flash work on the inactive slot per call: erased (rounded up to whole
    /// sectors), or copied when the running model's slot already holds the validation set.
    pub flash_bytes: u32,
    /// Validation records run per call.
    pub records: u32,
}

/// The factory model: trusted because it came with the firmware.
#[derive(Debug, Clone, Copy)]
pub struct Factory<'a> {
    /// Image bytes at the start of slot 0.
    pub size: u32,
    /// Model name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// Its security counter (the device's starting counter).
    pub counter: u32,
    /// Tensor arena it needs.
    pub arena_bytes: u32,
}
