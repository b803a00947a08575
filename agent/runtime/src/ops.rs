//! Operators: from a model's operator to a kernel ready to run.
//!
//! `prepare` is the single place where an operator's tensors and options are checked and
//! its kernel parameters derived. `Model::parse` runs it for every operator (so an
//! unsupported configuration is refused before anything runs); the interpreter runs it
//! again at each invocation, unless the caller gave slots to keep its results in
//! (`Interpreter::with_cache`: they hold references, which the byte arena cannot).

use crate::arith::Multiplier;
use crate::flatbuffer::{FbError, Table};
use crate::kernels::OpError;
use crate::kernels::conv::ConvParams;
use crate::kernels::elementwise::minmax::check_broadcast;
use crate::kernels::elementwise::{
    AddSubParams, HardSwishParams, LeakyReluParams, LogisticParams, MeanParams, MulParams, PreluParams, Relu6Params,
    ReluParams, TanhParams, check_concat_quant, check_pad_quant,
};
use crate::kernels::fully_connected::{FcDims, FcParams};
use crate::kernels::gather::{GatherParams, check_positions};
use crate::kernels::params::{Int32s, Rescale, Scales};
use crate::kernels::pool::{PoolKind, PoolParams};
use crate::kernels::resize::ResizeParams;
use crate::kernels::shape::check_transpose;
use crate::kernels::softmax::SoftmaxParams;
use crate::kernels::strided_slice::{Masks, StridedSliceParams};
use crate::kernels::transpose_conv::TransposeConvParams;
use crate::kernels::wide::Accumulator;
use crate::model::{At, DType, Location, ModelError, Operator, TensorInfo, Tensors};
use crate::schema::{builtin, option_fields as f, options};
use crate::tensor::{Activation, MAX_RANK, Quant, Shape};

/// The operators the runtime knows: every one runs except RELU_N1_TO_1, which TFLM has no
/// kernel for and is refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Add,
    ArgMax,
    ArgMin,
    AveragePool2d,
    Concatenation,
    Conv2d,
    DepthwiseConv2d,
    Dequantize,
    ExpandDims,
    FullyConnected,
    Gather,
    HardSwish,
    LeakyRelu,
    Logistic,
    MaxPool2d,
    Maximum,
    Mean,
    Minimum,
    Mul,
    Pack,
    Pad,
    Prelu,
    Quantize,
    Relu,
    Relu6,
    ReluN1To1,
    Reshape,
    ResizeNearestNeighbor,
    Shape,
    Softmax,
    Split,
    SplitV,
    Squeeze,
    StridedSlice,
    Sub,
    Tanh,
    Transpose,
    TransposeConv,
    Unpack,
}

impl Op {
    /// Whether this build links the operator's kernel (its `op-…` feature of
    /// mota-runtime; `all-ops` links every one). An operator that is not linked is
    /// refused at [`crate::Model::parse`] and its code is not in the binary.
    pub const fn linked(self) -> bool {
        match self {
            Self::Add => cfg!(feature = "op-add"),
            Self::ArgMax => cfg!(feature = "op-arg-max"),
            Self::ArgMin => cfg!(feature = "op-arg-min"),
            Self::AveragePool2d => cfg!(feature = "op-average-pool-2d"),
            Self::Concatenation => cfg!(feature = "op-concatenation"),
            Self::Conv2d => cfg!(feature = "op-conv-2d"),
            Self::DepthwiseConv2d => cfg!(feature = "op-depthwise-conv-2d"),
            Self::Dequantize => cfg!(feature = "op-dequantize"),
            Self::ExpandDims => cfg!(feature = "op-expand-dims"),
            Self::FullyConnected => cfg!(feature = "op-fully-connected"),
            Self::Gather => cfg!(feature = "op-gather"),
            Self::HardSwish => cfg!(feature = "op-hard-swish"),
            Self::LeakyRelu => cfg!(feature = "op-leaky-relu"),
            Self::Logistic => cfg!(feature = "op-logistic"),
            Self::MaxPool2d => cfg!(feature = "op-max-pool-2d"),
            Self::Maximum => cfg!(feature = "op-maximum"),
            Self::Mean => cfg!(feature = "op-mean"),
            Self::Minimum => cfg!(feature = "op-minimum"),
            Self::Mul => cfg!(feature = "op-mul"),
            Self::Pack => cfg!(feature = "op-pack"),
            Self::Pad => cfg!(feature = "op-pad"),
            Self::Prelu => cfg!(feature = "op-prelu"),
            Self::Quantize => cfg!(feature = "op-quantize"),
            Self::Relu => cfg!(feature = "op-relu"),
            Self::Relu6 => cfg!(feature = "op-relu6"),
            Self::Reshape => cfg!(feature = "op-reshape"),
            Self::ResizeNearestNeighbor => cfg!(feature = "op-resize-nearest-neighbor"),
            Self::Shape => cfg!(feature = "op-shape"),
            Self::Softmax => cfg!(feature = "op-softmax"),
            Self::Split => cfg!(feature = "op-split"),
            Self::SplitV => cfg!(feature = "op-split-v"),
            Self::Squeeze => cfg!(feature = "op-squeeze"),
            Self::StridedSlice => cfg!(feature = "op-strided-slice"),
            Self::Sub => cfg!(feature = "op-sub"),
            Self::Tanh => cfg!(feature = "op-tanh"),
            Self::Transpose => cfg!(feature = "op-transpose"),
            Self::TransposeConv => cfg!(feature = "op-transpose-conv"),
            Self::Unpack => cfg!(feature = "op-unpack"),
            // Refused by name whenever RELU is linked (TFLM has no kernel for it).
            Self::ReluN1To1 => cfg!(feature = "op-relu"),
        }
    }

    /// From a builtin operator code.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            builtin::ADD => Self::Add,
            builtin::ARG_MAX => Self::ArgMax,
            builtin::ARG_MIN => Self::ArgMin,
            builtin::AVERAGE_POOL_2D => Self::AveragePool2d,
            builtin::CONCATENATION => Self::Concatenation,
            builtin::CONV_2D => Self::Conv2d,
            builtin::DEPTHWISE_CONV_2D => Self::DepthwiseConv2d,
            builtin::DEQUANTIZE => Self::Dequantize,
            builtin::EXPAND_DIMS => Self::ExpandDims,
            builtin::FULLY_CONNECTED => Self::FullyConnected,
            builtin::GATHER => Self::Gather,
            builtin::HARD_SWISH => Self::HardSwish,
            builtin::LEAKY_RELU => Self::LeakyRelu,
            builtin::LOGISTIC => Self::Logistic,
            builtin::MAX_POOL_2D => Self::MaxPool2d,
            builtin::MAXIMUM => Self::Maximum,
            builtin::MEAN => Self::Mean,
            builtin::MINIMUM => Self::Minimum,
            builtin::MUL => Self::Mul,
            builtin::PACK => Self::Pack,
            builtin::PAD => Self::Pad,
            builtin::PRELU => Self::Prelu,
            builtin::QUANTIZE => Self::Quantize,
            builtin::RELU => Self::Relu,
            builtin::RELU6 => Self::Relu6,
            builtin::RELU_N1_TO_1 => Self::ReluN1To1,
            builtin::RESHAPE => Self::Reshape,
            builtin::RESIZE_NEAREST_NEIGHBOR => Self::ResizeNearestNeighbor,
            builtin::SHAPE => Self::Shape,
            builtin::SOFTMAX => Self::Softmax,
            builtin::SPLIT => Self::Split,
            builtin::SPLIT_V => Self::SplitV,
            builtin::SQUEEZE => Self::Squeeze,
            builtin::STRIDED_SLICE => Self::StridedSlice,
            builtin::SUB => Self::Sub,
            builtin::TANH => Self::Tanh,
            builtin::TRANSPOSE => Self::Transpose,
            builtin::TRANSPOSE_CONV => Self::TransposeConv,
            builtin::UNPACK => Self::Unpack,
            _ => return None,
        })
    }

    /// The TFLite name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::ArgMax => "ARG_MAX",
            Self::ArgMin => "ARG_MIN",
            Self::AveragePool2d => "AVERAGE_POOL_2D",
            Self::Concatenation => "CONCATENATION",
            Self::Conv2d => "CONV_2D",
            Self::DepthwiseConv2d => "DEPTHWISE_CONV_2D",
            Self::Dequantize => "DEQUANTIZE",
            Self::ExpandDims => "EXPAND_DIMS",
            Self::FullyConnected => "FULLY_CONNECTED",
            Self::Gather => "GATHER",
            Self::HardSwish => "HARD_SWISH",
            Self::LeakyRelu => "LEAKY_RELU",
            Self::Logistic => "LOGISTIC",
            Self::MaxPool2d => "MAX_POOL_2D",
            Self::Maximum => "MAXIMUM",
            Self::Mean => "MEAN",
            Self::Minimum => "MINIMUM",
            Self::Mul => "MUL",
            Self::Pack => "PACK",
            Self::Pad => "PAD",
            Self::Prelu => "PRELU",
            Self::Quantize => "QUANTIZE",
            Self::Relu => "RELU",
            Self::Relu6 => "RELU6",
            Self::ReluN1To1 => "RELU_N1_TO_1",
            Self::Reshape => "RESHAPE",
            Self::ResizeNearestNeighbor => "RESIZE_NEAREST_NEIGHBOR",
            Self::Shape => "SHAPE",
            Self::Softmax => "SOFTMAX",
            Self::Split => "SPLIT",
            Self::SplitV => "SPLIT_V",
            Self::Squeeze => "SQUEEZE",
            Self::StridedSlice => "STRIDED_SLICE",
            Self::Sub => "SUB",
            Self::Tanh => "TANH",
            Self::Transpose => "TRANSPOSE",
            Self::TransposeConv => "TRANSPOSE_CONV",
            Self::Unpack => "UNPACK",
        }
    }

    /// Whether the operator writes more than one tensor (one per part).
    fn splits(self) -> bool {
        matches!(self, Self::Split | Self::SplitV | Self::Unpack)
    }
}
/// A failure of `prepare`: a structural model error or the operator's own.
pub(crate) enum PrepareError {
    Model(ModelError),
    Op(OpError),
}

