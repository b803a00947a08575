//! int8 PAD and PADV2, as TFLM's `pad.cc` with `reference_ops::PadImpl`.
//!
//! Padding copies raw int8 values: no rescaling happens, so TFLM does not compare the
//! input and output quantization at all. What it does check is that the fill value is
//! representable: without a constant, the fill is the output zero point, which must lie
//! in int8; with a PADV2 constant, its quantization must equal the output's.

use super::broadcast::{check_len, extend};
use crate::kernels::OpError;
use crate::tensor::{MAX_RANK, Quant, Shape};

/// PAD's quantization checks for int8 (`PadPrepare`). The input's quantization is
/// deliberately not compared with the output's: TFLM copies raw values whatever they are.
pub fn check_pad_quant(input: Quant, output: Quant) -> Result<(), OpError> {
    let _ = input;
    if (i32::from(i8::MIN)..=i32::from(i8::MAX)).contains(&output.zero_point) {
        Ok(())
    } else {
        Err(OpError::Quantization("pad output zero point out of int8 range"))
    }
}

/// PADV2's check of its `constant_values` tensor: same zero point and scale as the output.
pub fn check_pad_constant_quant(constant: Quant, output: Quant) -> Result<(), OpError> {
    if constant.zero_point == output.zero_point && f64::from(constant.scale) == f64::from(output.scale) {
        Ok(())
    } else {
        Err(OpError::Quantization("pad constant quantization differs from the output"))
    }
}

/// Pads `input` into `out` with `pad_value` (the output zero point for PAD, the constant
/// for PADV2). `paddings` holds `[before, after]` per dimension; ranks up to 5, and every
/// output dimension must equal the input dimension plus its paddings.
pub fn pad(
    input: &[i8],
    in_shape: &Shape,
    paddings: &[[i32; 2]],
    pad_value: i8,
    out: &mut [i8],
    out_shape: &Shape,
) -> Result<(), OpError> {
    check_len(input.len(), in_shape, "pad input length does not match its shape")?;
    check_len(out.len(), out_shape, "pad output length does not match its shape")?;
    if in_shape.rank() != out_shape.rank() || paddings.len() != out_shape.rank() {
        return Err(OpError::Shape("pad ranks differ"));
    }
    // Right-align everything into 5 dimensions, as PadImpl does.
    let (in_dims, out_dims) = (extend(in_shape), extend(out_shape));
    let mut before = [0usize; MAX_RANK];
    for ((b, &[lo, hi]), (&i, &o)) in
        before.iter_mut().rev().zip(paddings.iter().rev()).zip(in_dims.iter().rev().zip(out_dims.iter().rev()))
    {
        let (Ok(lo), Ok(hi)) = (usize::try_from(lo), usize::try_from(hi)) else {
            return Err(OpError::Unsupported("negative padding"));
        };
        if i.checked_add(lo).and_then(|s| s.checked_add(hi)) != Some(o) {
            return Err(OpError::Shape("pad output dimension mismatch"));
        }
        *b = lo;
    }
    if out.is_empty() {
        return Ok(());
    }
    out.fill(pad_value);
    if input.is_empty() {
        return Ok(());
    }
    // Output strides; then copy each innermost input row to its place.
    let mut stride = [1usize; MAX_RANK];
    for k in (0..MAX_RANK - 1).rev() {
        stride[k] = stride[k + 1] * out_dims[k + 1];
    }
    let row = in_dims[MAX_RANK - 1];
    let mut index = [0usize; MAX_RANK - 1];
    for in_row in input.chunks_exact(row) {
        let start: usize = (0..MAX_RANK).map(|k| (index.get(k).copied().unwrap_or(0) + before[k]) * stride[k]).sum();
        let dest = start.checked_add(row).and_then(|end| out.get_mut(start..end));
        dest.ok_or(OpError::Shape("pad index out of range"))?.copy_from_slice(in_row);
        for k in (0..MAX_RANK - 1).rev() {
            index[k] += 1;
            if index[k] < in_dims[k] {
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
    use crate::kernels::elementwise::testutil::*;

    fn run(
        input: &[i8],
        shape: &[usize],
        paddings: &[[i32; 2]],
        value: i8,
        out_shape: &[usize],
    ) -> Result<Vec<i8>, OpError> {
        let out_shape = Shape::new(out_shape).unwrap_or_default();
        let mut out = vec![0; out_shape.elements()];
        pad(input, &Shape::new(shape).unwrap_or_default(), paddings, value, &mut out, &out_shape)?;
        Ok(out)
    }

    // pad_test.cc, Test2DInt8 and Test2DInt8V2: 1x2x2x1 padded by one on each side of the
    // batch and width dimensions, with the zero point (0) or the constant 42.
    #[test]
    fn tflm_pad_goldens() -> TestResult {
        let paddings = [[1, 1], [0, 0], [1, 1], [0, 0]];
        let got = run(&[1, 2, 3, 4], &[1, 2, 2, 1], &paddings, 0, &[3, 2, 4, 1])?;
        assert_eq!(got, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let got = run(&[1, 2, 3, 4], &[1, 2, 2, 1], &paddings, 42, &[3, 2, 4, 1])?;
        let mut expected = [42; 24];
        expected[9..11].copy_from_slice(&[1, 2]);
        expected[13..15].copy_from_slice(&[3, 4]);
        assert_eq!(got, expected);
        // Test2DInt8V2ExpectFailurePadValueQuantizationMismatch2 and
        // Test2DInt8ExpectFailureQuantizationRangeExcludesZero.
        let q = |scale, zero_point| Quant { scale, zero_point };
        assert!(check_pad_constant_quant(q(0.5, 0), q(1.0, 0)).is_err());
        assert!(check_pad_quant(q(1.0, 0), q(1.0, 129)).is_err());
        Ok(())
    }

    #[test]
    fn pads_any_rank() -> TestResult {
        assert_eq!(run(&[5, 6], &[2], &[[2, 1]], -3, &[5])?, [-3, -3, 5, 6, -3]);
        let got = run(&[1, 2, 3, 4, 5, 6], &[2, 3], &[[1, 0], [0, 1]], 9, &[3, 4])?;
        assert_eq!(got, [9, 9, 9, 9, 1, 2, 3, 9, 4, 5, 6, 9]);
        let got = run(&[7], &[1, 1, 1, 1, 1], &[[0, 0], [0, 1], [0, 0], [1, 0], [0, 0]], 0, &[1, 2, 1, 2, 1])?;
        assert_eq!(got, [0, 7, 0, 0]);
        assert_eq!(run(&[], &[0], &[[1, 1]], 4, &[2])?, [4, 4]);
        Ok(())
    }

    #[test]
    fn errors() -> TestResult {
        assert!(run(&[1, 2], &[2], &[[1, 1]], 0, &[5]).is_err());
        assert!(run(&[1, 2], &[2], &[[-1, 0]], 0, &[1]).is_err());
        assert!(run(&[1, 2], &[2], &[[1, 1], [0, 0]], 0, &[4]).is_err());
        assert!(run(&[1, 2, 3], &[2], &[[1, 1]], 0, &[4]).is_err());
        let q = |scale, zero_point| Quant { scale, zero_point };
        assert!(check_pad_quant(q(0.1, 3), q(0.2, -128)).is_ok());
        assert!(check_pad_quant(q(0.1, 3), q(0.1, 128)).is_err());
        assert!(check_pad_constant_quant(q(0.1, 3), q(0.1, 3)).is_ok());
        assert!(check_pad_constant_quant(q(0.1, 3), q(0.1, 2)).is_err());
        Ok(())
    }
}
