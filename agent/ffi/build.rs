//! Two jobs at build time:
//!
//! 1. The flash geometry. `NorFlash::WRITE_SIZE` and `ERASE_SIZE` are Rust constants, so
//!    the program unit and erase page of the C firmware's flash are chosen when the
//!    library is built: `MOTA_FLASH_WRITE_SIZE` (default 4, a power of two up to 32) and
//!    `MOTA_FLASH_ERASE_SIZE` (default 4096, a power of two, a multiple of the write size).
//!    They go into `$OUT_DIR/geometry.rs`; `mota_agent_boot` checks the platform's against
//!    them.
//! 2. The header. cbindgen generates `mota_agent.h` from the sources into `$OUT_DIR`; the
//!    build fails when it differs from the checked-in `include/mota_agent.h`, unless
//!    `MOTA_BLESS_HEADER=1`, which rewrites the checked-in one.
use std::{env, fs, path::PathBuf};

fn size(var: &str, default: u32) -> u32 {
    println!("cargo:rerun-if-env-changed={var}");
    match env::var(var) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a number of bytes")),
        Err(_) => default,
    }
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let crate_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));

    let write = size("MOTA_FLASH_WRITE_SIZE", 4);
    let erase = size("MOTA_FLASH_ERASE_SIZE", 4096);
    assert!(
        write.is_power_of_two() && write <= 32,
        "MOTA_FLASH_WRITE_SIZE={write}: the agent needs a power of two up to 32"
    );
    assert!(
        erase.is_power_of_two() && erase >= write,
        "MOTA_FLASH_ERASE_SIZE={erase}: must be a power of two, at least MOTA_FLASH_WRITE_SIZE"
    );
    let geometry = format!(
        "/// Program unit (MOTA_FLASH_WRITE_SIZE).\npub const WRITE_SIZE: usize = {write};\n\
         /// Erase page (MOTA_FLASH_ERASE_SIZE).\npub const ERASE_SIZE: usize = {erase};\n"
    );
    fs::write(out.join("geometry.rs"), geometry).expect("write geometry.rs");

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=include/mota_agent.h");
    println!("cargo:rerun-if-env-changed=MOTA_BLESS_HEADER");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let generated = out.join("mota_agent.h");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write_to_file(&generated);
    let fresh = fs::read_to_string(&generated).expect("read the generated header");
    let checked_in = crate_dir.join("include/mota_agent.h");
    let current = fs::read_to_string(&checked_in).unwrap_or_default();
    if fresh != current {
        if env::var("MOTA_BLESS_HEADER").is_ok_and(|v| v == "1") {
            fs::write(&checked_in, &fresh).expect("write include/mota_agent.h");
        } else {
            panic!(
                "include/mota_agent.h is out of date with the sources (the generated one is {}).\n\
                 Regenerate it: MOTA_BLESS_HEADER=1 cargo build --manifest-path agent/ffi/Cargo.toml, \
                 and commit it.",
                generated.display()
            );
        }
    }
}
