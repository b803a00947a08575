//! int8 LOGISTIC, TANH, LEAKY_RELU and HARD_SWISH, as TFLM's micro kernels compute them.
//!
//! TFLM evaluates LOGISTIC and TANH in gemmlowp fixed point (not through a lookup
//! table), on the input rescaled to Q4.27, with inputs beyond a precomputed radius
//! saturating directly. Their output quantization is implied by the kernels (LOGISTIC:
//! 1/256 and -128, TANH: 1/128 and 0); TFLM's Prepare only enforces LOGISTIC's zero point,
//! and so does this module, so that every model TFLM runs gives the same bytes here.
//! HARD_SWISH follows TFLite's 16-bit fixed-point reference, including its int16
//! truncations.

use super::common::{check_quant, quantize_multiplier};
use crate::arith::{Multiplier, frexp, multiply_by_quantized_multiplier, rounding_divide_by_pot};
use crate::fixedpoint::{
    self, rounding_divide_by_pot_i16, saturating_doubling_high_mul_i16, saturating_left_shift_i16, srdhm_i16,
};
use crate::kernels::OpError;
use crate::tensor::Quant;

/// Integer bits of the fixed-point input of LOGISTIC and TANH.
const INPUT_INTEGER_BITS: u32 = 4;

fn check_lengths(input: &[i8], output: &[i8]) -> Result<(), OpError> {
    if input.len() == output.len() { Ok(()) } else { Err(OpError::Shape("input and output sizes differ")) }
}

/// The input rescaling shared by LOGISTIC and TANH: `input_multiplier`,
/// `input_left_shift` and `input_range_radius` of their TFLM Prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Q4Input {
    zero_point: i32,
    multiplier: i32,
    left_shift: i32,
    range_radius: i32,
}

impl Q4Input {
    fn prepare(input: Quant) -> Result<Self, OpError> {
        check_quant(input)?;
        let real = f64::from(input.scale) * f64::from(1u32 << (31 - INPUT_INTEGER_BITS));
        let (q, left_shift) = frexp(real);
        // The mantissa of a float scale has 24 bits, so this product is an exact integer
        // below 2^31 (no rounding, unlike QuantizeMultiplier).
        let multiplier = (q * f64::from(1u32 << 31)) as i32;
        // `CalculateInputRadius` divides by `1 << left_shift`; outside 0..=62 that shift is
        // undefined in C++ (scales below 2^-27 or above 2^35).
        if !(0..=62).contains(&left_shift) {
            return Err(OpError::Quantization("input scale out of range"));
        }
        let max_input_rescaled = ((1i64 << INPUT_INTEGER_BITS) - 1) << (31 - INPUT_INTEGER_BITS);
        let range_radius = (max_input_rescaled >> left_shift) as i32;
        Ok(Self { zero_point: input.zero_point, multiplier, left_shift, range_radius })
    }

    /// Maps each input to the output, saturating outside the radius and otherwise calling
    /// `inside` with the input in Q4.27.
    fn map(&self, input: &[i8], output: &mut [i8], inside: impl Fn(i32) -> i8) -> Result<(), OpError> {
        check_lengths(input, output)?;
        for (o, &x) in output.iter_mut().zip(input) {
            let value = i32::from(x) - self.zero_point;
            *o = if value <= -self.range_radius {
                i8::MIN
            } else if value >= self.range_radius {
                i8::MAX
            } else {
                // |value| < radius = 15 × 2^(27 − shift), so the rescaled value fits.
                inside(multiply_by_quantized_multiplier(value, self.multiplier, self.left_shift))
            };
        }
        Ok(())
    }
}

/// Parameters of an int8 LOGISTIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogisticParams(Q4Input);

impl LogisticParams {
    /// TFLM's `CalculateArithmeticOpDataLogistic` for int8 (the output zero point must be
    /// -128; the output scale is taken to be 1/256, as the kernel assumes).
    pub fn prepare(input: Quant, output: Quant) -> Result<Self, OpError> {
        if output.zero_point != i32::from(i8::MIN) {
            return Err(OpError::Quantization("logistic output zero point must be -128"));
        }
        Ok(Self(Q4Input::prepare(input)?))
    }
}

