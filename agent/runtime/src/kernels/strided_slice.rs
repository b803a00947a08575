//! STRIDED_SLICE, as TFLM's `strided_slice.cc` with `reference_ops::StridedSlice`.
//!
//! TFLM takes inputs of rank 1 to 4 with constant begin, end and strides, honours the
//! begin, end and shrink-axis masks, and forces the ellipsis and new-axis masks to zero
//! (those are refused here instead of ignored). Its Prepare checks the output shape with
//! one formula (`ceil` of a float quotient) and its kernel iterates with another (the
//! clamping of `StridedSliceStartForAxis`/`EndForAxis`, padded to 5 dimensions); the two
//! disagree on a shrunk axis whose begin lies outside the input, where TFLM would leave
//! part of the output unwritten. This module computes both and refuses any slice on which
//! they differ from the output shape, so what runs writes every output element.

use super::OpError;
use super::params::Int32s;
use crate::tensor::{MAX_RANK, Shape};

/// Highest input rank TFLM's STRIDED_SLICE takes.
pub const MAX_SLICE_RANK: usize = 4;

/// The option masks TFLM reads (bit `i` is axis `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Masks {
    /// Start from the beginning of the axis (the end, for a negative stride).
    pub begin: i32,
    /// Run to the end of the axis (the beginning, for a negative stride).
    pub end: i32,
    /// Take the single element at `begin` and drop the axis from the output.
    pub shrink: i32,
}

/// Per-axis iteration, padded in front to `MAX_RANK` axes as TFLM's kernel does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StridedSliceParams {
    start: [i64; MAX_RANK],
    stride: [i64; MAX_RANK],
    count: [usize; MAX_RANK],
}

/// `ceil(x)` for a finite float well inside the int64 range (core has no `ceil`).
fn ceil(x: f32) -> i64 {
    let t = x as i64;
    if (t as f32) < x { t + 1 } else { t }
}

/// Number of iterations of `for (i = start; stride > 0 ? i < stop : i > stop; i += stride)`.
fn iterations(start: i64, stop: i64, stride: i64) -> usize {
    let (span, step) = if stride > 0 { (stop - start, stride) } else { (start - stop, -stride) };
    if span <= 0 { 0 } else { (span as u64).div_ceil(step as u64) as usize }
}

impl StridedSliceParams {
    /// Derives the iteration from the constant operands and checks the output shape: rank
    /// 1 to 4, `begin`, `end` and `strides` with one int32 per axis, no zero stride, and
    /// an output whose dimensions are the kept axes' lengths.
    pub fn prepare(
        in_shape: &Shape,
        begin: Int32s<'_>,
        end: Int32s<'_>,
        strides: Int32s<'_>,
        masks: Masks,
        out_shape: &Shape,
    ) -> Result<Self, OpError> {
        let rank = in_shape.rank();
        if rank == 0 || rank > MAX_SLICE_RANK {
            return Err(OpError::Shape("strided slice input must have rank 1 to 4"));
        }
        if begin.len() != rank || end.len() != rank || strides.len() != rank {
            return Err(OpError::Shape("begin, end and strides need one value per input axis"));
        }
        let pad = MAX_RANK - rank;
        let mut p = Self { start: [0; MAX_RANK], stride: [1; MAX_RANK], count: [1; MAX_RANK] };
        let mut kept = 0;
        for axis in 0..rank {
            let size =
                i64::from(i32::try_from(in_shape.dim(axis)).map_err(|_| OpError::Shape("dimension above int32"))?);
            let stride = i64::from(strides.get(axis));
            if stride == 0 {
                return Err(OpError::Unsupported("strided slice stride 0"));
            }
            let bit = |mask: i32| mask & (1 << axis) != 0;
            let shrink = bit(masks.shrink);
            let clamp = |v: i64| if stride > 0 { v.clamp(0, size) } else { v.clamp(-1, size - 1) };
            let from_end = |v: i64| if v < 0 { v + size } else { v };
            let start = match bit(masks.begin) {
                true if stride > 0 => 0,
                true => size - 1,
                false => clamp(from_end(i64::from(begin.get(axis)))),
            };
            let stop = match (shrink, bit(masks.end)) {
                (true, _) if start >= size => start,
                (true, _) => start + 1,
                (false, true) if stride > 0 => size,
                (false, true) => -1,
                (false, false) => clamp(from_end(i64::from(end.get(axis)))),
            };
            let count = iterations(start, stop, stride);
            if shrink {
                if count != 1 {
                    return Err(OpError::Unsupported("strided slice shrinks an axis outside the input"));
                }
            } else {
                // Prepare's own formula, in float as TFLM evaluates it.
                let checked = ceil((stop - start) as i32 as f32 / stride as f32).max(0);
                if checked != count as i64 || out_shape.dims().get(kept) != Some(&count) {
                    return Err(OpError::Shape("strided slice output shape does not follow from the slice"));
                }
                kept += 1;
            }
            p.start[pad + axis] = start;
            p.stride[pad + axis] = stride;
            p.count[pad + axis] = count;
        }
        if kept != out_shape.rank() {
            return Err(OpError::Shape("strided slice output rank"));
        }
        Ok(p)
    }
}

