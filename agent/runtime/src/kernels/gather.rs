//! GATHER, as TFLM's `gather.cc`: int32 positions along one axis, with optional batch
//! dimensions.
//!
//! TFLM only debug-checks that each position lies inside the axis, so an out-of-range
//! position reads outside its input. Here a constant position out of range is refused
//! when the model is verified, and a computed one fails the inference with an error.

use super::OpError;
use super::params::Int32s;
use crate::tensor::{MAX_RANK, Shape};

/// The normalized axis and batch dimensions of a GATHER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherParams {
    axis: usize,
    batch_dims: usize,
}

impl GatherParams {
    /// TFLM's `GatherPrepare`: `axis` (negative counts from the end of the input) and
    /// `batch_dims` (negative counts from the end of the positions) must satisfy
    /// `0 <= batch_dims <= axis < rank(input)` and `batch_dims <= rank(positions)`, the
    /// leading `batch_dims` dimensions of both must agree, and the output shape must be
    /// `input[..axis] ++ positions[batch_dims..] ++ input[axis + 1..]`.
    pub fn prepare(
        in_shape: &Shape,
        positions: &Shape,
        axis: i32,
        batch_dims: i32,
        out: &Shape,
    ) -> Result<Self, OpError> {
        let (rank, p_rank) = (in_shape.rank() as i64, positions.rank() as i64);
        let axis = i64::from(axis) + if axis < 0 { rank } else { 0 };
        let batch = i64::from(batch_dims) + if batch_dims < 0 { p_rank } else { 0 };
        if !(0 <= batch && batch <= axis && axis < rank && batch <= p_rank) {
            return Err(OpError::Unsupported("gather axis or batch dimensions out of range"));
        }
        let (axis, batch) = (axis as usize, batch as usize);
        let (dims, p_dims) = (in_shape.dims(), positions.dims());
        if dims[..batch] != p_dims[..batch] {
            return Err(OpError::Shape("gather batch dimensions differ"));
        }
        let expected = dims[..axis].iter().chain(&p_dims[batch..]).chain(&dims[axis + 1..]);
        if expected.clone().count() != out.rank() || !expected.eq(out.dims()) {
            return Err(OpError::Shape("gather output shape does not follow from its inputs"));
        }
        Ok(Self { axis, batch_dims: batch })
    }
}

/// Checks constant positions against the axis they index.
pub fn check_positions(p: &GatherParams, in_shape: &Shape, positions: Int32s<'_>) -> Result<(), OpError> {
    let size = in_shape.dim(p.axis);
    for i in 0..positions.len() {
        if usize::try_from(positions.get(i)).ok().is_none_or(|v| v >= size) {
            return Err(OpError::Shape("gather position outside the input"));
        }
    }
    Ok(())
}

