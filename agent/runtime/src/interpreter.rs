//! Runs a verified model inside a caller-provided arena.
//!
//! The arena holds the activation tensors at the offsets the planner chose (its head) and
//! the plan itself (its tail). Constants are read in place from the model. Before each
//! operator runs, the arena is split into the operator's outputs and the gaps around
//! them, so the outputs are written while the inputs are read from the gaps without any
//! aliasing (the planner guarantees that no input overlaps an output and that outputs do
//! not overlap each other; if they did, the split would report it).

use core::fmt;

use crate::kernels::params::{CHANNEL_ENTRY, ChannelTable, Int32s, Int64s, Rescale, WideBias};
use crate::kernels::{
    Code, I16, OpError, arg_min_max, codes_mut, conv, elementwise as ew, fully_connected, gather, pool, quantize,
    resize, shape, softmax, strided_slice, transpose_conv, wide,
};
use crate::model::{DType, Model, ModelError, TensorInfo, Tensors};
use crate::ops::{self, Kernel, MAX_OP_OUTPUTS, Op, PrepareError};
use crate::plan::{self, ALIGN, ENTRY, Plan};
use crate::records;
use crate::tensor::{Quant, Shape};

/// Why a model could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// The model is malformed or unsupported.
    Model(ModelError),
    /// The arena is smaller than the model needs.
    ArenaTooSmall {
        /// Bytes needed (a lower bound when even the plan does not fit).
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// An operator failed at run time.
    Operator {
        /// Operator index.
        index: usize,
        /// Which operator.
        op: Op,
        /// Why.
        problem: OpError,
    },
    /// No model input or output with that index.
    NoSuchTensor(usize),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(e) => write!(f, "{e}"),
            Self::ArenaTooSmall { needed, available } => {
                write!(f, "arena of {available} bytes too small: {needed} needed")
            }
            Self::Operator { index, op, problem } => write!(f, "operator {index} ({}): {problem}", op.name()),
            Self::NoSuchTensor(i) => write!(f, "no input or output {i}"),
        }
    }
}

impl core::error::Error for RunError {}

impl From<ModelError> for RunError {
    fn from(e: ModelError) -> Self {
        Self::Model(e)
    }
}

/// A model bound to an arena, ready to run.
///
/// Arena layout: activations (the head, as planned), then the per-channel multipliers of
/// every convolution-like operator (computed once here, as TFLM's `Prepare` does), then a
/// compact record per tensor (so inferences do not walk the flatbuffer), then the plan.
/// Operators are prepared again at each invoke unless a cache of prepared operators is
/// given ([`Interpreter::with_cache`]).
pub struct Interpreter<'m, 'a> {
    model: Model<'m>,
    head: &'a mut [u8],
    channels: &'a [u8],
    records: &'a [u8],
    tail: &'a [u8],
    head_used: usize,
    cache: &'a [PreparedOp<'a>],
}

/// One operator prepared once and kept between invokes: its checked tensors and kernel
/// parameters (see [`Interpreter::with_cache`]). A Rust value with references into the
/// model and the arena, so it lives in a typed slice rather than in the byte arena.
#[derive(Clone, Default)]
pub struct PreparedOp<'a>(Option<ops::Prepared<'a>>);

impl PreparedOp<'_> {
    /// A slot not filled yet.
    pub const EMPTY: Self = Self(None);
}

fn prepare_at<'m>(model: &Model<'m>, i: usize) -> Result<ops::Prepared<'m>, RunError> {
    let op = model.operator(i)?;
    ops::prepare(model, &op).map_err(|e| match e {
        PrepareError::Model(e) => RunError::Model(e),
        PrepareError::Op(problem) => RunError::Operator { index: i, op: op.op, problem },
    })
}

/// Bytes of precomputed per-channel multipliers the model needs.
fn channel_bytes(model: &Model<'_>) -> Result<usize, RunError> {
    let mut total = 0;
    for i in 0..model.operator_count() {
        let mut p = prepare_at(model, i)?;
        if p.kernel.per_channel().is_some() {
            total += p.channels * CHANNEL_ENTRY;
        }
    }
    Ok(total)
}

