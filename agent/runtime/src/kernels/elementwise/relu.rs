//! Standalone int8 and int16 RELU and RELU6, as TFLM's `activations.cc` computes them.
//!
//! The two differ in what they do with quantization. RELU rescales from the input's
//! quantization to the output's (the multiplier is the float quotient of the scales,
//! widened to double) and clamps below at the output's zero. RELU6 never rescales: it
//! clamps the raw input between the input's own codes for 0 and 6 and writes those codes,
//! whatever the output's quantization says. TFLM has no RELU_N1_TO_1 kernel at all.

use super::common::{check_quant_of, quantize_multiplier};
use crate::arith::{Multiplier, round_f32};
use crate::kernels::{Code, I16, OpError};
use crate::tensor::Quant;

fn check_lengths<C>(input: &[C], output: &[C]) -> Result<(), OpError> {
    if input.len() == output.len() { Ok(()) } else { Err(OpError::Shape("input and output sizes differ")) }
}

/// The code range of int8 or int16 tensors.
fn codes(int16: bool) -> (i32, i32) {
    if int16 { (I16::MIN, I16::MAX) } else { (<i8 as Code>::MIN, <i8 as Code>::MAX) }
}

/// Parameters of an int8 or int16 RELU (TFLM's `ReluOpData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReluParams {
    input_zero_point: i32,
    output_zero_point: i32,
    multiplier: Multiplier,
    min: i32,
    max: i32,
}

impl ReluParams {
    /// TFLM's `CalculateReluOpData`: the lower bound is the output zero point (the
    /// quantized 0.0), the upper bound the type's maximum.
    pub fn prepare(input: Quant, output: Quant, int16: bool) -> Result<Self, OpError> {
        check_quant_of(input, int16)?;
        check_quant_of(output, int16)?;
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier: quantize_multiplier(f64::from(input.scale / output.scale))?,
            min: output.zero_point,
            max: codes(int16).1,
        })
    }
}

/// RELU (`ReluQuantized`); `input` and `output` have equal length.
pub fn relu<C: Code>(p: &ReluParams, input: &[C], output: &mut [C]) -> Result<(), OpError> {
    check_lengths(input, output)?;
    for (o, &x) in output.iter_mut().zip(input) {
        let scaled = p.multiplier.apply(x.value() - p.input_zero_point);
        *o = C::clamped(p.output_zero_point.wrapping_add(scaled).clamp(p.min, p.max));
    }
    Ok(())
}

/// Parameters of an int8 or int16 RELU6 (TFLM's `Relu6OpData`): the input's codes for 0
/// and 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relu6Params {
    zero: i32,
    six: i32,
}

impl Relu6Params {
    /// TFLM's `Relu6Prepare`. Only the input's quantization matters; 6.0 is quantized as
    /// `FloatToQuantizedType` does (float quotient, rounded, plus the zero point, then
    /// clamped to the type), refusing a scale so small that the code overflows an int32
    /// before the clamp (undefined in C++).
    pub fn prepare(input: Quant, int16: bool) -> Result<Self, OpError> {
        check_quant_of(input, int16)?;
        let code = f64::from(round_f32(6.0 / input.scale)) + f64::from(input.zero_point);
        if !(code > -2_147_483_649.0 && code < 2_147_483_648.0) {
            return Err(OpError::Quantization("relu6 bound overflows int32"));
        }
        let (min, max) = codes(int16);
        // The zero point was checked to lie in the type, and the code is at least it.
        Ok(Self { zero: input.zero_point, six: (code as i32).clamp(min, max) })
    }
}

