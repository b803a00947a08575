//! The C API with the firmware's own validator (`mota_platform.validate`): the agent
//! calls it with the model and set it located, in its arena, and reports what it
//! measured; a refusal code from it rejects the update with that code.
#![allow(unsafe_code)]

mod common;

use std::ffi::c_void;
use std::sync::Mutex;

use common::*;
use mota_agent_ffi::types::{Located, Measurement};
use mota_proto::message::{ErrorCode, Event};

/// A located span: (slot, offset, length).
type Span = (u8, u32, u32);
/// (model, arena bytes, set, arena length) of one call.
type Call = (Span, u32, Option<Span>, usize);
/// Every call.
static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());
/// Whether the validator refuses (model_invalid).
static REFUSE: Mutex<bool> = Mutex::new(false);

unsafe extern "C" fn validate(
    _: *mut c_void,
    model: *const Located,
    arena_bytes: u32,
    set: *const Located,
    _arena: *mut u8,
    arena_len: usize,
    out: *mut Measurement,
) -> i32 {
    // SAFETY: the library passes a valid `model`.
    let model = unsafe { &*model };
    // SAFETY: a valid `set`, or NULL.
    let set = unsafe { set.as_ref() };
    // SAFETY: a valid, writable `out`.
    let out = unsafe { &mut *out };
    assert_eq!(*out, unmeasured(), "out is pre-set to not measured");
    CALLS.lock().expect("lock").push((span(model), arena_bytes, set.map(span), arena_len));
    if *REFUSE.lock().expect("lock") {
        return 300;
    }
    *out = Measurement { accuracy_permille: 977, latency_us: 1234, arena_used: 2000 };
    0
}

#[test]
fn the_firmware_validator_decides() -> Result<(), BoxError> {
    let v1 = fixture("digits_cnn_v1.tflite")?;
    let slots = fresh_part(&v1);
    let platform = mota_agent_ffi::types::Platform {
        validate: Some(validate),
        slot_base: [std::ptr::null(); 2],
        ..platform(slots)
    };
    // The state in the journal (as on an ECC part), the product's trial, the erase in
    // 4 KiB pieces.
    let config = mota_agent_ffi::types::Config {
        trial_boots: 2,
        single_write_state: true,
        flash_bytes_per_poll: 4096,
        ..*config(v1.len())
    };
    // SAFETY: live config and platform, an arena leaked for good.
    let rc = unsafe {
        let arena = arena();
        mota_agent_ffi::mota_agent_boot(&config, &platform, arena.as_mut_ptr(), arena.len())
    };
    assert_eq!(rc, 0);
    assert_eq!(mota_agent_ffi::mota_agent_on_trial(), 0);
    assert_eq!(mota_agent_ffi::mota_agent_hello(), 0);

    let v2 = fixture("digits_cnn_v2.tflite")?;
    let set = digits_set(16)?;
    let (envelope, artifacts) = offer(&v2, &set, 900)?;
    let run = run_update(&envelope, &artifacts)?;
    let status = run.terminal.as_ref().ok_or("no report")?;
    assert_eq!((status.event, status.accuracy_permille), (Event::Committed, Some(977)), "{status:?}");
    let calls = CALLS.lock().map_err(|_| "lock")?.clone();
    // The new model in slot B, then the running one in slot A, each on its slot's copy of the set.
    let set_at = (v2.len() as u32).next_multiple_of(32);
    assert_eq!(calls[0].0, (1, 0, v2.len() as u32));
    assert_eq!(calls[0].2, Some((1, set_at, set.len() as u32)));
    assert_eq!(calls[0].3, ARENA);
    assert_eq!(calls[1].0, (0, 0, v1.len() as u32));
    // On trial until the product confirms it; then the next update is taken.
    assert_eq!(mota_agent_ffi::mota_agent_on_trial(), 1);
    assert_eq!(mota_agent_ffi::mota_agent_confirm(), 0);
    assert_eq!(mota_agent_ffi::mota_agent_on_trial(), 0);

    // A refusal from the validator rejects the next update with its code.
    *REFUSE.lock().map_err(|_| "lock")? = true;
    let v3 = fixture("digits_cnn_v1.tflite")?;
    let (envelope, artifacts) = offer(&v3, &set, 900)?;
    let run = run_update(&envelope, &artifacts)?;
    let status = run.terminal.as_ref().ok_or("no report")?;
    assert_eq!((status.event, status.error), (Event::Rejected, Some(ErrorCode::MODEL_INVALID)), "{status:?}");
    Ok(())
}
