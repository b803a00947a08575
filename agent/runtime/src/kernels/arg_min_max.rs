//! ARG_MAX and ARG_MIN of int8 input, as TFLM's `arg_min_max.cc` with
//! `reference_ops::ArgMinMax`.
//!
//! TFLM writes only int32 indices (int64, the converter's default for `tf.argmax`, is
//! refused). The first index wins ties: a later element replaces the best only when it is
//! strictly greater (or smaller).

use super::OpError;
use crate::tensor::Shape;

/// The index of the largest (`max`) or smallest element along `axis` of `input`, for
/// every position of the other axes, as little-endian int32.
pub fn arg_min_max(input: &[i8], in_shape: &Shape, axis: usize, max: bool, out: &mut [u8]) -> Result<(), OpError> {
    let dims = in_shape.dims();
    let axis_size = *dims.get(axis).ok_or(OpError::Unsupported("arg min/max axis out of range"))?;
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    if input.len() != in_shape.elements() || outer.checked_mul(inner).and_then(|n| n.checked_mul(4)) != Some(out.len())
    {
        return Err(OpError::Shape("arg min/max lengths do not match the shapes"));
    }
    if axis_size == 0 && !out.is_empty() {
        return Err(OpError::Shape("arg min/max over an empty axis"));
    }
    let better = |a: i8, b: i8| if max { a > b } else { a < b };
    let mut dest = out.chunks_exact_mut(4);
    for o in 0..outer {
        let row = input.get(o * axis_size * inner..(o + 1) * axis_size * inner).unwrap_or(&[]);
        for i in 0..inner {
            let mut best = (0usize, row.get(i).copied().unwrap_or(0));
            for (k, &v) in row.iter().skip(i).step_by(inner).enumerate().skip(1) {
                if better(v, best.1) {
                    best = (k, v);
                }
            }
            let index = i32::try_from(best.0).map_err(|_| OpError::Shape("arg min/max index above int32"))?;
            if let Some(d) = dest.next() {
                d.copy_from_slice(&index.to_le_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::{TestResult, shape as s};

    fn run(input: &[i8], dims: &[usize], axis: usize, max: bool) -> Result<Vec<i32>, OpError> {
        let shape = s(dims);
        let n = shape.elements() / dims.get(axis).copied().unwrap_or(1).max(1);
        let mut out = vec![0u8; n * 4];
        arg_min_max(input, &shape, axis, max, &mut out)?;
        Ok(out.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    #[test]
    fn along_each_axis_with_first_index_on_ties() -> TestResult {
        let x = [1, 9, 9, -4, 10, 9];
        assert_eq!(run(&x, &[2, 3], 1, true)?, [1, 1]);
        assert_eq!(run(&x, &[2, 3], 1, false)?, [0, 0]);
        assert_eq!(run(&x, &[2, 3], 0, true)?, [0, 1, 0]);
        assert_eq!(run(&x, &[2, 3], 0, false)?, [1, 0, 0]);
        assert_eq!(run(&[5, 5, 5], &[3], 0, true)?, [0]);
        assert_eq!(run(&[-128, 127], &[1, 2], 1, false)?, [0]);
        Ok(())
    }

    #[test]
    fn refusals_and_empty_dims() -> TestResult {
        assert!(run(&[1, 2], &[2], 1, true).is_err());
        assert!(arg_min_max(&[1, 2], &s(&[2]), 0, true, &mut [0; 8]).is_err());
        assert!(arg_min_max(&[1], &s(&[2]), 0, true, &mut [0; 4]).is_err());
        // No positions at all, or an empty axis with positions to fill.
        assert_eq!(run(&[], &[0, 3], 1, true)?, Vec::<i32>::new());
        assert!(arg_min_max(&[], &s(&[2, 0]), 1, true, &mut [0; 8]).is_err());
        Ok(())
    }
}
