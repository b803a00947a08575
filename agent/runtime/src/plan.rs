//! Where each activation tensor lives in the arena: TFLM's greedy planner, without a heap.
//!
//! Every non-constant tensor lives from the operator that writes it (the start, for model
//! inputs) to the last operator that reads it (the end, for model outputs). Tensors are
//! placed largest first, each at the lowest offset where it overlaps no placed tensor
//! whose lifetime intersects its own. The plan itself (offset, first and last use: 8 bytes
//! per tensor) sits at the end of the caller's arena, so planning needs no other memory.
//! TFLM keeps 24 bytes per tensor plus 64 per operator there; this tail is smaller.

use crate::model::{At, Location, Model, ModelError, TensorProblem};

/// Alignment of every tensor's offset in the arena.
pub const ALIGN: usize = 4;
/// Bytes of plan per tensor.
pub const ENTRY: usize = 8;
const UNPLANNED: u32 = u32::MAX;

/// Fixed-size set of tensor indices.
struct Bits([u64; crate::model::MAX_TENSORS / 64]);

impl Bits {
    fn new() -> Self {
        Self([0; crate::model::MAX_TENSORS / 64])
    }
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
}

/// Checks that operators run in an order where every tensor is written once, before it is
/// read (model inputs and constants are written before the first operator).
pub(crate) fn check_order(model: &Model<'_>) -> Result<(), ModelError> {
    let mut written = Bits::new();
    for i in 0..model.input_count() {
        written.set(model.input(i)?.index);
    }
    for i in 0..model.operator_count() {
        let op = model.operator(i)?;
        for index in op.inputs() {
            let index = index.at(Location::Operator(i))?;
            if index < 0 {
                continue;
            }
            let t = model.tensor_at(Some(i), index)?;
            if t.data.is_none() && !written.get(t.index) {
                return Err(ModelError::Tensor { index: t.index, problem: TensorProblem::ReadBeforeWritten });
            }
        }
        for index in op.outputs() {
            let t = model.tensor_at(Some(i), index.at(Location::Operator(i))?)?;
            if t.data.is_some() || written.get(t.index) {
                return Err(ModelError::Tensor { index: t.index, problem: TensorProblem::WrittenTwice });
            }
            written.set(t.index);
        }
    }
    Ok(())
}

/// A plan stored in the arena's tail.
pub(crate) struct Plan<'p> {
    entries: &'p [u8],
}

fn read_entry(entries: &[u8], t: usize) -> (u32, u16, u16) {
    let e = entries.get(t * ENTRY..t * ENTRY + ENTRY).unwrap_or(&[0xff; ENTRY]);
    (u32::from_le_bytes([e[0], e[1], e[2], e[3]]), u16::from_le_bytes([e[4], e[5]]), u16::from_le_bytes([e[6], e[7]]))
}

fn write_entry(entries: &mut [u8], t: usize, offset: u32, first: u16, last: u16) {
    if let Some(e) = entries.get_mut(t * ENTRY..t * ENTRY + ENTRY) {
        e[..4].copy_from_slice(&offset.to_le_bytes());
        e[4..6].copy_from_slice(&first.to_le_bytes());
        e[6..].copy_from_slice(&last.to_le_bytes());
    }
}

impl<'p> Plan<'p> {
    /// A plan written earlier into `entries`.
    pub fn new(entries: &'p [u8]) -> Self {
        Self { entries }
    }

    /// Offset of tensor `t` in the arena, if it is an activation.
    pub fn offset(&self, t: usize) -> Option<usize> {
        let (offset, _, _) = read_entry(self.entries, t);
        (offset != UNPLANNED).then_some(offset as usize)
    }
}

