//! Offers as a device receives them: `verify` and every signed-structure decoder.
//! Properties: nothing panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_proto::{CertBody, DevicePolicy, Envelope, KeyCertificate, Limits, Manifest, Wire, verify};

/// The public key of the test root (seed 0x11..), as compiled into the test vectors.
const ROOT: [u8; 32] = [
    0xd0, 0x4a, 0xb2, 0x32, 0x74, 0x2b, 0xb4, 0xab, 0x3a, 0x13, 0x68, 0xbd, 0x46, 0x15, 0xe4, 0xe6, 0xd0, 0x22, 0x4a,
    0xb7, 0x1a, 0x01, 0x6b, 0xaf, 0x85, 0x20, 0xa3, 0x32, 0xc9, 0x77, 0x87, 0x37,
];

const POLICY: DevicePolicy<'static> = DevicePolicy {
    device_class: "stm32f4-kws",
    security_counter: 6,
    now: Some(1_800_000_000),
    limits: Limits {
        max_image_bytes: 256 * 1024,
        max_patch_bytes: 256 * 1024,
        max_arena_bytes: 64 * 1024,
        max_validation_bytes: 64 * 1024,
    },
};

fn canonical<'a, T: Wire<'a>>(data: &'a [u8]) {
    if let Ok(value) = T::parse(data) {
        let mut buf = [0u8; 2048];
        let n = value.encode_into(&mut buf).expect("a decoded value encodes");
        assert_eq!(&buf[..n], data, "a second encoding of one signed value");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = verify(data, &[ROOT], &POLICY);
    canonical::<Envelope>(data);
    canonical::<Manifest>(data);
    canonical::<KeyCertificate>(data);
    canonical::<CertBody>(data);
});