impl From<ModelError> for PrepareError {
    fn from(e: ModelError) -> Self {
        Self::Model(e)
    }
}

impl From<OpError> for PrepareError {
    fn from(e: OpError) -> Self {
        Self::Op(e)
    }
}

/// An operator ready to run: its kernel parameters and the tensors it touches, by index
/// (the interpreter looks them up in its compact records; a full description per tensor
/// made `Prepared` kilobytes to move at every operator of every inference).
#[derive(Clone)]
pub(crate) struct Prepared<'a> {
    pub kernel: Kernel<'a>,
    /// Which operator.
    pub op: Op,
    /// The operator's index, for looking its tensors up.
    pub operator: usize,
    /// Input tensors in kernel order (constants included; `None` for an absent optional
    /// input).
    pub inputs: [Option<u16>; MAX_OP_INPUTS],
    /// Output tensors in order: at least the first, at most [`MAX_OP_OUTPUTS`].
    pub outputs: [Option<u16>; MAX_OP_OUTPUTS],
    /// Output channels (the last dimension of the first output).
    pub channels: usize,
}

/// Most inputs an operator may have.
pub const MAX_OP_INPUTS: usize = 8;
/// Most outputs an operator may have (the parts of a SPLIT, SPLIT_V or UNPACK).
pub const MAX_OP_OUTPUTS: usize = 8;

