//! The C API driven from Rust, as C firmware drives it: a RAM part behind the flash
//! callbacks (NOR rules kept), a publish callback that keeps what the agent sends, a
//! clock, and a backend stand-in that answers chunk requests through
//! `mota_agent_handle_topic`. One agent per process (it is a static), so each test binary
//! boots once and runs its checks in order.
#![allow(dead_code, unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use ed25519_dalek::SigningKey;
use mota_agent_ffi::types::{Config, Factory, Limits, Located, Measurement, Platform};
use mota_agent_ffi::*;
use mota_proto::message::{Chunk, Event, Get, Status};
use mota_proto::sign::{ReleaseKey, certify};
use mota_proto::{Digest, Image, Manifest, Validation, Wire};

pub type BoxError = Box<dyn std::error::Error>;

pub const DEVICE: &CStr = c"dev-c";
pub const SECTOR: u32 = 4096;
pub const STATE_LEN: u32 = 3 * SECTOR;
pub const SLOT_LEN: u32 = 32 * 1024;
pub const PART_LEN: usize = (STATE_LEN + 2 * SLOT_LEN) as usize;
pub const ARENA: usize = 16 * 1024;
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/fixtures/models/");

/// The part: state region at 0, then slot A and slot B.
pub struct Part(pub Box<[u8]>);

pub static PART: Mutex<Option<Part>> = Mutex::new(None);
pub static PUBLISHED: Mutex<Vec<(u8, Vec<u8>)>> = Mutex::new(Vec::new());
pub static NOW_MS: AtomicU64 = AtomicU64::new(0);
/// What `mota_agent_poll` returned when called from inside the publish callback.
pub static REENTERED: AtomicI32 = AtomicI32::new(0);

fn region_at(region: u8) -> Option<(usize, usize)> {
    match region {
        0 => Some((STATE_LEN as usize, SLOT_LEN as usize)),
        1 => Some(((STATE_LEN + SLOT_LEN) as usize, SLOT_LEN as usize)),
        2 => Some((0, STATE_LEN as usize)),
        _ => None,
    }
}

fn with_span<R>(region: u8, offset: u32, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    let (at, size) = region_at(region)?;
    let start = offset as usize;
    if start.checked_add(len)? > size {
        return None;
    }
    let mut part = PART.lock().ok()?;
    let bytes = &mut part.as_mut()?.0[at + start..at + start + len];
    Some(f(bytes))
}

unsafe extern "C" fn flash_read(_: *mut c_void, region: u8, offset: u32, buf: *mut u8, len: usize) -> i32 {
    // SAFETY: the library passes a buffer of `len` writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    with_span(region, offset, len, |src| buf.copy_from_slice(src)).map_or(-1, |()| 0)
}

unsafe extern "C" fn flash_write(_: *mut c_void, region: u8, offset: u32, data: *const u8, len: usize) -> i32 {
    if !offset.is_multiple_of(4) || !len.is_multiple_of(4) {
        return -2;
    }
    // SAFETY: the library passes `len` readable bytes.
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    with_span(region, offset, len, |dst| dst.iter_mut().zip(data).for_each(|(d, s)| *d &= s)).map_or(-1, |()| 0)
}

unsafe extern "C" fn flash_erase(_: *mut c_void, region: u8, from: u32, to: u32) -> i32 {
    if !from.is_multiple_of(SECTOR) || !to.is_multiple_of(SECTOR) || from > to {
        return -2;
    }
    with_span(region, from, (to - from) as usize, |dst| dst.fill(0xFF)).map_or(-1, |()| 0)
}

unsafe extern "C" fn publish(_: *mut c_void, kind: u8, payload: *const u8, len: usize) -> i32 {
    // A call from inside a call must be refused, not given a second agent.
    REENTERED.store(mota_agent_poll(), Ordering::SeqCst);
    // SAFETY: the library passes `len` readable bytes.
    let payload = unsafe { std::slice::from_raw_parts(payload, len) };
    PUBLISHED.lock().expect("lock").push((kind, payload.to_vec()));
    0
}

unsafe extern "C" fn now_ms(_: *mut c_void) -> u64 {
    NOW_MS.load(Ordering::SeqCst)
}

/// A fixture's bytes.
pub fn fixture(name: &str) -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(format!("{FIXTURES}{name}"))?)
}

