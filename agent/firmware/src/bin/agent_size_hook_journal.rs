//! The smallest build: the platform's own crypto in the hook (`mota_proto::Crypto`: no
//! ed25519-dalek, curve25519 or sha2 code linked) and the state in the single-write
//! journal instead of sequential-storage's map. The stand-in engine does not verify
//! anything and never runs an update. Run: `cargo run --release --bin
//! agent-size-hook-journal`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use mota_agent::JournalStore;
use mota_firmware::size::HOOKED;
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    mota_firmware::size::run(&HOOKED, |region| JournalStore::new(region, 0xFF).ok())
}
