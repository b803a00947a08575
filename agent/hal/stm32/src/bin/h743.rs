//! mota-agent on an STM32H743ZI, a part with flash ECC: each 32-byte flash word is
//! programmed once between erases, so the state region is a journal
//! (`mota_agent::JournalStore`), which never programs a word twice. Slots: the two
//! halves of bank 2 (4 x 128 KiB sectors each); state: the last two sectors of bank 1;
//! `memory-h743.x` has the map.
#![no_std]
#![no_main]

use core::cell::RefCell;

use cortex_m_rt::entry;
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_stm32::flash::{Bank1Region, Bank2Region, Blocking, Flash};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::ThreadModeRawMutex;
use mota_agent::{Agent, Config, JournalStore};
use mota_hal_common::{ARENA_BYTES, FixedValidator, config, serve};
use mota_hal_stm32::reset;
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};

/// Bank 2 (0x0810_0000): sectors 0-3 and 4-7.
const SLOTS: [u32; 2] = [0, 0x8_0000];
const SLOT_BYTES: u32 = 512 * 1024;
/// Bank 1 (0x0800_0000): sectors 6 and 7.
const STATE: u32 = 0xC_0000;
const STATE_BYTES: u32 = 2 * 128 * 1024;

type SlotFlash = Bank2Region<'static, Blocking>;
type StateFlash = Bank1Region<'static, Blocking>;
type Slot = BlockingPartition<'static, ThreadModeRawMutex, SlotFlash>;
type Store = JournalStore<BlockingPartition<'static, ThreadModeRawMutex, StateFlash>>;

static CONFIG: Config<'static> = config("stm32h743-1", "stm32h743-digits", SLOT_BYTES, 0xFF);
static ARENA: ConstStaticCell<[u8; ARENA_BYTES]> = ConstStaticCell::new([0; ARENA_BYTES]);
static SLOT_FLASH: StaticCell<Mutex<ThreadModeRawMutex, RefCell<SlotFlash>>> = StaticCell::new();
static STATE_FLASH: StaticCell<Mutex<ThreadModeRawMutex, RefCell<StateFlash>>> = StaticCell::new();
static AGENT: StaticCell<Agent<'static, Slot, Store, FixedValidator>> = StaticCell::new();

#[entry]
fn main() -> ! {
    let p = embassy_stm32::init(Default::default());
    let regions = Flash::new_blocking(p.FLASH).into_blocking_regions();
    let slot_flash = SLOT_FLASH.init(Mutex::new(RefCell::new(regions.bank2_region)));
    let state_flash = STATE_FLASH.init(Mutex::new(RefCell::new(regions.bank1_region)));
    let slots = SLOTS.map(|at| BlockingPartition::new(slot_flash, at, SLOT_BYTES));
    let Ok(store) = JournalStore::new(BlockingPartition::new(state_flash, STATE, STATE_BYTES), CONFIG.erased) else {
        reset()
    };
    match Agent::boot(&CONFIG, slots, store, FixedValidator, ARENA.take()) {
        Ok(agent) => serve(AGENT.init(agent), reset),
        Err(_) => reset(),
    }
}