/// The kernel and its parameters. `Copy` moves the input's bytes unchanged (RESHAPE,
/// SQUEEZE, EXPAND_DIMS); `Pack` takes one block from every input in each of `outer`
/// steps; `Split` deals input `input` out to the outputs in `outer` steps (SPLIT, SPLIT_V,
/// UNPACK).
#[derive(Clone)]
pub(crate) enum Kernel<'a> {
    Conv(ConvParams<'a>),
    Depthwise(ConvParams<'a>),
    FullyConnected(FcParams<'a>, FcDims),
    /// 16x8 CONV_2D (int16 activations, int8 weights).
    Conv16(ConvParams<'a>, Accumulator),
    /// 16x8 DEPTHWISE_CONV_2D.
    Depthwise16(ConvParams<'a>),
    /// 16x8 FULLY_CONNECTED.
    FullyConnected16(FcParams<'a>, FcDims, Accumulator),
    Pool(PoolKind, PoolParams),
    Softmax {
        params: SoftmaxParams,
        depth: usize,
    },
    Copy,
    /// float32 → the output's codes (int8, uint8 or int16).
    Quantize(Quant, DType),
    /// Codes → codes: (quantization, type) of the input and of the output.
    Requantize((Quant, DType), (Quant, DType)),
    /// Codes of this type → float32.
    Dequantize(Quant, DType),
    AddSub(AddSubParams),
    Mul(MulParams),
    Logistic(LogisticParams),
    Tanh(TanhParams),
    LeakyRelu(LeakyReluParams),
    HardSwish(HardSwishParams),
    Pad {
        paddings: [[i32; 2]; MAX_RANK],
        rank: usize,
        value: i8,
    },
    Concatenation {
        axis: i32,
        count: usize,
    },
    Mean(MeanParams),
    Relu(ReluParams),
    Relu6(Relu6Params),
    MinMax {
        max: bool,
    },
    Prelu(PreluParams),
    StridedSlice(StridedSliceParams),
    Shape,
    Pack {
        outer: usize,
        count: usize,
    },
    Split {
        input: usize,
        outer: usize,
    },
    Transpose {
        perm: [usize; MAX_RANK],
        rank: usize,
    },
    Gather(GatherParams),
    ArgMinMax {
        axis: usize,
        max: bool,
    },
    TransposeConv(TransposeConvParams<'a>),
    ResizeNearest(ResizeParams),
}

impl<'a> Kernel<'a> {
    /// Whether the kernel reads a table of per-channel multipliers in the arena (still to
    /// compute, or pointed at already).
    pub(crate) fn has_channel_table(&self) -> bool {
        let rescale = match self {
            Kernel::Conv(p) | Kernel::Depthwise(p) | Kernel::Conv16(p, _) | Kernel::Depthwise16(p) => &p.rescale,
            Kernel::FullyConnected(p, _) | Kernel::FullyConnected16(p, _, _) => &p.rescale,
            Kernel::TransposeConv(p) => &p.rescale,
            _ => return false,
        };
        matches!(rescale, Rescale::PerChannel { .. } | Rescale::Table(_))
    }

    /// The per-channel rescaling of a conv-like kernel, if it has one to precompute.
    pub(crate) fn per_channel(&mut self) -> Option<&mut Rescale<'a>> {
        let rescale = match self {
            Kernel::Conv(p) | Kernel::Depthwise(p) | Kernel::Conv16(p, _) | Kernel::Depthwise16(p) => &mut p.rescale,
            Kernel::FullyConnected(p, _) | Kernel::FullyConnected16(p, _, _) => &mut p.rescale,
            Kernel::TransposeConv(p) => &mut p.rescale,
            _ => return None,
        };
        matches!(rescale, Rescale::PerChannel { .. }).then_some(rescale)
    }
}

impl Prepared<'_> {
    /// The outputs' tensor indices, in order.
    pub(crate) fn outputs(&self) -> impl Iterator<Item = i32> + '_ {
        self.outputs.iter().flatten().map(|&t| i32::from(t))
    }
}

/// Refuses per-channel multipliers TFLM could not apply (a left shift above 31 overflows
/// its arithmetic; its 64-bit rescaling of 16x8 layers takes shifts up to 14 only); run
/// once, at verification.
pub(crate) fn check_multipliers(p: &mut Prepared<'_>) -> core::result::Result<(), OpError> {
    let channels = p.channels;
    let limit = match p.kernel {
        Kernel::Conv16(_, Accumulator::I64)
        | Kernel::Depthwise16(_)
        | Kernel::FullyConnected16(_, _, Accumulator::I64) => 14,
        _ => 31,
    };
    if let Some(rescale) = p.kernel.per_channel() {
        for c in 0..channels {
            if rescale.channel(c).shift > limit {
                return Err(OpError::Quantization("rescaling multiplier too large"));
            }
        }
    }
    Ok(())
}

type Result<T> = core::result::Result<T, PrepareError>;

/// Checks an operator and derives its kernel parameters.
pub(crate) fn prepare<'a>(model: &dyn Tensors<'a>, op: &Operator<'a>) -> Result<Prepared<'a>> {
    let at = Location::Operator(op.index);
    if op.output_count() != 1 && !(op.op.splits() && op.output_count() >= 1) {
        return Err(OpError::Unsupported("operators other than splits must have exactly one output").into());
    }
    if op.output_count() > MAX_OP_OUTPUTS {
        return Err(OpError::Unsupported("more than 8 outputs").into());
    }
    if op.input_count() > MAX_OP_INPUTS {
        return Err(OpError::Unsupported("too many inputs").into());
    }
    let mut outputs = [None; MAX_OP_OUTPUTS];
    for (slot, index) in outputs.iter_mut().zip(op.outputs()) {
        *slot = Some(model.tensor_at(Some(op.index), index.at(at)?)?);
    }
    let output = outputs[0].ok_or(PrepareError::Op(OpError::Shape("missing output")))?;
    let mut inputs = [None; MAX_OP_INPUTS];
    for (slot, index) in inputs.iter_mut().zip(op.inputs()) {
        let index = index.at(at)?;
        if index >= 0 {
            *slot = Some(model.tensor_at(Some(op.index), index)?);
        }
    }
    let input = |i: usize| -> Result<TensorInfo<'a>> {
        inputs.get(i).copied().flatten().ok_or(PrepareError::Op(OpError::Shape("missing input")))
    };
    let options = |tag| op.options(tag).at(at);
    let verify = !model.verified();
    let kernel = match op.op {
        Op::Conv2d | Op::DepthwiseConv2d if op.op.linked() => {
            conv(op.op, &input(0)?, &input(1)?, inputs[2], &output, options, verify)?
        }
        Op::FullyConnected if op.op.linked() => {
            fully_connected(&input(0)?, &input(1)?, inputs[2], &output, options(options::FULLY_CONNECTED)?, verify)?
        }
        Op::AveragePool2d | Op::MaxPool2d if op.op.linked() => {
            pool(op.op, &input(0)?, &output, options(options::POOL_2D)?)?
        }
        Op::Softmax if op.op.linked() => softmax(&input(0)?, &output, options(options::SOFTMAX)?)?,
        Op::Reshape if op.op.linked() => {
            let x = input(0)?;
            codes_activation(&x, &[DType::Int8, DType::Int16])?;
            codes_activation(&output, &[x.dtype])?;
            if x.shape.elements() != output.shape.elements() || x.quant()? != output.quant()? {
                return Err(OpError::Shape("reshape changes size or quantization").into());
            }
            Kernel::Copy
        }
        Op::Quantize if op.op.linked() => {
            let x = input(0)?;
            codes_activation(&output, &[DType::Int8, DType::UInt8, DType::Int16])?;
            same_elements(&x, &output)?;
            let (to, from) = ((output.quant()?, output.dtype), x.dtype);
            // The pairs TFLM's QUANTIZE takes.
            match (from, to.1) {
                (DType::Float32, _) => Kernel::Quantize(to.0, to.1),
                (DType::Int8, _) | (DType::UInt8, DType::Int8) | (DType::Int16, DType::Int8 | DType::Int16) => {
                    Kernel::Requantize((x.quant()?, from), to)
                }
                _ => return Err(OpError::Type("QUANTIZE between these types").into()),
            }
        }
        Op::Dequantize if op.op.linked() => {
            let x = input(0)?;
            codes_activation(&x, &[DType::Int8, DType::UInt8, DType::Int16])?;
            if output.dtype != DType::Float32 {
                return Err(OpError::Type("DEQUANTIZE must output float32").into());
            }
            same_elements(&x, &output)?;
            Kernel::Dequantize(x.quant()?, x.dtype)
        }
        Op::Add | Op::Sub | Op::Mul if op.op.linked() => {
            let (a, b) = (input(0)?, input(1)?);
            // 16x8 models add and subtract int16 codes.
            let int16 = op.op != Op::Mul && output.dtype == DType::Int16;
            if int16 && !INT16 {
                return Err(OpError::Unsupported(NO_INT16).into());
            }
            let dtype = if int16 { DType::Int16 } else { DType::Int8 };
            codes_operand(&a, dtype)?;
            codes_operand(&b, dtype)?;
            codes_activation(&output, &[dtype])?;
            let tag = match op.op {
                Op::Add => options::ADD,
                Op::Sub => options::SUB,
                _ => options::MUL,
            };
            let act = activation(options(tag)?, f::ARITH_ACTIVATION)?;
            let (qa, qb, qo) = (a.quant()?, b.quant()?, output.quant()?);
            match op.op {
                Op::Mul => Kernel::Mul(MulParams::prepare(qa, qb, qo, act)?),
                _ => Kernel::AddSub(AddSubParams::prepare(qa, qb, qo, act, op.op == Op::Sub, int16)?),
            }
        }
        Op::Logistic | Op::Tanh | Op::HardSwish | Op::LeakyRelu if op.op.linked() => {
            let x = input(0)?;
            if x.dtype == DType::Int16 && matches!(op.op, Op::Logistic | Op::Tanh) {
                // TFLM interpolates a 256-entry sigmoid table of its own; no formula we
                // found reproduces its entries, and copying them is not ours to do.
                return Err(OpError::Unsupported("16x8 LOGISTIC and TANH (TFLM's int16 sigmoid table)").into());
            }
            int8_activation(&x)?;
            int8_activation(&output)?;
            if x.shape != output.shape {
                return Err(OpError::Shape("input and output shapes differ").into());
            }
            let (qi, qo) = (x.quant()?, output.quant()?);
            match op.op {
                Op::Logistic => Kernel::Logistic(LogisticParams::prepare(qi, qo)?),
                Op::Tanh => Kernel::Tanh(TanhParams::prepare(qi, qo)?),
                Op::HardSwish => Kernel::HardSwish(HardSwishParams::prepare(qi, qo)?),
                _ => {
                    let opts = options(options::LEAKY_RELU)?;
                    let alpha = opts.map_or(Ok(0.0), |t| t.scalar::<f32>(f::LEAKY_RELU_ALPHA, 0.0)).map_err(fb)?;
                    Kernel::LeakyRelu(LeakyReluParams::prepare(qi, qo, alpha)?)
                }
            }
        }
        Op::Pad if op.op.linked() => {
            let (x, p) = (input(0)?, input(1)?);
            int8_activation(&x)?;
            int8_activation(&output)?;
            if op.input_count() > 2 {
                return Err(OpError::Unsupported("PAD with a constant value (use PADV2)").into());
            }
            let rank = x.shape.rank();
            let values = int32_constant(&p, rank * 2, "paddings must be a constant int32 [rank, 2]")?;
            let mut paddings = [[0i32; 2]; MAX_RANK];
            for (d, pair) in paddings.iter_mut().enumerate().take(rank) {
                *pair = [values.get(2 * d), values.get(2 * d + 1)];
                if pair[0] < 0
                    || pair[1] < 0
                    || x.shape.dim(d) + pair[0] as usize + pair[1] as usize != output.shape.dim(d)
                {
                    return Err(OpError::Shape("output is not the input plus paddings").into());
                }
            }
            if output.shape.rank() != rank {
                return Err(OpError::Shape("pad changes rank").into());
            }
            check_pad_quant(x.quant()?, output.quant()?)?;
            Kernel::Pad { paddings, rank, value: output.quant()?.zero_point as i8 }
        }
        Op::Concatenation if op.op.linked() => {
            int8_activation(&output)?;
            let opts = options(options::CONCATENATION)?;
            if activation(opts, f::CONCAT_ACTIVATION)? != Activation::None {
                return Err(OpError::Unsupported("fused activation on CONCATENATION").into());
            }
            let axis = option_i32(opts, f::CONCAT_AXIS, 0)?;
            let count = op.input_count();
            let mut quants = [Quant { scale: 1.0, zero_point: 0 }; MAX_OP_INPUTS];
            for (i, q) in quants.iter_mut().enumerate().take(count) {
                let t = input(i)?;
                int8_operand(&t)?;
                *q = t.quant()?;
            }
            check_concat_quant(&quants[..count], output.quant()?)?;
            Kernel::Concatenation { axis, count }
        }
        Op::Mean if op.op.linked() => {
            let (x, axes_t) = (input(0)?, input(1)?);
            int8_activation(&x)?;
            int8_activation(&output)?;
            let n = axes_t.shape.elements();
            if n > MAX_RANK {
                return Err(OpError::Shape("too many axes").into());
            }
            let values = int32_constant(&axes_t, n, "axes must be a constant int32 vector")?;
            let mut axes = [0i32; MAX_RANK];
            for (i, a) in axes.iter_mut().enumerate().take(n) {
                *a = values.get(i);
            }
            let opts = options(options::REDUCER)?;
            let keep_dims = opts.map_or(Ok(false), |t| t.scalar::<bool>(f::REDUCER_KEEP_DIMS, false)).map_err(fb)?;
            Kernel::Mean(MeanParams::prepare(
                x.quant()?,
                &x.shape,
                &axes[..n],
                keep_dims,
                output.quant()?,
                &output.shape,
            )?)
        }
        Op::Relu | Op::Relu6 | Op::ReluN1To1 if op.op.linked() => {
            input_count(op, 1)?;
            relu(op.op, &input(0)?, &output)?
        }
        Op::Minimum | Op::Maximum if op.op.linked() => {
            input_count(op, 2)?;
            let (a, b) = (input(0)?, input(1)?);
            for t in [&a, &b, &output] {
                int8(t)?;
            }
            check_broadcast(&a.shape, &b.shape, &output.shape)?;
            Kernel::MinMax { max: op.op == Op::Maximum }
        }
        Op::Prelu if op.op.linked() => {
            input_count(op, 2)?;
            prelu(&input(0)?, &input(1)?, &output)?
        }
        Op::Squeeze if op.op.linked() => {
            input_count(op, 1)?;
            squeeze(&input(0)?, &output, options(options::SQUEEZE)?)?
        }
        Op::ExpandDims if op.op.linked() => {
            input_count(op, 2)?;
            expand_dims(&input(0)?, &input(1)?, &output)?
        }
        Op::Shape if op.op.linked() => {
            input_count(op, 1)?;
            if output.dtype != DType::Int32 {
                return Err(OpError::Type("SHAPE writes int32 only").into());
            }
            if output.shape.rank() != 1 || output.shape.dim(0) != input(0)?.shape.rank() {
                return Err(OpError::Shape("SHAPE output must hold one value per input dimension").into());
            }
            Kernel::Shape
        }
        Op::StridedSlice if op.op.linked() => {
            input_count(op, 4)?;
            strided_slice(&input(0)?, [input(1)?, input(2)?, input(3)?], &output, options(options::STRIDED_SLICE)?)?
        }
        Op::Pack if op.op.linked() => {
            pack(inputs.get(..op.input_count()).unwrap_or(&[]), &output, options(options::PACK)?)?
        }
        Op::Unpack if op.op.linked() => {
            input_count(op, 1)?;
            unpack(&input(0)?, outputs.get(..op.output_count()).unwrap_or(&[]), options(options::UNPACK)?)?
        }
        Op::Split | Op::SplitV if op.op.linked() => {
            // SPLIT: (axis, input); SPLIT_V: (input, size_splits, axis), whose sizes TFLM
            // ignores in favour of the output shapes, as this does.
            let (x, axis, data) = match op.op {
                Op::Split => (1, 0, 2),
                _ => (0, 2, 3),
            };
            input_count(op, data)?;
            let parts = outputs.get(..op.output_count()).unwrap_or(&[]);
            split(x, &input(x)?, &input(axis)?, parts, op.op == Op::Split)?
        }
        Op::Transpose if op.op.linked() => {
            input_count(op, 2)?;
            transpose(&input(0)?, &input(1)?, &output)?
        }
        Op::Gather if op.op.linked() => {
            input_count(op, 2)?;
            gather(&input(0)?, &input(1)?, &output, options(options::GATHER)?, verify)?
        }
        Op::ArgMax | Op::ArgMin if op.op.linked() => {
            input_count(op, 2)?;
            arg_min_max(&input(0)?, &input(1)?, &output, op.op == Op::ArgMax)?
        }
        Op::TransposeConv if op.op.linked() => {
            if !matches!(op.input_count(), 3 | 4) {
                return Err(OpError::Unsupported("TRANSPOSE_CONV takes 3 or 4 inputs").into());
            }
            let opts = options(options::TRANSPOSE_CONV)?;
            transpose_conv(&input(0)?, &input(1)?, &input(2)?, inputs[3], &output, opts, verify)?
        }
        Op::ResizeNearestNeighbor if op.op.linked() => {
            input_count(op, 2)?;
            resize_nearest(&input(0)?, &input(1)?, &output, options(options::RESIZE_NEAREST_NEIGHBOR)?)?
        }
        _ => {
            return Err(OpError::Unsupported("operator not linked into this build (a mota-runtime op- feature)").into());
        }
    };
    let channels = output.shape.dims().last().copied().unwrap_or(1);
    // Tensor indices fit 16 bits (`MAX_TENSORS`): a prepared operator is kept small.
    let index = |t: Option<TensorInfo<'_>>| t.and_then(|t| u16::try_from(t.index).ok());
    Ok(Prepared {
        kernel,
        op: op.op,
        operator: op.index,
        inputs: inputs.map(index),
        outputs: outputs.map(index),
        channels,
    })
}

/// Whether this build links the 16x8 (int16 activation) kernels: mota-runtime's `int16`
/// feature (hosts enable it). Without it, models that need them are refused at parse and
/// their code is not in the binary.
const INT16: bool = cfg!(feature = "int16");

/// Why an int16 tensor is refused by a build without the `int16` feature.
const NO_INT16: &str = "16x8 (int16 activations) not linked into this build (mota-runtime feature int16)";

/// Refuses an operator with another number of inputs than its kernel reads.
fn input_count(op: &Operator<'_>, n: usize) -> core::result::Result<(), OpError> {
    if op.input_count() == n { Ok(()) } else { Err(OpError::Unsupported("wrong number of inputs")) }
}

/// An int8 tensor, whatever its quantization (for kernels that only compare or move codes).
fn int8(t: &TensorInfo<'_>) -> core::result::Result<(), OpError> {
    if t.dtype == DType::Int8 { Ok(()) } else { Err(OpError::Type("expected int8")) }
}

/// The element types a data-movement kernel takes: int8, and int32 where TFLM's kernel
/// takes it too (shape computations); the output has the input's type.
fn moved(x: &TensorInfo<'_>, out: &TensorInfo<'_>, int32: bool) -> core::result::Result<(), OpError> {
    match x.dtype {
        DType::Int8 => {}
        DType::Int32 if int32 => {}
        _ => return Err(OpError::Type(if int32 { "expected int8 or int32" } else { "expected int8" })),
    }
    if out.dtype == x.dtype { Ok(()) } else { Err(OpError::Type("output type differs from the input's")) }
}

/// An axis given as a constant int32 scalar (or one-element vector), counted from the end
/// of `rank` axes when negative, and checked to lie in `0..rank`.
fn axis_operand(t: &TensorInfo<'_>, rank: usize) -> core::result::Result<usize, OpError> {
    if t.shape.rank() > 1 {
        return Err(OpError::Shape("axis must be a scalar"));
    }
    let value = int32_constant(t, 1, "axis must be a constant int32")?.get(0);
    normalize_axis(value, rank)
}

/// `axis` (negative counts from the end) as an index below `rank`.
fn normalize_axis(axis: i32, rank: usize) -> core::result::Result<usize, OpError> {
    let axis = i64::from(axis) + if axis < 0 { rank as i64 } else { 0 };
    usize::try_from(axis).ok().filter(|&a| a < rank).ok_or(OpError::Unsupported("axis out of range"))
}

/// `shape` with dimension `axis` removed.
fn without_axis(shape: &Shape, axis: usize) -> Shape {
    let mut dims = [0usize; MAX_RANK];
    let kept = shape.dims().iter().enumerate().filter(|&(k, _)| k != axis).map(|(_, &d)| d);
    let mut n = 0;
    for (slot, d) in dims.iter_mut().zip(kept) {
        *slot = d;
        n += 1;
    }
    Shape::new(&dims[..n]).unwrap_or_default()
}

/// `shape` with a dimension `dim` inserted before `axis` (`None` past the highest rank).
fn with_axis(shape: &Shape, axis: usize, dim: usize) -> Option<Shape> {
    let dims = shape.dims();
    let mut out = [0usize; MAX_RANK + 1];
    let (before, after) = dims.split_at(axis.min(dims.len()));
    out[..before.len()].copy_from_slice(before);
    out[before.len()] = dim;
    out[before.len() + 1..=dims.len()].copy_from_slice(after);
    Shape::new(&out[..=dims.len()])
}

/// The product of the dimensions before `axis` (the outer steps of a pack or split).
fn outer(shape: &Shape, axis: usize) -> usize {
    shape.dims().iter().take(axis).product()
}

fn relu<'a>(op: Op, x: &TensorInfo<'a>, output: &TensorInfo<'a>) -> Result<Kernel<'a>> {
    if op == Op::ReluN1To1 {
        return Err(OpError::Unsupported("TFLM has no RELU_N1_TO_1 kernel").into());
    }
    codes_activation(x, &[DType::Int8, DType::Int16])?;
    codes_activation(output, &[x.dtype])?;
    if x.shape != output.shape {
        return Err(OpError::Shape("input and output shapes differ").into());
    }
    let int16 = x.dtype == DType::Int16;
    Ok(match op {
        Op::Relu => Kernel::Relu(ReluParams::prepare(x.quant()?, output.quant()?, int16)?),
        _ => Kernel::Relu6(Relu6Params::prepare(x.quant()?, int16)?),
    })
}

fn prelu<'a>(x: &TensorInfo<'a>, alpha: &TensorInfo<'a>, output: &TensorInfo<'a>) -> Result<Kernel<'a>> {
    int8_activation(x)?;
    int8_operand(alpha)?;
    int8_activation(output)?;
    if alpha.quantization.is_some_and(|q| q.len() > 1) {
        return Err(OpError::Quantization("PRELU alpha must be quantized per tensor").into());
    }
    check_broadcast(&x.shape, &alpha.shape, &output.shape)?;
    Ok(Kernel::Prelu(PreluParams::prepare(x.quant()?, alpha.quant()?, output.quant()?)?))
}