/// A fresh part with `factory` at the start of slot A; returns where slots A and B are.
pub fn fresh_part(factory: &[u8]) -> [*const u8; 2] {
    let mut bytes = vec![0xFF; PART_LEN].into_boxed_slice();
    bytes[STATE_LEN as usize..][..factory.len()].copy_from_slice(factory);
    let base = bytes.as_ptr();
    *PART.lock().expect("lock") = Some(Part(bytes));
    // The box never moves or shrinks again: the bundled validator reads it through these.
    [base.wrapping_add(STATE_LEN as usize), base.wrapping_add((STATE_LEN + SLOT_LEN) as usize)]
}

/// The test root's configuration for a device of class `cortex-m4`, leaked for good.
pub fn config(factory_len: usize) -> &'static Config {
    let factory = Box::leak(Box::new(Factory {
        size: factory_len as u32,
        name: c"digits_cnn".as_ptr(),
        version: c"1.0.0".as_ptr(),
        counter: 1,
        arena_bytes: 2976,
    }));
    Box::leak(Box::new(Config {
        device_id: DEVICE.as_ptr(),
        device_class: c"cortex-m4".as_ptr(),
        agent_version: c"host-test".as_ptr(),
        roots: &mota_proto::testkit::ROOT,
        roots_len: 1,
        limits: Limits {
            max_image_bytes: SLOT_LEN,
            max_patch_bytes: 64 * 1024,
            max_arena_bytes: ARENA as u32,
            max_validation_bytes: 16 * 1024,
        },
        erased: 0xFF,
        max_trials: 2,
        chunk_bytes: 1024,
        retry_ms: 1000,
        factory,
        trial_boots: 0,
        single_write_state: false,
        flash_bytes_per_poll: 0,
        records_per_poll: 0,
    }))
}

/// The platform over the callbacks above.
pub fn platform(slot_base: [*const u8; 2]) -> Platform {
    Platform {
        ctx: std::ptr::null_mut(),
        flash_read: Some(flash_read),
        flash_write: Some(flash_write),
        flash_erase: Some(flash_erase),
        slot_bytes: SLOT_LEN,
        state_bytes: STATE_LEN,
        flash_write_size: 4,
        flash_erase_size: SECTOR,
        publish: Some(publish),
        now_ms: Some(now_ms),
        now_us: None,
        unix_time: None,
        validate: None,
        slot_base,
    }
}

/// The arena, leaked for good.
pub fn arena() -> &'static mut [u8] {
    Box::leak(vec![0u8; ARENA].into_boxed_slice())
}

/// A validation set of the digits fixture's first `records` inputs and labels.
pub fn digits_set(records: usize) -> Result<Vec<u8>, BoxError> {
    let read = |suffix: &str| -> Result<mota_runtime::npy::Npy, BoxError> {
        let bytes = fixture(&format!("digits_cnn_v1.{suffix}.npy"))?;
        mota_runtime::npy::Npy::parse(&bytes).map_err(|e| format!("{e:?}").into())
    };
    let (x, y) = (read("inputs")?, read("labels")?);
    let per = x.data.len() / x.rows();
    let labels: Vec<u16> = y.data.chunks_exact(4).take(records).map(|c| c[0] as u16).collect();
    let dims: Vec<usize> = x.shape[1..].to_vec();
    Ok(mota_runtime::validation::build(
        mota_runtime::DType::Int8,
        &dims,
        &x.data[..per * records],
        Some((&labels, 10)),
        None,
    )
    .map_err(|e| format!("{e:?}"))?)
}

/// A signed offer of `image` with `set` for class `cortex-m4`: (envelope, artifacts).
pub fn offer(image: &[u8], set: &[u8], min_accuracy: u16) -> Result<(Vec<u8>, Vec<Vec<u8>>), BoxError> {
    let root = SigningKey::from_bytes(&[0x11; 32]);
    let release = SigningKey::from_bytes(&[0x22; 32]);
    let cert = certify(&root, &release.verifying_key(), u64::MAX, 0..=99)?;
    let key = ReleaseKey::new(release, cert).map_err(|e| format!("{e:?}"))?;
    let model = mota_runtime::Model::parse(image).map_err(|e| format!("{e:?}"))?;
    let manifest = Manifest {
        format: mota_proto::manifest::FORMAT_VERSION,
        model: "digits_cnn",
        version: "2.0.0",
        security_counter: 2,
        device_class: "cortex-m4",
        image: Image { size: image.len() as u32, sha256: Digest::of(image) },
        delta: None,
        validation: Some(Validation {
            set_sha256: Digest::of(set),
            set_size: set.len() as u32,
            min_accuracy_permille: min_accuracy,
            max_drop_permille: 1000,
        }),
        arena_bytes: mota_runtime::arena_size(&model).map_err(|e| format!("{e:?}"))? as u32,
        expires_at: None,
        rollout_id: 7,
    };
    Ok((key.sign(&manifest)?, vec![image.to_vec(), set.to_vec()]))
}

