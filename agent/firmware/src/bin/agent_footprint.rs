//! The agent without the bundled runtime, for its footprint: the same update as
//! `agent-update`, validated by a stand-in that runs nothing and reports 100 %, as a
//! firmware with its own inference engine would plug in. Its size minus `baseline` is
//! what agent + proto + delta + crypto cost in flash; its struct and stack, in RAM.
//! Run: `cargo run --release --bin agent-footprint`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_agent::{Agent, Located, Measurement, Validator};
use mota_firmware::demo::{self, CONFIG, Loopback, RamFlash, Ticks};
use mota_firmware::{paint_stack, stack_used};
use mota_proto::message::{ErrorCode, Event};
use panic_semihosting as _;

/// Stands in for a firmware's own inference engine.
struct External;

impl Validator for External {
    fn validate(&mut self, _: Located, _: u32, _: Option<Located>, _: &mut [u8]) -> Result<Measurement, ErrorCode> {
        Ok(Measurement { accuracy_permille: Some(1000), latency_us: None, arena_used: None })
    }
}

#[entry]
fn main() -> ! {
    let (a, b, state) = demo::regions();
    let arena = cortex_m::singleton!(: [u8; 16 * 1024] = [0; 16 * 1024]).unwrap_or_else(|| loop {});
    let agent: &'static mut Agent<'static, RamFlash, RamFlash, External> = cortex_m::singleton!(
        : Agent<'static, RamFlash, RamFlash, External> =
            Agent::boot(&CONFIG, [a, b], state, External, arena).expect("first boot")
    )
    .expect("main runs once");
    let clock = Ticks(Default::default());
    let mut net = Loopback::new();
    let painted = paint_stack(44 * 1024);
    let result = demo::run_update(agent, &mut net, &clock);
    let stack = stack_used(painted);
    let committed = matches!(net.outcome, Some((Event::Committed, _))) && result.is_ok();
    hprintln!(
        "agent struct {} bytes, update stack {} bytes",
        core::mem::size_of::<Agent<'static, RamFlash, RamFlash, External>>(),
        stack
    );
    hprintln!("committed: {}", committed);
    debug::exit(if committed { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
