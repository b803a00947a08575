//! `.tflite` bytes as a device would get them from a flash slot: parse and verify, plan
//! into a bounded arena, and run one inference on a fixed input, the first operators
//! prepared once (`Interpreter::with_cache`) and the rest at the invoke. Nothing may panic
//! or read out of bounds, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_runtime::{Interpreter, Model, PreparedOp};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::parse(data) else { return };
    let mut arena = [0u8; 64 * 1024];
    let mut cache = [const { PreparedOp::EMPTY }; 4];
    let Ok(mut interp) = Interpreter::with_cache(model, &mut arena, &mut cache) else { return };
    for i in 0..model.input_count() {
        if let Ok(input) = interp.input(i) {
            for (k, b) in input.iter_mut().enumerate() {
                *b = k as u8;
            }
        }
    }
    let _ = interp.invoke();
    for i in 0..model.output_count() {
        let _ = interp.output(i);
    }
});
