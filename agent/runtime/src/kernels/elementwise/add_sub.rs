//! int8 and int16 ADD and SUB, as TFLM's `add.cc`/`sub.cc` with `reference_integer_ops::AddFunc`
//! and `reference_ops::BroadcastQuantSubSlow`.
//!
//! Both rescale each input to a common scale (twice the larger input scale, with 20 bits
//! of headroom for int8 and 15 for int16), add or subtract, and rescale to the output. The two Prepare functions
//! differ in one detail that changes results: ADD derives its real multipliers in double
//! precision, SUB divides the float scales in single precision and widens afterwards.

use super::broadcast::binary_op;
use super::common::{activation_range_of, check_quant_of, quantize_multiplier_smaller_than_one};
use crate::arith::{Multiplier, multiply_by_quantized_multiplier_smaller_than_one_exp as scale_down};
use crate::kernels::{Code, I16, OpError};
use crate::tensor::{Activation, Quant, Shape};

/// Headroom for int8 inputs (`data->left_shift` in TFLM).
const LEFT_SHIFT: u32 = 20;
/// Headroom for int16 inputs.
const LEFT_SHIFT_INT16: u32 = 15;

/// Fixed-point parameters of an int8 or int16 ADD or SUB, derived once from the tensors'
/// quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddSubParams {
    subtract: bool,
    left_shift: u32,
    input1_offset: i32,
    input2_offset: i32,
    output_offset: i32,
    input1_multiplier: Multiplier,
    input2_multiplier: Multiplier,
    output_multiplier: Multiplier,
    activation_min: i32,
    activation_max: i32,
}

impl AddSubParams {
    /// TFLM's `CalculateOpDataAdd` (or `CalculateOpDataSub` when `subtract`) for int8, or
    /// for int16 when `int16`.
    pub fn prepare(
        input1: Quant,
        input2: Quant,
        output: Quant,
        activation: Activation,
        subtract: bool,
        int16: bool,
    ) -> Result<Self, OpError> {
        for q in [input1, input2, output] {
            check_quant_of(q, int16)?;
        }
        let (left_shift, codes) = if int16 {
            (LEFT_SHIFT_INT16, (I16::MIN, I16::MAX))
        } else {
            (LEFT_SHIFT, (i8::MIN.into(), i8::MAX.into()))
        };
        let (real1, real2, real_output) = if subtract {
            let twice_max_input_scale = 2.0 * input1.scale.max(input2.scale);
            (
                f64::from(input1.scale / twice_max_input_scale),
                f64::from(input2.scale / twice_max_input_scale),
                f64::from(twice_max_input_scale / ((1u32 << left_shift) as f32 * output.scale)),
            )
        } else {
            let twice_max_input_scale = 2.0 * f64::from(input1.scale.max(input2.scale));
            (
                f64::from(input1.scale) / twice_max_input_scale,
                f64::from(input2.scale) / twice_max_input_scale,
                twice_max_input_scale / (f64::from(1u32 << left_shift) * f64::from(output.scale)),
            )
        };
        let (activation_min, activation_max) = activation_range_of(activation, output, codes)?;
        Ok(Self {
            subtract,
            left_shift,
            input1_offset: -input1.zero_point,
            input2_offset: -input2.zero_point,
            output_offset: output.zero_point,
            input1_multiplier: quantize_multiplier_smaller_than_one(real1)?,
            input2_multiplier: quantize_multiplier_smaller_than_one(real2)?,
            output_multiplier: quantize_multiplier_smaller_than_one(real_output)?,
            activation_min,
            activation_max,
        })
    }

