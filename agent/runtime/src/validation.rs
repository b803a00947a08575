//! Validation sets and the evaluator a device runs before it commits a model.
//!
//! A set is one flat binary, read in place (from flash or as it streams in): a 48-byte
//! header, then `count` records of the model's input bytes followed by what is expected.
//! All integers are little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MOTAVSET` |
//! | 8 | 2 | format version, = 1 |
//! | 10 | 1 | input type: 0 int8, 1 float32, 2 uint8, 3 int16 |
//! | 11 | 1 | expectation: 0 label (u16 per record), 1 output bytes |
//! | 12 | 1 | input rank (0–5) |
//! | 13 | 1 | tolerance: largest accepted per-byte difference for expected outputs |
//! | 14 | 2 | reserved, 0 |
//! | 16 | 20 | input dimensions, 5 × u32 (unused ones 0) |
//! | 36 | 4 | record count |
//! | 40 | 4 | number of classes (labels are below it; 0 with expected outputs) |
//! | 44 | 4 | expected output bytes per record (0 with labels) |
//!
//! The evaluator reports top-1 accuracy (or the share of records whose outputs match
//! within the tolerance), per-class counts into a caller-provided slice, mean and maximum
//! inference time from a caller-provided clock, and the arena used.

use core::fmt;

use crate::interpreter::{Interpreter, RunError};
use crate::model::DType;

/// The magic bytes.
pub const MAGIC: &[u8; 8] = b"MOTAVSET";
/// The format version.
pub const VERSION: u16 = 1;
/// Header size.
pub const HEADER: usize = 48;

/// What each record expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// A class label; correct when it is the output's arg-max.
    Label {
        /// Number of classes.
        classes: u32,
    },
    /// Output bytes; correct when every byte is within `tolerance`.
    Output {
        /// Bytes per record.
        bytes: usize,
        /// Largest accepted difference per int8 element.
        tolerance: u8,
    },
}

/// A parsed set, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct ValidationSet<'a> {
    /// Input type.
    pub input_type: DType,
    /// Input dimensions.
    pub dims: [u32; 5],
    /// Input rank.
    pub rank: usize,
    /// What records expect.
    pub expectation: Expectation,
    count: usize,
    input_bytes: usize,
    records: &'a [u8],
}

