//! Every MQTT payload and topic a device or the backend parses.
//! The first byte picks the decoder so the fuzzer can specialise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_proto::Wire;
use mota_proto::message::{Chunk, Cmd, Get, Hello, Status};
use mota_proto::topic::Topic;

fn round_trip<'a, T: Wire<'a> + PartialEq + core::fmt::Debug>(data: &'a [u8]) {
    if let Ok(value) = T::parse(data) {
        let mut buf = vec![0u8; value.encoded_len()];
        let n = value.encode_into(&mut buf).expect("a decoded message encodes");
        let again = T::parse(&buf[..n]).expect("an encoded message decodes");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 6 {
        0 => round_trip::<Hello>(rest),
        1 => round_trip::<Get>(rest),
        2 => round_trip::<Chunk>(rest),
        3 => round_trip::<Status>(rest),
        4 => round_trip::<Cmd>(rest),
        _ => {
            if let Ok(topic) = std::str::from_utf8(rest) {
                if let Ok(parsed) = Topic::parse(topic) {
                    assert_eq!(parsed.to_string(), topic);
                }
            }
        }
    }
});
