//! Puts the build's memory map (`memory-nvmc.x` or `memory-s140.x`: the application
//! starts after the SoftDevice under S140) where cortex-m-rt's `link.x` finds it.
use std::{env, fs, path::PathBuf};

fn main() {
    let builds = ["nvmc", "s140"];
    let chosen: Vec<&str> = builds
        .iter()
        .copied()
        .filter(|b| env::var_os(format!("CARGO_FEATURE_{}", b.to_uppercase())).is_some())
        .collect();
    let [build] = chosen[..] else {
        panic!("enable exactly one of the features {builds:?} (found {chosen:?}), e.g. `--features nvmc --bin nvmc`"); // ok: build script, not device code
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")); // ok: build script
    fs::copy(format!("memory-{build}.x"), out.join("memory.x")).expect("copy the memory map"); // ok: build script
    println!("cargo:rustc-link-search={}", out.display());
    for build in builds {
        println!("cargo:rerun-if-changed=memory-{build}.x");
    }
}