/// TFLM's `SqueezePrepare`, with the output shape checked exactly.
fn squeeze<'a>(x: &TensorInfo<'a>, output: &TensorInfo<'a>, opts: Option<Table<'a>>) -> Result<Kernel<'a>> {
    moved(x, output, true)?;
    let rank = x.shape.rank();
    let mut drop = [false; MAX_RANK];
    let listed = opts.map_or(Ok(None), |t| t.vector(f::SQUEEZE_DIMS)).map_err(fb)?;
    match listed.filter(|v| !v.is_empty()) {
        None => {
            for (d, slot) in x.shape.dims().iter().zip(drop.iter_mut()) {
                *slot = *d == 1;
            }
        }
        Some(dims) => {
            for d in dims.iter::<i32>() {
                let axis = normalize_axis(d.map_err(fb)?, rank)?;
                if x.shape.dim(axis) != 1 {
                    return Err(OpError::Shape("SQUEEZE of a dimension other than 1").into());
                }
                drop[axis] = true;
            }
        }
    }
    let kept = x.shape.dims().iter().zip(drop).filter(|&(_, d)| !d).map(|(&k, _)| k);
    if !kept.eq(output.shape.dims().iter().copied()) {
        return Err(OpError::Shape("SQUEEZE output shape").into());
    }
    Ok(Kernel::Copy)
}