/// int8 LOGISTIC (`reference_integer_ops::Logistic`); `input` and `output` have equal length.
pub fn logistic(p: &LogisticParams, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    p.0.map(input, output, |q4| {
        let q0 = fixedpoint::logistic(q4, INPUT_INTEGER_BITS);
        (rounding_divide_by_pot(q0, 23) - 128).clamp(-128, 127) as i8
    })
}

/// Parameters of an int8 TANH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TanhParams(Q4Input);

impl TanhParams {
    /// TFLM's `CalculateArithmeticOpData` of `tanh.cc` for int8. TFLM checks nothing about
    /// the output; the kernel writes it with scale 1/128 and zero point 0.
    pub fn prepare(input: Quant, output: Quant) -> Result<Self, OpError> {
        let _ = output;
        Ok(Self(Q4Input::prepare(input)?))
    }
}

/// int8 TANH (`reference_integer_ops::Tanh`); `input` and `output` have equal length.
pub fn tanh(p: &TanhParams, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    p.0.map(input, output, |q4| {
        let q0 = fixedpoint::tanh(q4, INPUT_INTEGER_BITS);
        rounding_divide_by_pot(q0, 24).clamp(-128, 127) as i8
    })
}

/// Parameters of an int8 LEAKY_RELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyReluParams {
    input_zero_point: i32,
    output_zero_point: i32,
    alpha: Multiplier,
    identity: Multiplier,
}

impl LeakyReluParams {
    /// TFLM's `CalculateOpDataLeakyRelu` for int8: both ratios are formed in float, then
    /// quantized in double.
    pub fn prepare(input: Quant, output: Quant, alpha: f32) -> Result<Self, OpError> {
        check_quant(input)?;
        check_quant(output)?;
        if !alpha.is_finite() {
            return Err(OpError::Unsupported("leaky relu alpha is not finite"));
        }
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            alpha: quantize_multiplier(f64::from(input.scale * alpha / output.scale))?,
            identity: quantize_multiplier(f64::from(input.scale / output.scale))?,
        })
    }
}

/// int8 LEAKY_RELU (`reference_ops::QuantizeLeakyRelu`, negative alpha included).
pub fn leaky_relu(p: &LeakyReluParams, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    check_lengths(input, output)?;
    let negative_alpha = p.alpha.multiplier < 0;
    // |multiplier| < 2^31: float ratios have 24-bit mantissas, so it never rounds to -2^31.
    let alpha = p.alpha.multiplier.wrapping_abs();
    for (o, &x) in output.iter_mut().zip(input) {
        let value = i32::from(x) - p.input_zero_point;
        let scaled = if value >= 0 {
            multiply_by_quantized_multiplier(value, p.identity.multiplier, p.identity.shift)
        } else {
            let s = multiply_by_quantized_multiplier(value, alpha, p.alpha.shift);
            if negative_alpha { s.wrapping_neg() } else { s }
        };
        *o = p.output_zero_point.wrapping_add(scaled).clamp(-128, 127) as i8;
    }
    Ok(())
}

/// Parameters of an int8 HARD_SWISH (TFLite's `HardSwishParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardSwishParams {
    input_zero_point: i16,
    output_zero_point: i16,
    reluish_multiplier: i16,
    reluish_exponent: i32,
    output_multiplier: i16,
    output_exponent: i32,
}

/// `DownScaleInt32ToInt16Multiplier`.
fn downscale_multiplier(m: i32) -> i16 {
    if m >= i32::MAX - (1 << 15) { i16::MAX } else { ((m + (1 << 15)) >> 16) as i16 }
}

