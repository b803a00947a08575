//! Validation sets: built from `.npy` data, evaluated on the device's interpreter, and the
//! accuracy is TFLM's.

use std::time::Instant;

use mota_runtime::validation::{self, ClassCount, Clock, SetError, ValidationSet};
use mota_runtime::{DType, Interpreter, Model};

use crate::fixtures;

struct HostClock(Instant);

impl Clock for HostClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

fn labels(f: &fixtures::Fixture) -> Vec<u16> {
    let npy =
        mota_runtime::npy::Npy::parse(&std::fs::read(fixtures::dir().join(format!("{}.labels.npy", f.name))).unwrap())
            .unwrap();
    assert_eq!(npy.descr, "<i4");
    npy.data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u16).collect()
}

fn digits_set(name: &str) -> (fixtures::Fixture, Vec<u8>) {
    let f = fixtures::load(name);
    let set = validation::build(DType::Int8, &[1, 8, 8, 1], &f.inputs.data, Some((&labels(&f), 10)), None).unwrap();
    (f, set)
}

#[test]
fn accuracy_on_device_equals_tflm_accuracy() {
    for name in ["digits_cnn_v1", "digits_cnn_v2", "digits_cnn_v3_bad", "digits_mlp"] {
        let f = fixtures::load(name);
        let input = Model::parse(&f.model).unwrap().input(0).unwrap();
        let dims: Vec<usize> = input.shape.dims().to_vec();
        let set_bytes = validation::build(DType::Int8, &dims, &f.inputs.data, Some((&labels(&f), 10)), None).unwrap();
        let set = ValidationSet::parse(&set_bytes).unwrap();
        let model = Model::parse(&f.model).unwrap();
        let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
        let mut interp = Interpreter::new(model, &mut arena).unwrap();
        let mut classes = [ClassCount::default(); 10];
        let report = validation::evaluate(&mut interp, &set, &HostClock(Instant::now()), Some(&mut classes)).unwrap();
        let tflm = f.meta["tflm_accuracy"].as_f64().unwrap();
        assert_eq!(report.records, 300);
        assert_eq!(report.correct, (tflm * 300.0).round() as u32, "{name}");
        assert_eq!(report.accuracy_permille, (tflm * 1000.0) as u16, "{name}");
        assert_eq!(classes.iter().map(|c| c.seen).sum::<u32>(), 300);
        assert_eq!(classes.iter().map(|c| c.correct).sum::<u32>(), report.correct);
        assert!(report.max_latency_us >= report.mean_latency_us);
        assert_eq!(report.arena_used as usize, arena_len(&f.model));
    }
}

fn arena_len(model: &[u8]) -> usize {
    mota_runtime::arena_size(&Model::parse(model).unwrap()).unwrap()
}

#[test]
fn expected_outputs_match_exactly_and_detect_a_different_model() {
    let f = fixtures::load("ad_autoencoder");
    let set_bytes = validation::build(DType::Int8, &[1, 64], &f.inputs.data, None, Some((&f.outputs.data, 0))).unwrap();
    let set = ValidationSet::parse(&set_bytes).unwrap();
    let model = Model::parse(&f.model).unwrap();
    let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
    let mut interp = Interpreter::new(model, &mut arena).unwrap();
    let report = validation::evaluate(&mut interp, &set, &HostClock(Instant::now()), None).unwrap();
    assert_eq!(report.correct, report.records, "TFLM's own outputs are reproduced exactly");
}

#[test]
fn malformed_sets_and_mismatched_models_are_refused() {
    let (f, set) = digits_set("digits_cnn_v1");
    assert!(ValidationSet::parse(&set).is_ok());
    assert_eq!(
        ValidationSet::parse(&set[..set.len() - 1]).err(),
        Some(SetError::Length { expected: set.len(), actual: set.len() - 1 })
    );
    assert_eq!(ValidationSet::parse(b"MOTAVSET").err(), Some(SetError::NotASet));
    let mut bad_magic = set.clone();
    bad_magic[0] = b'X';
    assert_eq!(ValidationSet::parse(&bad_magic).err(), Some(SetError::NotASet));
    // A digits set on the MLP (input 1x64) is refused for its shape.
    let mlp = fixtures::load("digits_mlp");
    let model = Model::parse(&mlp.model).unwrap();
    let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
    let mut interp = Interpreter::new(model, &mut arena).unwrap();
    let parsed = ValidationSet::parse(&set).unwrap();
    assert_eq!(
        validation::evaluate(&mut interp, &parsed, &HostClock(Instant::now()), None).err(),
        Some(SetError::ModelMismatch("input shape"))
    );
    // A label beyond the class count.
    let mut labels = labels(&f);
    labels[3] = 12;
    let bad = validation::build(DType::Int8, &[1, 8, 8, 1], &f.inputs.data, Some((&labels, 10)), None).unwrap();
    let model = Model::parse(&f.model).unwrap();
    let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
    let mut interp = Interpreter::new(model, &mut arena).unwrap();
    assert_eq!(
        validation::evaluate(&mut interp, &ValidationSet::parse(&bad).unwrap(), &HostClock(Instant::now()), None).err(),
        Some(SetError::BadLabel(3))
    );
}

/// Sets for uint8- and int16-input models: expected outputs reproduced exactly, and
/// labels read as the argmax of TFLM's own outputs in the output's type.
#[test]
fn uint8_and_int16_models_validate() {
    for (name, dtype, out_bytes) in [("uint8_io", DType::UInt8, 1), ("net_16x8", DType::Int16, 2)] {
        let f = fixtures::load(name);
        let model = Model::parse(&f.model).unwrap();
        let dims = model.input(0).unwrap().shape.dims().to_vec();
        let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
        let mut interp = Interpreter::new(model, &mut arena).unwrap();
        let set_bytes = validation::build(dtype, &dims, &f.inputs.data, None, Some((&f.outputs.data, 0))).unwrap();
        let set = ValidationSet::parse(&set_bytes).unwrap();
        let report = validation::evaluate(&mut interp, &set, &HostClock(Instant::now()), None).unwrap();
        assert_eq!((report.correct, report.records), (f.inputs.rows() as u32, f.inputs.rows() as u32), "{name}");

        let classes = f.outputs.data.len() / f.inputs.rows() / out_bytes;
        let value = |row: &[u8], k: usize| match dtype {
            DType::UInt8 => i32::from(row[k]),
            _ => i32::from(i16::from_le_bytes([row[2 * k], row[2 * k + 1]])),
        };
        let labels: Vec<u16> = (0..f.outputs.rows())
            .map(|r| {
                let row = f.outputs.row(r).unwrap();
                // The first maximum, as argmax takes it.
                (0..classes).rev().max_by_key(|&k| value(row, k)).unwrap() as u16
            })
            .collect();
        let set_bytes = validation::build(dtype, &dims, &f.inputs.data, Some((&labels, classes as u32)), None).unwrap();
        let set = ValidationSet::parse(&set_bytes).unwrap();
        let report = validation::evaluate(&mut interp, &set, &HostClock(Instant::now()), None).unwrap();
        assert_eq!(report.accuracy_permille, 1000, "{name}");
    }
}
