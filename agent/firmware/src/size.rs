//! The agent's footprint alone (the `agent-size*` bins): every entry point of the agent
//! linked (boot, hello, handle for every message kind, poll, confirm) with a stand-in
//! validator, and nothing of the example's loopback backend. A bin's size minus
//! `baseline` is agent + proto + delta + crypto + state store. It boots on the factory
//! model and handles one empty message; exit status 0 when it ran.

use core::hint::black_box;

use cortex_m_semihosting::{debug, hprintln};
use mota_agent::{Agent, Config, Located, Measurement, Run, StateStore, Transport, Validator};
use mota_proto::message::ErrorCode;
use mota_proto::topic::Kind;
use mota_proto::{Crypto, Digest};

use crate::demo::{self, RamFlash, Ticks};

/// Stands in for a firmware's own inference engine.
pub struct External;

impl Validator for External {
    fn validate(
        &mut self,
        _: Located,
        _: u32,
        _: Option<Located>,
        _: &mut [u8],
        _: &mut Run,
        _: u32,
    ) -> Result<Option<Measurement>, ErrorCode> {
        Ok(Some(Measurement { accuracy_permille: Some(1000), latency_us: None, arena_used: None }))
    }
}

/// Stands in for a hardware crypto engine's driver plugged into the hook (as a PSA Crypto
/// or CryptoCell binding would be): opaque calls, no verification, so no software crypto
/// is linked. For footprints only: it never lets an update through.
pub struct Engine;

impl Crypto for Engine {
    fn verify_ed25519(&self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        black_box((key, msg, sig)).2[0] == 0
    }

    fn sha256(&self, input: &mut dyn FnMut(&mut dyn FnMut(&[u8]))) -> Digest {
        let mut state = 0u8;
        input(&mut |piece| state ^= black_box(piece).first().copied().unwrap_or(0));
        Digest([black_box(state); 32])
    }
}

/// The demo configuration with [`Engine`] in the hook.
pub static HOOKED: Config<'static> = Config { crypto: &Engine, ..demo::CONFIG };

/// Publishes nowhere.
struct Null;

impl Transport for Null {
    type Error = ();
    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
        black_box((kind, payload));
        Ok(())
    }
}

/// Boots the agent with `config` on the demo regions, the state in the store `store`
/// makes of its region, and exercises every entry point once.
pub fn run<S: StateStore>(config: &'static Config<'static>, store: fn(RamFlash) -> Option<S>) -> ! {
    let (a, b, state) = demo::regions();
    let arena = cortex_m::singleton!(: [u8; 16 * 1024] = [0; 16 * 1024]).unwrap_or_else(|| loop {});
    let booted = store(state).and_then(|state| Agent::boot(config, [a, b], state, External, arena).ok());
    let ok = booted.is_some_and(|mut agent| {
        let clock = Ticks(Default::default());
        agent.hello(&mut Null, &clock).is_ok()
            && agent.handle(black_box(Kind::Offer), black_box(&[]), &mut Null, &clock).is_ok()
            && agent.poll(&mut Null, &clock).is_ok()
            && agent.confirm().is_ok()
            && agent.active_model().is_some()
    });
    hprintln!("agent-size ran: {}", ok);
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
