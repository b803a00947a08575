//! A `.tflite` model read in place, verified in full before anything runs.
//!
//! `Model::parse` walks the whole flatbuffer once: every tensor's shape, type, buffer and
//! quantization, every operator's code, tensor indices and execution order, and then each
//! operator's own requirements (through its kernel's `prepare`). After that, the
//! interpreter only ever re-reads what was checked; the reads stay bounds-checked anyway,
//! so even a model that changed under us (a flash write) gives an error, not a panic.

use core::fmt;

use crate::flatbuffer::{FbError, Table, Vector};
use crate::kernels::OpError;
use crate::ops::Op;
use crate::schema;
use crate::tensor::{MAX_RANK, Quant, Shape};

/// Most tensors in one model (bounds the planner's work and the arena's tail).
pub const MAX_TENSORS: usize = 1024;
/// Most operators in one model.
pub const MAX_OPERATORS: usize = 1024;
/// The TFLite schema version this runtime reads.
pub const SCHEMA_VERSION: u32 = 3;

/// Element types the runtime handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// int8 (activations, weights).
    Int8,
    /// uint8 (inputs and outputs of models converted for uint8 I/O, around a QUANTIZE).
    UInt8,
    /// int16 (activations of 16x8 models).
    Int16,
    /// int32 (biases, shape and padding operands).
    Int32,
    /// int64 (biases of 16x8 models).
    Int64,
    /// float32 (inputs of QUANTIZE, outputs of DEQUANTIZE).
    Float32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Int8 | Self::UInt8 => 1,
            Self::Int16 => 2,
            Self::Int32 | Self::Float32 => 4,
            Self::Int64 => 8,
        }
    }

    /// Its name as in TFLite.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::UInt8 => "uint8",
            Self::Int16 => "int16",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::Float32 => "float32",
        }
    }

    /// NumPy's descriptor of the type, as `.npy` files name it.
    pub fn npy_descr(self) -> &'static str {
        match self {
            Self::Int8 => "|i1",
            Self::UInt8 => "|u1",
            Self::Int16 => "<i2",
            Self::Int32 => "<i4",
            Self::Int64 => "<i8",
            Self::Float32 => "<f4",
        }
    }

    /// The range of a quantized code of this type (`None` for float32).
    pub fn code_range(self) -> Option<(i64, i64)> {
        match self {
            Self::Int8 => Some((i64::from(i8::MIN), i64::from(i8::MAX))),
            Self::UInt8 => Some((0, i64::from(u8::MAX))),
            Self::Int16 => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
            Self::Int32 => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            Self::Int64 => Some((i64::MIN, i64::MAX)),
            Self::Float32 => None,
        }
    }
}

/// Where in the model a structural error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The root table.
    Model,
    /// The (only) subgraph.
    Subgraph,
    /// Tensor `i`.
    Tensor(usize),
    /// Operator `i` (execution order).
    Operator(usize),
    /// Operator code `i`.
    OperatorCode(usize),
    /// Buffer `i`.
    Buffer(usize),
}

/// What is wrong with a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorProblem {
    /// A type other than int8, int32 or float32 (the schema's enum value).
    Type(i8),
    /// Rank above [`MAX_RANK`].
    Rank(usize),
    /// A dimension below 1, or a size that does not fit the address space.
    Dimension,
    /// The buffer index is out of range.
    BufferIndex,
    /// The constant data has the wrong length for the shape and type.
    BufferSize {
        /// Bytes the shape and type call for.
        expected: usize,
        /// Bytes the buffer holds.
        actual: usize,
    },
    /// Data stored outside the flatbuffer (models over 2 GB), which a device never has.
    ExternalData,
    /// Scales or zero points missing, inconsistent or out of range.
    Quantization,
    /// Sparse tensors are not supported.
    Sparse,
    /// Variable tensors (state) are not supported.
    Variable,
    /// Read by an operator before any operator wrote it (and not a model input).
    ReadBeforeWritten,
    /// Written by two operators, or a constant that an operator writes.
    WrittenTwice,
}

