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

/// A 16x8 LOGISTIC is refused by name (its RELU's operator code rewritten): TFLM's int16
/// sigmoid table is not reproduced, so its results could not be bit-exact.
#[test]
fn int16_logistic_is_refused_by_name() {
    let mut m = fixtures::load("net_16x8").model;
    let model = Model::parse(&m).unwrap();
    let relu = (0..model.operator_count()).find(|&i| model.operator(i).unwrap().op == Op::Relu).unwrap();
    // OperatorCode: deprecated_builtin_code (i8, field 0) and builtin_code (i32, field 3);
    // RELU is 19, LOGISTIC 14.
    let codes = Table::root(&m).unwrap().vector(1).unwrap().unwrap();
    let code = (0..codes.len()).find(|&k| codes.table(k).unwrap().scalar::<i32>(3, 0).unwrap() == 19).unwrap();
    let deprecated = position(&m, false, 1, code, 0);
    let builtin = position(&m, false, 1, code, 3);
    m[deprecated] = 14;
    m[builtin..builtin + 4].copy_from_slice(&14i32.to_le_bytes());
    assert_eq!(
        Model::parse(&m).err(),
        Some(ModelError::Operator {
            index: relu,
            op: Op::Logistic,
            problem: OpError::Unsupported("16x8 LOGISTIC and TANH (TFLM's int16 sigmoid table)")
        })
    );
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
        Some(ModelError::Operator {
            index: 0,
            op: Op::FullyConnected,
            problem: OpError::Type("expected int8 or int16")
        })
    );
    // As uint8, the input's negative int8 zero point is out of range.
    m[at] = 3;
    assert_eq!(Model::parse(&m).err(), Some(ModelError::Tensor { index: input, problem: TensorProblem::Quantization }));
    m[at] = 6; // bool: not a type the runtime takes at all
    assert_eq!(Model::parse(&m).err(), Some(ModelError::Tensor { index: input, problem: TensorProblem::Type(6) }));
    // An int16 input with an int8 output is refused, not run.
    m[at] = 7;
    assert_eq!(
        Model::parse(&m).err(),
        Some(ModelError::Operator { index: 0, op: Op::FullyConnected, problem: OpError::Type("expected int16") })
    );
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
    for name in [
        "digits_cnn_v1",
        "kws_dscnn",
        "ad_autoencoder",
        "conv1d_flatten",
        "split_stack",
        "slice_gather",
        "upsample_tconv",
    ] {
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

/// The index of the first operator `op` in `model`.
fn find(model: &[u8], op: Op) -> usize {
    let m = Model::parse(model).unwrap();
    (0..m.operator_count()).find(|&i| m.operator(i).unwrap().op == op).unwrap()
}

/// Position in `model` of the constant data of input `input` of operator `index`.
fn constant(model: &[u8], index: usize, input: usize) -> usize {
    let m = Model::parse(model).unwrap();
    let op = m.operator(index).unwrap();
    let data = m.tensor(op.input(input).unwrap() as usize).unwrap().data.unwrap();
    data.as_ptr() as usize - model.as_ptr() as usize
}

fn put_i32(model: &mut [u8], at: usize, value: i32) {
    model[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Position of field `field` of operator `index`'s builtin options.
fn option(model: &[u8], index: usize, field: usize) -> usize {
    let op = Table::root(model).unwrap().vector(2).unwrap().unwrap().table(0).unwrap();
    let op = op.vector(3).unwrap().unwrap().table(index).unwrap();
    op.table(4).unwrap().unwrap().field_position(field).unwrap().unwrap()
}

/// Rewrites the builtin code of operator `index`'s operator code.
fn set_code(model: &mut [u8], index: usize, code: u8) {
    let op = Table::root(model).unwrap().vector(2).unwrap().unwrap().table(0).unwrap();
    let op = op.vector(3).unwrap().unwrap().table(index).unwrap();
    let opcode = op.scalar::<u32>(0, 0).unwrap() as usize;
    let deprecated = position(model, false, 1, opcode, 0);
    model[deprecated] = code;
    let code_at = position(model, false, 1, opcode, 3);
    put_i32(model, code_at, i32::from(code));
}

fn refused(model: &[u8], op: Op, problem: OpError) {
    match Model::parse(model) {
        Err(ModelError::Operator { op: o, problem: p, .. }) => assert_eq!((o, p), (op, problem)),
        other => panic!("{op:?}: expected {problem:?}, got {:?}", other.err()),
    }
}

#[test]
fn relu_n1_to_1_is_refused_by_name_as_tflm_has_no_kernel_for_it() {
    let mut m = fixtures::load("activations").model;
    let relu = find(&m, Op::Relu);
    set_code(&mut m, relu, 20);
    refused(&m, Op::ReluN1To1, OpError::Unsupported("TFLM has no RELU_N1_TO_1 kernel"));
}

#[test]
fn single_output_operators_with_several_outputs_are_refused() {
    // UNPACK has four outputs; the same operator read as an ADD must not.
    let mut m = fixtures::load("split_stack").model;
    let unpack = find(&m, Op::Unpack);
    set_code(&mut m, unpack, 0);
    refused(&m, Op::Add, OpError::Unsupported("operators other than splits must have exactly one output"));
}

#[test]
fn constant_gather_positions_outside_the_axis_are_refused() {
    let f = fixtures::load("slice_gather");
    let gather = find(&f.model, Op::Gather);
    let at = constant(&f.model, gather, 1);
    for bad in [8, -1, i32::MIN] {
        let mut m = f.model.clone();
        put_i32(&mut m, at, bad);
        refused(&m, Op::Gather, OpError::Shape("gather position outside the input"));
    }
    let mut m = f.model.clone();
    put_i32(&mut m, at, 7);
    assert!(Model::parse(&m).is_ok(), "the last position is inside");
}

#[test]
fn transpose_perm_must_be_a_permutation() {
    let mut m = fixtures::load("nchw_transpose").model;
    let transpose = find(&m, Op::Transpose);
    let at = constant(&m, transpose, 1);
    put_i32(&mut m, at + 8, 2); // [0, 2, 3, 1] -> [0, 2, 2, 1]
    refused(&m, Op::Transpose, OpError::Unsupported("transpose perm is not a permutation of the axes"));
    put_i32(&mut m, at + 8, 4);
    refused(&m, Op::Transpose, OpError::Unsupported("transpose perm is not a permutation of the axes"));
}

#[test]
fn strided_slice_must_not_shrink_outside_the_input() {
    // The dynamic-batch flatten takes element 0 of a 3-element shape vector.
    let mut m = fixtures::load("conv1d_flatten").model;
    let slice = find(&m, Op::StridedSlice);
    let begin = constant(&m, slice, 1);
    put_i32(&mut m, begin, 3);
    refused(&m, Op::StridedSlice, OpError::Unsupported("strided slice shrinks an axis outside the input"));
    put_i32(&mut m, begin, -3);
    assert!(Model::parse(&m).is_ok(), "-3 is element 0 counted from the end");
    let stride = constant(&m, slice, 3);
    put_i32(&mut m, stride, 0);
    refused(&m, Op::StridedSlice, OpError::Unsupported("strided slice stride 0"));
}

#[test]
fn shape_writes_int32() {
    let mut m = fixtures::load("conv1d_flatten").model;
    let shape = find(&m, Op::Shape);
    let model = Model::parse(&m).unwrap();
    let out = model.operator(shape).unwrap().output(0).unwrap() as usize;
    let at = position(&m, true, 0, out, 1);
    m[at] = 9; // int8
    refused(&m, Op::Shape, OpError::Type("SHAPE writes int32 only"));
}

#[test]
fn pack_and_unpack_counts_must_match_their_tensors() {
    let f = fixtures::load("split_stack");
    let mut m = f.model.clone();
    let pack = find(&m, Op::Pack);
    let at = option(&m, pack, 0);
    put_i32(&mut m, at, 3);
    refused(&m, Op::Pack, OpError::Unsupported("PACK values_count must equal its number of inputs"));
    let mut m = f.model.clone();
    let unpack = find(&m, Op::Unpack);
    let at = option(&m, unpack, 0);
    put_i32(&mut m, at, 3);
    refused(&m, Op::Unpack, OpError::Shape("UNPACK num must equal its outputs and the axis' length"));
}

#[test]
fn split_outputs_must_fit_the_axis() {
    let mut m = fixtures::load("split_stack").model;
    let split = find(&m, Op::Split);
    let axis = constant(&m, split, 0);
    put_i32(&mut m, axis, 1);
    refused(&m, Op::Split, OpError::Shape("split output shape"));
    put_i32(&mut m, axis, 4);
    refused(&m, Op::Split, OpError::Unsupported("axis out of range"));
    put_i32(&mut m, axis, -1);
    assert!(Model::parse(&m).is_ok(), "-1 is the channel axis");
}

#[test]
fn arg_max_axis_must_lie_in_the_input() {
    let mut m = fixtures::load("argmax_head").model;
    let arg_max = find(&m, Op::ArgMax);
    let axis = constant(&m, arg_max, 1);
    for bad in [3, -4] {
        put_i32(&mut m, axis, bad);
        refused(&m, Op::ArgMax, OpError::Unsupported("axis out of range"));
    }
    put_i32(&mut m, axis, 2);
    refused(&m, Op::ArgMax, OpError::Shape("output must be the input without the axis"));
    put_i32(&mut m, axis, -2);
    assert!(Model::parse(&m).is_ok(), "-2 is the time axis");
}

#[test]
fn resize_and_transpose_conv_sizes_must_follow_from_their_options() {
    let f = fixtures::load("upsample_tconv");
    let resize = find(&f.model, Op::ResizeNearestNeighbor);
    let mut m = f.model.clone();
    let size = constant(&m, resize, 1);
    put_i32(&mut m, size + 4, 11);
    refused(&m, Op::ResizeNearestNeighbor, OpError::Shape("resize output shape does not follow from size"));
    // The stride-2 TRANSPOSE_CONV: stride 3 would need a 3×3 input.
    let model = Model::parse(&f.model).unwrap();
    let strided = (0..model.operator_count())
        .find(|&i| {
            let op = model.operator(i).unwrap();
            op.op == Op::TransposeConv && model.tensor(op.output(0).unwrap() as usize).unwrap().shape.dim(1) == 8
        })
        .unwrap();
    let mut m = f.model.clone();
    let stride_w = option(&m, strided, 1);
    put_i32(&mut m, stride_w, 3);
    refused(&m, Op::TransposeConv, OpError::Shape("transpose conv input size does not follow from the output"));
}
