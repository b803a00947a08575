//! The C boundary: the only module with `unsafe` code.
//!
//! Two directions cross here. Inward, the exported `mota_*` functions: each checks every
//! pointer it is given (NULL, alignment, a length that fits memory, a NUL within the
//! string's bound, UTF-8) and turns it into a reference or a `&str` before calling the
//! safe code in `api.rs`; every failure is a negative code. Outward, the calls of the C
//! callbacks (flash, publish, time, validation) and the memory-mapped slots. What the
//! checks cannot see (that a non-NULL pointer points to live memory of the right type,
//! that a callback is a real function) is the C side's contract, written on each
//! function in the header.

#![allow(unsafe_code)]

use core::ffi::{c_char, c_void};

use crate::api::{self, BootArgs};
use crate::codes::{Error, status};
use crate::flash;
use crate::session::{self, CStream};
use crate::types::{
    ActiveModel, Config, Factory, Job, Located, MOTA_NOT_MEASURED, Measurement, Platform, SessionProgress,
    StreamReadFn, StreamWriteFn,
};

/// Largest number of root keys a configuration may list.
const MAX_ROOTS: usize = 16;
/// What a flash or publish wrapper returns when the callback is missing (boot refuses a
/// platform without the required ones, so this is never seen in practice).
const MISSING: i32 = i32::MIN;

// SAFETY: a `Platform` is plain data: callback pointers, the C context and the slot
// addresses. The C contract is that the callbacks may be called from whatever context
// calls `mota_*`; the agent calls them only inside such a call, and `api.rs` lets only
// one call at a time hold the agent, so they are never called concurrently.
unsafe impl Send for Platform {}

/// The C stream's context pointer.
#[derive(Clone, Copy)]
pub struct Ctx(*mut c_void);

// SAFETY: as for `Platform`: the stream callbacks are called only inside
// `mota_session_*` calls, one at a time.
unsafe impl Send for Ctx {}

// ---------------------------------------------------------------------------------------
// Checks of C arguments.

/// A copy of the `T` behind `p`.
fn read_struct<T: Copy>(p: *const T) -> Result<T, Error> {
    if p.is_null() {
        return Err(Error::NullPointer);
    }
    if !p.is_aligned() {
        return Err(Error::Misaligned);
    }
    // SAFETY: non-NULL and aligned (checked above); that it points to an initialised `T`
    // is the caller's contract (each exported function documents its pointers). `T` is a
    // `repr(C)` struct of integers, raw pointers and `Option<fn>`, for which every bit
    // pattern a C compiler produces for the C type is valid.
    Ok(unsafe { p.read() })
}

/// The `T` behind an output pointer.
fn out_struct<'a, T>(p: *mut T) -> Result<&'a mut T, Error> {
    if p.is_null() {
        return Err(Error::NullPointer);
    }
    if !p.is_aligned() {
        return Err(Error::Misaligned);
    }
    // SAFETY: non-NULL and aligned (checked above); the caller's contract is that it
    // points to writable memory of a `T`, not used elsewhere during the call. The
    // reference lives only for this call.
    Ok(unsafe { &mut *p })
}

fn check_span(p: usize, len: usize) -> Result<(), Error> {
    if len > isize::MAX as usize || p.checked_add(len).is_none() {
        return Err(Error::Length);
    }
    Ok(())
}

/// `len` bytes at `p`; NULL is allowed for an empty span.
fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::NullPointer);
    }
    check_span(p as usize, len)?;
    // SAFETY: non-NULL, `u8` needs no alignment, the span fits the address space and
    // `isize` (checked above); the caller's contract is that `len` bytes at `p` are
    // readable and not written during the call.
    Ok(unsafe { core::slice::from_raw_parts(p, len) })
}