impl HardSwishParams {
    /// TFLM's `HardSwishPrepare` for int8: the output multiplier must not left-shift.
    pub fn prepare(input: Quant, output: Quant) -> Result<Self, OpError> {
        check_quant(input)?;
        check_quant(output)?;
        let hires_input_scale = (1.0f32 / 128.0) * input.scale;
        let reluish_scale = 3.0f32 / 32768.0;
        let out = quantize_multiplier(f64::from(hires_input_scale / output.scale))?;
        if out.shift > 0 {
            return Err(OpError::Quantization("hard swish output multiplier above one"));
        }
        let reluish = quantize_multiplier(f64::from(hires_input_scale / reluish_scale))?;
        Ok(Self {
            // Both fit: zero points were checked to lie in int8.
            input_zero_point: input.zero_point as i16,
            output_zero_point: output.zero_point as i16,
            reluish_multiplier: downscale_multiplier(reluish.multiplier),
            reluish_exponent: reluish.shift,
            output_multiplier: downscale_multiplier(out.multiplier),
            output_exponent: out.shift,
        })
    }

    /// One element of `reference_ops::HardSwish<int8_t>`, with its int16 arithmetic.
    fn apply(&self, x: i8) -> i8 {
        let input_value = i16::from(x).wrapping_sub(self.input_zero_point);
        // |input_value| <= 255, so the 7-bit shift fits in int16.
        let hires = input_value.wrapping_mul(1 << 7);
        let preshift_output = srdhm_i16(hires, self.output_multiplier);
        let mut reluish = hires;
        let exponent = self.reluish_exponent;
        if exponent > 0 {
            reluish = saturating_left_shift_i16(reluish, exponent.unsigned_abs() - 1);
        }
        reluish = srdhm_i16(reluish, self.reluish_multiplier);
        if exponent > 0 {
            reluish = saturating_left_shift_i16(reluish, 1);
        }
        if exponent < 0 {
            reluish = rounding_divide_by_pot_i16(reluish, exponent.unsigned_abs());
        }
        // From [-1, 1] to [0, 1] in Q15.
        let reluish = ((i32::from(reluish) + (1 << 15)) >> 1) as i16;
        let preshift = saturating_doubling_high_mul_i16(reluish, preshift_output);
        let output = rounding_divide_by_pot_i16(preshift, self.output_exponent.unsigned_abs());
        // The int16 sum wraps as in C++ before the clamp.
        output.wrapping_add(self.output_zero_point).clamp(-128, 127) as i8
    }
}

