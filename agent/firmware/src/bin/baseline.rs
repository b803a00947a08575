//! The smallest firmware with the same start-up, printing and exit as the checks: its
//! size is subtracted from theirs to give what mota-proto or mota-runtime add.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    let ok: Option<usize> = core::hint::black_box(Some(4));
    hprintln!("baseline: {:?}", ok);
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}