/// Copies the slice of `input` (shape `in_shape`, `elem` bytes per element) into `out`,
/// in row-major order of the slice.
pub fn strided_slice(
    p: &StridedSliceParams,
    input: &[u8],
    in_shape: &Shape,
    elem: usize,
    out: &mut [u8],
) -> Result<(), OpError> {
    let dims = in_shape.dims();
    if dims.len() > MAX_RANK || in_shape.elements().checked_mul(elem) != Some(input.len()) {
        return Err(OpError::Shape("strided slice input length does not match its shape"));
    }
    let total: usize = p.count.iter().product();
    if total.checked_mul(elem) != Some(out.len()) {
        return Err(OpError::Shape("strided slice output length does not match the slice"));
    }
    if out.is_empty() {
        return Ok(());
    }
    // Input strides in bytes over the padded axes.
    let mut step = [0i64; MAX_RANK];
    let mut acc = elem as i64;
    for k in (0..MAX_RANK).rev() {
        step[k] = acc;
        let d = if k + dims.len() >= MAX_RANK { dims[k + dims.len() - MAX_RANK] } else { 1 };
        acc *= d as i64;
    }
    let mut index = [0usize; MAX_RANK];
    for o in out.chunks_exact_mut(elem) {
        let from: i64 = (0..MAX_RANK).map(|k| (p.start[k] + index[k] as i64 * p.stride[k]) * step[k]).sum();
        let from = usize::try_from(from).map_err(|_| OpError::Shape("strided slice index out of range"))?;
        let src = input.get(from..from + elem).ok_or(OpError::Shape("strided slice index out of range"))?;
        o.copy_from_slice(src);
        for k in (0..MAX_RANK).rev() {
            index[k] += 1;
            if index[k] < p.count[k] {
                break;
            }
            index[k] = 0;
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

    /// Slices `0..n` of shape `dims` (int8 elements).
    fn slice(
        dims: &[usize],
        b: &[i32],
        e: &[i32],
        st: &[i32],
        masks: Masks,
        out: &[usize],
    ) -> Result<Vec<u8>, OpError> {
        let (shape, out_shape) = (s(dims), s(out));
        let (b, e, st) = (ints(b), ints(e), ints(st));
        let p = StridedSliceParams::prepare(&shape, Int32s(&b), Int32s(&e), Int32s(&st), masks, &out_shape)?;
        let input: Vec<u8> = (0..shape.elements()).map(|i| i as u8).collect();
        let mut got = vec![0; out_shape.elements()];
        strided_slice(&p, &input, &shape, 1, &mut got)?;
        Ok(got)
    }

    #[test]
    fn positive_and_negative_strides() -> TestResult {
        let none = Masks::default();
        assert_eq!(slice(&[6], &[1], &[5], &[2], none, &[2])?, [1, 3]);
        assert_eq!(slice(&[6], &[-1], &[0], &[-2], none, &[3])?, [5, 3, 1]);
        // Clamped bounds and an end before the begin.
        assert_eq!(slice(&[4], &[-10], &[10], &[1], none, &[4])?, [0, 1, 2, 3]);
        assert_eq!(slice(&[4], &[3], &[1], &[1], none, &[0])?, Vec::<u8>::new());
        // Masks: all of axis 0 backwards, last column.
        let m = Masks { begin: 1, end: 1, shrink: 0 };
        assert_eq!(slice(&[3, 2], &[0, 1], &[0, 2], &[-1, 1], m, &[3, 1])?, [5, 3, 1]);
        Ok(())
    }

    #[test]
    fn shrink_axes() -> TestResult {
        // The dynamic-batch flatten: element 0 of a shape vector, as a scalar.
        let m = Masks { shrink: 1, ..Masks::default() };
        assert_eq!(slice(&[3], &[0], &[1], &[1], m, &[])?, [0]);
        // A negative begin picks from the end; the end is ignored.
        assert_eq!(slice(&[2, 3], &[-1, 0], &[0, 3], &[1, 1], m, &[3])?, [3, 4, 5]);
        // Shrinking outside the input would leave TFLM's output unwritten: refused.
        assert!(slice(&[3], &[3], &[4], &[1], m, &[]).is_err());
        assert!(slice(&[3], &[-4], &[0], &[-1], m, &[]).is_err());
        Ok(())
    }

    #[test]
    fn four_dimensions_and_int32() -> TestResult {
        // The fixture's z[:, 1:7:2, ::-1, 1:3] on [1, 8, 8, 4].
        let m = Masks { begin: 5, end: 5, shrink: 0 };
        let got = slice(&[1, 8, 8, 4], &[0, 1, 0, 1], &[0, 7, 0, 3], &[1, 2, -1, 1], m, &[1, 3, 8, 2])?;
        assert_eq!(got.len(), 48);
        assert_eq!(got[..4], [61, 62, 57, 58]);
        let shape = s(&[3]);
        let (b, e, st) = (ints(&[1]), ints(&[3]), ints(&[1]));
        let p = StridedSliceParams::prepare(&shape, Int32s(&b), Int32s(&e), Int32s(&st), Masks::default(), &s(&[2]))?;
        let mut out = [0u8; 8];
        strided_slice(&p, &ints(&[10, -20, 30]), &shape, 4, &mut out)?;
        assert_eq!(out.to_vec(), ints(&[-20, 30]));
        Ok(())
    }

    #[test]
    fn refusals() -> TestResult {
        let none = Masks::default();
        assert!(slice(&[4], &[0], &[4], &[0], none, &[4]).is_err());
        assert!(slice(&[4], &[0], &[4], &[1], none, &[3]).is_err());
        assert!(slice(&[4], &[0], &[4], &[1], none, &[4, 1]).is_err());
        assert!(slice(&[4], &[0, 0], &[4, 1], &[1, 1], none, &[4]).is_err());
        assert!(slice(&[1, 1, 1, 1, 2], &[0; 5], &[1; 5], &[1; 5], none, &[1, 1, 1, 1, 2]).is_err());
        assert!(slice(&[], &[], &[], &[], none, &[]).is_err());
        let shape = s(&[4]);
        let (b, e, st) = (ints(&[0]), ints(&[2]), ints(&[1]));
        let p = StridedSliceParams::prepare(&shape, Int32s(&b), Int32s(&e), Int32s(&st), none, &s(&[2]))?;
        assert!(strided_slice(&p, &[0; 3], &shape, 1, &mut [0; 2]).is_err());
        assert!(strided_slice(&p, &[0; 4], &shape, 1, &mut [0; 3]).is_err());
        Ok(())
    }
}