/// Arena bytes the model needs: activations, multipliers and plan (host convenience; on a
/// device, [`Interpreter::new`] reports the size when the arena is too small).
#[cfg(feature = "std")]
pub fn arena_size(model: &Model<'_>) -> Result<usize, RunError> {
    let tail = model.tensor_count() * ENTRY;
    let mut entries = vec![0u8; tail];
    let (_, head) = plan::plan(model, &mut entries, &|t| model.tensor(t).map(|info| info.bytes()))?;
    Ok(head.next_multiple_of(ALIGN) + channel_bytes(model)? + model.tensor_count() * records::RECORD + tail)
}

impl<'m: 'a, 'a> Interpreter<'m, 'a> {
    /// Plans the model into `arena`; fails if it does not fit. Each invoke prepares every
    /// operator again (reads its tensors and options, derives its kernel parameters), as
    /// nothing outside the arena holds them.
    pub fn new(model: Model<'m>, arena: &'a mut [u8]) -> Result<Self, RunError> {
        Self::with_cache(model, arena, &mut [])
    }

    /// As [`Interpreter::new`], and prepares operator `i` once into `cache[i]`, so an invoke
    /// neither reads the operator table nor derives parameters again for it (TFLM's
    /// `Prepare` once, `Eval` per invoke). Operators past `cache.len()` are prepared at
    /// each invoke. Costs `size_of::<PreparedOp>()` bytes per slot, outside the arena.
    pub fn with_cache(
        model: Model<'m>,
        arena: &'a mut [u8],
        cache: &'a mut [PreparedOp<'a>],
    ) -> Result<Self, RunError> {
        let available = arena.len();
        let tail_len = model.tensor_count() * ENTRY;
        let channels_len = channel_bytes(&model)?;
        let records_len = model.tensor_count() * records::RECORD;
        let fixed = tail_len + channels_len + records_len;
        let too_small = |needed| RunError::ArenaTooSmall { needed, available };
        let head_len = available.checked_sub(fixed).ok_or(too_small(fixed))?;
        let head_len = head_len - head_len % ALIGN;
        let (head, rest) = arena.split_at_mut(head_len);
        let skip = rest.len() - fixed;
        let (channels, rest) = rest[skip..].split_at_mut(channels_len);
        let (records, tail) = rest.split_at_mut(records_len);
        for (i, record) in records.chunks_exact_mut(records::RECORD).enumerate() {
            records::write(model.bytes(), &model.tensor(i)?, record);
        }
        let tensors = records::Records { model: model.bytes(), records };
        let (_, head_used) = plan::plan(&model, tail, &|t| tensors.tensor(t).map(|info| info.bytes()))?;
        if head_used > head.len() {
            return Err(too_small(head_used.next_multiple_of(ALIGN) + fixed));
        }
        let mut offset = 0;
        for i in 0..model.operator_count() {
            let mut p = prepare_at(&model, i)?;
            let n = p.channels * CHANNEL_ENTRY;
            if let Some(rescale) = p.kernel.per_channel() {
                rescale.fill(channels.get_mut(offset..offset + n).ok_or(too_small(fixed))?);
                offset += n;
            }
            if let Some(slot) = cache.get_mut(i) {
                *slot = PreparedOp(Some(p));
            }
        }
        // The kept operators read their multipliers from the table just written.
        let channels: &'a [u8] = channels;
        let mut offset = 0;
        for p in cache.iter_mut().filter_map(|slot| slot.0.as_mut()) {
            let n = p.channels * CHANNEL_ENTRY;
            if let Some(rescale) = p.kernel.per_channel() {
                *rescale = Rescale::Table(ChannelTable(channels.get(offset..offset + n).ok_or(too_small(fixed))?));
                offset += n;
            }
        }
        Ok(Self { model, head, channels, records, tail, head_used, cache })
    }
}