/// `len` writable bytes at `p`; NULL is allowed for an empty span.
fn bytes_mut<'a>(p: *mut u8, len: usize) -> Result<&'a mut [u8], Error> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Error::NullPointer);
    }
    check_span(p as usize, len)?;
    // SAFETY: as in `bytes`; the caller's contract is that the bytes are writable and
    // used by nothing else while the reference lives (during the call, or for good for
    // the arena, which the C side gives the agent forever).
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// The NUL-terminated UTF-8 string at `p`, at most `max` bytes before its NUL.
fn c_str<'a>(p: *const c_char, max: usize) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::NullPointer);
    }
    check_span(p as usize, max + 1)?;
    let p = p.cast::<u8>();
    let mut len = 0;
    loop {
        if len > max {
            return Err(Error::Length);
        }
        // SAFETY: `p` is non-NULL and `p + len` stays inside the span checked above. The
        // caller's contract is a NUL-terminated string: every byte up to its NUL is
        // readable, and the scan stops at the NUL (or after `max` bytes, before reading
        // past a string of the allowed length).
        let byte = unsafe { p.wrapping_add(len).read() };
        if byte == 0 {
            break;
        }
        len += 1;
    }
    core::str::from_utf8(bytes(p, len)?).map_err(|_| Error::Utf8)
}

/// The configuration as the agent takes it, borrowing the C strings and keys for good.
fn config(c: &Config) -> Result<mota_agent::Config<'static>, Error> {
    use mota_proto::limits::{MAX_CLASS_LEN, MAX_DEVICE_ID_LEN, MAX_MODEL_NAME_LEN, MAX_VERSION_LEN};
    if c.roots.is_null() {
        return Err(Error::NullPointer);
    }
    if c.roots_len == 0 || c.roots_len > MAX_ROOTS {
        return Err(Error::Argument);
    }
    check_span(c.roots as usize, c.roots_len * 32)?;
    // SAFETY: non-NULL, `[u8; 32]` needs no alignment, the span fits (checked above); the
    // C contract of `mota_config.roots` is `roots_len` keys that stay valid and unchanged
    // forever.
    let roots: &'static [[u8; 32]] = unsafe { core::slice::from_raw_parts(c.roots, c.roots_len) };
    let factory = if c.factory.is_null() {
        None
    } else {
        let f: Factory = read_struct(c.factory)?;
        Some(mota_agent::Factory {
            size: f.size,
            name: c_str(f.name, MAX_MODEL_NAME_LEN)?,
            version: c_str(f.version, MAX_VERSION_LEN)?,
            counter: f.counter,
            arena_bytes: f.arena_bytes,
        })
    };
    Ok(mota_agent::Config {
        device_id: c_str(c.device_id, MAX_DEVICE_ID_LEN)?,
        device_class: c_str(c.device_class, MAX_CLASS_LEN)?,
        agent_version: c_str(c.agent_version, MAX_VERSION_LEN)?,
        roots,
        crypto: &mota_proto::Software,
        limits: mota_proto::Limits {
            max_image_bytes: c.limits.max_image_bytes,
            max_patch_bytes: c.limits.max_patch_bytes,
            max_arena_bytes: c.limits.max_arena_bytes,
            max_validation_bytes: c.limits.max_validation_bytes,
        },
        erased: c.erased,
        chunk_bytes: c.chunk_bytes,
        retry_ms: u64::from(c.retry_ms),
        max_trials: c.max_trials,
        trial_boots: c.trial_boots,
        work: mota_agent::Work { flash_bytes: c.flash_bytes_per_poll, records: c.records_per_poll },
        leases: None,
        factory,
    })
}

// ---------------------------------------------------------------------------------------
// Calls out to the C callbacks.