/// TFLM's `ExpandDimsPrepare` (int8 only: its kernel has no int32 case).
fn expand_dims<'a>(x: &TensorInfo<'a>, axis_t: &TensorInfo<'a>, output: &TensorInfo<'a>) -> Result<Kernel<'a>> {
    moved(x, output, false)?;
    let rank = x.shape.rank();
    let axis = axis_operand(axis_t, rank + 1)?;
    if with_axis(&x.shape, axis, 1) != Some(output.shape) {
        return Err(OpError::Shape("EXPAND_DIMS output shape").into());
    }
    Ok(Kernel::Copy)
}

fn strided_slice<'a>(
    x: &TensorInfo<'a>,
    [begin, end, strides]: [TensorInfo<'a>; 3],
    output: &TensorInfo<'a>,
    opts: Option<Table<'a>>,
) -> Result<Kernel<'a>> {
    moved(x, output, true)?;
    let rank = x.shape.rank();
    let what = "begin, end and strides must be constant int32 vectors, one value per input axis";
    let (b, e, s) =
        (int32_constant(&begin, rank, what)?, int32_constant(&end, rank, what)?, int32_constant(&strides, rank, what)?);
    let field = |id| option_i32(opts, id, 0);
    if field(f::SLICE_ELLIPSIS_MASK)? != 0 || field(f::SLICE_NEW_AXIS_MASK)? != 0 {
        return Err(OpError::Unsupported("STRIDED_SLICE ellipsis or new-axis mask").into());
    }
    if opts.map_or(Ok(false), |t| t.scalar::<bool>(f::SLICE_OFFSET, false)).map_err(fb)? {
        return Err(OpError::Unsupported("STRIDED_SLICE with offset ends").into());
    }
    let masks = Masks {
        begin: field(f::SLICE_BEGIN_MASK)?,
        end: field(f::SLICE_END_MASK)?,
        shrink: field(f::SLICE_SHRINK_AXIS_MASK)?,
    };
    Ok(Kernel::StridedSlice(StridedSliceParams::prepare(&x.shape, b, e, s, masks, &output.shape)?))
}

/// PACK: `values_count` inputs of one shape and type, stacked along a new `axis`.
fn pack<'a>(inputs: &[Option<TensorInfo<'a>>], output: &TensorInfo<'a>, opts: Option<Table<'a>>) -> Result<Kernel<'a>> {
    let count = option_i32(opts, f::PACK_COUNT, 0)?;
    let first = match inputs.first() {
        Some(Some(t)) if usize::try_from(count) == Ok(inputs.len()) => *t,
        _ => return Err(OpError::Unsupported("PACK values_count must equal its number of inputs").into()),
    };
    for t in inputs {
        let t = t.ok_or(OpError::Shape("missing input"))?;
        moved(&t, output, true)?;
        if t.shape != first.shape {
            return Err(OpError::Shape("PACK inputs differ in shape").into());
        }
    }
    let axis = normalize_axis(option_i32(opts, f::PACK_AXIS, 0)?, first.shape.rank() + 1)?;
    if with_axis(&first.shape, axis, inputs.len()) != Some(output.shape) {
        return Err(OpError::Shape("PACK output shape").into());
    }
    Ok(Kernel::Pack { outer: outer(&output.shape, axis), count: inputs.len() })
}

/// UNPACK: `num` outputs, each the input without `axis`.
fn unpack<'a>(x: &TensorInfo<'a>, outputs: &[Option<TensorInfo<'a>>], opts: Option<Table<'a>>) -> Result<Kernel<'a>> {
    let num = option_i32(opts, f::PACK_COUNT, 0)?;
    let axis = normalize_axis(option_i32(opts, f::PACK_AXIS, 0)?, x.shape.rank())?;
    if usize::try_from(num) != Ok(outputs.len()) || x.shape.dim(axis) != outputs.len() {
        return Err(OpError::Shape("UNPACK num must equal its outputs and the axis' length").into());
    }
    let part = without_axis(&x.shape, axis);
    for out in outputs.iter().flatten() {
        moved(x, out, true)?;
        if out.shape != part {
            return Err(OpError::Shape("UNPACK output shape").into());
        }
    }
    Ok(Kernel::Split { input: 0, outer: outer(&x.shape, axis) })
}

