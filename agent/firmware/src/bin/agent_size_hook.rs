//! The agent's footprint with the platform's own crypto plugged into the hook
//! (`mota_proto::Crypto`): no ed25519-dalek, curve25519 or sha2 code is linked. The
//! stand-in hands every call to a hardware engine's registers (here: opaque calls), as
//! a PSA Crypto or CryptoCell binding would; it does not verify anything and never runs
//! an update. Run: `cargo run --release --bin agent-size-hook`.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use mota_agent::{Config, MapStore};
use mota_firmware::demo::CONFIG;
use mota_proto::{Crypto, Digest};
use panic_semihosting as _;

/// Stands in for a hardware crypto engine's driver.
struct Engine;

impl Crypto for Engine {
    fn verify_ed25519(&self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        black_box((key, msg, sig)).2[0] == 0
    }

    fn sha256(&self, input: &mut dyn FnMut(&mut dyn FnMut(&[u8]))) -> Digest {
        let mut state = 0u8;
        input(&mut |piece| state ^= black_box(piece).first().copied().unwrap_or(0));
        Digest([black_box(state); 32])
    }
}

static HOOKED: Config<'static> = Config { crypto: &Engine, ..CONFIG };

#[entry]
fn main() -> ! {
    mota_firmware::size::run(&HOOKED, |region| MapStore::new(region, 0xFF).ok())
}
