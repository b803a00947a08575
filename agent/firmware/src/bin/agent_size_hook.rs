//! The agent's footprint with the platform's own crypto plugged into the hook
//! (`mota_proto::Crypto`): no ed25519-dalek, curve25519 or sha2 code is linked. The
//! stand-in hands every call to a hardware engine's registers (here: opaque calls), as
//! a PSA Crypto or CryptoCell binding would; it does not verify anything and never runs
//! an update. Run: `cargo run --release --bin agent-size-hook`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use mota_agent::MapStore;
use mota_firmware::size::HOOKED;
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    mota_firmware::size::run(&HOOKED, |region| MapStore::new(region, 0xFF).ok())
}
