//! Tensor descriptions cached in the arena, so an inference does not walk the flatbuffer
//! for every operand of every operator (the model was verified once; the records keep
//! only positions in it, and every read through them stays bounds-checked).
//!
//! One record per tensor, little-endian: data offset and length in the model (u32 each,
//! offset `u32::MAX` for activations), dtype, rank, quantization dimension, a flag for
//! quantization, five dimensions (u32), the positions of the scales and zero points and
//! their counts (u32 each), and the tensor table's position (u32).

use crate::flatbuffer::Vector;
use crate::model::{DType, ModelError, Quantization, TensorInfo, TensorProblem, Tensors};
use crate::tensor::{MAX_RANK, Shape};

/// Bytes per record.
pub(crate) const RECORD: usize = 52;
const NONE: u32 = u32::MAX;

fn put(out: &mut [u8], at: usize, v: u32) {
    if let Some(b) = out.get_mut(at..at + 4) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

fn get(rec: &[u8], at: usize) -> u32 {
    rec.get(at..at + 4).map_or(NONE, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes the record of `t` (whose slices all point into `model`).
pub(crate) fn write(model: &[u8], t: &TensorInfo<'_>, out: &mut [u8]) {
    let base = model.as_ptr() as usize;
    let (offset, len) = t.data.map_or((NONE, 0), |d| ((d.as_ptr() as usize).wrapping_sub(base) as u32, d.len() as u32));
    put(out, 0, offset);
    put(out, 4, len);
    if let Some(flags) = out.get_mut(8..12) {
        flags[0] = match t.dtype {
            DType::Int8 => 0,
            DType::Int32 => 1,
            DType::Float32 => 2,
            DType::UInt8 => 3,
            DType::Int16 => 4,
            DType::Int64 => 5,
        };
        flags[1] = t.shape.rank() as u8;
        flags[2] = t.quantization.map_or(0, |q| q.dimension as u8);
        flags[3] = u8::from(t.quantization.is_some());
    }
    for (i, d) in t.shape.dims().iter().enumerate() {
        put(out, 12 + 4 * i, *d as u32);
    }
    let (scales, count) = t.quantization.map_or((0, 0), |q| q.scales.parts());
    let (zero_points, zp_count) = t.quantization.map_or((0, 0), |q| q.zero_points.parts());
    put(out, 32, scales as u32);
    put(out, 36, count as u32);
    put(out, 40, zero_points as u32);
    put(out, 44, zp_count as u32);
    put(out, 48, t.table as u32);
}

/// Reads tensor `index`'s record back.
pub(crate) fn read<'a>(model: &'a [u8], index: usize, rec: &[u8]) -> Result<TensorInfo<'a>, ModelError> {
    let bad = ModelError::Tensor { index, problem: TensorProblem::Dimension };
    let flags = rec.get(8..12).ok_or(bad)?;
    let dtype = match flags[0] {
        0 => DType::Int8,
        1 => DType::Int32,
        2 => DType::Float32,
        3 => DType::UInt8,
        4 => DType::Int16,
        _ => DType::Int64,
    };
    let rank = usize::from(flags[1]).min(MAX_RANK);
    let mut dims = [0usize; MAX_RANK];
    for (i, d) in dims.iter_mut().enumerate().take(rank) {
        *d = get(rec, 12 + 4 * i) as usize;
    }
    let shape = Shape::new(&dims[..rank]).ok_or(bad)?;
    let data = match get(rec, 0) {
        NONE => None,
        offset => Some(model.get(offset as usize..offset as usize + get(rec, 4) as usize).ok_or(bad)?),
    };
    let quantization = (flags[3] != 0).then(|| Quantization {
        scales: Vector::from_parts(model, get(rec, 32) as usize, get(rec, 36) as usize),
        zero_points: Vector::from_parts(model, get(rec, 40) as usize, get(rec, 44) as usize),
        dimension: usize::from(flags[2]),
    });
    Ok(TensorInfo { index, shape, dtype, data, quantization, model, table: get(rec, 48) as usize })
}

/// Tensors served from records.
pub(crate) struct Records<'m, 'r> {
    pub model: &'m [u8],
    pub records: &'r [u8],
}

impl<'m> Records<'m, '_> {
    /// Tensor `index`.
    pub fn tensor(&self, index: usize) -> Result<TensorInfo<'m>, ModelError> {
        let bad = ModelError::TensorIndex { operator: None, tensor: index as i32 };
        let rec = self.records.get(index * RECORD..(index + 1) * RECORD).ok_or(bad)?;
        read(self.model, index, rec)
    }
}

impl<'m> Tensors<'m> for Records<'m, '_> {
    fn tensor_at(&self, operator: Option<usize>, index: i32) -> Result<TensorInfo<'m>, ModelError> {
        let i = usize::try_from(index).map_err(|_| ModelError::TensorIndex { operator, tensor: index })?;
        self.tensor(i).map_err(|_| ModelError::TensorIndex { operator, tensor: index })
    }

    fn verified(&self) -> bool {
        true
    }
}
