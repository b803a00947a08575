//! int8 MEAN, as TFLM's `reduce.cc` (`PrepareMeanOrSumHelper`, `EvalMeanHelper`) with
//! `reference_ops::QuantizedMeanOrSum`.
//!
//! Current TFLM has a single int8 path for every axis set (the older special case for a
//! 4-D reduction over height and width, and the branch for equal input and output
//! quantization, are gone): the raw int8 values are summed in a wrapping `i32` per output,
//! the zero-point correction is applied once as `sum − zero_point × count`, and the
//! division by the count is folded into the output multiplier in integer arithmetic.
//! TFLM sums through a scratch buffer; here each output sums its own inputs directly,
//! which gives the same wrapping sums without memory.

use super::common::check_quant;
use crate::arith::{Multiplier, multiply_by_quantized_multiplier};
use crate::kernels::OpError;
use crate::tensor::{MAX_RANK, Quant, Shape};

/// Parameters and geometry of an int8 MEAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanParams {
    dims: [usize; MAX_RANK],
    rank: usize,
    reduced: [bool; MAX_RANK],
    input_len: usize,
    output_len: usize,
    /// Some input dimension is zero: TFLM then leaves every output at 0.
    empty: bool,
    count: i64,
    input_zero_point: i32,
    output_zero_point: i32,
    multiplier: i32,
    shift: i32,
}

impl MeanParams {
    /// Resolves `axes` (negative counts from the end, duplicates ignored, as TFLM's
    /// `ResolveAxis`) and derives the rescaling. `keep_dims` does not change the
    /// arithmetic: the output only needs one element per combination of kept dimensions.
    pub fn prepare(
        input: Quant,
        in_shape: &Shape,
        axes: &[i32],
        keep_dims: bool,
        output: Quant,
        out_shape: &Shape,
    ) -> Result<Self, OpError> {
        let _ = keep_dims;
        check_quant(input)?;
        check_quant(output)?;
        let rank = in_shape.rank();
        let mut dims = [1; MAX_RANK];
        dims.get_mut(..rank).ok_or(OpError::Shape("mean rank too large"))?.copy_from_slice(in_shape.dims());
        let mut reduced = [false; MAX_RANK];
        if rank > 0 {
            for &axis in axes {
                let resolved = if axis < 0 { axis + rank as i32 } else { axis };
                let slot = usize::try_from(resolved).ok().filter(|&a| a < rank).and_then(|a| reduced.get_mut(a));
                *slot.ok_or(OpError::Unsupported("mean axis out of range"))? = true;
            }
        }
        let too_large = OpError::Shape("mean shape too large");
        let mut count = 1i64;
        let mut kept = 1usize;
        for (&d, &r) in dims.iter().zip(&reduced) {
            if r {
                count = count.checked_mul(i64::try_from(d).map_err(|_| too_large)?).ok_or(too_large)?;
            } else {
                kept = kept.checked_mul(d).ok_or(too_large)?;
            }
        }
        if kept != out_shape.elements() {
            return Err(OpError::Shape("mean output size does not match the kept dimensions"));
        }

        let real = f64::from(input.scale) / f64::from(output.scale);
        if !real.is_finite() {
            return Err(OpError::Quantization("multiplier is not finite"));
        }
        let m = Multiplier::new(real);
        let (mut multiplier, mut shift) = (m.multiplier, m.shift);
        if count > 0 {
            // Fold 1/count into the multiplier: shift by floor(log2(count)), at most 32 and
            // no further than keeps the final shift at -31 or above.
            let log2 = 63 - count.leading_zeros() as i32;
            let s = log2.min(32).min(31 + shift).max(0);
            multiplier = ((i64::from(multiplier) << s) / count) as i32;
            shift -= s;
        }
        if shift > 31 {
            // A left shift of 32 bits or more is undefined in TFLM's C++.
            return Err(OpError::Quantization("multiplier too large"));
        }
        Ok(Self {
            dims,
            rank,
            reduced,
            input_len: in_shape.elements(),
            output_len: kept,
            empty: dims.iter().take(rank).any(|&d| d == 0),
            count,
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier,
            shift,
        })
    }
}

/// Calls `f` with the flat offset of every index that varies only over the dimensions
/// where `select` is true, in row-major order.
fn for_each_offset(dims: &[usize; MAX_RANK], select: &[bool; MAX_RANK], mut f: impl FnMut(usize)) {
    let mut strides = [0usize; MAX_RANK];
    let mut acc = 1;
    for k in (0..MAX_RANK).rev() {
        strides[k] = acc;
        acc = acc.saturating_mul(dims[k]);
    }
    let mut index = [0usize; MAX_RANK];
    loop {
        f(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
        let mut k = MAX_RANK;
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            if !select[k] {
                continue;
            }
            index[k] += 1;
            if index[k] < dims[k] {
                break;
            }
            index[k] = 0;
        }
    }
}

