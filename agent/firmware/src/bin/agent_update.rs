//! The complete update path on a Cortex-M4 (QEMU mps2-an386): the agent boots on a
//! device holding the factory model digits_cnn v1, receives a signed delta offer for
//! v2, rebuilds v2 into the inactive slot from the patch, checks its digest, fetches
//! the validation set, runs it on mota-runtime (new and running model), commits, and
//! reports. A second boot must then run v2. Exit status 0 means all of that held.
//!
//! Prints the accuracy, the agent's RAM (its struct, and the stack the update used,
//! measured by painting) and marks the update for instruction counting
//! (`scripts/count-instructions.sh`). Run: `cargo run --release --bin agent-update`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_agent::{Agent, MapStore, RuntimeValidator};
use mota_firmware::demo::{self, CONFIG, Loopback, MappedSlots, RamFlash, Ticks};
use mota_firmware::{paint_stack, stack_used};
use mota_proto::message::Event;
use panic_semihosting as _;

type Validator = RuntimeValidator<MappedSlots, Ticks>;

#[entry]
fn main() -> ! {
    let arena = cortex_m::singleton!(: [u8; 16 * 1024] = [0; 16 * 1024]).expect("main runs once");
    let (a, b, state) = demo::regions();
    let validator = RuntimeValidator { memory: MappedSlots, clock: Ticks(Default::default()) };
    let agent: &'static mut Agent<'static, RamFlash, MapStore<RamFlash>, Validator> = cortex_m::singleton!(
        : Agent<'static, RamFlash, MapStore<RamFlash>, Validator> =
            Agent::boot(&CONFIG, [a, b], MapStore::new(state, 0xFF).expect("state region"), validator, arena).expect("first boot")
    )
    .expect("main runs once");
    let clock = Ticks(Default::default());
    let mut net = Loopback::new();
    let painted = paint_stack(44 * 1024);
    let result = demo::run_update(agent, &mut net, &clock);
    let stack = stack_used(painted);
    let active = agent.active_model();
    let committed = matches!(net.outcome, Some((Event::Committed, _)))
        && result.is_ok()
        && active.is_some_and(|m| m.image.slot == 1 && m.installed.version.as_str() == "2.0.0");

    hprintln!(
        "agent struct {} bytes (the patch decoder's block buffer is the arena), update stack {} bytes",
        core::mem::size_of::<Agent<'static, RamFlash, MapStore<RamFlash>, Validator>>(),
        stack
    );
    hprintln!("committed v2: {}", committed);
    debug::exit(if committed { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
