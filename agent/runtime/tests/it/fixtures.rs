//! The committed fixture models and TFLM's recorded results for them
//! (`fixtures/README.md` says how they were made).

use std::path::PathBuf;

use mota_runtime::npy::Npy;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

/// Names of every fixture model.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".tflite").map(str::to_owned))
        .collect();
    names.sort();
    names
}

pub struct Fixture {
    pub name: String,
    pub model: Vec<u8>,
    pub inputs: Npy,
    pub outputs: Npy,
    pub meta: serde_json::Value,
}

pub fn load(name: &str) -> Fixture {
    let read = |suffix: &str| std::fs::read(dir().join(format!("{name}{suffix}"))).unwrap();
    Fixture {
        name: name.to_owned(),
        model: read(".tflite"),
        inputs: Npy::parse(&read(".inputs.npy")).unwrap(),
        outputs: Npy::parse(&read(".tflm_outputs.npy")).unwrap(),
        meta: serde_json::from_slice(&read(".json")).unwrap(),
    }
}