/// int8 MEAN over the axes given to [`MeanParams::prepare`].
pub fn mean(p: &MeanParams, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    if input.len() != p.input_len || output.len() != p.output_len {
        return Err(OpError::Shape("mean slice lengths do not match the prepared shapes"));
    }
    if p.empty {
        output.fill(0);
        return Ok(());
    }
    let kept = core::array::from_fn(|k| !p.reduced[k]);
    let mut slots = output.iter_mut();
    for_each_offset(&p.dims, &kept, |base| {
        let mut sum = 0i32;
        for_each_offset(&p.dims, &p.reduced, |offset| {
            if let Some(&v) = input.get(base + offset) {
                sum = sum.wrapping_add(i32::from(v));
            }
        });
        // As TFLM: the correction in 64 bits, then truncated to the 32-bit accumulator type.
        let shifted = i64::from(sum).wrapping_sub(i64::from(p.input_zero_point).wrapping_mul(p.count)) as i32;
        let value = multiply_by_quantized_multiplier(shifted, p.multiplier, p.shift).wrapping_add(p.output_zero_point);
        if let Some(slot) = slots.next() {
            *slot = value.clamp(-128, 127) as i8;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    fn run(
        input: &[i8],
        sin: &[usize],
        axes: &[i32],
        qi: Quant,
        qo: Quant,
        sout: &[usize],
    ) -> Result<Vec<i8>, OpError> {
        let p = MeanParams::prepare(qi, &shape(sin), axes, true, qo, &shape(sout))?;
        let mut out = vec![0; shape(sout).elements()];
        mean(&p, input, &mut out)?;
        Ok(out)
    }

    // reduce_test.cc, MeanInt84DKeepDims and MeanInt84DWithoutKeepDimsWithPrecision (scales
    // 0.5, inputs quantized as the test does). The exact outputs come from TFLM's reference
    // kernel: 134 / 6 = 22.33 gives 23 because the multiplier and both roundings are integer.
    #[test]
    fn tflm_mean_goldens() -> TestResult {
        let s = q(0.5, 0);
        let x: Vec<i8> = (1..=24).map(|v| 2 * v).collect();
        assert_eq!(run(&x, &[2, 2, 3, 2], &[1, 2], s, s, &[2, 1, 1, 2])?, [12, 14, 36, 38]);
        let x = [2, 48, 26, 6, 18, 34, 22, 72, 28, 38, 34, 44];
        let p = MeanParams::prepare(s, &shape(&[2, 2, 3, 1]), &[1, 2], false, s, &shape(&[2, 1]))?;
        let mut out = [0; 2];
        mean(&p, &x, &mut out)?;
        assert_eq!(out, [23, 40]);
        Ok(())
    }

    #[test]
    fn averages_over_axes() -> TestResult {
        let same = q(0.5, 0);
        // 2x3: rows, columns, everything; halves round away from zero.
        let x = [1, 2, 4, -1, -2, -4];
        assert_eq!(run(&x, &[2, 3], &[1], same, same, &[2, 1])?, [2, -2]);
        assert_eq!(run(&x, &[2, 3], &[0], same, same, &[3])?, [0, 0, 0]);
        assert_eq!(run(&x, &[2, 3], &[-1, 0, 1], same, same, &[])?, [0]);
        let y = [3, 4, 10, 11];
        assert_eq!(run(&y, &[2, 2], &[1], same, same, &[2])?, [4, 11]);
        assert_eq!(run(&y, &[2, 2], &[0], same, same, &[2])?, [7, 8]);
        // Global average pooling over H and W of NHWC, with zero points and rescaling.
        let z: Vec<i8> = (0..2 * 2 * 2 * 3).map(|v| v as i8).collect();
        let got = run(&z, &[2, 2, 2, 3], &[1, 2], q(1.0, 3), q(0.5, -10), &[2, 1, 1, 3])?;
        // Channel c of batch b averages 12b + c + {0, 3, 6, 9} = 12b + c + 4.5; minus 3, × 2.
        assert_eq!(got, [-7, -5, -3, 17, 19, 21]);
        // Duplicate axes count once; no axes copies through the rescaling.
        assert_eq!(run(&y, &[2, 2], &[1, -1], same, same, &[2])?, [4, 11]);
        assert_eq!(run(&y, &[2, 2], &[], same, q(1.0, 1), &[2, 2])?, [3, 3, 6, 7]);
        Ok(())
    }

    #[test]
    fn empty_input_gives_zeros() -> TestResult {
        let p = MeanParams::prepare(q(1.0, 5), &shape(&[0, 2]), &[0], false, q(1.0, 5), &shape(&[2]))?;
        let mut out = [9; 2];
        mean(&p, &[], &mut out)?;
        assert_eq!(out, [0, 0]);
        Ok(())
    }

    #[test]
    fn errors() -> TestResult {
        let (s, o) = (shape(&[2, 2]), shape(&[2]));
        let qq = q(1.0, 0);
        assert!(MeanParams::prepare(qq, &s, &[2], false, qq, &o).is_err());
        assert!(MeanParams::prepare(qq, &s, &[-3], false, qq, &o).is_err());
        assert!(MeanParams::prepare(qq, &s, &[0], false, qq, &shape(&[3])).is_err());
        assert!(MeanParams::prepare(q(0.0, 0), &s, &[0], false, qq, &o).is_err());
        let p = MeanParams::prepare(qq, &s, &[0], false, qq, &o)?;
        assert!(mean(&p, &[1, 2, 3], &mut [0; 2]).is_err());
        assert!(mean(&p, &[1, 2, 3, 4], &mut [0; 3]).is_err());
        Ok(())
    }
}
