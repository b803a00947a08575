//! Patch bytes as a device receives them, in chunks of fuzzer-chosen sizes, against a
//! fixed base: the decoder must never panic, never read outside the base and never write
//! past the declared target. The first byte picks the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_delta::{Base, Decoder, IoError, Sink};
use sha2::Digest;

/// A 3 KiB base that is not all one value.
fn base() -> [u8; 3072] {
    let mut b = [0u8; 3072];
    for (i, v) in b.iter_mut().enumerate() {
        *v = (i * 31 % 251) as u8;
    }
    b
}

struct Strict<'a>(&'a [u8]);

impl Base for Strict<'_> {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let start = offset as usize;
        let part = self.0.get(start..start + buf.len()).expect("decoder read outside the base");
        buf.copy_from_slice(part);
        Ok(())
    }
}

struct Bounded {
    written: usize,
    limit: usize,
}

impl Sink for Bounded {
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.written += bytes.len();
        assert!(self.written <= self.limit, "decoder wrote past the target size");
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, patch)) = data.split_first() else { return };
    let base = base();
    // Patches from the seed corpus name this base's digest.
    let digest: [u8; 32] = sha2::Sha256::digest(base).into();
    let limit = 64 * 1024;
    let mut decoder = Decoder::new(digest, base.len() as u32, limit as u32);
    let mut sink = Bounded { written: 0, limit };
    for piece in patch.chunks(usize::from(chunk).max(1)) {
        if decoder.push(piece, &mut Strict(&base), &mut sink).is_err() {
            return;
        }
    }
    let _ = decoder.finish();
});
