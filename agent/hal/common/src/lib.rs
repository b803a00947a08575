//! What the HAL builds share: a [`config`] sized from the flash layout, and stand-ins
//! for what a product firmware brings itself: the MQTT client ([`Offline`]), the clock
//! ([`Ticks`]) and the inference engine ([`FixedValidator`]). Everything touching flash
//! is the agent as shipped, on the chip's own flash driver.
#![no_std]

use core::cell::Cell;

use embedded_storage::nor_flash::NorFlash;
use mota_agent::{Agent, Clock, Config, Located, Measurement, Run, StateStore, Transport, Validator, Work};
use mota_proto::Limits;
use mota_proto::message::ErrorCode;
use mota_proto::topic::Kind;

/// The trusted root key the HAL builds carry (mota-proto's test root: these builds
/// never see a real offer, so any key does).
pub const ROOT: [u8; 32] = [
    0xd0, 0x4a, 0xb2, 0x32, 0x74, 0x2b, 0xb4, 0xab, 0x3a, 0x13, 0x68, 0xbd, 0x46, 0x15, 0xe4, 0xe6, 0xd0, 0x22, 0x4a,
    0xb7, 0x1a, 0x01, 0x6b, 0xaf, 0x85, 0x20, 0xa3, 0x32, 0xc9, 0x77, 0x87, 0x37,
];

/// Tensor arena lent to the agent: the patch decoder's block buffer needs 4,098 bytes,
/// a real firmware gives what its largest model needs.
pub const ARENA_BYTES: usize = 16 * 1024;

/// The device's configuration for slots of `slot_bytes` whose erased byte is `erased`.
/// No factory model: a fresh device boots with no active model and waits for an offer.
pub const fn config(
    device_id: &'static str,
    device_class: &'static str,
    slot_bytes: u32,
    erased: u8,
) -> Config<'static> {
    Config {
        device_id,
        device_class,
        agent_version: concat!("mota-hal ", env!("CARGO_PKG_VERSION")),
        roots: core::slice::from_ref(&ROOT),
        // The bundled software Ed25519 and SHA-256; a part with a crypto accelerator
        // plugs its own in here.
        crypto: &mota_proto::Software,
        limits: Limits {
            max_image_bytes: slot_bytes,
            max_patch_bytes: slot_bytes,
            max_arena_bytes: ARENA_BYTES as u32,
            max_validation_bytes: slot_bytes / 4,
        },
        erased,
        chunk_bytes: 1024,
        retry_ms: 1000,
        max_trials: 2,
        factory: None,
        trial_boots: 0,
        // One 4 KiB sector erased per `poll`, one validation record per `poll`: the
        // loop keeps serving the network and the watchdog during an update.
        work: Work { flash_bytes: 4096, records: 1 },
        leases: None,
    }
}

/// Stands in for the firmware's inference engine: every model scores 100 %.
pub struct FixedValidator;

impl Validator for FixedValidator {
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

/// Stands in for the MQTT client: not connected, every publish fails (the agent keeps
/// its report and sends it again after the next `hello`), nothing arrives.
pub struct Offline;

impl Offline {
    /// The next message on one of the device's topics: never one (`black_box` keeps
    /// the agent's message handling linked, as a real client's receive path would).
    pub fn receive(&mut self) -> Option<(Kind, &'static [u8])> {
        core::hint::black_box(None)
    }
}

impl Transport for Offline {
    type Error = ();
    fn publish(&mut self, _: Kind, _: &[u8]) -> Result<(), ()> {
        Err(())
    }
}

/// Stands in for a timer: one millisecond per reading, no trusted wall time.
#[derive(Default)]
pub struct Ticks(Cell<u64>);

impl Clock for Ticks {
    fn now_ms(&self) -> u64 {
        let now = self.0.get();
        self.0.set(now + 1);
        now
    }

    fn unix_time(&self) -> Option<u64> {
        None
    }
}

/// The main loop: announces the device, then hands the agent every message and polls
/// it, for good. A real firmware's MQTT client sits where [`Offline`] is, and the loop
/// sleeps until the next event; on an agent error it calls `reset` (the record on flash
/// is the truth, RAM may be ahead of it).
pub fn serve<F: NorFlash, S: StateStore, V: Validator>(agent: &mut Agent<'_, F, S, V>, reset: fn() -> !) -> ! {
    let clock = Ticks::default();
    let mut net = Offline;
    if agent.hello(&mut net, &clock).is_err() {
        reset();
    }
    loop {
        if let Some((kind, payload)) = net.receive()
            && agent.handle(kind, payload, &mut net, &clock).is_err()
        {
            reset();
        }
        if agent.poll(&mut net, &clock).is_err() {
            reset();
        }
    }
}
