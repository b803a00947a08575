//! SOFTMAX, int8 in and out: TFLite's quantized `reference_ops::Softmax` with gemmlowp's
//! fixed-point `exp` (input in Q5.26, sum in Q12.19) and reciprocal; output scale 1/256,
//! zero point -128, as TFLM requires.

use super::OpError;
use super::params::check_len;
use crate::arith::{Multiplier, multiply_by_quantized_multiplier_greater_than_one, rounding_divide_by_pot};
use crate::fixedpoint::{exp_on_negative_values, get_reciprocal, rescale};

const SCALED_DIFF_INTEGER_BITS: i32 = 5;
const ACCUMULATION_INTEGER_BITS: i32 = 12;

/// Parameters derived from beta and the input scale.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxParams {
    input_multiplier: i32,
    input_left_shift: i32,
    diff_min: i32,
}

impl SoftmaxParams {
    /// `CalculateSoftmaxParams` for int8 → int8.
    pub fn prepare(beta: f32, input_scale: f32, output_scale: f32, output_zero_point: i32) -> Result<Self, OpError> {
        if output_zero_point != -128 || output_scale != 1.0 / 256.0 {
            return Err(OpError::Quantization("softmax int8 output must have scale 1/256 and zero point -128"));
        }
        // PreprocessSoftmaxScaling, then QuantizeMultiplierGreaterThanOne.
        let real = (f64::from(beta) * f64::from(input_scale) * f64::from(1u32 << (31 - SCALED_DIFF_INTEGER_BITS)))
            .min(f64::from(i32::MAX));
        let m = Multiplier::new(real);
        if m.shift < 0 {
            return Err(OpError::Quantization("softmax input scale × beta too small"));
        }
        // CalculateInputRadius(5, shift, 31), floored, negated.
        let radius = f64::from((1 << SCALED_DIFF_INTEGER_BITS) - 1)
            * f64::from(1u32 << (31 - SCALED_DIFF_INTEGER_BITS))
            / (1u64 << m.shift) as f64;
        Ok(Self { input_multiplier: m.multiplier, input_left_shift: m.shift, diff_min: -(radius as i32) })
    }
}

/// Softmax over the last dimension, `depth` wide.
pub fn softmax(p: &SoftmaxParams, input: &[i8], output: &mut [i8], depth: usize) -> Result<(), OpError> {
    check_len(output, input.len(), "softmax output")?;
    if depth == 0 || !input.len().is_multiple_of(depth) {
        return Err(OpError::Shape("softmax depth"));
    }
    let scaled = |diff: i32| {
        let rescaled = multiply_by_quantized_multiplier_greater_than_one(diff, p.input_multiplier, p.input_left_shift);
        exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS as u32)
    };
    for (row, out) in input.chunks_exact(depth).zip(output.chunks_exact_mut(depth)) {
        let max = row.iter().copied().max().map_or(0, i32::from);
        let mut sum: i32 = 0;
        for &x in row {
            let diff = i32::from(x) - max;
            if diff >= p.diff_min {
                sum = sum.wrapping_add(rescale(scaled(diff), 0, ACCUMULATION_INTEGER_BITS));
            }
        }
        let (shifted_scale, num_bits_over_unit) = get_reciprocal(sum, ACCUMULATION_INTEGER_BITS);
        let exponent = num_bits_over_unit + 31 - 8;
        if !(0..=31).contains(&exponent) {
            return Err(OpError::Quantization("softmax exponent out of range"));
        }
        for (&x, o) in row.iter().zip(out.iter_mut()) {
            let diff = i32::from(x) - max;
            *o = if diff >= p.diff_min {
                let prod = crate::arith::saturating_rounding_doubling_high_mul(shifted_scale, scaled(diff));
                (rounding_divide_by_pot(prod, exponent) - 128).clamp(-128, 127) as i8
            } else {
                -128
            };
        }
    }
    Ok(())
}