/// Plans into `entries` (at least `ENTRY × tensors` bytes); returns the activation bytes
/// needed (the arena's head). `bytes_of(t)` gives tensor `t`'s size: the placement asks
/// for it O(n²) times, so the interpreter answers from its tensor records rather than
/// from the flatbuffer.
pub(crate) fn plan<'p>(
    model: &Model<'_>,
    entries: &'p mut [u8],
    bytes_of: &dyn Fn(usize) -> Result<usize, ModelError>,
) -> Result<(Plan<'p>, usize), ModelError> {
    let n = model.tensor_count();
    let ops = model.operator_count();
    let end = u16::try_from(ops).unwrap_or(u16::MAX);
    entries.get_mut(..n * ENTRY).ok_or(ModelError::TooManyTensors(n))?.fill(0xff);
    // Lifetimes: written at op i (inputs at 0), last read at op j (outputs at the end).
    for i in 0..model.input_count() {
        let t = model.input(i)?.index;
        write_entry(entries, t, UNPLANNED - 1, 0, 0);
    }
    for i in 0..ops {
        let op = model.operator(i)?;
        let at = Location::Operator(i);
        let step = i as u16;
        for index in op.inputs() {
            let index = index.at(at)?;
            if index < 0 {
                continue;
            }
            let t = model.tensor_at(Some(i), index)?;
            if t.data.is_none() {
                let (o, first, _) = read_entry(entries, t.index);
                write_entry(entries, t.index, o, first, step);
            }
        }
        for index in op.outputs() {
            let t = model.tensor_at(Some(i), index.at(at)?)?;
            write_entry(entries, t.index, UNPLANNED - 1, step, step);
        }
    }
    for i in 0..model.output_count() {
        let t = model.output(i)?.index;
        let (o, first, _) = read_entry(entries, t);
        write_entry(entries, t, o, first, end);
    }
    // Greedy placement, largest first. `UNPLANNED - 1` marks "to place".
    let size_of = |t: usize| bytes_of(t).map(|b| b.next_multiple_of(ALIGN));
    let mut head = 0usize;
    loop {
        let mut next: Option<(usize, usize)> = None;
        for t in 0..n {
            if read_entry(entries, t).0 == UNPLANNED - 1 {
                let size = size_of(t)?;
                if next.is_none_or(|(_, s)| size > s) {
                    next = Some((t, size));
                }
            }
        }
        let Some((t, size)) = next else { break };
        let (_, first, last) = read_entry(entries, t);
        let offset = lowest_fit(entries, n, size, first, last, &size_of)?;
        head = head.max(offset + size);
        write_entry(entries, t, offset as u32, first, last);
    }
    Ok((Plan { entries }, head))
}

/// The lowest offset where `size` bytes fit among placed tensors alive in `[first, last]`.
fn lowest_fit(
    entries: &[u8],
    n: usize,
    size: usize,
    first: u16,
    last: u16,
    size_of: &impl Fn(usize) -> Result<usize, ModelError>,
) -> Result<usize, ModelError> {
    let mut candidate = 0usize;
    'search: loop {
        for u in 0..n {
            let (offset, f, l) = read_entry(entries, u);
            if offset >= UNPLANNED - 1 || l < first || f > last {
                continue;
            }
            let (start, end) = (offset as usize, offset as usize + size_of(u)?);
            if candidate < end && start < candidate + size {
                candidate = end;
                continue 'search;
            }
        }
        return Ok(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arena range of operator `op`'s tensor `index`, if it lives in the arena.
    fn region(model: &Model<'_>, plan: &Plan<'_>, op: usize, index: i32) -> Option<(usize, usize)> {
        let t = model.tensor_at(Some(op), index).ok().filter(|t| t.data.is_none())?;
        plan.offset(t.index).map(|o| (o, o + t.bytes()))
    }

    /// In every fixture model, no two outputs of an operator (SPLIT, SPLIT_V and UNPACK
    /// have several) share a byte, and no output shares one with an input.
    #[test]
    fn every_output_is_apart_from_the_others_and_the_inputs() -> Result<(), Box<dyn std::error::Error>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/models");
        let mut multi_output_ops = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "tflite") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let model = Model::parse(&bytes)?;
            let mut entries = vec![0u8; model.tensor_count() * ENTRY];
            let (plan, _) = plan(&model, &mut entries, &|t| model.tensor(t).map(|info| info.bytes()))?;
            for i in 0..model.operator_count() {
                let op = model.operator(i)?;
                let mut outputs = Vec::new();
                for index in op.outputs() {
                    outputs.extend(region(&model, &plan, i, index.at(Location::Operator(i))?));
                }
                let mut inputs = Vec::new();
                for index in op.inputs() {
                    inputs.extend(region(&model, &plan, i, index.at(Location::Operator(i))?));
                }
                assert_eq!(outputs.len(), op.output_count(), "{path:?} op {i}: every output is planned");
                multi_output_ops += usize::from(outputs.len() > 1);
                for (k, a) in outputs.iter().enumerate() {
                    for b in outputs.iter().skip(k + 1).chain(&inputs) {
                        assert!(a.1 <= b.0 || b.1 <= a.0, "{path:?} op {i}: {a:?} overlaps {b:?}");
                    }
                }
            }
        }
        assert!(multi_output_ops > 0, "the fixtures include operators with several outputs");
        Ok(())
    }
}
