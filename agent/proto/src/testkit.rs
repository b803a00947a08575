//! Public test material shared by the test vectors, the fuzz targets and the firmware
//! check, so all three judge offers against the same root and device. Behind the
//! `_testkit` feature, outside semver; never enable it in product firmware: the keys
//! behind these constants come from fixed, published seeds.

use crate::error::DecodeError;
use crate::verify::{DevicePolicy, Limits};
use crate::wire::Wire;

/// Public key of the test root, whose private key is the seed `0x11` × 32.
pub const ROOT: [u8; 32] = [
    0xd0, 0x4a, 0xb2, 0x32, 0x74, 0x2b, 0xb4, 0xab, 0x3a, 0x13, 0x68, 0xbd, 0x46, 0x15, 0xe4, 0xe6, 0xd0, 0x22, 0x4a,
    0xb7, 0x1a, 0x01, 0x6b, 0xaf, 0x85, 0x20, 0xa3, 0x32, 0xc9, 0x77, 0x87, 0x37,
];

/// Trusted time at which every test vector is valid.
pub const NOW: u64 = 1_800_000_000;

/// A device that accepts the `envelope` vector.
pub const POLICY: DevicePolicy<'static> = DevicePolicy {
    device_class: "stm32f4-kws",
    security_counter: 6,
    now: Some(NOW),
    revoked: &[],
    limits: Limits {
        max_image_bytes: 256 * 1024,
        max_patch_bytes: 256 * 1024,
        max_arena_bytes: 64 * 1024,
        max_validation_bytes: 64 * 1024,
    },
};

/// Encodes `value` without its domain checks, as a buggy or hostile peer could (host
/// only): for tests that sign or send what [`Wire::encode_into`] refuses.
#[cfg(feature = "std")]
pub fn encode_unchecked<'a, T: Wire<'a>>(value: &T) -> Vec<u8> {
    crate::cbor::to_vec(value)
}

/// Decodes the CBOR shape of one value spanning `bytes`, without the size bound, the
/// domain checks and the canonical form [`Wire::parse`] insists on: what bytes mean,
/// whether or not a device would take them.
pub fn decode_unchecked<'a, T: Wire<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let mut decoder = crate::cbor::Decoder::new(bytes);
    let value = T::decode(&mut decoder)?;
    if !decoder.at_end() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(value)
}
