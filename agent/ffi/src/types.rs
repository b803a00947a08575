//! The C types: `#[repr(C)]` structs and enums that cross the boundary, as they appear in
//! `include/mota_agent.h` (cbindgen renames them `mota_*`, see `cbindgen.toml`).
//!
//! Nothing here is read without the checks in `boundary.rs`: pointers are raw, callbacks
//! are `Option`s (NULL is `None`), and numbers that select something (kind, region,
//! slot) travel as plain integers, never as Rust enums a C caller could fill with a
//! value outside the enum.

use core::ffi::{c_char, c_void};

/// Returned by calls that succeeded.
pub const MOTA_OK: i32 = 0;
/// Returned by `mota_agent_handle_topic` for a topic that is not for this device (another
/// device's, not a mota topic, or a kind the device publishes): nothing was done.
pub const MOTA_IGNORED: i32 = 1;
/// Returned by `mota_agent_active_model` when the device has no model to run.
pub const MOTA_NO_MODEL: i32 = 1;
/// Returned by `mota_agent_job` when no update is in progress.
pub const MOTA_NO_JOB: i32 = 1;
/// Returned by `mota_session_poll` when the session (re)connected, subscribed and said
/// hello during this call.
pub const MOTA_SESSION_CONNECTED: i32 = 1;
/// Bytes the bundled session needs besides its largest incoming message (see
/// `MOTA_SESSION_BUFFER_BYTES`).
pub const MOTA_SESSION_OVERHEAD: usize = 3443;
/// The session's receive buffer holds at least an envelope (1,536 bytes).
pub const MOTA_SESSION_MIN_MESSAGE: usize = 1536;
/// A `mota_measurement` field the validator did not measure.
pub const MOTA_NOT_MEASURED: u32 = u32::MAX;
/// Bytes of `mota_active_model.name`: the longest model name (64) and its NUL.
pub const MOTA_NAME_BYTES: usize = 65;
/// Bytes of `mota_active_model.version`: the longest version (32) and its NUL.
pub const MOTA_VERSION_BYTES: usize = 33;
/// Bytes `mota_topic` needs at most: the longest topic (with a 64-byte device id) and
/// its NUL.
pub const MOTA_TOPIC_BYTES: usize = 84;
/// Kinds a device subscribes to (`mota_subscriptions`).
pub const MOTA_SUBSCRIPTION_COUNT: usize = 4;
/// Longest text `mota_agent_last_error` writes, with its NUL.
pub const MOTA_ERROR_TEXT_BYTES: usize = 96;

/// The topic kinds: the last level of `mota/v1/dev/{device}/{kind}`. Functions take and
/// give them as `uint8_t`.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// device → backend: identity and capabilities; the MQTT last will.
    Hello = 0,
    /// backend → device: a signed offer (retained).
    Offer = 1,
    /// device → backend: a chunk request.
    Get = 2,
    /// backend → device: a chunk.
    Chunk = 3,
    /// device → backend: progress and outcome reports.
    Status = 4,
    /// backend → device: a signed rollback or cancel (retained).
    Cmd = 5,
    /// backend → device: the root-signed revocation list (retained).
    Trust = 6,
}

/// The three flash regions the agent owns, as the `region` argument of the flash
/// callbacks.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Model slot A (slot 0): the factory model starts at its offset 0.
    SlotA = 0,
    /// Model slot B (slot 1), as large as slot A.
    SlotB = 1,
    /// The state region: the agent's power-safe record (MultiwriteNorFlash: a program
    /// unit may be programmed twice, only clearing bits).
    State = 2,
}

/// Sizes the device accepts (`mota_proto::Limits`); offers above them are refused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest model image (at most the slot size).
    pub max_image_bytes: u32,
    /// Largest delta patch (patches stream through: this bounds time and bandwidth).
    pub max_patch_bytes: u32,
    /// Tensor arena the device can give a model.
    pub max_arena_bytes: u32,
    /// Largest validation set (it is stored after the model in the slot).
    pub max_validation_bytes: u32,
}

/// The model written into slot A at the factory; adopted (hashed) on the very first
/// boot.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Factory {
    /// Image bytes at the start of slot A.
    pub size: u32,
    /// Model name, NUL-terminated, `[A-Za-z0-9._-]`, at most 64 bytes.
    pub name: *const c_char,
    /// Version, NUL-terminated, at most 32 bytes.
    pub version: *const c_char,
    /// Its security counter (the device's starting counter).
    pub counter: u32,
    /// Tensor arena it needs.
    pub arena_bytes: u32,
}