/// Gathers slices of `input` (`elem` bytes per element) at `positions` (int32) into `out`.
pub fn gather(
    p: &GatherParams,
    input: &[u8],
    in_shape: &Shape,
    elem: usize,
    positions: &[u8],
    p_shape: &Shape,
    out: &mut [u8],
) -> Result<(), OpError> {
    let dims = in_shape.dims();
    if p.axis >= dims.len() || p.batch_dims > p.axis || p.batch_dims > p_shape.rank() || dims.len() > MAX_RANK {
        return Err(OpError::Shape("gather axis"));
    }
    let product = |d: &[usize]| d.iter().product::<usize>();
    let batches = product(&dims[..p.batch_dims]);
    let outer = product(&dims[p.batch_dims..p.axis]);
    let axis_size = dims[p.axis];
    let inner = product(&dims[p.axis + 1..]) * elem;
    let coords = product(&p_shape.dims()[p.batch_dims..]);
    let positions = Int32s(positions);
    if in_shape.elements().checked_mul(elem) != Some(input.len())
        || p_shape.elements() != positions.len()
        || positions.0.len() != positions.len() * 4
        || batches.checked_mul(coords) != Some(positions.len())
        || [batches, outer, coords, inner].iter().try_fold(1usize, |a, &b| a.checked_mul(b)) != Some(out.len())
    {
        return Err(OpError::Shape("gather lengths do not match the shapes"));
    }
    let mut dest = out.chunks_exact_mut(inner.max(1));
    for batch in 0..batches {
        for o in 0..outer {
            for c in 0..coords {
                let at = positions.get(batch * coords + c);
                let at = usize::try_from(at).ok().filter(|&a| a < axis_size);
                let at = at.ok_or(OpError::Shape("gather position outside the input"))?;
                let from = ((batch * outer + o) * axis_size + at) * inner;
                let src = input.get(from..from + inner).ok_or(OpError::Shape("gather index out of range"))?;
                if let Some(d) = dest.next() {
                    d.copy_from_slice(src);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::{TestResult, shape as s};

    fn ints(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn run(
        dims: &[usize],
        pos: &[i32],
        p_dims: &[usize],
        axis: i32,
        batch: i32,
        out: &[usize],
    ) -> Result<Vec<u8>, OpError> {
        let (shape, p_shape, out_shape) = (s(dims), s(p_dims), s(out));
        let p = GatherParams::prepare(&shape, &p_shape, axis, batch, &out_shape)?;
        let input: Vec<u8> = (0..shape.elements()).map(|i| i as u8).collect();
        let mut got = vec![0; out_shape.elements()];
        gather(&p, &input, &shape, 1, &ints(pos), &p_shape, &mut got)?;
        Ok(got)
    }

    #[test]
    fn gathers_rows_and_columns() -> TestResult {
        // The fixture's tf.gather(z, [3, 1, 1, 9, 0], axis=1) on [1, 10, 4], smaller.
        assert_eq!(run(&[1, 3, 2], &[2, 0, 0], &[3], 1, 0, &[1, 3, 2])?, [4, 5, 0, 1, 0, 1]);
        assert_eq!(run(&[2, 3], &[2, 0], &[2], -1, 0, &[2, 2])?, [2, 0, 5, 3]);
        // 2-D positions add a dimension; a scalar position removes one.
        assert_eq!(run(&[3, 2], &[2, 0, 1, 1], &[2, 2], 0, 0, &[2, 2, 2])?, [4, 5, 0, 1, 2, 3, 2, 3]);
        assert_eq!(run(&[3, 2], &[1], &[], 0, 0, &[2])?, [2, 3]);
        Ok(())
    }

    #[test]
    fn batch_dims() -> TestResult {
        // Each of 2 batches picks its own columns.
        assert_eq!(run(&[2, 3], &[2, 0, 1, 1], &[2, 2], 1, 1, &[2, 2])?, [2, 0, 4, 4]);
        assert_eq!(run(&[2, 3], &[2, 0, 1, 1], &[2, 2], 1, -1, &[2, 2])?, [2, 0, 4, 4]);
        assert!(run(&[2, 3], &[2, 0, 1, 1], &[2, 2], 0, 1, &[2, 2]).is_err());
        assert!(run(&[3, 3], &[2, 0, 1, 1], &[2, 2], 1, 1, &[3, 2]).is_err());
        Ok(())
    }

    #[test]
    fn positions_out_of_range_are_errors() -> TestResult {
        assert_eq!(run(&[3], &[3], &[1], 0, 0, &[1]), Err(OpError::Shape("gather position outside the input")));
        assert!(run(&[3], &[-1], &[1], 0, 0, &[1]).is_err());
        assert!(run(&[3], &[i32::MIN], &[1], 0, 0, &[1]).is_err());
        let (shape, p_shape) = (s(&[3]), s(&[2]));
        let p = GatherParams::prepare(&shape, &p_shape, 0, 0, &s(&[2]))?;
        assert!(check_positions(&p, &shape, Int32s(&ints(&[0, 2]))).is_ok());
        assert!(check_positions(&p, &shape, Int32s(&ints(&[0, 3]))).is_err());
        Ok(())
    }

    #[test]
    fn shape_refusals_and_empty_dims() -> TestResult {
        assert!(run(&[3], &[0], &[1], 1, 0, &[1]).is_err());
        assert!(run(&[3], &[0], &[1], -2, 0, &[1]).is_err());
        assert!(run(&[3, 2], &[0], &[1], 0, 0, &[2, 1]).is_err());
        assert!(run(&[3, 2], &[0], &[1], 0, 0, &[1, 2, 1]).is_err());
        // No positions: an empty output; an empty axis with positions has nothing to read.
        assert_eq!(run(&[3, 2], &[], &[0], 0, 0, &[0, 2])?, Vec::<u8>::new());
        assert!(run(&[0, 2], &[0], &[1], 0, 0, &[1, 2]).is_err());
        let (shape, p_shape) = (s(&[3]), s(&[1]));
        let p = GatherParams::prepare(&shape, &p_shape, 0, 0, &s(&[1]))?;
        assert!(gather(&p, &[0; 3], &shape, 1, &ints(&[0]), &p_shape, &mut [0; 2]).is_err());
        assert!(gather(&p, &[0; 2], &shape, 1, &ints(&[0]), &p_shape, &mut [0; 1]).is_err());
        assert!(gather(&p, &[0; 3], &shape, 1, &[0, 0, 0], &p_shape, &mut [0; 1]).is_err());
        Ok(())
    }
}