/// Why a model cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelError {
    /// The flatbuffer is truncated or its offsets point outside it.
    Malformed {
        /// Where.
        at: Location,
        /// What.
        error: FbError,
    },
    /// A schema version other than [`SCHEMA_VERSION`].
    UnsupportedVersion(u32),
    /// Only single-subgraph models run (no control flow).
    SubgraphCount(usize),
    /// More tensors than [`MAX_TENSORS`].
    TooManyTensors(usize),
    /// More operators than [`MAX_OPERATORS`].
    TooManyOperators(usize),
    /// A tensor is unusable.
    Tensor {
        /// Its index.
        index: usize,
        /// Why.
        problem: TensorProblem,
    },
    /// An operator the runtime does not implement.
    UnsupportedOp {
        /// Operator index.
        index: usize,
        /// Its builtin code (32 for custom operators).
        code: i32,
    },
    /// A supported operator with inputs, outputs or options it cannot run.
    Operator {
        /// Operator index.
        index: usize,
        /// Which operator.
        op: Op,
        /// Why.
        problem: OpError,
    },
    /// An operator or graph input/output names a tensor index out of range.
    TensorIndex {
        /// Operator index, or `None` for the graph's own inputs and outputs.
        operator: Option<usize>,
        /// The bad index.
        tensor: i32,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { at, error } => write!(f, "malformed model at {at:?}: {error}"),
            Self::UnsupportedVersion(v) => write!(f, "schema version {v} (expected {SCHEMA_VERSION})"),
            Self::SubgraphCount(n) => write!(f, "{n} subgraphs (exactly 1 supported)"),
            Self::TooManyTensors(n) => write!(f, "{n} tensors (at most {MAX_TENSORS})"),
            Self::TooManyOperators(n) => write!(f, "{n} operators (at most {MAX_OPERATORS})"),
            Self::Tensor { index, problem } => write!(f, "tensor {index}: {problem:?}"),
            Self::UnsupportedOp { index, code } => {
                write!(f, "operator {index}: unsupported builtin code {code}")
            }
            Self::Operator { index, op, problem } => write!(f, "operator {index} ({}): {problem}", op.name()),
            Self::TensorIndex { operator: Some(op), tensor } => {
                write!(f, "operator {op}: tensor index {tensor} out of range")
            }
            Self::TensorIndex { operator: None, tensor } => write!(f, "graph tensor index {tensor} out of range"),
        }
    }
}

impl core::error::Error for ModelError {}

/// Attaches a location to flatbuffer errors.
pub(crate) trait At<T> {
    fn at(self, at: Location) -> Result<T, ModelError>;
}

impl<T> At<T> for Result<T, FbError> {
    fn at(self, at: Location) -> Result<T, ModelError> {
        self.map_err(|error| ModelError::Malformed { at, error })
    }
}

/// Per-tensor or per-channel quantization, read in place.
#[derive(Clone, Copy)]
pub struct Quantization<'a> {
    pub(crate) scales: Vector<'a>,
    pub(crate) zero_points: Vector<'a>,
    /// The axis the channels run along (per-channel only).
    pub dimension: usize,
}

impl<'a> Quantization<'a> {
    /// Number of (scale, zero point) pairs: 1 per tensor or one per channel.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether there are none (never, for a verified tensor).
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Scale `i`.
    pub fn scale(&self, i: usize) -> Result<f32, FbError> {
        self.scales.get::<f32>(i)
    }

    /// Zero point `i` (verified to fit int32).
    pub fn zero_point(&self, i: usize) -> Result<i32, FbError> {
        // Zero points may be absent for symmetric weights: they are then 0.
        if self.zero_points.is_empty() {
            return Ok(0);
        }
        self.zero_points.get::<i64>(i).map(|z| z as i32)
    }

    /// The scales as raw little-endian `f32` bytes.
    pub fn scales_raw(&self) -> Result<&'a [u8], FbError> {
        self.scales.raw(4)
    }

    /// The per-tensor parameters (the first pair).
    pub fn per_tensor(&self) -> Result<Quant, FbError> {
        Ok(Quant { scale: self.scale(0)?, zero_point: self.zero_point(0)? })
    }
}

