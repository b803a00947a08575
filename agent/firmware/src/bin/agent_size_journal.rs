//! The agent's footprint with the state in the single-write journal (`JournalStore`)
//! instead of sequential-storage's map, bundled crypto otherwise. Run: `cargo run
//! --release --bin agent-size-journal`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use mota_agent::JournalStore;
use mota_firmware::demo::CONFIG;
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    mota_firmware::size::run(&CONFIG, |region| JournalStore::new(region, 0xFF).ok())
}
