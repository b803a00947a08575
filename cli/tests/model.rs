//! `mota model` and `mota valset` end to end on the runtime's fixture models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/runtime/fixtures/models").join(name)
}

fn mota(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mota")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = mota(args);
    assert!(out.status.success(), "mota {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_reports_ops_arena_and_support() {
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["model", "inspect", s(&fixture("kws_dscnn.tflite")), "--json"])).unwrap();
    assert_eq!(json["supported"], true);
    assert_eq!(json["operators"].as_array().unwrap().len(), 10);
    assert_eq!(json["inputs"][0]["shape"], serde_json::json!([1, 49, 10, 1]));
    assert!(json["arena_bytes"].as_u64().unwrap() > 0);

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tflite");
    std::fs::write(&junk, b"definitely not a flatbuffer").unwrap();
    let out = mota(&["model", "inspect", s(&junk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("supported   NO"));
}

#[test]
fn run_reproduces_tflm_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npy");
    ok(&[
        "model",
        "run",
        s(&fixture("digits_cnn_v1.tflite")),
        "--inputs",
        s(&fixture("digits_cnn_v1.inputs.npy")),
        "--out",
        s(&out),
    ]);
    let ours = mota_runtime::npy::Npy::parse(&std::fs::read(&out).unwrap()).unwrap();
    let tflm =
        mota_runtime::npy::Npy::parse(&std::fs::read(fixture("digits_cnn_v1.tflm_outputs.npy")).unwrap()).unwrap();
    assert_eq!(ours, tflm);

    let wrong = mota(&[
        "model",
        "run",
        s(&fixture("digits_cnn_v1.tflite")),
        "--inputs",
        s(&fixture("digits_cnn_v1.labels.npy")),
        "--out",
        s(&out),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("dtype"));
}

#[test]
fn valset_make_then_eval_catches_the_degraded_model() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("digits.mvs");
    ok(&[
        "valset",
        "make",
        s(&fixture("digits_cnn_v1.tflite")),
        "--inputs",
        s(&fixture("digits_cnn_v1.inputs.npy")),
        "--labels",
        s(&fixture("digits_cnn_v1.labels.npy")),
        "-o",
        s(&set),
    ]);
    let eval = |model: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&["model", "eval", s(&fixture(model)), s(&set), "--json"])).unwrap()
    };
    assert_eq!(eval("digits_cnn_v1.tflite")["accuracy_permille"], 956);
    assert_eq!(eval("digits_cnn_v2.tflite")["accuracy_permille"], 953);
    assert!(eval("digits_cnn_v3_bad.tflite")["accuracy_permille"].as_u64().unwrap() < 200);
}
