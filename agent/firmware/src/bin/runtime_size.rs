//! The flash mota-runtime costs with only the operators a model needs: parse, plan and
//! one invoke of a model the compiler cannot see, so every linked kernel stays and the
//! others are not in the binary. Built by `scripts/runtime-size.sh OP...` with the
//! runtime's `op-…` features for those operators; not meant to run.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use mota_runtime::{Interpreter, Model};
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    let model = black_box([0u8; 64]);
    let mut arena = black_box([0u8; 256]);
    let ran = Model::parse(&model)
        .ok()
        .and_then(|m| Interpreter::new(m, &mut arena).ok())
        .is_some_and(|mut i| i.invoke().is_ok() && i.output(0).is_ok_and(|o| !black_box(o).is_empty()));
    debug::exit(if ran { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
