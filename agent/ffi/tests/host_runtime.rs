//! The C API on the host with the bundled validator: every boundary check returns its
//! code (NULL, misaligned, bad UTF-8, too long, out of range, wrong geometry, not booted,
//! booted twice, re-entered), then a full update (offer, chunks, validation on
//! mota-runtime, commit) driven through `mota_agent_handle_topic` and `mota_agent_poll`.
#![allow(unsafe_code)]
// Batches of C calls on the same checked arguments: one SAFETY note per batch.
#![allow(clippy::multiple_unsafe_ops_per_block)]

mod common;

use std::ffi::c_char;
use std::sync::atomic::Ordering;

use common::*;
use mota_agent_ffi::types::{self, Config, Kind, MOTA_IGNORED, MOTA_NO_JOB, Platform};
use mota_agent_ffi::*;

const NULL: i32 = Error::NullPointer as i32;

/// `mota_agent_boot` with these arguments.
fn boot(config: &Config, platform: &Platform, arena: &mut [u8]) -> i32 {
    // SAFETY: live structs; the arena is leaked by the caller when the boot may succeed.
    unsafe { mota_agent_boot(config, platform, arena.as_mut_ptr(), arena.len()) }
}

#[test]
fn boundary_checks_then_an_update_commits() -> Result<(), BoxError> {
    let v1 = fixture("digits_cnn_v1.tflite")?;
    let slots = fresh_part(&v1);
    let good = config(v1.len());
    let platform = platform(slots);
    let mut scratch = vec![0u8; ARENA];

    // Before boot.
    assert_eq!(mota_agent_hello(), Error::NotBooted as i32);
    assert_eq!(mota_agent_poll(), Error::NotBooted as i32);
    assert_eq!(mota_agent_is_idle(), Error::NotBooted as i32);
    assert_eq!(deliver(Kind::Offer as u8, b"x"), Error::NotBooted as i32);

    // NULL, misaligned.
    // SAFETY: NULL pointers are what is checked.
    assert_eq!(unsafe { mota_agent_boot(std::ptr::null(), &platform, scratch.as_mut_ptr(), ARENA) }, NULL);
    // SAFETY: as above.
    assert_eq!(unsafe { mota_agent_boot(good, std::ptr::null(), scratch.as_mut_ptr(), ARENA) }, NULL);
    // SAFETY: as above.
    assert_eq!(unsafe { mota_agent_boot(good, &platform, std::ptr::null_mut(), ARENA) }, NULL);
    let mut bytes = vec![0u8; size_of::<Config>() + 8];
    let odd = bytes.as_mut_ptr().wrapping_add(usize::from((bytes.as_ptr() as usize).is_multiple_of(2)));
    // SAFETY: the misaligned pointer is refused before it is read.
    let misaligned = unsafe { mota_agent_boot(odd.cast(), &platform, scratch.as_mut_ptr(), ARENA) };
    assert_eq!(misaligned, Error::Misaligned as i32);

    // Strings: NULL, not UTF-8, no NUL within the bound, forbidden characters.
    let with_id = |id: *const c_char| Config { device_id: id, ..*good };
    assert_eq!(boot(&with_id(std::ptr::null()), &platform, &mut scratch), NULL);
    assert_eq!(boot(&with_id(c"dev-\xff".as_ptr()), &platform, &mut scratch), Error::Utf8 as i32);
    let long = std::ffi::CString::new("d".repeat(65))?;
    assert_eq!(boot(&with_id(long.as_ptr()), &platform, &mut scratch), Error::Length as i32);
    assert_eq!(boot(&with_id(c"dev/1".as_ptr()), &platform, &mut scratch), Error::Argument as i32);
    assert_eq!(boot(&with_id(c"".as_ptr()), &platform, &mut scratch), Error::Argument as i32);
    assert_eq!(boot(&Config { roots_len: 0, ..*good }, &platform, &mut scratch), Error::Argument as i32);
    assert_eq!(boot(&Config { roots: std::ptr::null(), ..*good }, &platform, &mut scratch), NULL);
    assert_eq!(boot(&Config { max_trials: 0, ..*good }, &platform, &mut scratch), Error::Argument as i32);
    assert_eq!(boot(&Config { chunk_bytes: 16385, ..*good }, &platform, &mut scratch), Error::Argument as i32);

    // Platform: missing callbacks, geometry, no validator.
    let missing = Platform { flash_erase: None, ..platform };
    assert_eq!(boot(good, &missing, &mut scratch), NULL);
    assert_eq!(boot(good, &Platform { now_ms: None, ..platform }, &mut scratch), NULL);
    let geometry = |p: Platform| boot(good, &p, &mut vec![0u8; ARENA]);
    assert_eq!(geometry(Platform { flash_write_size: 8, ..platform }), Error::Geometry as i32);
    assert_eq!(geometry(Platform { flash_erase_size: 2048, ..platform }), Error::Geometry as i32);
    assert_eq!(geometry(Platform { state_bytes: SECTOR, ..platform }), Error::Geometry as i32);
    assert_eq!(geometry(Platform { slot_bytes: SLOT_LEN + 1, ..platform }), Error::Geometry as i32);
    let unmapped = Platform { slot_base: [slots[0], std::ptr::null()], ..platform };
    assert_eq!(boot(good, &unmapped, &mut scratch), Error::NoValidator as i32);

    // Topics and subscriptions.
    let mut buf = [0 as c_char; types::MOTA_TOPIC_BYTES];
    // SAFETY: NUL-terminated ids, buffers of the lengths given (or NULL, checked).
    unsafe {
        assert_eq!(mota_topic(Kind::Hello as u8, c"dev-\xfe".as_ptr(), buf.as_mut_ptr(), buf.len()), -3);
        assert_eq!(mota_topic(Kind::Hello as u8, std::ptr::null(), buf.as_mut_ptr(), buf.len()), NULL);
        assert_eq!(mota_topic(Kind::Hello as u8, DEVICE.as_ptr(), std::ptr::null_mut(), 10), NULL);
        assert_eq!(mota_topic(Kind::Hello as u8, DEVICE.as_ptr(), buf.as_mut_ptr(), 5), Error::Length as i32);
        assert_eq!(mota_topic(9, DEVICE.as_ptr(), buf.as_mut_ptr(), buf.len()), Error::Argument as i32);
        assert_eq!(mota_topic(Kind::Hello as u8, DEVICE.as_ptr(), buf.as_mut_ptr(), usize::MAX), -4);
        let mut kinds = [0u8; types::MOTA_SUBSCRIPTION_COUNT];
        assert_eq!(mota_subscriptions(kinds.as_mut_ptr(), kinds.len()), 4);
        assert_eq!(kinds, [Kind::Offer as u8, Kind::Chunk as u8, Kind::Cmd as u8, Kind::Trust as u8]);
        assert_eq!(mota_subscriptions(kinds.as_mut_ptr(), 2), Error::Length as i32);
    }
    assert_eq!(text(&buf[..0]), "");
    // SAFETY: the names are static C strings.
    let name = |code| unsafe { std::ffi::CStr::from_ptr(mota_error_name(code)) }.to_str().map(str::to_owned);
    assert_eq!(name(-12)?, "flash");
    assert_eq!(name(0)?, "ok");
    assert_eq!(name(-999)?, "unknown");
    assert!(mota_error_must_reboot(Error::Flash as i32) && !mota_error_must_reboot(Error::Busy as i32));

    // Boot, once.
    assert_eq!(boot(good, &platform, arena()), 0);
    assert_eq!(boot(good, &platform, &mut scratch), Error::AlreadyBooted as i32);
    let factory = active().ok_or("no active model")?;
    assert_eq!((text(&factory.name), text(&factory.version)), ("digits_cnn".into(), "1.0.0".into()));
    assert_eq!(factory.sha256, mota_proto::Digest::of(&v1).0);
    assert_eq!((factory.image.slot, factory.image.offset, factory.image.len), (0, 0, v1.len() as u32));
    assert_eq!(mota_agent_is_idle(), 1);
    let mut job = std::mem::MaybeUninit::<types::Job>::zeroed();
    // SAFETY: a writable `mota_job`.
    assert_eq!(unsafe { mota_agent_job(job.as_mut_ptr()) }, MOTA_NO_JOB);

    // Hello; a call from inside the publish callback is refused as busy.
    assert_eq!(mota_agent_hello(), 0);
    let hello = PUBLISHED.lock().map_err(|_| "lock")?.drain(..).collect::<Vec<_>>();
    assert_eq!(hello.first().map(|(k, _)| *k), Some(Kind::Hello as u8));
    assert_eq!(REENTERED.load(Ordering::SeqCst), Error::Busy as i32);

    // Messages that are not for this device, and bad arguments.
    let other = b"mota/v1/dev/dev-d/offer";
    // SAFETY: live slices, or NULL with the lengths that are checked.
    unsafe {
        assert_eq!(mota_agent_handle_topic(other.as_ptr().cast(), other.len(), b"x".as_ptr(), 1), MOTA_IGNORED);
        let hello_topic = topic(Kind::Hello as u8);
        assert_eq!(mota_agent_handle_topic(hello_topic.as_ptr().cast(), hello_topic.len(), b"".as_ptr(), 0), 1);
        assert_eq!(mota_agent_handle_topic(b"weather/now".as_ptr().cast(), 11, std::ptr::null(), 0), 1);
        assert_eq!(mota_agent_handle_topic(b"\xff\xfe".as_ptr().cast(), 2, std::ptr::null(), 0), -3);
        assert_eq!(mota_agent_handle_topic(std::ptr::null(), 3, std::ptr::null(), 0), NULL);
        assert_eq!(mota_agent_handle(Kind::Offer as u8, std::ptr::null(), 5), NULL);
        assert_eq!(mota_agent_handle(7, b"x".as_ptr(), 1), Error::Argument as i32);
        assert_eq!(mota_agent_handle(Kind::Offer as u8, b"x".as_ptr(), usize::MAX), Error::Length as i32);
        let mut small = [0 as c_char; 4];
        assert_eq!(mota_agent_last_error(small.as_mut_ptr(), small.len()), 0);
    }

    // A full update: the offer, every chunk, validation on mota-runtime, the commit.
    let v2 = fixture("digits_cnn_v2.tflite")?;
    let set = digits_set(64)?;
    let (envelope, artifacts) = offer(&v2, &set, 500)?;
    let run = run_update(&envelope, &artifacts)?;
    let status = run.terminal.as_ref().ok_or("no report")?;
    assert!(committed(&run), "not committed: {status:?}");
    assert!(status.accuracy_permille.is_some_and(|a| a >= 500), "{status:?}");
    let (image, set_phase, validate) =
        (types::Phase::Image as u8, types::Phase::Set as u8, types::Phase::Validate as u8);
    assert_eq!(run.phases, [image, set_phase, validate], "phases seen");
    let now = active().ok_or("no active model")?;
    assert_eq!((now.image.slot, text(&now.version)), (1, "2.0.0".to_owned()));
    assert_eq!(now.sha256, mota_proto::Digest::of(&v2).0);
    assert_eq!(mota_agent_poll(), 0);

    // The bundled session: its argument checks, then one start over a silent stream.
    let mut progress = types::SessionProgress { connected: true, messages: 9 };
    // SAFETY: a writable progress struct.
    assert_eq!(unsafe { mota_session_poll(&mut progress) }, Error::SessionNotStarted as i32);
    assert_eq!(mota_session_is_online(), Error::SessionNotStarted as i32);
    let need = mota_session_buffer_len(1024);
    assert_eq!(need, types::MOTA_SESSION_OVERHEAD + types::MOTA_SESSION_MIN_MESSAGE);
    let buffer: &'static mut [u8] = Box::leak(vec![0u8; need].into_boxed_slice());
    let long = std::ffi::CString::new("p".repeat(129))?;
    // SAFETY: live callbacks and buffers, or the NULLs that are checked.
    unsafe {
        let ctx = std::ptr::null_mut();
        let (p, n) = (buffer.as_mut_ptr(), buffer.len());
        assert_eq!(mota_session_start(None, Some(silent_write), ctx, std::ptr::null(), 30, p, n), NULL);
        assert_eq!(mota_session_start(Some(silent_read), Some(silent_write), ctx, std::ptr::null(), 30, p, n - 1), -4);
        assert_eq!(mota_session_start(Some(silent_read), Some(silent_write), ctx, long.as_ptr(), 30, p, n), -4);
        assert_eq!(mota_session_start(Some(silent_read), Some(silent_write), ctx, c"pw".as_ptr(), 30, p, n), 0);
        let again = mota_session_start(Some(silent_read), Some(silent_write), ctx, std::ptr::null(), 30, p, n);
        assert_eq!(again, Error::SessionAlreadyStarted as i32);
        assert_eq!(mota_session_poll(&mut progress), 0);
        assert_eq!(mota_session_poll(std::ptr::null_mut()), 0);
    }
    assert_eq!(progress, types::SessionProgress { connected: false, messages: 0 });
    assert_eq!(mota_session_is_online(), 0);
    assert!(WRITTEN.load(Ordering::SeqCst) > 0, "the session sent its CONNECT");
    Ok(())
}

static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A stream on which no byte ever arrives.
unsafe extern "C" fn silent_read(_: *mut std::ffi::c_void, _: *mut u8, _: usize) -> isize {
    0
}

/// A stream that takes every byte (and counts them).
unsafe extern "C" fn silent_write(_: *mut std::ffi::c_void, _: *const u8, len: usize) -> isize {
    WRITTEN.fetch_add(len, Ordering::SeqCst);
    len as isize
}