/// One tensor's description, read in place.
#[derive(Clone, Copy)]
pub struct TensorInfo<'a> {
    /// Its index in the subgraph.
    pub index: usize,
    /// Its shape.
    pub shape: Shape,
    /// Its element type.
    pub dtype: DType,
    /// Constant contents, in the model; `None` for activations.
    pub data: Option<&'a [u8]>,
    /// Quantization, if any.
    pub quantization: Option<Quantization<'a>>,
    pub(crate) model: &'a [u8],
    pub(crate) table: usize,
}

impl<'a> TensorInfo<'a> {
    /// Its name, for messages (read on demand: names are long and only people read them).
    pub fn name(&self) -> &'a str {
        Table::at(self.model, self.table).and_then(|t| t.string(schema::tensor::NAME)).ok().flatten().unwrap_or("")
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.shape.elements() * self.dtype.size()
    }

    /// Per-tensor quantization, or an error naming what is missing.
    pub fn quant(&self) -> Result<Quant, OpError> {
        let q = self
            .quantization
            .ok_or(OpError::Quantization("tensor is not quantized"))?
            .per_tensor()
            .map_err(|_| OpError::Quantization("unreadable quantization"))?;
        if q.scale > 0.0 { Ok(q) } else { Err(OpError::Quantization("zero scale")) }
    }
}

/// A verified model.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    bytes: &'a [u8],
    /// Set once `verify` has passed: later reads skip the per-element domain checks
    /// (every read stays bounds-checked, so a changed model still cannot cause a panic).
    verified: bool,
    tensors: Vector<'a>,
    operators: Vector<'a>,
    opcodes: Vector<'a>,
    buffers: Vector<'a>,
    inputs: Vector<'a>,
    outputs: Vector<'a>,
}

/// One operator, read in place.
#[derive(Clone, Copy)]
pub struct Operator<'a> {
    /// Its index (execution order).
    pub index: usize,
    /// Which operator.
    pub op: Op,
    table: Table<'a>,
    inputs: Vector<'a>,
    outputs: Vector<'a>,
}

impl<'a> Operator<'a> {
    /// Input tensor indices (`-1` for an omitted optional input).
    pub fn inputs(&self) -> impl Iterator<Item = Result<i32, FbError>> + 'a {
        self.inputs.iter::<i32>()
    }

    /// Number of inputs.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// Input tensor index `i`.
    pub fn input(&self, i: usize) -> Result<i32, FbError> {
        self.inputs.get::<i32>(i)
    }

    /// Number of outputs.
    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// Output tensor index `i`.
    pub fn output(&self, i: usize) -> Result<i32, FbError> {
        self.outputs.get::<i32>(i)
    }

    /// Output tensor indices.
    pub fn outputs(&self) -> impl Iterator<Item = Result<i32, FbError>> + 'a {
        self.outputs.iter::<i32>()
    }

    /// The builtin options table, when its union tag is `tag`.
    pub fn options(&self, tag: u8) -> Result<Option<Table<'a>>, FbError> {
        if self.table.scalar::<u8>(schema::operator::BUILTIN_OPTIONS_TYPE, 0)? != tag {
            return Ok(None);
        }
        self.table.table(schema::operator::BUILTIN_OPTIONS)
    }
}

/// Calls `f(name, data)` for every tensor with constant data in the first subgraph, without
/// verifying the model (host tools, e.g. the delta encoder pairing tensors between two
/// versions of a model, work on any well-formed flatbuffer).
pub fn for_each_constant<'a>(bytes: &'a [u8], mut f: impl FnMut(&'a str, &'a [u8])) -> Result<(), FbError> {
    use schema::{model as m, subgraph as sg, tensor as t};
    let root = Table::root(bytes)?;
    let Some(graphs) = root.vector(m::SUBGRAPHS)? else { return Ok(()) };
    let Some(tensors) = graphs.table(0)?.vector(sg::TENSORS)? else { return Ok(()) };
    let buffers = root.vector(m::BUFFERS)?.unwrap_or(Vector::empty());
    for i in 0..tensors.len() {
        let tensor = tensors.table(i)?;
        let b = tensor.scalar::<u32>(t::BUFFER, 0)? as usize;
        if b == 0 || b >= buffers.len() {
            continue;
        }
        if let Some(data) = buffers.table(b)?.vector(schema::buffer::DATA)? {
            let data = data.raw(1)?;
            if !data.is_empty() {
                f(tensor.string(t::NAME)?.unwrap_or(""), data);
            }
        }
    }
    Ok(())
}