impl<'m, 'a> Interpreter<'m, 'a> {
    /// Arena bytes actually used (activations, multipliers and plan).
    pub fn arena_used(&self) -> usize {
        self.head_used.next_multiple_of(ALIGN) + self.channels.len() + self.records.len() + self.tail.len()
    }

    /// The model.
    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    fn region(&self, t: &TensorInfo<'_>) -> Option<core::ops::Range<usize>> {
        let offset = Plan::new(self.tail).offset(t.index)?;
        Some(offset..offset + t.bytes())
    }

    /// The bytes of model input `i`, to fill before [`Interpreter::invoke`].
    pub fn input(&mut self, i: usize) -> Result<&mut [u8], RunError> {
        let t = self.model.input(i).map_err(|_| RunError::NoSuchTensor(i))?;
        let range = self.region(&t).ok_or(RunError::NoSuchTensor(i))?;
        self.head.get_mut(range).ok_or(RunError::NoSuchTensor(i))
    }

    /// The bytes of model output `i`, valid after [`Interpreter::invoke`].
    pub fn output(&self, i: usize) -> Result<&[u8], RunError> {
        let t = self.model.output(i).map_err(|_| RunError::NoSuchTensor(i))?;
        let range = self.region(&t).ok_or(RunError::NoSuchTensor(i))?;
        self.head.get(range).ok_or(RunError::NoSuchTensor(i))
    }

    /// Runs every operator once.
    pub fn invoke(&mut self) -> Result<(), RunError> {
        let mut channel_offset = 0;
        for i in 0..self.model.operator_count() {
            let tensors = records::Records { model: self.model.bytes(), records: self.records };
            let mut local;
            let prepared = match self.cache.get(i).and_then(|slot| slot.0.as_ref()) {
                Some(kept) => kept,
                None => {
                    let op = self.model.operator(i)?;
                    local = ops::prepare(&tensors, &op).map_err(|e| match e {
                        PrepareError::Model(e) => RunError::Model(e),
                        PrepareError::Op(problem) => RunError::Operator { index: i, op: op.op, problem },
                    })?;
                    let n = local.channels * CHANNEL_ENTRY;
                    if let Some(rescale) = local.kernel.per_channel() {
                        let table = self.channels.get(channel_offset..channel_offset + n);
                        let bad = RunError::Operator { index: i, op: op.op, problem: OpError::Shape("multipliers") };
                        *rescale = Rescale::Table(ChannelTable(table.ok_or(bad)?));
                    }
                    &local
                }
            };
            let op = prepared.op;
            let fail = |problem| RunError::Operator { index: i, op, problem };
            if prepared.kernel.has_channel_table() {
                channel_offset += prepared.channels * CHANNEL_ENTRY;
            }
            let mut regions = [(0, 0); MAX_OP_OUTPUTS];
            let mut count = 0;
            for (slot, t) in regions.iter_mut().zip(prepared.outputs()) {
                let t = tensors.tensor_at(Some(i), t)?;
                let region = self.region(&t).ok_or(fail(OpError::Shape("output is not planned")))?;
                *slot = (region.start, region.end);
                count += 1;
            }
            let plan = Plan::new(self.tail);
            let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
            let regions = regions.get(..count).unwrap_or(&[]);
            let view = Views::split(self.head, regions, &mut outputs, &plan).map_err(fail)?;
            run(prepared, &tensors, &view, outputs.get_mut(..count).unwrap_or(&mut [])).map_err(fail)?;
        }
        Ok(())
    }
}