/// SPLIT (`equal` parts) and SPLIT_V: outputs of the input's rank and type that match it
/// off the axis and whose lengths along it add up to the input's.
fn split<'a>(
    index: usize,
    x: &TensorInfo<'a>,
    axis_t: &TensorInfo<'a>,
    outputs: &[Option<TensorInfo<'a>>],
    equal: bool,
) -> Result<Kernel<'a>> {
    let axis = axis_operand(axis_t, x.shape.rank())?;
    let mut total = 0usize;
    for out in outputs.iter().flatten() {
        moved(x, out, true)?;
        let same_elsewhere = out.shape.rank() == x.shape.rank()
            && (0..x.shape.rank()).all(|k| k == axis || out.shape.dim(k) == x.shape.dim(k));
        let first = outputs.first().copied().flatten().map(|o| o.shape);
        if !same_elsewhere || equal && Some(out.shape) != first {
            return Err(OpError::Shape("split output shape").into());
        }
        total += out.shape.dim(axis);
    }
    if total != x.shape.dim(axis) {
        return Err(OpError::Shape("split parts do not add up to the input").into());
    }
    Ok(Kernel::Split { input: index, outer: outer(&x.shape, axis) })
}

/// TFLM's `TransposePrepare`, with the output shape checked against the permutation.
fn transpose<'a>(x: &TensorInfo<'a>, perm_t: &TensorInfo<'a>, output: &TensorInfo<'a>) -> Result<Kernel<'a>> {
    moved(x, output, false)?;
    let rank = x.shape.rank();
    if perm_t.shape.rank() != 1 {
        return Err(OpError::Shape("TRANSPOSE perm must be a vector").into());
    }
    let values = int32_constant(perm_t, rank, "TRANSPOSE perm must be a constant int32 per input axis")?;
    let mut perm = [0usize; MAX_RANK];
    for (k, p) in perm.iter_mut().enumerate().take(rank) {
        *p = usize::try_from(values.get(k)).map_err(|_| OpError::Unsupported("TRANSPOSE perm out of range"))?;
    }
    check_transpose(&perm[..rank], &x.shape, &output.shape)?;
    Ok(Kernel::Transpose { perm, rank })
}

/// TFLM's `GatherPrepare` (int8 values, int32 positions); constant positions are checked
/// against the axis here, computed ones at every inference.
fn gather<'a>(
    x: &TensorInfo<'a>,
    positions: &TensorInfo<'a>,
    output: &TensorInfo<'a>,
    opts: Option<Table<'a>>,
    verify: bool,
) -> Result<Kernel<'a>> {
    moved(x, output, false)?;
    if positions.dtype != DType::Int32 {
        return Err(OpError::Type("GATHER positions must be int32").into());
    }
    let (axis, batch_dims) = (option_i32(opts, f::GATHER_AXIS, 0)?, option_i32(opts, f::GATHER_BATCH_DIMS, 0)?);
    let params = GatherParams::prepare(&x.shape, &positions.shape, axis, batch_dims, &output.shape)?;
    if let Some(data) = positions.data.filter(|_| verify) {
        check_positions(&params, &x.shape, Int32s(data))?;
    }
    Ok(Kernel::Gather(params))
}

/// ARG_MAX and ARG_MIN: int8 in, int32 indices out, along a constant axis.
fn arg_min_max<'a>(
    x: &TensorInfo<'a>,
    axis_t: &TensorInfo<'a>,
    output: &TensorInfo<'a>,
    max: bool,
) -> Result<Kernel<'a>> {
    int8(x)?;
    if output.dtype != DType::Int32 {
        return Err(OpError::Type("ARG_MAX and ARG_MIN write int32 only").into());
    }
    let axis = axis_operand(axis_t, x.shape.rank())?;
    if without_axis(&x.shape, axis) != output.shape {
        return Err(OpError::Shape("output must be the input without the axis").into());
    }
    Ok(Kernel::ArgMinMax { axis, max })
}

/// TFLM's `TransposeConvPrepare` for int8. Inputs: output shape (int32, ignored as TFLM
/// does: the output tensor's shape rules), filter, input, optional bias. The input must be
/// what a convolution with these options makes of the output.
fn transpose_conv<'a>(
    shape_t: &TensorInfo<'a>,
    filter: &TensorInfo<'a>,
    x: &TensorInfo<'a>,
    bias_t: Option<TensorInfo<'a>>,
    output: &TensorInfo<'a>,
    opts: Option<Table<'a>>,
    verify: bool,
) -> Result<Kernel<'a>> {
    int8_activation(x)?;
    int8_activation(output)?;
    weights(filter)?;
    if shape_t.dtype != DType::Int32 || shape_t.shape.elements() != 4 {
        return Err(OpError::Shape("TRANSPOSE_CONV output shape must be 4 int32 values").into());
    }
    let [batches, in_h, in_w, in_c] = shape4(x, "transpose conv input must be 4-D")?;
    let [f_o, f_h, f_w, f_i] = shape4(filter, "transpose conv filter must be 4-D")?;
    let [o_b, o_h, o_w, o_c] = shape4(output, "transpose conv output must be 4-D")?;
    if o_b != batches || f_o != o_c || f_i != in_c {
        return Err(OpError::Shape("transpose conv filter must be out×H×W×in of the tensors").into());
    }
    let same = opts.map_or(Ok(0), |t| t.scalar::<i8>(f::PADDING, 0)).map_err(fb)? == 0;
    let stride = (positive(opts, f::STRIDE_H, 1)?, positive(opts, f::STRIDE_W, 1)?);
    let (fwd_h, pad_h) = padding(same, o_h, f_h, stride.0, 1);
    let (fwd_w, pad_w) = padding(same, o_w, f_w, stride.1, 1);
    if (fwd_h, fwd_w) != (in_h, in_w) {
        return Err(OpError::Shape("transpose conv input size does not follow from the output").into());
    }
    let out_q = output.quant()?;
    bias(bias_t, o_c)?;
    Ok(Kernel::TransposeConv(TransposeConvParams {
        stride,
        padding: (pad_h, pad_w),
        input_offset: -x.quant()?.zero_point,
        output_offset: out_q.zero_point,
        act: activation(opts, f::TRANSPOSE_CONV_ACTIVATION)?.range_i8(out_q),
        rescale: rescale(x, filter, output, o_c, 0, false, verify)?,
    }))
}

/// TFLM's `ResizeNearestNeighborPrepare`: 4-D input, constant `size` of two int32 that
/// must be the output's height and width.
fn resize_nearest<'a>(
    x: &TensorInfo<'a>,
    size_t: &TensorInfo<'a>,
    output: &TensorInfo<'a>,
    opts: Option<Table<'a>>,
) -> Result<Kernel<'a>> {
    moved(x, output, false)?;
    let [batches, _, _, depth] = shape4(x, "resize input must be 4-D")?;
    let [o_b, o_h, o_w, o_d] = shape4(output, "resize output must be 4-D")?;
    if size_t.shape.rank() != 1 {
        return Err(OpError::Shape("resize size must be a vector").into());
    }
    let size = int32_constant(size_t, 2, "resize size must be 2 constant int32")?;
    let matches = |v: i32, d: usize| usize::try_from(v) == Ok(d);
    if o_b != batches || o_d != depth || !matches(size.get(0), o_h) || !matches(size.get(1), o_w) {
        return Err(OpError::Shape("resize output shape does not follow from size").into());
    }
    let flag = |id| opts.map_or(Ok(false), |t| t.scalar::<bool>(id, false)).map_err(fb);
    Ok(Kernel::ResizeNearest(ResizeParams {
        align_corners: flag(f::RESIZE_ALIGN_CORNERS)?,
        half_pixel_centers: flag(f::RESIZE_HALF_PIXEL_CENTERS)?,
    }))
}

