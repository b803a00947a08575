//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and turns the envelope test
//! vector (hex) into the bytes the firmware verifies.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let vector = "../proto/tests/vectors/envelope.hex";
    let text = fs::read_to_string(vector).expect("read the envelope vector");
    let hex: String = text.lines().filter(|l| !l.starts_with('#')).flat_map(str::split_whitespace).collect();
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex vector")).collect();
    fs::write(out.join("envelope.bin"), bytes).expect("write envelope.bin");
    println!("cargo:rerun-if-changed={vector}");
}
