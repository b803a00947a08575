//! int8 MUL, as TFLM's `mul.cc` with `reference_integer_ops::MulElementwise` and
//! `BroadcastMul6DSlow`: the product of the offset inputs, rescaled once by
//! `input1_scale × input2_scale / output_scale` (computed in double precision).

use super::broadcast::binary_op;
use super::common::{activation_range, check_quant, quantize_multiplier};
use crate::arith::Multiplier;
use crate::kernels::{OpError, clamp_i8};
use crate::tensor::{Activation, Quant, Shape};

/// Fixed-point parameters of an int8 MUL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MulParams {
    input1_offset: i32,
    input2_offset: i32,
    output_offset: i32,
    output_multiplier: Multiplier,
    activation_min: i32,
    activation_max: i32,
}

impl MulParams {
    /// TFLM's `CalculateOpDataMul` for int8.
    pub fn prepare(input1: Quant, input2: Quant, output: Quant, activation: Activation) -> Result<Self, OpError> {
        for q in [input1, input2, output] {
            check_quant(q)?;
        }
        let real = f64::from(input1.scale) * f64::from(input2.scale) / f64::from(output.scale);
        let (activation_min, activation_max) = activation_range(activation, output)?;
        Ok(Self {
            input1_offset: -input1.zero_point,
            input2_offset: -input2.zero_point,
            output_offset: output.zero_point,
            output_multiplier: quantize_multiplier(real)?,
            activation_min,
            activation_max,
        })
    }

    /// One output element; the product of two offset int8 values fits easily in `i32`.
    fn apply(&self, x: i8, y: i8) -> i8 {
        let a = self.input1_offset.wrapping_add(i32::from(x));
        let b = self.input2_offset.wrapping_add(i32::from(y));
        let output = self.output_multiplier.apply(a.wrapping_mul(b)).wrapping_add(self.output_offset);
        clamp_i8(output, self.activation_min, self.activation_max)
    }
}

/// int8 MUL with TFLM's broadcasting; slice lengths must match their shapes.
pub fn mul(
    p: &MulParams,
    in1: &[i8],
    shape1: &Shape,
    in2: &[i8],
    shape2: &Shape,
    out: &mut [i8],
    out_shape: &Shape,
) -> Result<(), OpError> {
    binary_op(in1, shape1, in2, shape2, out, out_shape, |x, y| p.apply(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    fn run(p: &MulParams, a: &[i8], sa: &[usize], b: &[i8], sb: &[usize], so: &[usize]) -> Result<Vec<i8>, OpError> {
        run_binary(&|a, sa, b, sb, out, so| mul(p, a, sa, b, sb, out, so), a, sa, b, sb, so)
    }

    // mul_test.cc, SimpleInt8NoActivation (all scales 0.01) and BroadcastInt8NoActivation
    // (inputs 0.05, output 0.01), inputs quantized as the test does.
    #[test]
    fn tflm_mul_goldens() -> TestResult {
        let s = q(0.01, 0);
        let p = MulParams::prepare(s, s, s, Activation::None)?;
        let shape = [1, 2, 2, 1];
        assert_eq!(run(&p, &[-80, 20, 90, 70], &shape, &[60, 40, 90, 80], &shape, &shape)?, [-48, 8, 81, 56]);
        let p = MulParams::prepare(q(0.05, 0), q(0.05, 0), s, Activation::None)?;
        let shape = [1, 3, 1, 2];
        assert_eq!(run(&p, &[-40, 4, 14, 16, 22, 40], &shape, &[2], &[1], &shape)?, [-20, 2, 7, 8, 11, 20]);
        Ok(())
    }

    #[test]
    fn hand_checked() -> TestResult {
        // 0.5 × 0.5 / 0.25 = 1: the product of the offset values, plus the output zero point.
        let p = MulParams::prepare(q(0.5, 1), q(0.5, -1), q(0.25, 3), Activation::None)?;
        assert_eq!(run(&p, &[3, -1, 13], &[3], &[1, 1, 11], &[3], &[3])?, [7, -1, 127]);
        // Rescale by 1/4, rounding half away from zero; broadcast the second input.
        let p = MulParams::prepare(q(0.5, 0), q(0.5, 0), q(1.0, 0), Activation::None)?;
        assert_eq!(run(&p, &[1, 2, -2, -6, 6, 7], &[2, 3], &[2], &[1], &[2, 3])?, [1, 1, -1, -3, 3, 4]);
        let p = MulParams::prepare(q(0.5, 0), q(0.5, 0), q(1.0, 0), Activation::Relu)?;
        assert_eq!(run(&p, &[-6, 6], &[2], &[2], &[], &[2])?, [0, 3]);
        Ok(())
    }

    #[test]
    fn errors() -> TestResult {
        assert!(MulParams::prepare(q(0.5, 0), q(f32::INFINITY, 0), q(1.0, 0), Activation::None).is_err());
        assert!(MulParams::prepare(q(0.5, 0), q(0.5, -129), q(1.0, 0), Activation::None).is_err());
        let p = MulParams::prepare(q(0.5, 0), q(0.5, 0), q(1.0, 0), Activation::None)?;
        let (s2, s3) = (Shape::new(&[2]).unwrap_or_default(), Shape::new(&[3]).unwrap_or_default());
        let mut out = [0; 3];
        assert!(mul(&p, &[1, 2], &s2, &[1, 2, 3], &s3, &mut out, &s3).is_err());
        Ok(())
    }
}
