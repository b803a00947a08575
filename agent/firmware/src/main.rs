//! Verifies the wire contract's envelope vector on a Cortex-M4 (QEMU mps2-an386):
//! the genuine offer is accepted with the expected manifest, and a one-bit change is
//! refused. Exit status 0 means both held. Run: `cargo run --release`.
//!
//! It also measures, for BENCHMARKS.md: the stack the verification needs (by painting
//! the stack before and finding the deepest overwritten word after), and, with
//! `bench_start`/`bench_end` marking two regions, the instructions of `verify` (region 1)
//! next to its anchor, one plain Ed25519 verification of the same manifest (region 2),
//! counted from a QEMU exec trace (`scripts/count-instructions.sh`).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use ed25519_dalek::{Signature, VerifyingKey};
use mota_firmware::{bench_end, bench_start, paint_stack, stack_used};
use mota_proto::testkit::{POLICY, ROOT};
use mota_proto::{CertBody, Envelope, VerifyError, Wire, verify};
use panic_semihosting as _;

static ENVELOPE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envelope.bin"));

#[entry]
fn main() -> ! {
    let painted = paint_stack(48 * 1024);
    bench_start();
    let genuine = verify(ENVELOPE, &[ROOT], &POLICY);
    bench_end();
    hprintln!("verify stack bytes: {}", stack_used(painted));
    anchor();
    let genuine_ok = matches!(
        genuine,
        Ok(offer) if offer.manifest.model == "kws-dscnn" && offer.manifest.security_counter == 7 && offer.time_checked
    );
    hprintln!("genuine offer: {}", if genuine_ok { "accepted" } else { "REFUSED" });

    let mut tampered = [0u8; 512];
    let len = ENVELOPE.len().min(tampered.len());
    tampered[..len].copy_from_slice(&ENVELOPE[..len]);
    // A bit inside the manifest's security counter area.
    tampered[40] ^= 0x01;
    let refused = matches!(verify(&tampered[..len], &[ROOT], &POLICY), Err(VerifyError::SignatureInvalid));
    hprintln!("tampered offer: {}", if refused { "refused" } else { "ACCEPTED" });

    hprintln!("firmware ok: {}", genuine_ok && refused);
    debug::exit(if genuine_ok && refused { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The anchor: one plain Ed25519 verification of the same manifest bytes by the same
/// library, marked as the second region.
#[inline(never)]
fn anchor() {
    let Ok(env) = Envelope::parse(ENVELOPE) else { return };
    let Ok(body) = CertBody::parse(env.certificate.body) else { return };
    let Ok(key) = VerifyingKey::from_bytes(&body.public_key) else { return };
    let signature = Signature::from_bytes(&env.signature);
    let painted = paint_stack(48 * 1024);
    bench_start();
    let ok = key.verify_strict(env.body, &signature).is_ok();
    bench_end();
    hprintln!("anchor verify: {}, stack bytes: {}", ok, stack_used(painted));
}
