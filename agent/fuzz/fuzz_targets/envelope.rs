//! Offers, commands and revocation lists as a device receives them: `verify`,
//! `verify_command`, `verify_revocation` and every signed-structure decoder.
//! Properties: nothing panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_proto::testkit::{POLICY, ROOT};
use mota_proto::{
    CertBody, CommandBody, Envelope, KeyCertificate, Manifest, RevocationBody, Wire, verify, verify_command,
    verify_revocation,
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
    let _ = verify_command(data, &[ROOT], &[], None, "kws-0042");
    let _ = verify_revocation(data, &[ROOT]);
    canonical::<CommandBody>(data);
    canonical::<RevocationBody>(data);
    canonical::<Envelope>(data);
    canonical::<Manifest>(data);
    canonical::<KeyCertificate>(data);
    canonical::<CertBody>(data);
});
