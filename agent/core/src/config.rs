//! What the firmware tells the agent about the device, fixed at build time.

use mota_proto::Limits;

/// The device's identity, trust anchors and limits.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// The device's id (its MQTT topic level); commands must name exactly this one.
    pub device_id: &'a str,
    /// Device class; offers must name exactly this one.
    pub device_class: &'a str,
    /// Firmware/agent version string for `hello`.
    pub agent_version: &'a str,
    /// Root public keys compiled into the firmware.
    pub roots: &'a [[u8; 32]],
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