fn done(rc: i32) -> Result<(), i32> {
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// `flash_read` into `buf`; `Err` carries the callback's non-zero result.
pub fn flash_read(p: &Platform, region: u8, offset: u32, buf: &mut [u8]) -> Result<(), i32> {
    let f = p.flash_read.ok_or(MISSING)?;
    // SAFETY: `f` is the firmware's `flash_read` (non-NULL), called as its contract says:
    // `buf` is writable for `buf.len()` bytes during the call, and `flash.rs` checked
    // the range against the region.
    done(unsafe { f(p.ctx, region, offset, buf.as_mut_ptr(), buf.len()) })
}

/// `flash_write` of `data`.
pub fn flash_write(p: &Platform, region: u8, offset: u32, data: &[u8]) -> Result<(), i32> {
    let f = p.flash_write.ok_or(MISSING)?;
    // SAFETY: `f` is the firmware's `flash_write` (non-NULL); `data` is readable for
    // `data.len()` bytes during the call; `flash.rs` checked range and program grid.
    done(unsafe { f(p.ctx, region, offset, data.as_ptr(), data.len()) })
}

/// `flash_erase` of `[from, to)`.
pub fn flash_erase(p: &Platform, region: u8, from: u32, to: u32) -> Result<(), i32> {
    let f = p.flash_erase.ok_or(MISSING)?;
    // SAFETY: `f` is the firmware's `flash_erase` (non-NULL); no pointer is passed but
    // the context; `flash.rs` checked the range against the region and erase pages.
    done(unsafe { f(p.ctx, region, from, to) })
}

/// `publish` of `payload` on the topic of `kind`.
pub fn publish(p: &Platform, kind: u8, payload: &[u8]) -> Result<(), i32> {
    let f = p.publish.ok_or(MISSING)?;
    // SAFETY: `f` is the firmware's `publish` (non-NULL); `payload` is readable for
    // `payload.len()` bytes during the call.
    done(unsafe { f(p.ctx, kind, payload.as_ptr(), payload.len()) })
}

/// `now_ms` (0 without it; boot refuses a platform without it).
pub fn now_ms(p: &Platform) -> u64 {
    // SAFETY: the firmware's `now_ms` (non-NULL: `map_or` calls only `Some`), which
    // takes only the context.
    p.now_ms.map_or(0, |f| unsafe { f(p.ctx) })
}

/// `now_us`, if the platform has it.
pub fn now_us(p: &Platform) -> Option<u64> {
    // SAFETY: the firmware's `now_us` (non-NULL: `map` calls only `Some`), which takes
    // only the context.
    p.now_us.map(|f| unsafe { f(p.ctx) })
}

/// `unix_time`, if the platform has it and it knows the time.
pub fn unix_time(p: &Platform) -> Option<u64> {
    let f = p.unix_time?;
    let mut seconds = 0u64;
    // SAFETY: the firmware's `unix_time` (non-NULL); `seconds` is a writable, aligned
    // `u64` for the duration of the call.
    let known = unsafe { f(p.ctx, &mut seconds) };
    known.then_some(seconds)
}

/// The C `validate` callback: its result code and what it measured.
pub fn validate(
    p: &Platform,
    model: &Located,
    arena_bytes: u32,
    set: Option<&Located>,
    arena: &mut [u8],
) -> (i32, Measurement) {
    let mut out = Measurement {
        accuracy_permille: MOTA_NOT_MEASURED,
        latency_us: MOTA_NOT_MEASURED,
        arena_used: MOTA_NOT_MEASURED,
    };
    let Some(f) = p.validate else { return (MISSING, out) };
    let set = set.map_or(core::ptr::null(), |s| s as *const Located);
    // SAFETY: the firmware's `validate` (non-NULL); `model`, `set` (or NULL), `arena`
    // (`arena.len()` writable bytes) and `out` are valid for the duration of the call,
    // as its contract says.
    let rc = unsafe { f(p.ctx, model, arena_bytes, set, arena.as_mut_ptr(), arena.len(), &mut out) };
    (rc, out)
}

/// The stream's `read` into `buf`: bytes read, or `None` when it failed.
pub fn stream_read(f: StreamReadFn, ctx: Ctx, buf: &mut [u8]) -> Option<usize> {
    let f = f?;
    // SAFETY: the firmware's stream `read` (non-NULL); `buf` is writable for `buf.len()`
    // bytes during the call.
    let n = unsafe { f(ctx.0, buf.as_mut_ptr(), buf.len()) };
    usize::try_from(n).ok().map(|n| n.min(buf.len()))
}

/// The stream's `write` of `data`: bytes written, or `None` when it failed.
pub fn stream_write(f: StreamWriteFn, ctx: Ctx, data: &[u8]) -> Option<usize> {
    let f = f?;
    // SAFETY: the firmware's stream `write` (non-NULL); `data` is readable for
    // `data.len()` bytes during the call.
    let n = unsafe { f(ctx.0, data.as_ptr(), data.len()) };
    usize::try_from(n).ok().map(|n| n.min(data.len()))
}

/// Both slots as the CPU reads them, at the platform's `slot_base` addresses.
#[cfg(feature = "runtime")]
pub struct MappedSlots {
    base: [*const u8; 2],
    len: usize,
}

// SAFETY: two addresses of memory-mapped flash; see `Platform`'s `Send`.
#[cfg(feature = "runtime")]
unsafe impl Send for MappedSlots {}

#[cfg(feature = "runtime")]
impl MappedSlots {
    /// The platform's slots, if it gives both addresses and they fit the address space.
    pub fn new(p: &Platform) -> Option<Self> {
        let len = p.slot_bytes as usize;
        let fits = |b: *const u8| !b.is_null() && check_span(b as usize, len).is_ok();
        (fits(p.slot_base[0]) && fits(p.slot_base[1])).then_some(Self { base: p.slot_base, len })
    }
}

#[cfg(feature = "runtime")]
impl mota_agent::SlotMemory for MappedSlots {
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R {
        // SAFETY: the C contract of `slot_base`: `slot_bytes` readable bytes at each
        // address for good (checked non-NULL and fitting in `new`). The agent calls the
        // validator between flash operations, so nothing programs the slots while these
        // references live (only inside this call).
        let a = unsafe { core::slice::from_raw_parts(self.base[0], self.len) };
        // SAFETY: as for slot A.
        let b = unsafe { core::slice::from_raw_parts(self.base[1], self.len) };
        f([a, b])
    }
}

// ---------------------------------------------------------------------------------------
// The exported functions.

/// Starts the agent after a reset: checks the configuration and the platform, loads (or,
/// on the very first boot, creates) the record in the state region, checks the active
/// model's SHA-256 and resumes an interrupted update. Call it once per reset, before any
/// other `mota_agent_*` function.
///
/// `config` and `platform` are copied; the strings, root keys and factory struct that
/// `config` points to, the memory at `platform->slot_base` and the tensor arena
/// (`arena_len` bytes at `arena`, at least `limits.max_arena_bytes` and 4098 bytes) must
/// stay valid for good, and the arena is the agent's from now on.
///
/// Returns `MOTA_OK`, or a negative `mota_error`. Argument errors (NULL, misaligned,
/// UTF-8, length, argument, geometry, no validator) keep nothing: fix and call again.
/// `MOTA_ERROR_CONFIG`, `MOTA_ERROR_STATE`, `MOTA_ERROR_FLASH` mean the boot itself
/// failed: reset the device (`mota_agent_last_error` says why).
///
/// # Safety
/// `config`, `platform` point to valid structs (or are NULL); their pointers are valid
/// as documented on each field; `arena` points to `arena_len` writable bytes used by
/// nothing else.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_agent_boot(
    config: *const Config,
    platform: *const Platform,
    arena: *mut u8,
    arena_len: usize,
) -> i32 {
    let args = (|| {
        let c: Config = read_struct(config)?;
        let platform: Platform = read_struct(platform)?;
        if arena.is_null() {
            return Err(Error::NullPointer);
        }
        Ok(BootArgs {
            config: self::config(&c)?,
            single_write: c.single_write_state,
            platform,
            arena: bytes_mut(arena, arena_len)?,
        })
    })();
    status(args.and_then(api::boot).map(|()| crate::types::MOTA_OK))
}

