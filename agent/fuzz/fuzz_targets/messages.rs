//! Every MQTT payload and topic a device or the backend parses.
//! The first byte picks the decoder so the fuzzer can specialise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mota_proto::Wire;
use mota_proto::message::{Chunk, Get, Hello, Payload, Status};
use mota_proto::topic::{Kind, Topic};

/// Decode, encode, decode again: the second decode must give the same value.
/// (A macro, so each use gets its own lifetime for the re-encoded buffer.)
macro_rules! round_trip {
    ($ty:ty, $data:expr) => {
        if let Ok(value) = <$ty>::parse($data) {
            let mut buf = vec![0u8; value.encoded_len()];
            let n = value.encode_into(&mut buf).expect("a decoded message encodes");
            let again = <$ty>::parse(&buf[..n]).expect("an encoded message decodes");
            assert_eq!(again, value);
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let _ = Payload::parse(Kind::ALL[usize::from(which) % Kind::ALL.len()], rest);
    match which % 5 {
        0 => round_trip!(Hello, rest),
        1 => round_trip!(Get, rest),
        2 => round_trip!(Chunk, rest),
        3 => round_trip!(Status, rest),
        _ => {
            if let Ok(topic) = std::str::from_utf8(rest) {
                if let Ok(parsed) = Topic::parse(topic) {
                    assert_eq!(parsed.to_string(), topic);
                }
            }
        }
    }
});