    /// One output element. Zero points lie in int8 (int16 ones are 0), so every
    /// intermediate fits an `i32` (the shifted inputs stay below 255 × 2^20, or 2^15 × 2^15);
    /// wrapping ops only rule out panics.
    fn apply<C: Code>(&self, x: C, y: C) -> C {
        let rescale =
            |value: i32, m: Multiplier| scale_down(value.wrapping_mul(1 << self.left_shift), m.multiplier, m.shift);
        let scaled1 = rescale(self.input1_offset.wrapping_add(x.value()), self.input1_multiplier);
        let scaled2 = rescale(self.input2_offset.wrapping_add(y.value()), self.input2_multiplier);
        let raw = if self.subtract { scaled1.wrapping_sub(scaled2) } else { scaled1.wrapping_add(scaled2) };
        let m = self.output_multiplier;
        let output = scale_down(raw, m.multiplier, m.shift).wrapping_add(self.output_offset);
        C::clamped(output.clamp(self.activation_min, self.activation_max))
    }
}

/// ADD or SUB of int8 or int16 codes with TFLM's broadcasting; slice lengths must match
/// their shapes.
pub fn add_sub<C: Code>(
    p: &AddSubParams,
    in1: &[C],
    shape1: &Shape,
    in2: &[C],
    shape2: &Shape,
    out: &mut [C],
    out_shape: &Shape,
) -> Result<(), OpError> {
    binary_op(in1, shape1, in2, shape2, out, out_shape, |x, y| p.apply(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    fn run(p: &AddSubParams, a: &[i8], sa: &[usize], b: &[i8], sb: &[usize], so: &[usize]) -> Result<Vec<i8>, OpError> {
        run_binary(&|a, sa, b, sb, out, so| add_sub(p, a, sa, b, sb, out, so), a, sa, b, sb, so)
    }

    // add_test.cc, QuantizedAddNoActivationInt8 and QuantizedAddActivationRelu1Int8:
    // scales 0.25 / 0.5 / 1.0, zero points -10 / 4 / 13.
    #[test]
    fn tflm_add_goldens() -> TestResult {
        let (a, b) = ([-18, -14, -10, -6], [6, 8, 10, 12]);
        let shape = [1, 2, 2, 1];
        let p = AddSubParams::prepare(q(0.25, -10), q(0.5, 4), q(1.0, 13), Activation::None, false, false)?;
        assert_eq!(run(&p, &a, &shape, &b, &shape, &shape)?, [12, 14, 16, 18]);
        let p = AddSubParams::prepare(q(0.25, -10), q(0.5, 4), q(1.0, 13), Activation::ReluN1To1, false, false)?;
        assert_eq!(run(&p, &a, &shape, &b, &shape, &shape)?, [12, 14, 14, 14]);
        Ok(())
    }

    // sub_test.cc, QuantizedSubNoActivationInt8 and QuantizedSubActivationRelu1Int8.
    #[test]
    fn tflm_sub_goldens() -> TestResult {
        let (a, b) = ([-18, -14, -10, -6], [2, 0, -2, -4]);
        let shape = [1, 2, 2, 1];
        let p = AddSubParams::prepare(q(0.25, -10), q(0.5, 4), q(1.0, 13), Activation::None, true, false)?;
        assert_eq!(run(&p, &a, &shape, &b, &shape, &shape)?, [12, 14, 16, 18]);
        let p = AddSubParams::prepare(q(0.25, -10), q(0.5, 4), q(1.0, 13), Activation::ReluN1To1, true, false)?;
        assert_eq!(run(&p, &a, &shape, &b, &shape, &shape)?, [12, 14, 14, 14]);
        Ok(())
    }

    #[test]
    fn hand_checked_add_and_sub() -> TestResult {
        // Same scale everywhere: plain integer arithmetic around the zero points.
        let p = AddSubParams::prepare(q(0.5, 0), q(0.5, 0), q(0.5, 0), Activation::None, false, false)?;
        assert_eq!(run(&p, &[1, -3, 100, -100], &[4], &[2, 2, 100, -100], &[4], &[4])?, [3, -1, 127, -128]);
        let p = AddSubParams::prepare(q(0.5, 0), q(0.5, 0), q(0.5, 0), Activation::None, true, false)?;
        assert_eq!(run(&p, &[1, -3, 100, -100], &[4], &[2, 2, -100, 100], &[4], &[4])?, [-1, -5, 127, -128]);
        // Broadcast a scalar; output scale 1.0: 0.5 * (a + b) rounds half away from zero.
        let p = AddSubParams::prepare(q(0.5, 0), q(0.5, 0), q(1.0, 0), Activation::Relu, false, false)?;
        assert_eq!(run(&p, &[1, 2, -3, -8], &[2, 2], &[0], &[], &[2, 2])?, [1, 1, 0, 0]);
        Ok(())
    }

    #[test]
    fn int16_add_and_sub_saturate_at_the_int16_range() -> TestResult {
        let wide = |v: &[i16]| v.iter().map(|&x| I16(x.to_le_bytes())).collect::<Vec<_>>();
        let values = |v: &[I16]| v.iter().map(|x| x.value()).collect::<Vec<_>>();
        let s = Shape::new(&[4]).unwrap_or_default();
        let mut out = wide(&[0; 4]);
        let p = AddSubParams::prepare(q(1.0, 0), q(1.0, 0), q(1.0, 0), Activation::None, false, true)?;
        add_sub(&p, &wide(&[30000, -3, 1000, -30000]), &s, &wide(&[10000, 2, 1000, -10000]), &s, &mut out, &s)?;
        assert_eq!(values(&out), [32767, -1, 2000, -32768]);
        let p = AddSubParams::prepare(q(1.0, 0), q(1.0, 0), q(1.0, 0), Activation::Relu, true, true)?;
        add_sub(&p, &wide(&[30000, -3, 1000, -30000]), &s, &wide(&[10000, 2, 999, -10000]), &s, &mut out, &s)?;
        assert_eq!(values(&out), [20000, 0, 1, 0]);
        assert!(AddSubParams::prepare(q(1.0, 1), q(1.0, 0), q(1.0, 0), Activation::None, false, true).is_err());
        Ok(())
    }

    #[test]
    fn sub_derives_multipliers_in_float() -> TestResult {
        // 0.1 / 0.6 differs between float and double division.
        let add = AddSubParams::prepare(q(0.1, 0), q(0.3, 0), q(0.2, 0), Activation::None, false, false)?;
        let sub = AddSubParams::prepare(q(0.1, 0), q(0.3, 0), q(0.2, 0), Activation::None, true, false)?;
        assert_eq!(add.input1_multiplier, Multiplier::new(f64::from(0.1f32) / (2.0 * f64::from(0.3f32))));
        assert_eq!(sub.input1_multiplier, Multiplier::new(f64::from(0.1f32 / (2.0 * 0.3f32))));
        assert_ne!(add.input1_multiplier, sub.input1_multiplier);
        Ok(())
    }

    #[test]
    fn errors() -> TestResult {
        assert!(AddSubParams::prepare(q(0.0, 0), q(1.0, 0), q(1.0, 0), Activation::None, false, false).is_err());
        assert!(AddSubParams::prepare(q(1.0, 200), q(1.0, 0), q(1.0, 0), Activation::None, false, false).is_err());
        // Output multiplier 2 × max scale / (2^20 × output scale) must stay below 1.
        assert!(AddSubParams::prepare(q(1.0, 0), q(1.0, 0), q(1e-7, 0), Activation::None, false, false).is_err());
        let p = AddSubParams::prepare(q(1.0, 0), q(1.0, 0), q(1.0, 0), Activation::None, false, false)?;
        let s = Shape::new(&[2]).unwrap_or_default();
        let mut out = [0i8; 2];
        assert!(add_sub(&p, &[1, 2, 3], &s, &[1, 2], &s, &mut out, &s).is_err());
        assert!(add_sub(&p, &[1, 2], &s, &[1, 2], &s, &mut out[..1], &s).is_err());
        Ok(())
    }
}