/// RELU6 (`Relu6Quantized`): clamps raw codes; `input` and `output` have equal length.
pub fn relu6<C: Code>(p: &Relu6Params, input: &[C], output: &mut [C]) -> Result<(), OpError> {
    check_lengths(input, output)?;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = C::clamped(x.value().clamp(p.zero, p.six));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    #[test]
    fn relu_same_scale_is_a_clamp_at_the_zero_point() -> TestResult {
        let p = ReluParams::prepare(q(0.5, -3), q(0.5, -3), false)?;
        let mut out = [0i8; 5];
        relu(&p, &[-128, -4, -3, 0, 127], &mut out)?;
        assert_eq!(out, [-3, -3, -3, 0, 127]);
        Ok(())
    }

    #[test]
    fn relu_requantizes() -> TestResult {
        // Input in [-6.4, 6.35] with scale 0.05; output [0, 6.35] with scale 0.025, zp -128.
        let p = ReluParams::prepare(q(0.05, 0), q(0.025, -128), false)?;
        let mut out = [0i8; 6];
        relu(&p, &[-128, -1, 0, 1, 63, 127], &mut out)?;
        // 0.05 → 2 output steps; 63 → 126 - 128 = -2; 127 → 254 - 128 saturates to 126.
        assert_eq!(out, [-128, -128, -128, -126, -2, 126]);
        // Halving the scale rounds halves away from zero as gemmlowp does: 3 × 0.5 = 1.5 → 2.
        let p = ReluParams::prepare(q(0.5, 0), q(1.0, 0), false)?;
        relu(&p, &[3, 5, -3, 1, 2, 127], &mut out)?;
        assert_eq!(out, [2, 3, 0, 1, 1, 64]);
        assert!(ReluParams::prepare(q(0.5, 0), q(0.0, 0), false).is_err());
        assert!(ReluParams::prepare(q(1e30, 0), q(1e-30, 0), false).is_err());
        assert!(relu(&p, &[1, 2], &mut out).is_err());
        Ok(())
    }

    #[test]
    fn relu6_clamps_raw_codes_of_the_input() -> TestResult {
        // 6 / 0.1 = 60, plus the zero point 10: codes 10..=70.
        let p = Relu6Params::prepare(q(0.1, 10), false)?;
        assert_eq!(p, Relu6Params { zero: 10, six: 70 });
        let mut out = [0i8; 5];
        relu6(&p, &[-128, 9, 10, 70, 127], &mut out)?;
        assert_eq!(out, [10, 10, 10, 70, 70]);
        // A wide scale: 6.0 is below one step; a narrow one clamps the code to 127.
        assert_eq!(Relu6Params::prepare(q(100.0, 0), false)?, Relu6Params { zero: 0, six: 0 });
        assert_eq!(Relu6Params::prepare(q(0.01, -100), false)?, Relu6Params { zero: -100, six: 127 });
        assert!(Relu6Params::prepare(q(1e-12, 0), false).is_err());
        assert!(relu6(&p, &[], &mut out).is_err());
        Ok(())
    }

    #[test]
    fn int16_relus_use_the_int16_range() -> TestResult {
        let wide = |v: &[i16]| v.iter().map(|&x| I16(x.to_le_bytes())).collect::<Vec<_>>();
        let values = |v: &[I16]| v.iter().map(|x| x.value()).collect::<Vec<_>>();
        // 6 / 0.0002 = 30000; past 32767 the code clamps to the int16 maximum.
        let p = Relu6Params::prepare(q(0.0002, 0), true)?;
        let mut out = wide(&[0; 4]);
        relu6(&p, &wide(&[-5, 100, 30001, 32767]), &mut out)?;
        assert_eq!(values(&out), [0, 100, 30000, 30000]);
        assert_eq!(Relu6Params::prepare(q(0.0001, 0), true)?, Relu6Params { zero: 0, six: 32767 });
        // RELU halving the scale, and saturating at 32767 rather than 127.
        let p = ReluParams::prepare(q(1.0, 0), q(0.5, 0), true)?;
        relu(&p, &wide(&[-5, 100, 20000, 300]), &mut out)?;
        assert_eq!(values(&out), [0, 200, 32767, 600]);
        // int16 zero points other than 0 are refused.
        assert!(ReluParams::prepare(q(1.0, 3), q(1.0, 0), true).is_err());
        assert!(Relu6Params::prepare(q(1.0, -1), true).is_err());
        Ok(())
    }
}
