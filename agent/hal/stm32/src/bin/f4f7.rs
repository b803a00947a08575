//! mota-agent on the multiwrite STM32F4 and F7 (their main flash has no ECC: the state is
//! a map), one layout per chip: slots in the two top sectors of region 3, the state
//! region in three sectors of region 1; `memory-<chip>.x` has the whole map.
//! - STM32F746NG (the digits benchmark board): 256 KiB slot sectors 6 and 7, 32 KiB
//!   state sectors 1 to 3.
//! - STM32F405RG (the chip of QEMU's netduinoplus2 machine, which does not model its
//!   clock or flash controllers, so this is a build for boards; README.md has the QEMU
//!   attempt): 128 KiB slot sectors 10 and 11, 16 KiB state sectors 1 to 3.
#![no_std]
#![no_main]

use core::cell::RefCell;

use cortex_m_rt::entry;
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_stm32::flash::{Bank1Region1, Bank1Region3, Blocking, Flash};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::ThreadModeRawMutex;
use mota_agent::{Agent, Config, MapStore};
use mota_hal_common::{ARENA_BYTES, FixedValidator, config, serve};
use mota_hal_stm32::{Multiwrite, reset};
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};

#[cfg(feature = "f746")]
mod layout {
    /// Region 3 (0x0804_0000, 256 KiB sectors): sectors 6 and 7.
    pub const SLOTS: [u32; 2] = [0x4_0000, 0x8_0000];
    pub const SLOT_BYTES: u32 = 256 * 1024;
    /// Region 1 (0x0800_0000, 32 KiB sectors): sectors 1 to 3.
    pub const STATE: u32 = 0x8000;
    pub const STATE_BYTES: u32 = 3 * 32 * 1024;
    pub const DEVICE: (&str, &str) = ("stm32f746-1", "stm32f746-digits");
}

#[cfg(feature = "f405")]
mod layout {
    /// Region 3 (0x0802_0000, 128 KiB sectors): sectors 10 and 11.
    pub const SLOTS: [u32; 2] = [0xA_0000, 0xC_0000];
    pub const SLOT_BYTES: u32 = 128 * 1024;
    /// Region 1 (0x0800_0000, 16 KiB sectors): sectors 1 to 3.
    pub const STATE: u32 = 0x4000;
    pub const STATE_BYTES: u32 = 3 * 16 * 1024;
    pub const DEVICE: (&str, &str) = ("stm32f405-1", "stm32f405-digits");
}

use layout::{DEVICE, SLOT_BYTES, SLOTS, STATE, STATE_BYTES};

type SlotFlash = Bank1Region3<'static, Blocking>;
type StateFlash = Multiwrite<Bank1Region1<'static, Blocking>>;
type Slot = BlockingPartition<'static, ThreadModeRawMutex, SlotFlash>;
type StateRegion = BlockingPartition<'static, ThreadModeRawMutex, StateFlash>;

static CONFIG: Config<'static> = config(DEVICE.0, DEVICE.1, SLOT_BYTES, 0xFF);
static ARENA: ConstStaticCell<[u8; ARENA_BYTES]> = ConstStaticCell::new([0; ARENA_BYTES]);
static SLOT_FLASH: StaticCell<Mutex<ThreadModeRawMutex, RefCell<SlotFlash>>> = StaticCell::new();
static STATE_FLASH: StaticCell<Mutex<ThreadModeRawMutex, RefCell<StateFlash>>> = StaticCell::new();
static AGENT: StaticCell<Agent<'static, Slot, MapStore<StateRegion>, FixedValidator>> = StaticCell::new();

#[entry]
fn main() -> ! {
    let p = embassy_stm32::init(Default::default());
    let regions = Flash::new_blocking(p.FLASH).into_blocking_regions();
    let slot_flash = SLOT_FLASH.init(Mutex::new(RefCell::new(regions.bank1_region3)));
    let state_flash = STATE_FLASH.init(Mutex::new(RefCell::new(Multiwrite(regions.bank1_region1))));
    let slots = SLOTS.map(|at| BlockingPartition::new(slot_flash, at, SLOT_BYTES));
    let Ok(store) = MapStore::new(BlockingPartition::new(state_flash, STATE, STATE_BYTES), CONFIG.erased) else {
        reset()
    };
    match Agent::boot(&CONFIG, slots, store, FixedValidator, ARENA.take()) {
        Ok(agent) => serve(AGENT.init(agent), reset),
        Err(_) => reset(),
    }
}