/// Announces the device: call after every (re)connect of your MQTT client, once it has
/// subscribed to the topics of `mota_subscriptions`. Publishes `hello` (and a pending
/// report, and the chunk request in flight) through `platform.publish`.
///
/// Returns `MOTA_OK` or a negative `mota_error` (`MOTA_ERROR_STATE`/`_FLASH`: reset).
#[unsafe(no_mangle)]
pub extern "C" fn mota_agent_hello() -> i32 {
    status(api::hello())
}

/// A message arrived on this device's topic of `kind` (a `mota_kind`: offer, chunk, cmd
/// or trust; device→backend kinds are ignored). `payload` is read during the call only.
///
/// Returns `MOTA_OK` or a negative `mota_error` (`MOTA_ERROR_STATE`/`_FLASH`: reset).
///
/// # Safety
/// `payload` points to `len` readable bytes (or is NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_agent_handle(kind: u8, payload: *const u8, len: usize) -> i32 {
    status(bytes(payload, len).and_then(|payload| api::handle(kind, payload)))
}

/// A message arrived on MQTT topic `topic` (`topic_len` bytes, no NUL needed), as your
/// client delivers it: messages on this device's backend→device topics reach the agent,
/// anything else (another device's topic, not a mota topic) is ignored.
///
/// Returns `MOTA_OK`, `MOTA_IGNORED`, or a negative `mota_error`.
///
/// # Safety
/// `topic` points to `topic_len` readable bytes; `payload` to `len` (or NULL with 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_agent_handle_topic(
    topic: *const c_char,
    topic_len: usize,
    payload: *const u8,
    len: usize,
) -> i32 {
    let run = || {
        if topic.is_null() {
            return Err(Error::NullPointer);
        }
        let topic = core::str::from_utf8(bytes(topic.cast(), topic_len)?).map_err(|_| Error::Utf8)?;
        api::handle_topic(topic, bytes(payload, len)?)
    };
    status(run())
}