/// The device's identity, trust anchors and limits. `mota_agent_boot` copies this
/// struct; the strings, the root keys and the factory struct it points to must stay valid
/// and unchanged forever (static storage).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The device id, NUL-terminated, `[A-Za-z0-9._-]`, 1 to 64 bytes; its MQTT topic
    /// level. Signed commands must name exactly this id.
    pub device_id: *const c_char,
    /// The device class, NUL-terminated, at most 32 bytes; offers must name exactly it.
    pub device_class: *const c_char,
    /// Firmware or agent version reported in `hello`, NUL-terminated, at most 32 bytes.
    pub agent_version: *const c_char,
    /// Root public keys (Ed25519, 32 bytes each): `roots_len` of them.
    pub roots: *const [u8; 32],
    /// Number of root keys, 1 to 16.
    pub roots_len: usize,
    /// Sizes the device accepts.
    pub limits: Limits,
    /// The value of an erased byte (0xFF on most NOR parts).
    pub erased: u8,
    /// Boots that may start validating one update before it is rejected (a model that
    /// hangs the device is given up after this many watchdog resets); at least 1.
    pub max_trials: u8,
    /// Bytes asked for per chunk request (at most 16384); the network must deliver
    /// messages this large plus 64 bytes.
    pub chunk_bytes: u32,
    /// Milliseconds without an answer before a chunk request is sent again.
    pub retry_ms: u32,
    /// The factory model in slot A, or NULL for a device shipped without one.
    pub factory: *const Factory,
    /// Boots the product may start on a newly committed model before it calls
    /// `mota_agent_confirm`; on the next one the previous model is active again and
    /// `reverted` is reported. 0: no trial (the counter rises at commit).
    pub trial_boots: u8,
    /// The state region's part programs a unit only once between erases (ECC flash such
    /// as the STM32H7's): keep the state in the journal rather than sequential-storage's
    /// map. Fixed for the life of the device.
    pub single_write_state: bool,
    /// Bytes of the inactive slot erased (whole sectors), or of a validation set the
    /// device already has copied, per `mota_agent_poll` (0: all at once).
    pub flash_bytes_per_poll: u32,
    /// Validation records run per `mota_agent_poll` (0: the whole set at once).
    pub records_per_poll: u32,
}

/// Bytes in a slot: `len` bytes from `offset` of slot `slot` (0 = A, 1 = B).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Slot index, 0 or 1.
    pub slot: u8,
    /// Offset in the slot.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// What a validation run measured; `MOTA_NOT_MEASURED` where nothing was measured.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    /// Top-1 accuracy on the set, 0 to 1000 (permille); a larger value counts as not
    /// measured.
    pub accuracy_permille: u32,
    /// Mean inference latency in microseconds.
    pub latency_us: u32,
    /// Tensor arena bytes the model used.
    pub arena_used: u32,
}

/// The model the device runs (`mota_agent_active_model`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveModel {
    /// Where its bytes are: run it from there (execute in place).
    pub image: Located,
    /// SHA-256 of the image, checked at this boot.
    pub sha256: [u8; 32],
    /// Its security counter.
    pub counter: u32,
    /// Tensor arena it needs.
    pub arena_bytes: u32,
    /// Model name, NUL-terminated.
    pub name: [c_char; MOTA_NAME_BYTES],
    /// Version, NUL-terminated.
    pub version: [c_char; MOTA_VERSION_BYTES],
}

/// Where an update stands (`mota_job.phase`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Receiving the image (full, or rebuilt from a patch) into the inactive slot.
    Image = 1,
    /// Receiving (or copying) the validation set.
    Set = 2,
    /// Image and set verified: the validation run is due.
    Validate = 3,
    /// Erasing the inactive slot, a piece per poll, before the download.
    Erase = 4,
}

/// The update in progress (`mota_agent_job`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// A `mota_phase`.
    pub phase: u8,
    /// Boots that started validating this update.
    pub trials: u8,
    /// The rollout it belongs to.
    pub rollout: u64,
    /// Bytes of the current artifact (image, patch or set) received so far and stored.
    pub progress: u32,
    /// The new model's name, NUL-terminated.
    pub name: [c_char; MOTA_NAME_BYTES],
    /// The new model's version, NUL-terminated.
    pub version: [c_char; MOTA_VERSION_BYTES],
}

/// What one `mota_session_poll` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionProgress {
    /// The session (re)connected, subscribed and said hello in this call.
    pub connected: bool,
    /// Messages handed to the agent in this call (0: nothing arrived; the firmware may
    /// sleep until the next interrupt).
    pub messages: u32,
}

