//! `mota delta make` and `apply` end to end on fixture models.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/runtime/fixtures/models").join(name)
}

fn mota(args: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mota")).args(args).output().unwrap()
}

#[test]
fn make_then_apply_rebuilds_the_new_model_and_a_wrong_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (fixture("digits_cnn_v1.tflite"), fixture("digits_cnn_v2.tflite"));
    let patch = dir.path().join("p.mdlt");
    let rebuilt = dir.path().join("v2.tflite");
    let made = mota(&[Path::new("delta"), Path::new("make"), &old, &new, Path::new("-o"), &patch]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).contains("(delta)"));
    let applied = mota(&[Path::new("delta"), Path::new("apply"), &old, &patch, Path::new("-o"), &rebuilt]);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    assert_eq!(std::fs::read(&rebuilt).unwrap(), std::fs::read(&new).unwrap());
    assert!(std::fs::metadata(&patch).unwrap().len() * 2 < std::fs::metadata(&new).unwrap().len());

    let wrong = mota(&[
        Path::new("delta"),
        Path::new("apply"),
        &fixture("digits_mlp.tflite"),
        &patch,
        Path::new("-o"),
        &rebuilt,
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("another base"));
}