/// Time passes: call from your main loop (every few milliseconds to a second). Re-sends a
/// chunk request after `retry_ms`, delivers pending reports, copies a validation set the
/// device already has, erases the next piece of the inactive slot and runs the next
/// validation records (`flash_bytes_per_poll`, `records_per_poll`; with 0, this one call
/// may take as long as the whole erase or validation set).
///
/// Returns `MOTA_OK` or a negative `mota_error` (`MOTA_ERROR_STATE`/`_FLASH`: reset).
#[unsafe(no_mangle)]
pub extern "C" fn mota_agent_poll() -> i32 {
    status(api::poll())
}

/// The model to run into `*out`: its slot, offset and length (run it from there), its
/// SHA-256 (checked at this boot), name and version. Check it after boot and after every
/// `mota_agent_*`/`mota_session_poll` call: when it changes, load the new model.
///
/// Returns `MOTA_OK`, `MOTA_NO_MODEL` (`*out` untouched), or a negative `mota_error`.
///
/// # Safety
/// `out` points to a writable `mota_active_model`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_agent_active_model(out: *mut ActiveModel) -> i32 {
    status(out_struct(out).and_then(api::active_model))
}

/// The update in progress into `*out`: its phase (`mota_phase`), the new model's name and
/// version, its rollout, bytes of the current artifact stored and validation trials. For
/// logs and progress displays.
///
/// Returns `MOTA_OK`, `MOTA_NO_JOB` (`*out` untouched), or a negative `mota_error`.
///
/// # Safety
/// `out` points to a writable `mota_job`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_agent_job(out: *mut Job) -> i32 {
    status(out_struct(out).and_then(api::job))
}

