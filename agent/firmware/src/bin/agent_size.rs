//! The agent's footprint alone: every entry point of the agent linked (boot, hello,
//! handle for every message kind, poll) with a stand-in validator, and nothing of the
//! example's loopback backend. Its size minus `baseline` is agent + proto + delta +
//! crypto + sequential-storage. It boots on the factory model and handles one empty
//! message; exit status 0 when it ran. Run: `cargo run --release --bin agent-size`.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_agent::{Agent, Located, Measurement, Transport, Validator};
use mota_firmware::demo::{self, CONFIG, RamFlash, Ticks};
use mota_proto::message::ErrorCode;
use mota_proto::topic::Kind;
use panic_semihosting as _;

/// Stands in for a firmware's own inference engine.
struct External;

impl Validator for External {
    fn validate(&mut self, _: Located, _: u32, _: Option<Located>, _: &mut [u8]) -> Result<Measurement, ErrorCode> {
        Ok(Measurement { accuracy_permille: Some(1000), latency_us: None, arena_used: None })
    }
}

/// Publishes nowhere.
struct Null;

impl Transport for Null {
    type Error = ();
    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
        black_box((kind, payload));
        Ok(())
    }
}

#[entry]
fn main() -> ! {
    let (a, b, state) = demo::regions();
    let arena = cortex_m::singleton!(: [u8; 16 * 1024] = [0; 16 * 1024]).unwrap_or_else(|| loop {});
    let agent: &'static mut Agent<'static, RamFlash, RamFlash, External> = cortex_m::singleton!(
        : Agent<'static, RamFlash, RamFlash, External> = match Agent::boot(&CONFIG, [a, b], state, External, arena) {
            Ok(agent) => agent,
            Err(_) => { debug::exit(debug::EXIT_FAILURE); loop {} }
        }
    )
    .unwrap_or_else(|| loop {});
    let clock = Ticks(Default::default());
    let ok = agent.hello(&mut Null, &clock).is_ok()
        && agent.handle(black_box(Kind::Offer), black_box(&[]), &mut Null, &clock).is_ok()
        && agent.poll(&mut Null, &clock).is_ok()
        && agent.active_model().is_some();
    hprintln!("agent-size ran: {}", ok);
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
