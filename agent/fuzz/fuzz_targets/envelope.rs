//! Offers as a device receives them: `verify` and every signed-structure decoder.
//! Properties: nothing panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_proto::testkit::{POLICY, ROOT};
use mota_proto::{CertBody, Envelope, KeyCertificate, Manifest, Wire, verify};

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