/// int8 HARD_SWISH; `input` and `output` have equal length.
pub fn hard_swish(p: &HardSwishParams, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    check_lengths(input, output)?;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = p.apply(x);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    // Inputs of logistic_test.cc (LogisticQuantizedInt8Basic/WideRange), tanh_test.cc
    // (SimpleTestTanhInt8, input scale 1/16) and leaky_relu_test.cc (Int8_1); TFLM's tests
    // compare with a tolerance, so the exact outputs here come from running TFLM's
    // reference kernels on these inputs.
    #[test]
    fn tflm_goldens() -> TestResult {
        let out_q = q(1.0 / 256.0, -128);
        let mut out = [0; 10];
        let p = LogisticParams::prepare(q(0.1, 0), out_q)?;
        logistic(&p, &[10, 20, 30, 40, 50, -10, -20, -30, -40, -50], &mut out)?;
        assert_eq!(out, [59, 97, 116, 123, 126, -59, -97, -116, -123, -126]);
        let p = LogisticParams::prepare(q(1.0, 0), out_q)?;
        logistic(&p, &[1, 2, 3, 4, 93, -1, -2, -3, -4, -93], &mut out)?;
        assert_eq!(out, [59, 97, 116, 123, 127, -59, -97, -116, -123, -128]);
        let p = TanhParams::prepare(q(16.0 / 256.0, 0), q(1.999_999_5 / 256.0, 0))?;
        let mut out = [0; 9];
        tanh(&p, &[-128, -64, -16, -1, 0, 1, 16, 64, 127], &mut out)?;
        assert_eq!(out, [-128, -128, -97, -8, 0, 8, 97, 127, 127]);
        let p = LeakyReluParams::prepare(q(0.1, 0), q(0.1, 0), 0.5)?;
        let mut out = [0; 6];
        leaky_relu(&p, &[0, 10, 30, 10, -10, -20], &mut out)?;
        assert_eq!(out, [0, 10, 30, 10, -5, -10]);
        Ok(())
    }

    #[test]
    fn logistic_values() -> TestResult {
        let p = LogisticParams::prepare(q(0.1, 0), q(1.0 / 256.0, -128))?;
        let mut out = [0; 5];
        logistic(&p, &[0, 10, -10, 127, -128], &mut out)?;
        // sigmoid(0) = 0.5 → 128 - 128; sigmoid(±1) ≈ 0.731 / 0.269 → 187 / 69.
        assert_eq!(out, [0, 59, -59, 127, -128]);
        assert!(LogisticParams::prepare(q(0.1, 0), q(1.0 / 256.0, 0)).is_err());
        assert!(LogisticParams::prepare(q(1e-9, 0), q(1.0 / 256.0, -128)).is_err());
        assert!(logistic(&p, &[0, 1], &mut out).is_err());
        Ok(())
    }

    #[test]
    fn q4_input_rescaling() -> TestResult {
        // 0.1 × 2^27 = 0.8 × 2^24: shift 24, radius 15 × 2^27 / 2^24 = 120.
        let p = Q4Input::prepare(q(0.1, 3))?;
        assert_eq!((p.left_shift, p.range_radius, p.zero_point), (24, 120, 3));
        assert_eq!(
            p.multiplier,
            (f64::from(0.1f32) * f64::from(1u32 << 27) / f64::from(1u32 << 24) * 2f64.powi(31)) as i32
        );
        Ok(())
    }

    #[test]
    fn tanh_values() -> TestResult {
        let p = TanhParams::prepare(q(0.05, 0), q(1.0 / 128.0, 0))?;
        let mut out = [0; 5];
        tanh(&p, &[0, 20, -20, 127, -128], &mut out)?;
        // tanh(±1) ≈ ±0.7616 → ±97.5 in Q7.
        assert_eq!(out, [0, 97, -97, 127, -128]);
        Ok(())
    }

    #[test]
    fn leaky_relu_values() -> TestResult {
        // Same scales, alpha 0.5: identity above zero, halved below (gemmlowp's doubling
        // high multiply rounds the negative half -1.5 toward zero).
        let p = LeakyReluParams::prepare(q(0.1, 0), q(0.1, 0), 0.5)?;
        let mut out = [0; 5];
        leaky_relu(&p, &[10, -10, -3, 127, -128], &mut out)?;
        assert_eq!(out, [10, -5, -1, 127, -64]);
        // A negative alpha flips the sign of the negative side.
        let p = LeakyReluParams::prepare(q(0.1, 2), q(0.1, 0), -2.0)?;
        leaky_relu(&p, &[12, -8, 2, 0, -128], &mut out)?;
        assert_eq!(out, [10, 20, 0, 4, 127]);
        assert!(LeakyReluParams::prepare(q(0.1, 0), q(0.1, 0), f32::NAN).is_err());
        Ok(())
    }

    #[test]
    fn hard_swish_values() -> TestResult {
        // Input scale 3/64 (so 64 is 3.0), output scale 3/128.
        let p = HardSwishParams::prepare(q(3.0 / 64.0, 0), q(3.0 / 128.0, 0))?;
        let mut out = [0; 6];
        hard_swish(&p, &[0, -64, -100, 64, 100, 32], &mut out)?;
        // x ≤ -3 gives 0, x ≥ 3 gives x, and hard_swish(1.5) = 1.5 × 4.5 / 6 = 1.125 → 48.
        assert_eq!(out, [0, 0, 0, 127, 127, 48]);
        let p = HardSwishParams::prepare(q(3.0 / 64.0, 0), q(3.0 / 32.0, -100))?;
        hard_swish(&p, &[0, -64, 64, 100, 32, 127], &mut out)?;
        assert_eq!(out, [-100, -100, -68, -50, -88, -37]);
        // An output scale smaller than input scale / 128 would need a left shift.
        assert!(HardSwishParams::prepare(q(1.0, 0), q(1.0 / 512.0, 0)).is_err());
        Ok(())
    }
}