/// The product is satisfied with the model on trial (`trial_boots` > 0): it stays, and the
/// device's security counter rises to its counter. Nothing to do when no model is on
/// trial.
///
/// Returns `MOTA_OK` or a negative `mota_error` (`MOTA_ERROR_STATE`/`_FLASH`: reset).
#[unsafe(no_mangle)]
pub extern "C" fn mota_agent_confirm() -> i32 {
    status(api::confirm())
}

/// Whether the active model waits for `mota_agent_confirm`.
///
/// Returns 1 (on trial), 0, or a negative `mota_error`.
#[unsafe(no_mangle)]
pub extern "C" fn mota_agent_on_trial() -> i32 {
    status(api::on_trial())
}

/// Whether the agent has nothing to do until a message arrives (no update in progress, no
/// report to deliver): a hint for low-power firmware.
///
/// Returns 1 (idle), 0 (busy), or a negative `mota_error`.
#[unsafe(no_mangle)]
pub extern "C" fn mota_agent_is_idle() -> i32 {
    status(api::is_idle())
}

/// The text of the agent's last error (the one behind `MOTA_ERROR_CONFIG`, `_STATE` or
/// `_FLASH`), NUL-terminated into `buf` (cut to `len` - 1 bytes; `MOTA_ERROR_TEXT_BYTES`
/// is enough). For the log line before a reset.
///
/// Returns its length (0: no error so far), or a negative `mota_error`.
///
/// # Safety
/// `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_agent_last_error(buf: *mut c_char, len: usize) -> i32 {
    status(bytes_mut(buf.cast(), len).and_then(api::last_error))
}

/// Writes the topic `mota/v1/dev/{device}/{kind}` and a NUL into `buf` (`len` bytes;
/// `MOTA_TOPIC_BYTES` is always enough), for your MQTT client's subscriptions and
/// publications. `device` is NUL-terminated, `[A-Za-z0-9._-]`, 1 to 64 bytes.
///
/// Returns the topic's length (without the NUL), or a negative `mota_error`.
///
/// # Safety
/// `device` is a NUL-terminated string; `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_topic(kind: u8, device: *const c_char, buf: *mut c_char, len: usize) -> i32 {
    let run = || {
        let device = c_str(device, mota_proto::limits::MAX_DEVICE_ID_LEN)?;
        if buf.is_null() {
            return Err(Error::NullPointer);
        }
        api::topic(kind, device, bytes_mut(buf.cast(), len)?)
    };
    status(run())
}

/// The kinds a device subscribes to (offer, chunk, cmd, trust, on its own topics; QoS 1)
/// into `kinds` (`cap` entries; `MOTA_SUBSCRIPTION_COUNT` is enough). Build each topic
/// with `mota_topic`.
///
/// Returns their number, or a negative `mota_error`.
///
/// # Safety
/// `kinds` points to `cap` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_subscriptions(kinds: *mut u8, cap: usize) -> i32 {
    if kinds.is_null() {
        return Error::NullPointer.code();
    }
    status(bytes_mut(kinds, cap).and_then(api::subscriptions))
}