/// The arena around an operator's outputs: the gaps between them, to read inputs from.
struct Views<'v> {
    /// Each gap's offset in the arena and its bytes, in arena order.
    gaps: [(usize, &'v [u8]); MAX_OP_OUTPUTS + 1],
    plan: &'v Plan<'v>,
}

impl<'v> Views<'v> {
    /// Splits `head` at the output `regions` (arena byte ranges, in output order): each
    /// output's bytes go to `outputs` at its position, what lies between them to the gaps.
    /// Fails if outputs overlap each other or leave the arena.
    fn split(
        head: &'v mut [u8],
        regions: &[(usize, usize)],
        outputs: &mut [&'v mut [u8]],
        plan: &'v Plan<'v>,
    ) -> Result<Self, OpError> {
        let mut order = [0usize; MAX_OP_OUTPUTS];
        for (k, o) in order.iter_mut().enumerate() {
            *o = k;
        }
        let order = order.get_mut(..regions.len()).ok_or(OpError::Unsupported("too many outputs"))?;
        order.sort_unstable_by_key(|&k| regions.get(k).map_or(0, |r| r.0));
        let mut views = Self { gaps: [(0, &[]); MAX_OP_OUTPUTS + 1], plan };
        let (mut rest, mut at) = (head, 0usize);
        for (gap, &k) in views.gaps.iter_mut().zip(order.iter()) {
            let &(start, end) = regions.get(k).ok_or(OpError::Shape("output region"))?;
            let before = start.checked_sub(at).ok_or(OpError::Shape("outputs overlap"))?;
            let len = end.checked_sub(start).ok_or(OpError::Shape("output region"))?;
            if before.checked_add(len).is_none_or(|n| n > rest.len()) {
                return Err(OpError::Shape("output outside the arena"));
            }
            let (bytes, tail) = core::mem::take(&mut rest).split_at_mut(before);
            let (output, tail) = tail.split_at_mut(len);
            *gap = (at, bytes);
            *outputs.get_mut(k).ok_or(OpError::Shape("output region"))? = output;
            (rest, at) = (tail, end);
        }
        if let Some(last) = views.gaps.get_mut(regions.len()) {
            *last = (at, rest);
        }
        Ok(views)
    }

    /// The bytes of an input tensor: its constant data, or its arena region, which must
    /// lie in one gap (overlapping no output).
    fn bytes<'m: 'v>(&self, t: &TensorInfo<'m>) -> Result<&'v [u8], OpError> {
        if let Some(data) = t.data {
            return Ok(data);
        }
        let start = self.plan.offset(t.index).ok_or(OpError::Shape("input is not planned"))?;
        let end = start.checked_add(t.bytes()).ok_or(OpError::Shape("input is not planned"))?;
        self.gaps
            .iter()
            .find(|(at, gap)| *at <= start && end <= at + gap.len())
            .and_then(|&(at, gap)| gap.get(start - at..end - at))
            .ok_or(OpError::Shape("input overlaps an output or lies outside the arena"))
    }

    fn int8<'m: 'v>(&self, t: &TensorInfo<'m>) -> Result<&'v [i8], OpError> {
        self.bytes(t).map(bytemuck::cast_slice)
    }

    /// An input's codes (any alignment).
    fn codes<'m: 'v, C: Code>(&self, t: &TensorInfo<'m>) -> Result<&'v [C], OpError> {
        crate::kernels::codes(self.bytes(t)?).ok_or(OpError::Shape("tensor size is not a whole number of codes"))
    }
}

/// An output's codes.
fn out_codes<C: Code>(output: &mut [u8]) -> Result<&mut [C], OpError> {
    codes_mut(output).ok_or(OpError::Shape("tensor size is not a whole number of codes"))
}

/// The bias of a 16x8 layer as its tensor stores it.
fn wide_bias<'m>(t: Option<TensorInfo<'m>>) -> Result<WideBias<'m>, OpError> {
    let Some(t) = t else { return Ok(WideBias::None) };
    let data = t.data.ok_or(OpError::Type("bias must be constant"))?;
    Ok(if t.dtype == DType::Int64 { WideBias::I64(Int64s(data)) } else { WideBias::I32(Int32s(data)) })
}

/// float32 → codes of `to`.
fn quantize_to(q: Quant, to: DType, input: &[u8], output: &mut [u8]) -> Result<(), OpError> {
    match to {
        DType::Int8 => quantize::quantize::<i8>(q, input, out_codes(output)?),
        DType::UInt8 => quantize::quantize::<u8>(q, input, out_codes(output)?),
        DType::Int16 if INT16 => quantize::quantize::<I16>(q, input, out_codes(output)?),
        _ => Err(OpError::Type("QUANTIZE output")),
    }
}

/// Codes → codes of `to.1`.
fn requantize_to<A: Code>(from: Quant, input: &[A], to: (Quant, DType), output: &mut [u8]) -> Result<(), OpError> {
    match to.1 {
        DType::Int8 => quantize::requantize::<A, i8>(from, to.0, input, out_codes(output)?),
        DType::UInt8 => quantize::requantize::<A, u8>(from, to.0, input, out_codes(output)?),
        DType::Int16 if INT16 => quantize::requantize::<A, I16>(from, to.0, input, out_codes(output)?),
        _ => Err(OpError::Type("QUANTIZE output")),
    }
}

/// Whether the 16x8 kernels are linked (see `ops`).
const INT16: bool = cfg!(feature = "int16");

/// Whether any of these operators is linked (a constant: the arms it guards vanish
/// from builds without them).
macro_rules! linked {
    ($($op:ident),+) => { false $(|| Op::$op.linked())+ };
}

fn run<'m>(
    p: &ops::Prepared<'m>,
    tensors: &dyn Tensors<'m>,
    v: &Views<'_>,
    outputs: &mut [&mut [u8]],
) -> Result<(), OpError> {
    let tensor = |index: Option<u16>| -> Result<Option<TensorInfo<'m>>, OpError> {
        match index {
            Some(i) => {
                tensors.tensor_at(Some(p.operator), i32::from(i)).map(Some).map_err(|_| OpError::Shape("tensor"))
            }
            None => Ok(None),
        }
    };
    let input = |i: usize| tensor(p.inputs.get(i).copied().flatten())?.ok_or(OpError::Shape("missing input"));
    let shape4 = |t: &TensorInfo<'_>| t.shape.extended4().ok_or(OpError::Shape("rank above 4"));
    let bias = |i: usize| -> Result<Option<Int32s<'_>>, OpError> {
        match tensor(p.inputs.get(i).copied().flatten())? {
            Some(t) => Ok(Some(Int32s(t.data.ok_or(OpError::Type("bias must be constant"))?))),
            None => Ok(None),
        }
    };
    let out_t = tensor(p.outputs[0])?.ok_or(OpError::Shape("missing output"))?;
    let out_shape = &out_t.shape;
    let output: &mut [u8] = outputs.first_mut().ok_or(OpError::Shape("missing output"))?;
    let out_i8: &mut [i8] = bytemuck::cast_slice_mut(output);
    match &p.kernel {
        Kernel::Conv(params) if linked!(Conv2d) => {
            let (x, w) = (input(0)?, input(1)?);
            let input = conv::View4 { data: v.int8(&x)?, shape: shape4(&x)? };
            let filter = conv::View4 { data: v.int8(&w)?, shape: shape4(&w)? };
            conv::conv2d(params, input, filter, bias(2)?, out_i8, shape4(&out_t)?)
        }
        Kernel::Depthwise(params) if linked!(DepthwiseConv2d) => {
            let (x, w) = (input(0)?, input(1)?);
            let input = conv::View4 { data: v.int8(&x)?, shape: shape4(&x)? };
            let filter = conv::View4 { data: v.int8(&w)?, shape: shape4(&w)? };
            conv::depthwise_conv2d(params, input, filter, bias(2)?, out_i8, shape4(&out_t)?)
        }
        Kernel::FullyConnected(params, dims) if linked!(FullyConnected) => {
            let (x, w) = (input(0)?, input(1)?);
            fully_connected::fully_connected(params, v.int8(&x)?, v.int8(&w)?, bias(2)?, out_i8, *dims)
        }
        Kernel::Pool(kind, params) if linked!(AveragePool2d, MaxPool2d) => {
            let x = input(0)?;
            pool::pool(*kind, params, v.int8(&x)?, shape4(&x)?, out_i8, shape4(&out_t)?)
        }
        Kernel::Softmax { params, depth } if linked!(Softmax) => {
            softmax::softmax(params, v.int8(&input(0)?)?, out_i8, *depth)
        }
        Kernel::Copy if linked!(Reshape, Squeeze, ExpandDims) => {
            let x = v.bytes(&input(0)?)?;
            if x.len() != output.len() {
                return Err(OpError::Shape("reshape size"));
            }
            output.copy_from_slice(x);
            Ok(())
        }
        Kernel::Quantize(q, to) if linked!(Quantize) => quantize_to(*q, *to, v.bytes(&input(0)?)?, output),
        Kernel::Requantize((q, from), to) if linked!(Quantize) => {
            let x = input(0)?;
            match from {
                DType::Int8 => requantize_to::<i8>(*q, v.codes(&x)?, *to, output),
                DType::UInt8 => requantize_to::<u8>(*q, v.codes(&x)?, *to, output),
                DType::Int16 if INT16 => requantize_to::<I16>(*q, v.codes(&x)?, *to, output),
                _ => Err(OpError::Type("QUANTIZE input")),
            }
        }
        Kernel::Dequantize(q, from) if linked!(Dequantize) => {
            let x = input(0)?;
            match from {
                DType::Int8 => quantize::dequantize::<i8>(*q, v.codes(&x)?, output),
                DType::UInt8 => quantize::dequantize::<u8>(*q, v.codes(&x)?, output),
                DType::Int16 if INT16 => quantize::dequantize::<I16>(*q, v.codes(&x)?, output),
                _ => Err(OpError::Type("DEQUANTIZE input")),
            }
        }
        Kernel::AddSub(params) if linked!(Add, Sub) => {
            let (a, b) = (input(0)?, input(1)?);
            if INT16 && out_t.dtype == DType::Int16 {
                let out = out_codes::<I16>(output)?;
                ew::add_sub(params, v.codes(&a)?, &a.shape, v.codes(&b)?, &b.shape, out, out_shape)
            } else {
                ew::add_sub(params, v.int8(&a)?, &a.shape, v.int8(&b)?, &b.shape, out_i8, out_shape)
            }
        }
        Kernel::Conv16(params, acc) if INT16 && linked!(Conv2d) => {
            let (x, w) = (input(0)?, input(1)?);
            let input = wide::Wide4 { data: v.codes(&x)?, shape: shape4(&x)? };
            let bias = wide_bias(tensor(p.inputs.get(2).copied().flatten())?)?;
            let filter = conv::View4 { data: v.int8(&w)?, shape: shape4(&w)? };
            wide::conv2d(params, *acc, input, filter, bias, out_codes(output)?, shape4(&out_t)?)
        }
        Kernel::Depthwise16(params) if INT16 && linked!(DepthwiseConv2d) => {
            let (x, w) = (input(0)?, input(1)?);
            let input = wide::Wide4 { data: v.codes(&x)?, shape: shape4(&x)? };
            let bias = wide_bias(tensor(p.inputs.get(2).copied().flatten())?)?;
            let filter = conv::View4 { data: v.int8(&w)?, shape: shape4(&w)? };
            wide::depthwise_conv2d(params, input, filter, bias, out_codes(output)?, shape4(&out_t)?)
        }
        Kernel::FullyConnected16(params, dims, acc) if INT16 && linked!(FullyConnected) => {
            let (x, w) = (input(0)?, input(1)?);
            let bias = wide_bias(tensor(p.inputs.get(2).copied().flatten())?)?;
            wide::fully_connected(params, *acc, v.codes(&x)?, v.int8(&w)?, bias, out_codes(output)?, *dims)
        }
        Kernel::Mul(params) if linked!(Mul) => {
            let (a, b) = (input(0)?, input(1)?);
            ew::mul(params, v.int8(&a)?, &a.shape, v.int8(&b)?, &b.shape, out_i8, out_shape)
        }
        Kernel::Logistic(params) if linked!(Logistic) => ew::logistic(params, v.int8(&input(0)?)?, out_i8),
        Kernel::Tanh(params) if linked!(Tanh) => ew::tanh(params, v.int8(&input(0)?)?, out_i8),
        Kernel::LeakyRelu(params) if linked!(LeakyRelu) => ew::leaky_relu(params, v.int8(&input(0)?)?, out_i8),
        Kernel::HardSwish(params) if linked!(HardSwish) => ew::hard_swish(params, v.int8(&input(0)?)?, out_i8),
        Kernel::Pad { paddings, rank, value } if linked!(Pad) => {
            let x = input(0)?;
            let pads = paddings.get(..*rank).ok_or(OpError::Shape("pad rank"))?;
            ew::pad(v.int8(&x)?, &x.shape, pads, *value, out_i8, out_shape)
        }
        Kernel::Concatenation { axis, count } if linked!(Concatenation) => {
            let mut parts: [(&[i8], Shape); ops::MAX_OP_INPUTS] = [(&[], Shape::default()); ops::MAX_OP_INPUTS];
            for (i, part) in parts.iter_mut().enumerate().take(*count) {
                let t = input(i)?;
                *part = (v.int8(&t)?, t.shape);
            }
            ew::concatenation(parts.get(..*count).unwrap_or(&[]), *axis, out_i8, out_shape)
        }
        Kernel::Mean(params) if linked!(Mean) => ew::mean(params, v.int8(&input(0)?)?, out_i8),
        Kernel::Relu(params) if linked!(Relu) => match out_t.dtype {
            DType::Int16 if INT16 => ew::relu::<I16>(params, v.codes(&input(0)?)?, out_codes(output)?),
            _ => ew::relu(params, v.int8(&input(0)?)?, out_i8),
        },
        Kernel::Relu6(params) if linked!(Relu6) => match out_t.dtype {
            DType::Int16 if INT16 => ew::relu6::<I16>(params, v.codes(&input(0)?)?, out_codes(output)?),
            _ => ew::relu6(params, v.int8(&input(0)?)?, out_i8),
        },
        Kernel::MinMax { max } if linked!(Minimum, Maximum) => {
            let (a, b) = (input(0)?, input(1)?);
            let f = if *max { ew::maximum } else { ew::minimum };
            f(v.int8(&a)?, &a.shape, v.int8(&b)?, &b.shape, out_i8, out_shape)
        }
        Kernel::Prelu(params) if linked!(Prelu) => {
            let (x, alpha) = (input(0)?, input(1)?);
            ew::prelu(params, v.int8(&x)?, &x.shape, v.int8(&alpha)?, &alpha.shape, out_i8, out_shape)
        }
        Kernel::StridedSlice(params) if linked!(StridedSlice) => {
            let x = input(0)?;
            strided_slice::strided_slice(params, v.bytes(&x)?, &x.shape, x.dtype.size(), output)
        }
        Kernel::Shape if linked!(Shape) => shape::shape(&input(0)?.shape, output),
        Kernel::Pack { outer, count } if linked!(Pack) => {
            let mut parts: [&[u8]; ops::MAX_OP_INPUTS] = [&[]; ops::MAX_OP_INPUTS];
            for (i, part) in parts.iter_mut().enumerate().take(*count) {
                *part = v.bytes(&input(i)?)?;
            }
            shape::join(parts.get(..*count).unwrap_or(&[]), *outer, output)
        }
        Kernel::Split { input: i, outer } if linked!(Split, SplitV, Unpack) => {
            shape::split(v.bytes(&input(*i)?)?, *outer, outputs)
        }
        Kernel::Transpose { perm, rank } if linked!(Transpose) => {
            let x = input(0)?;
            let perm = perm.get(..*rank).ok_or(OpError::Shape("transpose rank"))?;
            shape::transpose(perm, v.bytes(&x)?, &x.shape, x.dtype.size(), output, out_shape)
        }
        Kernel::Gather(params) if linked!(Gather) => {
            let (x, at) = (input(0)?, input(1)?);
            gather::gather(params, v.bytes(&x)?, &x.shape, x.dtype.size(), v.bytes(&at)?, &at.shape, output)
        }
        Kernel::ArgMinMax { axis, max } if linked!(ArgMax, ArgMin) => {
            let x = input(0)?;
            arg_min_max::arg_min_max(v.int8(&x)?, &x.shape, *axis, *max, output)
        }
        Kernel::TransposeConv(params) if linked!(TransposeConv) => {
            let (w, x) = (input(1)?, input(2)?);
            let input = transpose_conv::Tensor4 { data: v.int8(&x)?, shape: shape4(&x)? };
            let filter = transpose_conv::Tensor4 { data: v.int8(&w)?, shape: shape4(&w)? };
            transpose_conv::transpose_conv(params, input, filter, bias(3)?, out_i8, shape4(&out_t)?)
        }
        Kernel::ResizeNearest(params) if linked!(ResizeNearestNeighbor) => {
            let x = input(0)?;
            resize::resize_nearest(*params, v.bytes(&x)?, shape4(&x)?, x.dtype.size(), output, shape4(&out_t)?)
        }
        // `prepare` made this kernel, so its operator is linked: unreachable, and a
        // kernel whose operators are all unlinked leaves no code behind.
        _ => Err(OpError::Unsupported("operator not linked into this build")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DType;

    /// A plan placing tensor `t` at `offsets[t]`.
    fn plan(offsets: &[u32]) -> Vec<u8> {
        offsets.iter().flat_map(|o| o.to_le_bytes().into_iter().chain([0; 4])).collect()
    }

    fn tensor(index: usize, bytes: usize) -> TensorInfo<'static> {
        let shape = Shape::new(&[bytes]).unwrap_or_default();
        TensorInfo { index, shape, dtype: DType::Int8, data: None, quantization: None, model: &[], table: 0 }
    }

    #[test]
    fn outputs_in_any_order_and_inputs_between_them() -> Result<(), OpError> {
        // Tensors 0..3 at 0, 8, 16, 24 (8 bytes each): outputs are 2 then 0.
        let entries = plan(&[0, 8, 16, 24]);
        let plan = Plan::new(&entries);
        let mut head: Vec<u8> = (0..32).collect();
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        let views = Views::split(&mut head, &[(16, 24), (0, 8)], &mut outputs, &plan)?;
        assert_eq!(views.bytes(&tensor(1, 8))?, &[8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(views.bytes(&tensor(3, 8))?[0], 24);
        // An input that is an output, or straddles one, is refused.
        assert!(views.bytes(&tensor(2, 8)).is_err());
        assert!(views.bytes(&tensor(1, 9)).is_err());
        assert!(views.bytes(&tensor(3, 9)).is_err());
        assert_eq!(outputs[0][0], 16);
        assert_eq!(outputs[1][7], 7);
        outputs[0].fill(0);
        Ok(())
    }

    #[test]
    fn overlapping_or_outside_outputs_are_refused() {
        let entries = plan(&[0]);
        let plan = Plan::new(&entries);
        let mut head = [0u8; 32];
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        assert!(Views::split(&mut head, &[(0, 8), (4, 12)], &mut outputs, &plan).is_err());
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        assert!(Views::split(&mut head, &[(0, 8), (0, 8)], &mut outputs, &plan).is_err());
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        assert!(Views::split(&mut head, &[(24, 40)], &mut outputs, &plan).is_err());
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        assert!(Views::split(&mut head, &[(8, 4)], &mut outputs, &plan).is_err());
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        assert!(Views::split(&mut head, &[(0, 1); MAX_OP_OUTPUTS + 1], &mut outputs, &plan).is_err());
        // Adjacent outputs are fine, and a gap of zero bytes between them.
        let mut outputs: [&mut [u8]; MAX_OP_OUTPUTS] = Default::default();
        assert!(Views::split(&mut head, &[(8, 16), (0, 8), (16, 32)], &mut outputs, &plan).is_ok());
        assert_eq!(outputs.iter().map(|o| o.len()).collect::<Vec<_>>()[..3], [8, 8, 16]);
    }
}