/// Where operators get their tensors: straight from the model (verification) or from the
/// records the interpreter keeps in its arena (every inference).
pub(crate) trait Tensors<'a> {
    /// Tensor by a signed index as operators store them.
    fn tensor_at(&self, operator: Option<usize>, index: i32) -> Result<TensorInfo<'a>, ModelError>;

    /// Whether the model behind them was verified, so `prepare` can skip checks that
    /// only verification needs (it runs again at every inference).
    fn verified(&self) -> bool;
}

impl<'a> Tensors<'a> for Model<'a> {
    fn tensor_at(&self, operator: Option<usize>, index: i32) -> Result<TensorInfo<'a>, ModelError> {
        Model::tensor_at(self, operator, index)
    }

    fn verified(&self) -> bool {
        self.verified
    }
}

impl<'a> Model<'a> {
    /// The model's bytes.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Reads and verifies a model; nothing runs until this has passed.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let model = Self::read(bytes)?;
        model.verify()?;
        Ok(Self { verified: true, ..model })
    }

    fn read(bytes: &'a [u8]) -> Result<Self, ModelError> {
        use schema::{model as m, subgraph as sg};
        let root = Table::root(bytes).at(Location::Model)?;
        let version = root.scalar::<u32>(m::VERSION, 0).at(Location::Model)?;
        if version != SCHEMA_VERSION {
            return Err(ModelError::UnsupportedVersion(version));
        }
        let subgraphs = root.vector(m::SUBGRAPHS).at(Location::Model)?.unwrap_or(Vector::empty());
        if subgraphs.len() != 1 {
            return Err(ModelError::SubgraphCount(subgraphs.len()));
        }
        let graph = subgraphs.table(0).at(Location::Subgraph)?;
        let vector = |t: &Table<'a>, id, at| t.vector(id).at(at).map(|v| v.unwrap_or(Vector::empty()));
        let model = Self {
            bytes,
            verified: false,
            tensors: vector(&graph, sg::TENSORS, Location::Subgraph)?,
            operators: vector(&graph, sg::OPERATORS, Location::Subgraph)?,
            inputs: vector(&graph, sg::INPUTS, Location::Subgraph)?,
            outputs: vector(&graph, sg::OUTPUTS, Location::Subgraph)?,
            opcodes: vector(&root, m::OPERATOR_CODES, Location::Model)?,
            buffers: vector(&root, m::BUFFERS, Location::Model)?,
        };
        if model.tensors.len() > MAX_TENSORS {
            return Err(ModelError::TooManyTensors(model.tensors.len()));
        }
        if model.operators.len() > MAX_OPERATORS {
            return Err(ModelError::TooManyOperators(model.operators.len()));
        }
        Ok(model)
    }

    fn verify(&self) -> Result<(), ModelError> {
        for i in 0..self.tensors.len() {
            self.tensor(i)?;
        }
        for (k, index) in self.graph_io().enumerate() {
            let index = index.at(Location::Subgraph)?;
            let tensor = self.tensor_at(None, index)?;
            if tensor.data.is_some() {
                let problem =
                    if k < self.inputs.len() { TensorProblem::WrittenTwice } else { TensorProblem::ReadBeforeWritten };
                return Err(ModelError::Tensor { index: tensor.index, problem });
            }
        }
        crate::plan::check_order(self)?;
        for i in 0..self.operators.len() {
            let op = self.operator(i)?;
            let mut prepared = crate::ops::prepare(self, &op).map_err(|problem| match problem {
                crate::ops::PrepareError::Model(e) => e,
                crate::ops::PrepareError::Op(problem) => ModelError::Operator { index: i, op: op.op, problem },
            })?;
            crate::ops::check_multipliers(&mut prepared).map_err(|problem| ModelError::Operator {
                index: i,
                op: op.op,
                problem,
            })?;
        }
        Ok(())
    }

    /// The graph's inputs then its outputs.
    fn graph_io(&self) -> impl Iterator<Item = Result<i32, FbError>> + 'a {
        self.inputs.iter::<i32>().chain(self.outputs.iter::<i32>())
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Number of operators.
    pub fn operator_count(&self) -> usize {
        self.operators.len()
    }

    /// Number of model inputs.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// Number of model outputs.
    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// Model input `i`.
    pub fn input(&self, i: usize) -> Result<TensorInfo<'a>, ModelError> {
        let index = self.inputs.get::<i32>(i).at(Location::Subgraph)?;
        self.tensor_at(None, index)
    }

    /// Model output `i`.
    pub fn output(&self, i: usize) -> Result<TensorInfo<'a>, ModelError> {
        let index = self.outputs.get::<i32>(i).at(Location::Subgraph)?;
        self.tensor_at(None, index)
    }

    /// Tensor by a signed index as operators store them.
    pub(crate) fn tensor_at(&self, operator: Option<usize>, index: i32) -> Result<TensorInfo<'a>, ModelError> {
        let i = usize::try_from(index).ok().filter(|&i| i < self.tensors.len());
        self.tensor(i.ok_or(ModelError::TensorIndex { operator, tensor: index })?)
    }

    /// Tensor `index`, checked.
    pub fn tensor(&self, index: usize) -> Result<TensorInfo<'a>, ModelError> {
        use schema::tensor as t;
        let at = Location::Tensor(index);
        let bad = |problem| ModelError::Tensor { index, problem };
        let table = self.tensors.table(index).at(at)?;

        let dtype = match table.scalar::<i8>(t::TYPE, 0).at(at)? {
            schema::tensor_type::INT8 => DType::Int8,
            schema::tensor_type::UINT8 => DType::UInt8,
            schema::tensor_type::INT16 => DType::Int16,
            schema::tensor_type::INT32 => DType::Int32,
            schema::tensor_type::INT64 => DType::Int64,
            schema::tensor_type::FLOAT32 => DType::Float32,
            other => return Err(bad(TensorProblem::Type(other))),
        };
        let dims = table.vector(t::SHAPE).at(at)?.unwrap_or(Vector::empty());
        if dims.len() > MAX_RANK {
            return Err(bad(TensorProblem::Rank(dims.len())));
        }
        let mut shape_dims = [0usize; MAX_RANK];
        let mut elements: usize = 1;
        for (slot, dim) in shape_dims.iter_mut().zip(dims.iter::<i32>()) {
            let dim = usize::try_from(dim.at(at)?).ok().filter(|&d| d >= 1).ok_or(bad(TensorProblem::Dimension))?;
            elements = elements.checked_mul(dim).ok_or(bad(TensorProblem::Dimension))?;
            *slot = dim;
        }
        elements.checked_mul(dtype.size()).filter(|&b| b <= u32::MAX as usize).ok_or(bad(TensorProblem::Dimension))?;
        let shape = Shape::new(&shape_dims[..dims.len()]).ok_or(bad(TensorProblem::Rank(dims.len())))?;

        if table.scalar::<bool>(t::IS_VARIABLE, false).at(at)? {
            return Err(bad(TensorProblem::Variable));
        }
        if table.table(t::SPARSITY).at(at)?.is_some() {
            return Err(bad(TensorProblem::Sparse));
        }
        let data = self.buffer(index, table.scalar::<u32>(t::BUFFER, 0).at(at)?)?;
        let bytes = elements * dtype.size();
        if let Some(data) = data
            && data.len() != bytes
        {
            return Err(bad(TensorProblem::BufferSize { expected: bytes, actual: data.len() }));
        }
        let quantization = self.quantization(index, &table, &shape, dtype)?;
        if !self.verified {
            table.string(t::NAME).at(at)?;
        }
        Ok(TensorInfo { index, shape, dtype, data, quantization, model: self.bytes, table: table.position() })
    }

    /// Constant data of buffer `buffer` (`None` when empty, as for activations).
    fn buffer(&self, tensor: usize, buffer: u32) -> Result<Option<&'a [u8]>, ModelError> {
        let bad = |problem| ModelError::Tensor { index: tensor, problem };
        let b = buffer as usize;
        if b >= self.buffers.len() {
            return Err(bad(TensorProblem::BufferIndex));
        }
        let at = Location::Buffer(b);
        let table = self.buffers.table(b).at(at)?;
        if table.scalar::<u64>(schema::buffer::OFFSET, 0).at(at)? > 1 {
            return Err(bad(TensorProblem::ExternalData));
        }
        match table.vector(schema::buffer::DATA).at(at)? {
            Some(v) if !v.is_empty() => Ok(Some(v.raw(1).at(at)?)),
            _ => Ok(None),
        }
    }

    fn quantization(
        &self,
        index: usize,
        table: &Table<'a>,
        shape: &Shape,
        dtype: DType,
    ) -> Result<Option<Quantization<'a>>, ModelError> {
        use schema::quantization as q;
        let at = Location::Tensor(index);
        let bad = ModelError::Tensor { index, problem: TensorProblem::Quantization };
        let Some(qt) = table.table(schema::tensor::QUANTIZATION).at(at)? else { return Ok(None) };
        let scales = qt.vector(q::SCALE).at(at)?.unwrap_or(Vector::empty());
        if scales.is_empty() {
            return Ok(None); // min/max only: not quantized for our purposes
        }
        let zero_points = qt.vector(q::ZERO_POINT).at(at)?.unwrap_or(Vector::empty());
        if !zero_points.is_empty() && zero_points.len() != scales.len() {
            return Err(bad);
        }
        let dimension = usize::try_from(qt.scalar::<i32>(q::QUANTIZED_DIMENSION, 0).at(at)?).map_err(|_| bad)?;
        if scales.len() > 1 && (dimension >= shape.rank() || shape.dim(dimension) != scales.len()) {
            return Err(bad);
        }
        if self.verified {
            return Ok((dtype != DType::Float32).then_some(Quantization { scales, zero_points, dimension }));
        }
        for s in scales.iter::<f32>() {
            let s = s.at(at)?;
            if !(s.is_finite() && s >= 0.0) {
                return Err(bad);
            }
        }
        // Converters mark float tensors with scale 0: not quantized.
        if dtype == DType::Float32 {
            return Ok(None);
        }
        // Zero points of wider types are kept to int32: the kernels add them in int32.
        let (lo, hi) = dtype.code_range().map_or((0, 0), |(lo, hi)| (lo.max(i32::MIN.into()), hi.min(i32::MAX.into())));
        for z in zero_points.iter::<i64>() {
            if !(lo..=hi).contains(&z.at(at)?) {
                return Err(bad);
            }
        }
        Ok(Some(Quantization { scales, zero_points, dimension }))
    }

    /// Operator `index` with its resolved kind.
    pub fn operator(&self, index: usize) -> Result<Operator<'a>, ModelError> {
        use schema::{operator as o, operator_code as oc};
        let at = Location::Operator(index);
        let table = self.operators.table(index).at(at)?;
        let code_index = table.scalar::<u32>(o::OPCODE_INDEX, 0).at(at)? as usize;
        if code_index >= self.opcodes.len() {
            return Err(ModelError::Malformed { at, error: FbError::OutOfBounds });
        }
        let code_at = Location::OperatorCode(code_index);
        let code_table = self.opcodes.table(code_index).at(code_at)?;
        let deprecated = i32::from(code_table.scalar::<i8>(oc::DEPRECATED_BUILTIN_CODE, 0).at(code_at)?);
        let code = deprecated.max(code_table.scalar::<i32>(oc::BUILTIN_CODE, 0).at(code_at)?);
        let op = Op::from_code(code).ok_or(ModelError::UnsupportedOp { index, code })?;
        let inputs = table.vector(o::INPUTS).at(at)?.unwrap_or(Vector::empty());
        let outputs = table.vector(o::OUTPUTS).at(at)?.unwrap_or(Vector::empty());
        Ok(Operator { index, op, table, inputs, outputs })
    }
}
