//! Rebuilds `digits_cnn_v2` from `digits_cnn_v1` and the committed patch on a Cortex-M4
//! (QEMU mps2-an386), feeding the patch in 64-byte pieces as a download would, and checks
//! every output byte. Also reports the decoder's RAM (its struct, and the stack it used,
//! measured by painting) and marks the decode for instruction counting.
//! Exit status 0 means the output was exact. Run: `cargo run --release --bin delta-check`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_delta::{Base, Decoder, IoError, Sink, Status};
use mota_firmware::{bench_end, bench_start, paint_stack, stack_used};
use panic_semihosting as _;

static BASE: &[u8] = include_bytes!("../../../runtime/fixtures/models/digits_cnn_v1.tflite");
static TARGET: &[u8] = include_bytes!("../../../runtime/fixtures/models/digits_cnn_v2.tflite");
static PATCH: &[u8] = include_bytes!("../../../delta/tests/data/digits_cnn_v1_v2.mdlt");

/// SHA-256 of `digits_cnn_v1.tflite` (the agent knows its active slot's digest).
const BASE_SHA256: [u8; 32] = [
    0x65, 0x2c, 0x36, 0x15, 0x57, 0xe5, 0x18, 0x39, 0x8f, 0x42, 0x59, 0xa3, 0xa8, 0x3a, 0xc7, 0x34, 0xf5, 0x87, 0x2c,
    0x8f, 0xc8, 0x63, 0x8b, 0x77, 0x84, 0x65, 0xe1, 0xb7, 0x17, 0xa5, 0x4c, 0x31,
];

struct Flash;

impl Base for Flash {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let start = offset as usize;
        buf.copy_from_slice(BASE.get(start..start + buf.len()).ok_or(IoError)?);
        Ok(())
    }
}

/// Compares the output with the expected model as it is written.
struct Check {
    at: usize,
    ok: bool,
}

impl Sink for Check {
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.ok &= TARGET.get(self.at..self.at + bytes.len()) == Some(bytes);
        self.at += bytes.len();
        Ok(())
    }
}

#[inline(never)]
fn rebuild(decoder: &mut Decoder) -> (Result<Status, mota_delta::DeltaError>, Check) {
    let mut sink = Check { at: 0, ok: true };
    let mut status = Ok(Status::NeedMore);
    for piece in PATCH.chunks(64) {
        status = decoder.push(piece, &mut Flash, &mut sink);
        if status.is_err() {
            break;
        }
    }
    (status, sink)
}

#[entry]
fn main() -> ! {
    // The decoder lives in static memory, as in an agent; the stack then shows only what
    // decoding itself needs.
    let decoder = cortex_m::singleton!(: Decoder = Decoder::new(BASE_SHA256, BASE.len() as u32, 64 * 1024))
        .expect("main runs once");
    let painted = paint_stack(24 * 1024);
    bench_start();
    let (status, sink) = rebuild(decoder);
    bench_end();
    let stack = stack_used(painted);
    let exact = status == Ok(Status::Done) && sink.ok && sink.at == TARGET.len();
    hprintln!("delta: {:?}, {} of {} bytes, exact: {}", status, sink.at, TARGET.len(), exact);
    hprintln!("decoder struct {} bytes, stack used {} bytes", core::mem::size_of::<Decoder>(), stack);
    debug::exit(if exact { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
