//! mota-agent on an nRF52840 without a SoftDevice: embassy-nrf's `Nvmc` (blocking,
//! multiwrite) cut into the slots and the state region by embassy-embedded-hal's
//! `BlockingPartition`.
#![no_std]
#![no_main]

use core::cell::RefCell;

use cortex_m_rt::entry;
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_nrf::nvmc::Nvmc;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::ThreadModeRawMutex;
use mota_agent::{Agent, Config, MapStore};
use mota_hal_common::{ARENA_BYTES, FixedValidator, config, serve};
use mota_hal_nrf::{SLOT_BYTES, SLOTS, STATE, STATE_BYTES, reset};
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};

type Region = BlockingPartition<'static, ThreadModeRawMutex, Nvmc<'static>>;

static CONFIG: Config<'static> = config("nrf52840-1", "nrf52840-kws", SLOT_BYTES, 0xFF);
static ARENA: ConstStaticCell<[u8; ARENA_BYTES]> = ConstStaticCell::new([0; ARENA_BYTES]);
static FLASH: StaticCell<Mutex<ThreadModeRawMutex, RefCell<Nvmc<'static>>>> = StaticCell::new();
static AGENT: StaticCell<Agent<'static, Region, MapStore<Region>, FixedValidator>> = StaticCell::new();

#[entry]
fn main() -> ! {
    let p = embassy_nrf::init(Default::default());
    let flash = FLASH.init(Mutex::new(RefCell::new(Nvmc::new(p.NVMC))));
    let slots = SLOTS.map(|at| BlockingPartition::new(flash, at, SLOT_BYTES));
    let Ok(store) = MapStore::new(BlockingPartition::new(flash, STATE, STATE_BYTES), CONFIG.erased) else { reset() };
    match Agent::boot(&CONFIG, slots, store, FixedValidator, ARENA.take()) {
        Ok(agent) => serve(AGENT.init(agent), reset),
        Err(_) => reset(),
    }
}