fn int8_activation(t: &TensorInfo<'_>) -> core::result::Result<(), OpError> {
    if t.dtype != DType::Int8 {
        return Err(OpError::Type("expected int8"));
    }
    if t.data.is_some() {
        return Err(OpError::Unsupported("constant activation"));
    }
    t.quant().map(|_| ())
}

/// An int8 operand that may be an activation or a constant.
fn int8_operand(t: &TensorInfo<'_>) -> core::result::Result<(), OpError> {
    codes_operand(t, DType::Int8)
}

/// A quantized operand of type `dtype` that may be an activation or a constant.
fn codes_operand(t: &TensorInfo<'_>, dtype: DType) -> core::result::Result<(), OpError> {
    if t.dtype != dtype {
        return Err(OpError::Type(if dtype == DType::Int16 { "expected int16" } else { "expected int8" }));
    }
    t.quant().map(|_| ())
}

/// A quantized activation (not a constant) of one of `types`.
fn codes_activation(t: &TensorInfo<'_>, types: &[DType]) -> core::result::Result<(), OpError> {
    if t.dtype == DType::Int16 && !INT16 {
        return Err(OpError::Unsupported(NO_INT16));
    }
    if !types.contains(&t.dtype) {
        return Err(OpError::Type(match types {
            [DType::Int8] => "expected int8",
            [DType::Int16] => "expected int16",
            [DType::Int8, DType::Int16] => "expected int8 or int16",
            _ => "expected int8, uint8 or int16",
        }));
    }
    if t.data.is_some() {
        return Err(OpError::Unsupported("constant activation"));
    }
    t.quant().map(|_| ())
}

/// A constant int32 tensor of exactly `len` elements.
fn int32_constant<'a>(t: &TensorInfo<'a>, len: usize, what: &'static str) -> core::result::Result<Int32s<'a>, OpError> {
    match (t.dtype, t.data) {
        (DType::Int32, Some(data)) if t.shape.elements() == len => Ok(Int32s(data)),
        _ => Err(OpError::Shape(what)),
    }
}

fn same_elements(a: &TensorInfo<'_>, b: &TensorInfo<'_>) -> core::result::Result<(), OpError> {
    if a.shape.elements() == b.shape.elements() { Ok(()) } else { Err(OpError::Shape("element counts differ")) }
}

fn activation(options: Option<Table<'_>>, field: usize) -> core::result::Result<Activation, PrepareError> {
    let value = match options {
        Some(t) => t.scalar::<i8>(field, 0).map_err(fb)?,
        None => 0,
    };
    Activation::from_schema(value).ok_or(PrepareError::Op(OpError::Unsupported("fused activation")))
}

fn fb(e: FbError) -> PrepareError {
    PrepareError::Model(ModelError::Malformed { at: Location::Subgraph, error: e })
}

fn option_i32(options: Option<Table<'_>>, field: usize, default: i32) -> core::result::Result<i32, PrepareError> {
    options.map_or(Ok(default), |t| t.scalar::<i32>(field, default)).map_err(fb)
}

/// A positive option value (stride, dilation, window).
fn positive(options: Option<Table<'_>>, field: usize, default: i32) -> core::result::Result<usize, PrepareError> {
    let v = option_i32(options, field, default)?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or(PrepareError::Op(OpError::Unsupported("stride, dilation or window < 1")))
}

/// `ComputePaddingHeightWidth` for one dimension: (output size, padding before).
fn padding(same: bool, input: usize, filter: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let effective = (filter - 1) * dilation + 1;
    let out = if same { input.div_ceil(stride) } else { (input + stride).saturating_sub(effective) / stride };
    let total = ((out.max(1) - 1) * stride + effective).saturating_sub(input);
    (out, total / 2)
}

fn shape4(t: &TensorInfo<'_>, what: &'static str) -> core::result::Result<[usize; 4], OpError> {
    if t.shape.rank() != 4 {
        return Err(OpError::Shape(what));
    }
    t.shape.extended4().ok_or(OpError::Shape(what))
}

/// The weights' rescaling, checking symmetric int8 weights with 1 or per-channel scales.
fn rescale<'a>(
    input: &TensorInfo<'a>,
    filter: &TensorInfo<'a>,
    output: &TensorInfo<'a>,
    channels: usize,
    channel_dim: usize,
    per_tensor_float_product: bool,
    verify: bool,
) -> core::result::Result<Rescale<'a>, OpError> {
    let q = filter.quantization.ok_or(OpError::Quantization("weights not quantized"))?;
    if q.len() != 1 && (q.len() != channels || q.dimension != channel_dim) {
        return Err(OpError::Quantization("per-channel scales do not match the output channels"));
    }
    // Symmetric weights are a verification question; once verified, skip the scan.
    for c in (0..q.len()).filter(|_| verify) {
        if q.zero_point(c).map_err(|_| OpError::Quantization("weights"))? != 0 {
            return Err(OpError::Quantization("int8 weights must be symmetric (zero point 0)"));
        }
    }
    let (iq, oq) = (input.quant()?, output.quant()?);
    let scales = q.scales_raw().map_err(|_| OpError::Quantization("weights"))?;
    if q.len() == 1 && per_tensor_float_product {
        // GetQuantizedConvolutionMultipler: the float product, then double.
        let fs = Scales(scales).get(0);
        return Ok(Rescale::PerTensor(Multiplier::new(f64::from(iq.scale * fs) / f64::from(oq.scale))));
    }
    Ok(Rescale::PerChannel { input: iq.scale, output: oq.scale, filter: Scales(scales) })
}

fn bias<'a>(bias: Option<TensorInfo<'a>>, channels: usize) -> core::result::Result<Option<Int32s<'a>>, OpError> {
    let Some(b) = bias else { return Ok(None) };
    match (b.dtype, b.data) {
        (DType::Int32, Some(data)) if b.shape.elements() == channels => Ok(Some(Int32s(data))),
        (DType::Int32, Some(_)) => Err(OpError::Shape("bias length")),
        _ => Err(OpError::Type("bias must be a constant int32 tensor")),
    }
}

/// The bias of a 16x8 layer, checked, and the accumulator TFLM uses with it: 64 bits
/// with an int64 bias, 32 bits with an int32 bias or none; a depthwise layer always
/// accumulates in 64 bits and reads its bias as int64.
fn wide_bias(
    bias: Option<TensorInfo<'_>>,
    channels: usize,
    depthwise: bool,
) -> core::result::Result<Accumulator, OpError> {
    let dtype = match bias {
        None => None,
        Some(b) => match (b.dtype, b.data) {
            (DType::Int32 | DType::Int64, Some(_)) if b.shape.elements() == channels => Some(b.dtype),
            (DType::Int32 | DType::Int64, Some(_)) => return Err(OpError::Shape("bias length")),
            _ => return Err(OpError::Type("a 16x8 bias must be a constant int32 or int64 tensor")),
        },
    };
    match (dtype, depthwise) {
        (Some(DType::Int32), true) => Err(OpError::Type("TFLM reads a 16x8 depthwise bias as int64")),
        (_, true) | (Some(DType::Int64), false) => Ok(Accumulator::I64),
        _ => Ok(Accumulator::I32),
    }
}

/// The input and output of a conv-like layer: both int8, or both int16 with zero point 0
/// (16x8). Returns the output's code range.
fn activation_codes(input: &TensorInfo<'_>, output: &TensorInfo<'_>) -> core::result::Result<(i32, i32), OpError> {
    codes_activation(input, &[DType::Int8, DType::Int16])?;
    codes_activation(output, &[input.dtype])?;
    if input.dtype == DType::Int8 {
        return Ok((i32::from(i8::MIN), i32::from(i8::MAX)));
    }
    if input.quant()?.zero_point != 0 || output.quant()?.zero_point != 0 {
        return Err(OpError::Quantization("int16 zero point must be 0"));
    }
    Ok((i32::from(i16::MIN), i32::from(i16::MAX)))
}