/// Why a set cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Not a set (magic), or a version this build does not read.
    NotASet,
    /// Header fields out of range.
    BadHeader(&'static str),
    /// The data is not exactly `count` records long.
    Length {
        /// Bytes the header calls for.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The set's inputs do not fit the model's input (shape or type).
    ModelMismatch(&'static str),
    /// A label is not below the class count.
    BadLabel(usize),
    /// Running the model failed.
    Run(RunError),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASet => f.write_str("not a mota validation set (v1)"),
            Self::BadHeader(what) => write!(f, "bad validation set header: {what}"),
            Self::Length { expected, actual } => write!(f, "validation set is {actual} bytes, header says {expected}"),
            Self::ModelMismatch(what) => write!(f, "validation set does not fit the model: {what}"),
            Self::BadLabel(record) => write!(f, "record {record} has a label out of range"),
            Self::Run(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SetError {}

impl From<RunError> for SetError {
    fn from(e: RunError) -> Self {
        Self::Run(e)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> ValidationSet<'a> {
    /// Parses and checks a set.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SetError> {
        let header = bytes.get(..HEADER).ok_or(SetError::NotASet)?;
        if &header[..8] != MAGIC || u16::from_le_bytes([header[8], header[9]]) != VERSION {
            return Err(SetError::NotASet);
        }
        let input_type = match header[10] {
            0 => DType::Int8,
            1 => DType::Float32,
            2 => DType::UInt8,
            3 => DType::Int16,
            _ => return Err(SetError::BadHeader("input type")),
        };
        let rank = usize::from(header[12]);
        if rank > 5 {
            return Err(SetError::BadHeader("rank"));
        }
        let mut dims = [0u32; 5];
        let mut elements: usize = 1;
        for (i, d) in dims.iter_mut().enumerate() {
            *d = u32_at(header, 16 + 4 * i);
            if i < rank {
                elements =
                    elements.checked_mul(*d as usize).filter(|&e| e > 0).ok_or(SetError::BadHeader("dimensions"))?;
            }
        }
        let count = u32_at(header, 36) as usize;
        let expectation = match header[11] {
            0 => Expectation::Label { classes: u32_at(header, 40) },
            1 => Expectation::Output { bytes: u32_at(header, 44) as usize, tolerance: header[13] },
            _ => return Err(SetError::BadHeader("expectation")),
        };
        let input_bytes = elements.checked_mul(input_type.size()).ok_or(SetError::BadHeader("dimensions"))?;
        let expect_bytes = match expectation {
            Expectation::Label { .. } => 2,
            Expectation::Output { bytes, .. } => bytes,
        };
        let records = &bytes[HEADER..];
        let expected = count
            .checked_mul(input_bytes.checked_add(expect_bytes).ok_or(SetError::BadHeader("sizes"))?)
            .ok_or(SetError::BadHeader("sizes"))?;
        if records.len() != expected {
            return Err(SetError::Length { expected: expected + HEADER, actual: bytes.len() });
        }
        Ok(Self { input_type, dims, rank, expectation, count, input_bytes, records })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Record `i`: its input bytes and its expectation bytes.
    pub fn record(&self, i: usize) -> Option<(&'a [u8], &'a [u8])> {
        let size = self.records.len().checked_div(self.count)?;
        let start = i.checked_mul(size)?;
        let record = self.records.get(start..start.checked_add(size)?)?;
        Some(record.split_at(self.input_bytes))
    }
}

/// A source of time, in microseconds (a hardware timer on a device).
pub trait Clock {
    /// Microseconds since any fixed origin.
    fn now_us(&self) -> u64;
}

/// Per-class tallies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCount {
    /// Records with this label.
    pub seen: u32,
    /// Of those, classified correctly.
    pub correct: u32,
}

/// What an evaluation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Records evaluated.
    pub records: u32,
    /// Records correct.
    pub correct: u32,
    /// `correct / records` in permille (rounded down).
    pub accuracy_permille: u16,
    /// Mean inference time.
    pub mean_latency_us: u32,
    /// Slowest inference.
    pub max_latency_us: u32,
    /// Arena bytes the model used.
    pub arena_used: u32,
}

/// Records scored so far (a run split into pieces adds them up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records run.
    pub records: u32,
    /// Of those, correct.
    pub correct: u32,
    /// Their summed inference time.
    pub total_us: u64,
    /// The slowest one.
    pub max_us: u64,
}

/// Runs every record of `set` through `interp`. `classes`, when given, receives
/// per-class counts for labels below its length.
pub fn evaluate(
    interp: &mut Interpreter<'_, '_>,
    set: &ValidationSet<'_>,
    clock: &impl Clock,
    classes: Option<&mut [ClassCount]>,
) -> Result<Report, SetError> {
    check(interp, set)?;
    let mut tally = Tally::default();
    run_records(interp, set, 0..set.len(), clock, classes, &mut tally)?;
    let Tally { records, correct, total_us, max_us } = tally;
    Ok(Report {
        records,
        correct,
        accuracy_permille: if records == 0 { 0 } else { (u64::from(correct) * 1000 / u64::from(records)) as u16 },
        mean_latency_us: total_us.checked_div(u64::from(records)).unwrap_or(0) as u32,
        max_latency_us: max_us as u32,
        arena_used: interp.arena_used() as u32,
    })
}

/// Whether `set` fits the model `interp` runs (input type and shape, output size).
pub fn check(interp: &Interpreter<'_, '_>, set: &ValidationSet<'_>) -> Result<(), SetError> {
    let input = interp.model().input(0).map_err(RunError::Model)?;
    let output = interp.model().output(0).map_err(RunError::Model)?;
    if input.dtype != set.input_type {
        return Err(SetError::ModelMismatch("input type"));
    }
    if input.shape.dims().iter().map(|&d| d as u32).ne(set.dims[..set.rank].iter().copied()) {
        return Err(SetError::ModelMismatch("input shape"));
    }
    if let Expectation::Output { bytes, .. } = set.expectation
        && bytes != output.bytes()
    {
        return Err(SetError::ModelMismatch("expected output size"));
    }
    Ok(())
}

/// Runs the records `range` of `set` (already [`check`]ed) through `interp`, adding their
/// scores to `tally`: a long set can be run a piece at a time.
pub fn run_records(
    interp: &mut Interpreter<'_, '_>,
    set: &ValidationSet<'_>,
    range: core::ops::Range<usize>,
    clock: &impl Clock,
    mut classes: Option<&mut [ClassCount]>,
    tally: &mut Tally,
) -> Result<(), SetError> {
    let dtype = interp.model().output(0).map_err(RunError::Model)?.dtype;
    for i in range {
        let (x, expected) = set.record(i).ok_or(SetError::BadHeader("record"))?;
        interp.input(0)?.copy_from_slice(x);
        let start = clock.now_us();
        interp.invoke()?;
        let elapsed = clock.now_us().saturating_sub(start);
        tally.total_us += elapsed;
        tally.max_us = tally.max_us.max(elapsed);
        let out = interp.output(0)?;
        let ok = match set.expectation {
            Expectation::Label { classes: n } => {
                let label = u16::from_le_bytes([expected[0], expected[1]]);
                if u32::from(label) >= n {
                    return Err(SetError::BadLabel(i));
                }
                let ok = argmax(out, dtype) == Some(usize::from(label));
                if let Some(c) = classes.as_deref_mut().and_then(|c| c.get_mut(usize::from(label))) {
                    c.seen += 1;
                    c.correct += u32::from(ok);
                }
                ok
            }
            Expectation::Output { tolerance, .. } => out
                .iter()
                .zip(expected)
                .all(|(&a, &b)| (i16::from(a as i8) - i16::from(b as i8)).unsigned_abs() <= u16::from(tolerance)),
        };
        tally.records += 1;
        tally.correct += u32::from(ok);
    }
    Ok(())
}

/// Index of the largest output element (the first on ties, as `argmax` does).
fn argmax(out: &[u8], dtype: DType) -> Option<usize> {
    let first_max = |values: &mut dyn Iterator<Item = f64>| {
        let mut best: Option<(usize, f64)> = None;
        for (i, v) in values.enumerate() {
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
        best.map(|(i, _)| i)
    };
    match dtype {
        DType::Int8 => first_max(&mut out.iter().map(|&b| f64::from(b as i8))),
        DType::UInt8 => first_max(&mut out.iter().map(|&b| f64::from(b))),
        DType::Int16 => first_max(&mut out.chunks_exact(2).map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])))),
        DType::Float32 => {
            first_max(&mut out.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        }
        DType::Int32 | DType::Int64 => None,
    }
}

