//! The agent's footprint with the bundled crypto (ed25519-dalek, sha2) and the state in
//! sequential-storage's map (see `mota_firmware::size`). Run: `cargo run --release --bin
//! agent-size`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use mota_agent::MapStore;
use mota_firmware::demo::CONFIG;
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    mota_firmware::size::run(&CONFIG, |region| MapStore::new(region, 0xFF).ok())
}