fn weights<'a>(t: &TensorInfo<'a>) -> core::result::Result<&'a [u8], OpError> {
    match (t.dtype, t.data) {
        (DType::Int8, Some(data)) => Ok(data),
        _ => Err(OpError::Type("weights must be a constant int8 tensor")),
    }
}

fn conv<'a>(
    op: Op,
    input: &TensorInfo<'a>,
    filter: &TensorInfo<'a>,
    bias_t: Option<TensorInfo<'a>>,
    output: &TensorInfo<'a>,
    options: impl Fn(u8) -> core::result::Result<Option<Table<'a>>, ModelError>,
    verify: bool,
) -> Result<Kernel<'a>> {
    let codes = activation_codes(input, output)?;
    weights(filter)?;
    let depthwise = op == Op::DepthwiseConv2d;
    let opts = options(if depthwise { options::DEPTHWISE_CONV_2D } else { options::CONV_2D })?;
    let [batches, in_h, in_w, in_c] = shape4(input, "conv input must be 4-D")?;
    let [f0, f_h, f_w, f_c] = shape4(filter, "conv filter must be 4-D")?;
    let [o_b, o_h, o_w, o_c] = shape4(output, "conv output must be 4-D")?;
    let same = opts.map_or(Ok(0), |t| t.scalar::<i8>(f::PADDING, 0)).map_err(fb)? == 0;
    let stride = (positive(opts, f::STRIDE_H, 1)?, positive(opts, f::STRIDE_W, 1)?);
    let (dil_h_field, dil_w_field, act_field) = if depthwise {
        (f::DW_DILATION_H, f::DW_DILATION_W, f::DW_ACTIVATION)
    } else {
        (f::CONV_DILATION_H, f::CONV_DILATION_W, f::CONV_ACTIVATION)
    };
    let dilation = (positive(opts, dil_h_field, 1)?, positive(opts, dil_w_field, 1)?);
    let (exp_h, pad_h) = padding(same, in_h, f_h, stride.0, dilation.0);
    let (exp_w, pad_w) = padding(same, in_w, f_w, stride.1, dilation.1);
    if o_b != batches || o_h != exp_h || o_w != exp_w {
        return Err(OpError::Shape("conv output size does not follow from padding and stride").into());
    }
    let depth_multiplier = if depthwise {
        if f0 != 1 || f_c != o_c || in_c == 0 || !o_c.is_multiple_of(in_c) {
            return Err(OpError::Shape("depthwise filter must be 1×H×W×(C·multiplier)").into());
        }
        let declared = option_i32(opts, f::DW_DEPTH_MULTIPLIER, 0)?;
        if declared > 0 && declared as usize != o_c / in_c {
            return Err(OpError::Shape("depth multiplier does not match the channels").into());
        }
        o_c / in_c
    } else {
        if f0 != o_c || f_c == 0 || !in_c.is_multiple_of(f_c) || !o_c.is_multiple_of(in_c / f_c) {
            return Err(OpError::Shape("conv filter channels").into());
        }
        1
    };
    let channel_dim = if depthwise { 3 } else { 0 };
    let out_q = output.quant()?;
    let params = ConvParams {
        stride,
        dilation,
        padding: (pad_h, pad_w),
        input_offset: -input.quant()?.zero_point,
        output_offset: out_q.zero_point,
        act: activation(opts, act_field)?.range(out_q, codes),
        rescale: rescale(input, filter, output, o_c, channel_dim, false, verify)?,
        depth_multiplier,
    };
    if input.dtype == DType::Int16 {
        let acc = wide_bias(bias_t, o_c, depthwise)?;
        return Ok(if depthwise { Kernel::Depthwise16(params) } else { Kernel::Conv16(params, acc) });
    }
    bias(bias_t, o_c)?;
    Ok(if depthwise { Kernel::Depthwise(params) } else { Kernel::Conv(params) })
}

fn fully_connected<'a>(
    input: &TensorInfo<'a>,
    filter: &TensorInfo<'a>,
    bias_t: Option<TensorInfo<'a>>,
    output: &TensorInfo<'a>,
    opts: Option<Table<'a>>,
    verify: bool,
) -> Result<Kernel<'a>> {
    let codes = activation_codes(input, output)?;
    weights(filter)?;
    if opts.map_or(Ok(0), |t| t.scalar::<i8>(f::FC_WEIGHTS_FORMAT, 0)).map_err(fb)? != 0 {
        return Err(OpError::Unsupported("shuffled fully connected weights").into());
    }
    if filter.shape.rank() != 2 {
        return Err(OpError::Shape("fully connected weights must be 2-D").into());
    }
    let (output_depth, accum_depth) = (filter.shape.dim(0), filter.shape.dim(1));
    let in_elems = input.shape.elements();
    if accum_depth == 0 || !in_elems.is_multiple_of(accum_depth) {
        return Err(OpError::Shape("input size is not a multiple of the weights' depth").into());
    }
    let batches = in_elems / accum_depth;
    if output.shape.elements() != batches * output_depth || output.shape.dims().last() != Some(&output_depth) {
        return Err(OpError::Shape("fully connected output").into());
    }
    let out_q = output.quant()?;
    let params = FcParams {
        input_offset: -input.quant()?.zero_point,
        output_offset: out_q.zero_point,
        act: activation(opts, f::FC_ACTIVATION)?.range(out_q, codes),
        rescale: rescale(input, filter, output, output_depth, 0, true, verify)?,
    };
    let dims = FcDims { batches, output_depth, accum_depth };
    if input.dtype == DType::Int16 {
        return Ok(Kernel::FullyConnected16(params, dims, wide_bias(bias_t, output_depth, false)?));
    }
    bias(bias_t, output_depth)?;
    Ok(Kernel::FullyConnected(params, dims))
}

fn pool<'a>(op: Op, input: &TensorInfo<'a>, output: &TensorInfo<'a>, opts: Option<Table<'a>>) -> Result<Kernel<'a>> {
    int8_activation(input)?;
    int8_activation(output)?;
    if input.quant()? != output.quant()? {
        return Err(OpError::Quantization("pooling must keep quantization").into());
    }
    let [batches, in_h, in_w, c] = shape4(input, "pool input must be 4-D")?;
    let [o_b, o_h, o_w, o_c] = shape4(output, "pool output must be 4-D")?;
    let same = opts.map_or(Ok(0), |t| t.scalar::<i8>(f::PADDING, 0)).map_err(fb)? == 0;
    let stride = (positive(opts, f::STRIDE_H, 1)?, positive(opts, f::STRIDE_W, 1)?);
    let filter = (positive(opts, f::POOL_FILTER_H, 1)?, positive(opts, f::POOL_FILTER_W, 1)?);
    let (exp_h, pad_h) = padding(same, in_h, filter.0, stride.0, 1);
    let (exp_w, pad_w) = padding(same, in_w, filter.1, stride.1, 1);
    if o_b != batches || o_c != c || o_h != exp_h || o_w != exp_w {
        return Err(OpError::Shape("pool output size does not follow from padding and stride").into());
    }
    let kind = if op == Op::MaxPool2d { PoolKind::Max } else { PoolKind::Average };
    let act = activation(opts, f::POOL_ACTIVATION)?.range_i8(output.quant()?);
    Ok(Kernel::Pool(kind, PoolParams { filter, stride, padding: (pad_h, pad_w), act }))
}

fn softmax<'a>(input: &TensorInfo<'a>, output: &TensorInfo<'a>, opts: Option<Table<'a>>) -> Result<Kernel<'a>> {
    int8_activation(input)?;
    int8_activation(output)?;
    if input.shape != output.shape || input.shape.rank() == 0 {
        return Err(OpError::Shape("softmax input and output shapes differ").into());
    }
    let beta = opts.map_or(Ok(1.0), |t| t.scalar::<f32>(f::SOFTMAX_BETA, 0.0)).map_err(fb)?;
    let (iq, oq) = (input.quant()?, output.quant()?);
    let params = SoftmaxParams::prepare(beta, iq.scale, oq.scale, oq.zero_point)?;
    let depth = input.shape.dims().last().copied().unwrap_or(1);
    Ok(Kernel::Softmax { params, depth })
}