/// `mota/v1/dev/dev-c/{kind}` through the C API.
pub fn topic(kind: u8) -> Vec<u8> {
    let mut buf = [0 as c_char; types::MOTA_TOPIC_BYTES];
    // SAFETY: a NUL-terminated id and a buffer of the length given.
    let n = unsafe { mota_topic(kind, DEVICE.as_ptr(), buf.as_mut_ptr(), buf.len()) };
    assert!(n > 0, "mota_topic: {n}");
    buf[..n as usize].iter().map(|&c| c as u8).collect()
}

/// Delivers `payload` on this device's topic of `kind`, as an MQTT client would.
pub fn deliver(kind: u8, payload: &[u8]) -> i32 {
    let topic = topic(kind);
    // SAFETY: both spans are live slices.
    unsafe { mota_agent_handle_topic(topic.as_ptr().cast(), topic.len(), payload.as_ptr(), payload.len()) }
}

/// What an update run saw.
#[derive(Debug, Default)]
pub struct Run {
    pub phases: Vec<u8>,
    pub terminal: Option<Status<'static>>,
}

/// Offers `envelope` and answers chunk requests from `artifacts`, ticking the clock when
/// the device is quiet, until a terminal report.
pub fn run_update(envelope: &[u8], artifacts: &[Vec<u8>]) -> Result<Run, BoxError> {
    let mut run = Run::default();
    assert_eq!(deliver(types::Kind::Offer as u8, envelope), 0);
    for _ in 0..2000 {
        let mut job = std::mem::MaybeUninit::<types::Job>::zeroed();
        // SAFETY: a writable, aligned `mota_job`.
        if unsafe { mota_agent_job(job.as_mut_ptr()) } == 0 {
            // SAFETY: filled by the call that returned 0 (and zeroed before).
            let phase = unsafe { job.assume_init() }.phase;
            if run.phases.last() != Some(&phase) {
                run.phases.push(phase);
            }
        }
        let out: Vec<(u8, Vec<u8>)> = std::mem::take(&mut *PUBLISHED.lock().expect("lock"));
        if out.is_empty() {
            NOW_MS.fetch_add(1000, Ordering::SeqCst);
            assert_eq!(mota_agent_poll(), 0);
            continue;
        }
        for (kind, payload) in out {
            if kind == types::Kind::Get as u8 {
                let get = Get::parse(&payload)?;
                let data = artifacts.iter().find(|a| Digest::of(a) == get.artifact).ok_or("unknown artifact")?;
                let start = (get.offset as usize).min(data.len());
                let end = (start + get.length as usize).min(data.len());
                let chunk = Chunk::data(get.artifact, get.offset, &data[start..end]).to_vec()?;
                assert_eq!(deliver(types::Kind::Chunk as u8, &chunk), 0);
            } else if kind == types::Kind::Status as u8 {
                let status = Status::parse(&payload)?;
                if status.event.is_terminal() {
                    let owned: &'static [u8] = Box::leak(payload.into_boxed_slice());
                    run.terminal = Some(Status::parse(owned)?);
                    return Ok(run);
                }
            }
        }
    }
    Err("no terminal report".into())
}

/// The active model through the C API.
pub fn active() -> Option<types::ActiveModel> {
    let mut out = std::mem::MaybeUninit::<types::ActiveModel>::zeroed();
    // SAFETY: a writable, aligned `mota_active_model`.
    let rc = unsafe { mota_agent_active_model(out.as_mut_ptr()) };
    // SAFETY: filled when the call returned 0.
    (rc == 0).then(|| unsafe { out.assume_init() })
}

/// A NUL-terminated C text as a `&str`.
pub fn text(chars: &[c_char]) -> String {
    chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect()
}

/// Whether `event` is a commit.
pub fn committed(run: &Run) -> bool {
    run.terminal.as_ref().is_some_and(|s| s.event == Event::Committed)
}

/// A located span as Rust sees it (for the C validator's checks).
pub fn span(at: &Located) -> (u8, u32, u32) {
    (at.slot, at.offset, at.len)
}

/// Unused `Measurement` fields.
pub fn unmeasured() -> Measurement {
    Measurement {
        accuracy_permille: types::MOTA_NOT_MEASURED,
        latency_us: types::MOTA_NOT_MEASURED,
        arena_used: types::MOTA_NOT_MEASURED,
    }
}
