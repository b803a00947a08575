//! Selects the Cortex-M DSP kernels (`cfg(mota_dsp)`) on targets whose cores all have the
//! DSP extension: every ARMv7E-M (`thumbv7em*`: Cortex-M4 and M7), and any ARM target built
//! with `target-feature=+dsp` (an ARMv8-M Mainline core such as the Cortex-M33 that has
//! it). Every other target uses the portable kernels.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mota_dsp)");
    println!("cargo::rerun-if-env-changed=MOTA_PORTABLE_KERNELS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let dsp = target.starts_with("thumbv7em") || (arch == "arm" && features.split(',').any(|f| f == "dsp"));
    // For measuring the portable kernels on a DSP core (BENCHMARKS.md's side-by-side runs).
    let forced_portable = std::env::var_os("MOTA_PORTABLE_KERNELS").is_some();
    if dsp && !forced_portable {
        println!("cargo::rustc-cfg=mota_dsp");
    }
}
