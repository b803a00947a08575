//! Bit-exactness with TFLM on every fixture model and input, and arenas no larger than
//! TFLM's.

use mota_runtime::{Interpreter, Model, Op, PreparedOp};

use crate::fixtures;

/// Runs every input of a fixture with `cached` of its operators prepared once (the rest
/// at each invoke); returns the number of mismatching output bytes.
fn mismatches(f: &fixtures::Fixture, cached: usize) -> Result<usize, String> {
    let model = Model::parse(&f.model).map_err(|e| format!("{}: {e}", f.name))?;
    let size = mota_runtime::arena_size(&model).map_err(|e| e.to_string())?;
    let mut arena = vec![0u8; size];
    let mut cache = vec![PreparedOp::EMPTY; cached];
    let mut interp = Interpreter::with_cache(model, &mut arena, &mut cache).map_err(|e| e.to_string())?;
    let mut bad = 0;
    for row in 0..f.inputs.rows() {
        interp.input(0).unwrap().copy_from_slice(f.inputs.row(row).unwrap());
        interp.invoke().map_err(|e| format!("{} row {row}: {e}", f.name))?;
        let got = interp.output(0).unwrap();
        let want = f.outputs.row(row).unwrap();
        bad += got.iter().zip(want).filter(|(a, b)| a != b).count();
    }
    Ok(bad)
}

/// Prepared at every invoke, once for all operators, and once for the first half only:
/// the same bytes as TFLM's every time.
#[test]
fn every_fixture_is_bit_exact_with_tflm() {
    let mut failures = Vec::new();
    for name in fixtures::names() {
        let f = fixtures::load(&name);
        let ops = Model::parse(&f.model).map_or(0, |m| m.operator_count());
        for cached in [0, ops, ops / 2] {
            match mismatches(&f, cached) {
                Ok(0) => {}
                Ok(n) => failures.push(format!("{name} ({cached} cached): {n} output bytes differ from TFLM")),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn arenas_are_no_larger_than_tflm() {
    for name in fixtures::names() {
        let f = fixtures::load(&name);
        let Ok(model) = Model::parse(&f.model) else { continue };
        let ours = mota_runtime::arena_size(&model).unwrap();
        let tflm = f.meta["tflm_arena_bytes"].as_u64().unwrap() as usize;
        assert!(ours <= tflm, "{name}: arena {ours} > TFLM's {tflm}");
    }
}

/// Each operator added for real models' sake runs, standalone, in some fixture, and what
/// the runtime reads from every fixture is the operator list the script recorded.
#[test]
fn fixtures_cover_every_data_movement_and_activation_operator() {
    let mut seen = std::collections::BTreeSet::new();
    for name in fixtures::names() {
        let f = fixtures::load(&name);
        let model = Model::parse(&f.model).unwrap();
        let ops: Vec<&str> = (0..model.operator_count()).map(|i| model.operator(i).unwrap().op.name()).collect();
        let recorded: Vec<&str> = f.meta["ops"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
        assert_eq!(ops, recorded, "{name}");
        seen.extend(ops);
    }
    for op in [
        Op::Relu,
        Op::Relu6,
        Op::Minimum,
        Op::Maximum,
        Op::Prelu,
        Op::Squeeze,
        Op::ExpandDims,
        Op::StridedSlice,
        Op::Shape,
        Op::Pack,
        Op::Unpack,
        Op::Transpose,
        Op::Split,
        Op::SplitV,
        Op::Gather,
        Op::ArgMax,
        Op::ArgMin,
        Op::TransposeConv,
        Op::ResizeNearestNeighbor,
    ] {
        assert!(seen.contains(op.name()), "no fixture runs {}", op.name());
    }
}
