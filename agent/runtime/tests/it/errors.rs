//! Bad models get a typed error that names the operator or tensor, and never a panic.

use mota_runtime::flatbuffer::{FbError, Table};
use mota_runtime::kernels::OpError;
use mota_runtime::model::{Location, TensorProblem};
use mota_runtime::{Interpreter, Model, ModelError, Op, RunError};

use crate::fixtures;

fn mlp() -> Vec<u8> {
    fixtures::load("digits_mlp").model
}

/// Position of field `field` of element `index` of vector `vector` of the root table (or
/// of the subgraph's vector when `in_subgraph`).
fn position(model: &[u8], in_subgraph: bool, vector: usize, index: usize, field: usize) -> usize {
    let root = Table::root(model).unwrap();
    let table = if in_subgraph { root.vector(2).unwrap().unwrap().table(0).unwrap() } else { root };
    table.vector(vector).unwrap().unwrap().table(index).unwrap().field_position(field).unwrap().unwrap()
}

#[test]
fn unsupported_operator() {
    let mut m = mlp();
    // OperatorCode 0: deprecated_builtin_code (i8, field 0) and builtin_code (i32, field 3).
    let deprecated = position(&m, false, 1, 0, 0);
    m[deprecated] = 127;
    let code = position(&m, false, 1, 0, 3);
    m[code..code + 4].copy_from_slice(&200i32.to_le_bytes());
    assert!(
        matches!(Model::parse(&m), Err(ModelError::UnsupportedOp { code: 200, .. })),
        "{:?}",
        Model::parse(&m).err()
    );
}

#[test]
fn wrong_input_type() {
    let mut m = mlp();
    let model = Model::parse(&m).unwrap();
    let input = model.input(0).unwrap().index;
    // Tensor field 1 is the type: int8 (9) -> int32 (2).
    let at = position(&m, true, 0, input, 1);
    m[at] = 2;
    assert_eq!(
        Model::parse(&m).err(),
        Some(ModelError::Operator { index: 0, op: Op::FullyConnected, problem: OpError::Type("expected int8") })
    );
    m[at] = 3; // uint8: not a type the runtime takes at all
    assert_eq!(Model::parse(&m).err(), Some(ModelError::Tensor { index: input, problem: TensorProblem::Type(3) }));
}

#[test]
fn arena_too_small() {
    let m = mlp();
    let model = Model::parse(&m).unwrap();
    let size = mota_runtime::arena_size(&model).unwrap();
    let mut arena = vec![0u8; size - 1];
    assert_eq!(
        Interpreter::new(model, &mut arena).err(),
        Some(RunError::ArenaTooSmall { needed: size, available: size - 1 })
    );
    let mut tiny = [0u8; 8];
    assert!(matches!(Interpreter::new(model, &mut tiny), Err(RunError::ArenaTooSmall { .. })));
    let mut exact = vec![0u8; size];
    assert!(Interpreter::new(model, &mut exact).is_ok());
}

#[test]
fn every_truncation_is_refused() {
    let m = mlp();
    for len in 0..m.len() {
        assert!(Model::parse(&m[..len]).is_err(), "truncated to {len} bytes and accepted");
    }
}

#[test]
fn corrupted_buffer_offset() {
    let mut m = mlp();
    // The first buffer with data: point its data vector past the end of the file.
    let model = Model::parse(&m).unwrap();
    let weights = (0..model.tensor_count()).find(|&t| model.tensor(t).unwrap().data.is_some()).unwrap();
    let buffer_field = position(&m, true, 0, weights, 2);
    let buffer = u32::from_le_bytes(m[buffer_field..buffer_field + 4].try_into().unwrap()) as usize;
    let data = position(&m, false, 4, buffer, 0);
    m[data..data + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    assert_eq!(
        Model::parse(&m).err(),
        Some(ModelError::Malformed { at: Location::Buffer(buffer), error: FbError::OutOfBounds })
    );
}

#[test]
fn random_corruption_never_panics() {
    for name in ["digits_cnn_v1", "kws_dscnn", "ad_autoencoder"] {
        let f = fixtures::load(name);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..300 {
            let mut m = f.model.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % m.len();
                m[i] ^= (state >> 32) as u8 | 1;
            }
            let Ok(model) = Model::parse(&m) else { continue };
            let Ok(size) = mota_runtime::arena_size(&model) else { continue };
            if size > 1 << 20 {
                continue;
            }
            let mut arena = vec![0u8; size];
            if let Ok(mut interp) = Interpreter::new(model, &mut arena) {
                if let Ok(input) = interp.input(0) {
                    input.fill(7);
                }
                let _ = interp.invoke();
            }
        }
    }
}