/// Reads `len` bytes at `offset` of `region` into `buf`. Returns 0, or any other value
/// when the read failed.
pub type FlashReadFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, region: u8, offset: u32, buf: *mut u8, len: usize) -> i32>;
/// Programs `len` bytes at `offset` of `region` (NOR: only clears bits). Returns 0, or
/// any other value when the write failed.
pub type FlashWriteFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, region: u8, offset: u32, data: *const u8, len: usize) -> i32>;
/// Erases `[from, to)` of `region` (whole erase pages). Returns 0, or any other value when
/// the erase failed.
pub type FlashEraseFn = Option<unsafe extern "C" fn(ctx: *mut c_void, region: u8, from: u32, to: u32) -> i32>;
/// Queues `payload` for `mota/v1/dev/{device}/{kind}` (QoS 1). Returns 0, or any other
/// value when it could not be queued (the agent tries again later).
pub type PublishFn = Option<unsafe extern "C" fn(ctx: *mut c_void, kind: u8, payload: *const u8, len: usize) -> i32>;
/// A monotonic time that never goes back (milliseconds, or microseconds for `now_us`).
pub type NowFn = Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>;
/// Trusted Unix seconds into `*out` (an RTC set over an authenticated channel): returns
/// true, or false when the device has no trusted time.
pub type UnixTimeFn = Option<unsafe extern "C" fn(ctx: *mut c_void, out: *mut u64) -> bool>;
/// Runs the validation set `set` (NULL: one inference on a zero input) through the model
/// `model`, whose plan needs `arena_bytes`, in `arena`. Fills `out` (pre-set to
/// `MOTA_NOT_MEASURED`) and returns 0, or returns the report code to send: 300-399
/// (e.g. 300 model_invalid, 301 validation_set_invalid; see mota_proto::message::ErrorCode);
/// any other non-zero value is reported as model_invalid.
pub type ValidateFn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        model: *const Located,
        arena_bytes: u32,
        set: *const Located,
        arena: *mut u8,
        arena_len: usize,
        out: *mut Measurement,
    ) -> i32,
>;

/// What the firmware supplies: flash, network, time and (optionally) a validator, as
/// callbacks that all receive `ctx`. `mota_agent_boot` copies this struct. The agent calls
/// them only from inside a `mota_*` call, on the caller's thread, one at a time; it
/// never calls a flash callback outside the region, off the program grid
/// (`MOTA_FLASH_WRITE_SIZE`) or off erase-page boundaries (`MOTA_FLASH_ERASE_SIZE`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    /// Passed to every callback.
    pub ctx: *mut c_void,
    /// Required: reads a region.
    pub flash_read: FlashReadFn,
    /// Required: programs a region.
    pub flash_write: FlashWriteFn,
    /// Required: erases erase pages of a region.
    pub flash_erase: FlashEraseFn,
    /// Bytes of each model slot (both the same), a multiple of `MOTA_FLASH_ERASE_SIZE`.
    pub slot_bytes: u32,
    /// Bytes of the state region: at least two erase pages, a multiple of
    /// `MOTA_FLASH_ERASE_SIZE`.
    pub state_bytes: u32,
    /// Must equal `MOTA_FLASH_WRITE_SIZE` (checked: the library's geometry is fixed when it
    /// is built).
    pub flash_write_size: u32,
    /// Must equal `MOTA_FLASH_ERASE_SIZE`.
    pub flash_erase_size: u32,
    /// Publishes a message; required for `mota_agent_hello`, `_handle` and `_poll`, unused
    /// (may be NULL) with the bundled MQTT session, which publishes itself.
    pub publish: PublishFn,
    /// Required: milliseconds since any fixed origin, never going back.
    pub now_ms: NowFn,
    /// Optional: microseconds, for the bundled validator's latency figures (NULL: `now_ms`
    /// × 1000).
    pub now_us: NowFn,
    /// Optional: trusted time (NULL: none; certificate expiry is then not checked and
    /// reports say so).
    pub unix_time: UnixTimeFn,
    /// Optional: your own validator. NULL: the bundled one (mota-runtime) runs the model
    /// in place from `slot_base`.
    pub validate: ValidateFn,
    /// Where the CPU reads slot A and slot B (memory-mapped flash, `slot_bytes` each),
    /// for the bundled validator; unused (may be NULL) with a `validate` callback.
    pub slot_base: [*const u8; 2],
}

/// Reads up to `len` bytes of the MQTT byte stream into `buf` without blocking. Returns
/// the number of bytes read (0 when none are waiting), or a negative value when the
/// stream failed (the session reconnects).
pub type StreamReadFn = Option<unsafe extern "C" fn(ctx: *mut c_void, buf: *mut u8, len: usize) -> isize>;
/// Writes up to `len` bytes of `data` to the MQTT byte stream. Returns the number of
/// bytes written (0 when it cannot take any now), or a negative value when the stream
/// failed.
pub type StreamWriteFn = Option<unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize) -> isize>;
