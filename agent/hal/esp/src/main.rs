//! mota-agent on an ESP32-C3: esp-storage's `FlashStorage` (the SPI flash: 4 KiB
//! sectors, 4-byte words, erased to 0xFF, multiwrite, so the state is a map) cut into
//! the partitions of partitions.csv by embassy-embedded-hal's `BlockingPartition`.
#![no_std]
#![no_main]

use core::cell::RefCell;

use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use esp_backtrace as _;
use esp_storage::FlashStorage;
use mota_agent::{Agent, Config, MapStore};
use mota_hal_common::{ARENA_BYTES, FixedValidator, config, serve};
use static_cell::{ConstStaticCell, StaticCell};

/// `mota_a` and `mota_b` in partitions.csv.
const SLOTS: [u32; 2] = [0x20_0000, 0x30_0000];
const SLOT_BYTES: u32 = 1024 * 1024;
/// `mota_st` in partitions.csv: 16 sectors.
const STATE: u32 = 0x1F_0000;
const STATE_BYTES: u32 = 64 * 1024;

type Region = BlockingPartition<'static, CriticalSectionRawMutex, FlashStorage<'static>>;

esp_bootloader_esp_idf::esp_app_desc!();

static CONFIG: Config<'static> = config("esp32c3-1", "esp32c3-kws", SLOT_BYTES, 0xFF);
static ARENA: ConstStaticCell<[u8; ARENA_BYTES]> = ConstStaticCell::new([0; ARENA_BYTES]);
static FLASH: StaticCell<Mutex<CriticalSectionRawMutex, RefCell<FlashStorage<'static>>>> = StaticCell::new();
static AGENT: StaticCell<Agent<'static, Region, MapStore<Region>, FixedValidator>> = StaticCell::new();

#[esp_hal::main]
fn main() -> ! {
    let p = esp_hal::init(esp_hal::Config::default());
    let flash = FLASH.init(Mutex::new(RefCell::new(FlashStorage::new(p.FLASH))));
    let slots = SLOTS.map(|at| BlockingPartition::new(flash, at, SLOT_BYTES));
    let Ok(store) = MapStore::new(BlockingPartition::new(flash, STATE, STATE_BYTES), CONFIG.erased) else { reset() };
    match Agent::boot(&CONFIG, slots, store, FixedValidator, ARENA.take()) {
        Ok(agent) => serve(AGENT.init(agent), reset),
        Err(_) => reset(),
    }
}

fn reset() -> ! {
    esp_hal::system::software_reset()
}
