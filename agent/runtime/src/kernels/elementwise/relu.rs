//! Standalone int8 RELU and RELU6, as TFLM's `activations.cc` computes them.
//!
//! The two differ in what they do with quantization. RELU rescales from the input's
//! quantization to the output's (the multiplier is the float quotient of the scales,
//! widened to double) and clamps below at the output's zero. RELU6 never rescales: it
//! clamps the raw input between the input's own codes for 0 and 6 and writes those codes,
//! whatever the output's quantization says. TFLM has no RELU_N1_TO_1 kernel at all.

use super::common::{check_quant, quantize_multiplier};
use crate::arith::{Multiplier, round_f32};
use crate::kernels::{OpError, clamp_i8};
use crate::tensor::Quant;

fn check_lengths(input: &[i8], output: &[i8]) -> Result<(), OpError> {
    if input.len() == output.len() { Ok(()) } else { Err(OpError::Shape("input and output sizes differ")) }
}

/// Parameters of an int8 RELU (TFLM's `ReluOpData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReluParams {
    input_zero_point: i32,
    output_zero_point: i32,
    multiplier: Multiplier,
    min: i32,
}

impl ReluParams {
    /// TFLM's `CalculateReluOpData` for int8: the lower bound is the output zero point
    /// (the quantized 0.0), the upper bound the int8 maximum.
    pub fn prepare(input: Quant, output: Quant) -> Result<Self, OpError> {
        check_quant(input)?;
        check_quant(output)?;
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier: quantize_multiplier(f64::from(input.scale / output.scale))?,
            min: output.zero_point,
        })
    }
}

/// int8 RELU (`ReluQuantized`); `input` and `output` have equal length.
pub fn relu(p: &ReluParams, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    check_lengths(input, output)?;
    for (o, &x) in output.iter_mut().zip(input) {
        let scaled = p.multiplier.apply(i32::from(x) - p.input_zero_point);
        *o = clamp_i8(p.output_zero_point.wrapping_add(scaled), p.min, i32::from(i8::MAX));
    }
    Ok(())
}

/// Parameters of an int8 RELU6 (TFLM's `Relu6OpData`): the input's codes for 0 and 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relu6Params {
    zero: i8,
    six: i8,
}

impl Relu6Params {
    /// TFLM's `Relu6Prepare` for int8. Only the input's quantization matters; 6.0 is
    /// quantized as `FloatToQuantizedType` does (float quotient, rounded, plus the zero
    /// point, then clamped to int8), refusing a scale so small that the code overflows an
    /// int32 before the clamp (undefined in C++).
    pub fn prepare(input: Quant) -> Result<Self, OpError> {
        check_quant(input)?;
        let code = f64::from(round_f32(6.0 / input.scale)) + f64::from(input.zero_point);
        if !(code > -2_147_483_649.0 && code < 2_147_483_648.0) {
            return Err(OpError::Quantization("relu6 bound overflows int32"));
        }
        // The zero point was checked to lie in int8, and the code is at least it.
        Ok(Self { zero: input.zero_point as i8, six: (code as i32).clamp(-128, 127) as i8 })
    }
}

/// int8 RELU6 (`Relu6Quantized`): clamps raw codes; `input` and `output` have equal length.
pub fn relu6(p: &Relu6Params, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    check_lengths(input, output)?;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = x.clamp(p.zero, p.six);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    #[test]
    fn relu_same_scale_is_a_clamp_at_the_zero_point() -> TestResult {
        let p = ReluParams::prepare(q(0.5, -3), q(0.5, -3))?;
        let mut out = [0; 5];
        relu(&p, &[-128, -4, -3, 0, 127], &mut out)?;
        assert_eq!(out, [-3, -3, -3, 0, 127]);
        Ok(())
    }

    #[test]
    fn relu_requantizes() -> TestResult {
        // Input in [-6.4, 6.35] with scale 0.05; output [0, 6.35] with scale 0.025, zp -128.
        let p = ReluParams::prepare(q(0.05, 0), q(0.025, -128))?;
        let mut out = [0; 6];
        relu(&p, &[-128, -1, 0, 1, 63, 127], &mut out)?;
        // 0.05 → 2 output steps; 63 → 126 - 128 = -2; 127 → 254 - 128 saturates to 126.
        assert_eq!(out, [-128, -128, -128, -126, -2, 126]);
        // Halving the scale rounds halves away from zero as gemmlowp does: 3 × 0.5 = 1.5 → 2.
        let p = ReluParams::prepare(q(0.5, 0), q(1.0, 0))?;
        relu(&p, &[3, 5, -3, 1, 2, 127], &mut out)?;
        assert_eq!(out, [2, 3, 0, 1, 1, 64]);
        assert!(ReluParams::prepare(q(0.5, 0), q(0.0, 0)).is_err());
        assert!(ReluParams::prepare(q(1e30, 0), q(1e-30, 0)).is_err());
        assert!(relu(&p, &[1, 2], &mut out).is_err());
        Ok(())
    }

    #[test]
    fn relu6_clamps_raw_codes_of_the_input() -> TestResult {
        // 6 / 0.1 = 60, plus the zero point 10: codes 10..=70.
        let p = Relu6Params::prepare(q(0.1, 10))?;
        assert_eq!(p, Relu6Params { zero: 10, six: 70 });
        let mut out = [0; 5];
        relu6(&p, &[-128, 9, 10, 70, 127], &mut out)?;
        assert_eq!(out, [10, 10, 10, 70, 70]);
        // A wide scale: 6.0 is below one step; a narrow one clamps the code to 127.
        assert_eq!(Relu6Params::prepare(q(100.0, 0))?, Relu6Params { zero: 0, six: 0 });
        assert_eq!(Relu6Params::prepare(q(0.01, -100))?, Relu6Params { zero: -100, six: 127 });
        assert!(Relu6Params::prepare(q(1e-12, 0)).is_err());
        assert!(relu6(&p, &[], &mut out).is_err());
        Ok(())
    }
}
