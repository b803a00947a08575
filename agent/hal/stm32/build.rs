//! Puts the chip's memory map (`memory-<feature>.x`) where cortex-m-rt's `link.x` finds
//! it as `memory.x`.
use std::{env, fs, path::PathBuf};

fn main() {
    let chips = ["f746", "h743", "f405"];
    let chosen: Vec<&str> = chips
        .iter()
        .copied()
        .filter(|c| env::var_os(format!("CARGO_FEATURE_{}", c.to_uppercase())).is_some())
        .collect();
    let [chip] = chosen[..] else {
        panic!("enable exactly one chip feature of {chips:?} (found {chosen:?}), e.g. `--features f746 --bin f746`"); // ok: build script, not device code
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")); // ok: build script
    let map = format!("memory-{chip}.x");
    fs::copy(&map, out.join("memory.x")).expect("copy the memory map"); // ok: build script
    println!("cargo:rustc-link-search={}", out.display());
    for chip in chips {
        println!("cargo:rerun-if-changed=memory-{chip}.x");
    }
}
