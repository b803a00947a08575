//! mota-agent on an nRF52840 under SoftDevice S140: nrf-softdevice's async `Flash`
//! behind the blocking [`SdFlash`], cut into the slots and the state region by
//! embassy-embedded-hal's `BlockingPartition`.
//!
//! The rule (embassy's "multiprio" pattern): `Softdevice::run()`, which completes every
//! flash operation, runs on an `InterruptExecutor` (SWI1_EGU1, priority 6); the agent
//! runs in thread mode, below it. Never call the agent from that executor, nor from any
//! interrupt at or above its priority: `SdFlash` would wait for an event that nothing
//! could process. BLE tasks (a link to a gateway, say) go on that interrupt executor or
//! another one; the agent's blocking flash calls then only hold up thread mode.
#![no_std]
#![no_main]

use core::cell::RefCell;

use cortex_m_rt::entry;
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::ThreadModeRawMutex;
use mota_agent::{Agent, Config, MapStore};
use mota_hal_common::{ARENA_BYTES, FixedValidator, config, serve};
use mota_hal_nrf::{SLOT_BYTES, SLOTS, STATE, STATE_BYTES, SdFlash, reset};
use nrf_softdevice::{Flash, Softdevice};
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};

type Region = BlockingPartition<'static, ThreadModeRawMutex, SdFlash>;

static CONFIG: Config<'static> = config("nrf52840-1", "nrf52840-kws", SLOT_BYTES, 0xFF);
static ARENA: ConstStaticCell<[u8; ARENA_BYTES]> = ConstStaticCell::new([0; ARENA_BYTES]);
static FLASH: StaticCell<Mutex<ThreadModeRawMutex, RefCell<SdFlash>>> = StaticCell::new();
static AGENT: StaticCell<Agent<'static, Region, MapStore<Region>, FixedValidator>> = StaticCell::new();

#[entry]
fn main() -> ! {
    let sd: &'static Softdevice = Softdevice::enable(&nrf_softdevice::Config::default());
    let flash = Flash::take(sd);
    sd_executor::start();

    let flash = FLASH.init(Mutex::new(RefCell::new(SdFlash::new(flash))));
    let slots = SLOTS.map(|at| BlockingPartition::new(flash, at, SLOT_BYTES));
    let Ok(store) = MapStore::new(BlockingPartition::new(flash, STATE, STATE_BYTES), CONFIG.erased) else { reset() };
    match Agent::boot(&CONFIG, slots, store, FixedValidator, ARENA.take()) {
        Ok(agent) => serve(AGENT.init(agent), reset),
        Err(_) => reset(),
    }
}

/// The interrupt executor that runs `Softdevice::run()`: the only `unsafe` of this crate.
#[allow(unsafe_code)]
mod sd_executor {
    use embassy_executor::InterruptExecutor;
    use mota_hal_nrf::reset;
    use nrf_softdevice::Softdevice;
    use nrf52840_pac::{Interrupt, interrupt};

    static EXECUTOR: InterruptExecutor = InterruptExecutor::new();

    /// SWI1_EGU1: a software interrupt the SoftDevice leaves to the application.
    const IRQ: Interrupt = Interrupt::SWI1_EGU1;
    /// NVIC priority 6 of 0-7 (S140 reserves 0, 1 and 4), in the top three bits.
    const PRIORITY: u8 = 6 << 5;

    /// Starts the executor with `Softdevice::run()` on it. Call once, after
    /// `Softdevice::enable`.
    pub fn start() {
        // SAFETY: the executor has not started, so its interrupt is still masked, and no
        // code relies on its priority yet (this firmware has no priority-based critical
        // section); the priority is set once, before `start` unmasks the interrupt.
        unsafe { cortex_m::Peripherals::steal().NVIC.set_priority(IRQ, PRIORITY) };
        EXECUTOR.start(IRQ).spawn(run_softdevice().unwrap_or_else(|_| reset()));
    }

    /// `&Softdevice` is not `Send`, so the task cannot be handed it: it takes it itself.
    #[embassy_executor::task]
    async fn run_softdevice() -> ! {
        // SAFETY: `start` runs after `Softdevice::enable` returned, and `main` turned the
        // `&'static mut` it returned into a shared reference at once: no `&mut` is live.
        let sd = unsafe { Softdevice::steal() };
        sd.run().await
    }

    #[interrupt]
    fn SWI1_EGU1() {
        // SAFETY: called from the executor's own interrupt, which `start` unmasks after
        // initialising the executor.
        unsafe { EXECUTOR.on_interrupt() }
    }
}