/// Starts the bundled MQTT v5 session (mota-agent-mqtt, on minimq) over a byte stream
/// already connected to the broker (a UART, a socket, a modem's transparent mode; the
/// stream's owner reconnects it underneath). Call after `mota_agent_boot`, once. The
/// session logs in with the device id as client id and username (brokers' ACL patterns
/// rely on it) and `password` (NUL-terminated, at most 128 bytes; NULL for none), sets the
/// last will (the `offline` hello), subscribes to the device's topics, says hello,
/// hands messages to the agent, ticks it every 250 ms, pings every `keep_alive_s` / 2
/// seconds and connects again when a ping goes unanswered. Then call
/// `mota_session_poll` from the main loop instead of `mota_agent_hello`, `_handle` and
/// `_poll`.
///
/// `read` must not block (return 0 when no byte waits); `write` may write fewer bytes
/// than asked. `buffer` (`buffer_len` bytes, at least
/// `MOTA_SESSION_BUFFER_BYTES(chunk_bytes)`) and `password` are the session's for good.
///
/// Returns `MOTA_OK`, or a negative `mota_error` (`MOTA_ERROR_LENGTH`: buffer too small).
///
/// # Safety
/// `read` and `write` are valid stream callbacks for `ctx`; `password` is NULL or a
/// NUL-terminated string that stays valid; `buffer` points to `buffer_len` writable bytes
/// used by nothing else, for good.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_session_start(
    read: StreamReadFn,
    write: StreamWriteFn,
    ctx: *mut c_void,
    password: *const c_char,
    keep_alive_s: u16,
    buffer: *mut u8,
    buffer_len: usize,
) -> i32 {
    let run = || {
        if read.is_none() || write.is_none() || buffer.is_null() {
            return Err(Error::NullPointer);
        }
        let password = if password.is_null() { None } else { Some(c_str(password, 128)?) };
        let buffer = bytes_mut(buffer, buffer_len)?;
        session::start(CStream::new(read, write, Ctx(ctx)), password, keep_alive_s, buffer)
    };
    status(run())
}

/// Runs the bundled session: reads and handles messages (up to 8 per call), keeps the
/// connection alive, ticks the agent. Call it from the main loop, often (it never
/// blocks): while `progress->messages` is non-zero, again at once; otherwise the firmware
/// may sleep until the next interrupt (a received byte, its tick). Check
/// `mota_agent_active_model` after it.
///
/// `progress` (may be NULL) receives what the call did. Returns `MOTA_OK`,
/// `MOTA_SESSION_CONNECTED` when the session (re)connected, subscribed and said hello in
/// this call, or a negative `mota_error` (`MOTA_ERROR_STATE`/`_FLASH`: reset).
///
/// # Safety
/// `progress` is NULL or points to a writable `mota_session_progress`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mota_session_poll(progress: *mut SessionProgress) -> i32 {
    let out = if progress.is_null() { Ok(None) } else { out_struct(progress).map(Some) };
    status(out.and_then(session::poll))
}

/// Whether the bundled session is connected, subscribed and has said hello.
///
/// Returns 1 (online), 0 (offline), or a negative `mota_error`.
#[unsafe(no_mangle)]
pub extern "C" fn mota_session_is_online() -> i32 {
    status(session::is_online())
}

/// `MOTA_SESSION_BUFFER_BYTES(chunk_bytes)`, computed by the library.
#[unsafe(no_mangle)]
pub extern "C" fn mota_session_buffer_len(chunk_bytes: u32) -> usize {
    mota_agent_mqtt::buffer_len(chunk_bytes)
}

/// The stable name of a result code (`"ok"`, `"flash"`, ...; `"unknown"` for other
/// numbers), NUL-terminated, static.
#[unsafe(no_mangle)]
pub extern "C" fn mota_error_name(code: i32) -> *const c_char {
    match Error::from_code(code) {
        Some(e) => e.name().as_ptr(),
        None if code >= 0 => c"ok".as_ptr(),
        None => c"unknown".as_ptr(),
    }
}

/// Whether a result code means the agent has stopped and the device must reset
/// (`MOTA_ERROR_CONFIG`, `_STATE`, `_FLASH`).
#[unsafe(no_mangle)]
pub extern "C" fn mota_error_must_reboot(code: i32) -> bool {
    Error::from_code(code).is_some_and(Error::must_reboot)
}

/// The program unit the library was built for (`MOTA_FLASH_WRITE_SIZE` when it was
/// built).
#[unsafe(no_mangle)]
pub extern "C" fn mota_flash_write_size() -> u32 {
    flash::WRITE_SIZE as u32
}

/// The erase page the library was built for (`MOTA_FLASH_ERASE_SIZE` when it was built).
#[unsafe(no_mangle)]
pub extern "C" fn mota_flash_erase_size() -> u32 {
    flash::ERASE_SIZE as u32
}
