//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and turns the envelope test
//! vector (hex) into the bytes the firmware verifies.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    // runtime-bench keeps a 1 MiB model and a 512 KiB arena on its stack: its stack starts
    // at the top of the 4 MiB SSRAM2/3 that mps2-an386 and mps2-an500 both map at
    // 0x2000_0000 instead of memory.x's 256 KiB (cortex-m-rt PROVIDEs `_stack_start`).
    println!("cargo:rustc-link-arg-bin=runtime-bench=--defsym=_stack_start=0x20400000");

    let vector = "../proto/tests/vectors/envelope.hex";
    let text = fs::read_to_string(vector).expect("read the envelope vector");
    let hex: String = text.lines().filter(|l| !l.starts_with('#')).flat_map(str::split_whitespace).collect();
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex vector")).collect();
    fs::write(out.join("envelope.bin"), bytes).expect("write envelope.bin");
    println!("cargo:rerun-if-changed={vector}");

    // The runtime check: fixture models with their first inputs and TFLM's outputs.
    let fixtures = "../runtime/fixtures/models";
    for name in ["digits_cnn_v1", "kws_dscnn"] {
        for suffix in [".inputs.npy", ".tflm_outputs.npy"] {
            let path = format!("{fixtures}/{name}{suffix}");
            let npy = fs::read(&path).expect("read fixture");
            let header = usize::from(u16::from_le_bytes([npy[8], npy[9]]));
            let data = &npy[10 + header..];
            let rows: usize = 4;
            let total_rows: usize = std::str::from_utf8(&npy[10..10 + header])
                .expect("npy header")
                .split("'shape': (")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.trim().parse().ok())
                .expect("npy shape");
            let per_row = data.len() / total_rows;
            fs::write(out.join(format!("{name}{suffix}.bin")), &data[..rows * per_row]).expect("write rows");
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
