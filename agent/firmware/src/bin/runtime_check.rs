//! Runs fixture models on a Cortex-M4 (QEMU mps2-an386) with mota-runtime and checks the
//! outputs byte for byte against TFLite Micro's, recorded on the host. Exit status 0
//! means every output matched. Run: `cargo run --release --bin runtime-check`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_runtime::{Interpreter, Model};
use panic_semihosting as _;

const ROWS: usize = 4;

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../../runtime/fixtures/models/", $name, ".tflite")).as_slice(),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".inputs.npy.bin")).as_slice(),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".tflm_outputs.npy.bin")).as_slice(),
        )
    };
}

/// Runs `ROWS` inputs; returns how many outputs matched TFLM's, or `None` on an error.
fn check(model: &[u8], inputs: &[u8], outputs: &[u8], arena: &mut [u8]) -> Option<usize> {
    let model = Model::parse(model).ok()?;
    let mut interp = Interpreter::new(model, arena).ok()?;
    let (in_len, out_len) = (inputs.len() / ROWS, outputs.len() / ROWS);
    let mut matched = 0;
    for row in 0..ROWS {
        interp.input(0).ok()?.copy_from_slice(&inputs[row * in_len..(row + 1) * in_len]);
        interp.invoke().ok()?;
        matched += usize::from(interp.output(0).ok()? == &outputs[row * out_len..(row + 1) * out_len]);
    }
    Some(matched)
}

#[entry]
fn main() -> ! {
    let mut arena = [0u8; 16 * 1024];
    let mut all = true;
    for (name, model, inputs, outputs) in [fixture!("digits_cnn_v1"), fixture!("kws_dscnn")] {
        let result = check(model, inputs, outputs, &mut arena);
        hprintln!("{}: {:?} of {} outputs bit-exact with TFLM", name, result, ROWS);
        all &= result == Some(ROWS);
    }
    debug::exit(if all { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