/// Builds a set (host tool): `inputs` already in the model's input type, one record per
/// row, and either labels or expected outputs.
#[cfg(feature = "std")]
pub fn build(
    input_type: DType,
    dims: &[usize],
    inputs: &[u8],
    labels: Option<(&[u16], u32)>,
    outputs: Option<(&[u8], u8)>,
) -> Result<Vec<u8>, SetError> {
    let elements: usize = dims.iter().product();
    let input_bytes = elements * input_type.size();
    if dims.len() > 5 || input_bytes == 0 || !inputs.len().is_multiple_of(input_bytes) {
        return Err(SetError::BadHeader("inputs do not divide into records of the input shape"));
    }
    let count = inputs.len() / input_bytes;
    let mut out = Vec::with_capacity(HEADER + inputs.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(match input_type {
        DType::Int8 => 0,
        DType::Float32 => 1,
        DType::UInt8 => 2,
        DType::Int16 => 3,
        DType::Int32 | DType::Int64 => return Err(SetError::BadHeader("input type")),
    });
    out.push(if labels.is_some() { 0 } else { 1 });
    out.push(dims.len() as u8);
    out.push(outputs.map_or(0, |(_, t)| t));
    out.extend_from_slice(&[0, 0]);
    for i in 0..5 {
        out.extend_from_slice(&(dims.get(i).copied().unwrap_or(0) as u32).to_le_bytes());
    }
    out.extend_from_slice(&(count as u32).to_le_bytes());
    let out_bytes = match (labels, outputs) {
        (Some((l, classes)), None) if l.len() == count => {
            out.extend_from_slice(&classes.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            0
        }
        (None, Some((o, _))) if count > 0 && o.len().is_multiple_of(count) => {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&((o.len() / count) as u32).to_le_bytes());
            o.len() / count
        }
        _ => return Err(SetError::BadHeader("give labels or outputs, one per input row")),
    };
    for i in 0..count {
        out.extend_from_slice(&inputs[i * input_bytes..(i + 1) * input_bytes]);
        match (labels, outputs) {
            (Some((l, _)), _) => out.extend_from_slice(&l[i].to_le_bytes()),
            (_, Some((o, _))) => out.extend_from_slice(&o[i * out_bytes..(i + 1) * out_bytes]),
            _ => {}
        }
    }
    Ok(out)
}
