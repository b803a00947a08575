//! int8 PRELU, as TFLM's `prelu.cc` with `reference_ops::BroadcastPrelu4DSlow`.
//!
//! Non-negative inputs are rescaled by `input / output`, negative ones are multiplied by
//! their (broadcast) alpha and rescaled by `input × alpha / output`; both multipliers are
//! derived in double precision.

use super::broadcast::binary_op;
use super::common::{check_quant, quantize_multiplier};
use crate::arith::Multiplier;
use crate::kernels::OpError;
use crate::tensor::{Quant, Shape};

/// Fixed-point parameters of an int8 PRELU (TFLite's `PreluParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreluParams {
    input_offset: i32,
    alpha_offset: i32,
    output_offset: i32,
    identity: Multiplier,
    alpha: Multiplier,
}

impl PreluParams {
    /// TFLM's `CalculatePreluParams` for int8.
    pub fn prepare(input: Quant, alpha: Quant, output: Quant) -> Result<Self, OpError> {
        for q in [input, alpha, output] {
            check_quant(q)?;
        }
        let (si, sa, so) = (f64::from(input.scale), f64::from(alpha.scale), f64::from(output.scale));
        Ok(Self {
            input_offset: -input.zero_point,
            alpha_offset: -alpha.zero_point,
            output_offset: output.zero_point,
            identity: quantize_multiplier(si / so)?,
            alpha: quantize_multiplier(si * sa / so)?,
        })
    }

    /// One output element. Zero points lie in int8, so the product of the offset values
    /// stays below 2^16.
    fn apply(&self, x: i8, a: i8) -> i8 {
        let value = self.input_offset + i32::from(x);
        let scaled = if value >= 0 {
            self.identity.apply(value)
        } else {
            self.alpha.apply(value * (self.alpha_offset + i32::from(a)))
        };
        scaled.wrapping_add(self.output_offset).clamp(-128, 127) as i8
    }
}

/// int8 PRELU of `input` with `alpha` broadcast against it.
pub fn prelu(
    p: &PreluParams,
    input: &[i8],
    input_shape: &Shape,
    alpha: &[i8],
    alpha_shape: &Shape,
    out: &mut [i8],
    out_shape: &Shape,
) -> Result<(), OpError> {
    binary_op(input, input_shape, alpha, alpha_shape, out, out_shape, |x, a| p.apply(x, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    #[test]
    fn per_channel_alpha() -> TestResult {
        // Same input and output scale; alpha scale 1/64: codes 32 and -64 are 0.5 and -1.
        let p = PreluParams::prepare(q(0.1, 0), q(1.0 / 64.0, 0), q(0.1, 0))?;
        let run = |x: &[i8], xs: &[usize], a: &[i8], s: &[usize]| {
            run_binary(&|x, sx, a, sa, o, so| prelu(&p, x, sx, a, sa, o, so), x, xs, a, s, xs)
        };
        assert_eq!(run(&[10, -10, -10, 10], &[2, 2], &[32, -64], &[2])?, [10, 10, -5, 10]);
        // -3 × 0.5 = -1.5 rounds away from zero.
        assert_eq!(run(&[-3, -128, 127], &[3], &[32], &[1])?, [-2, -64, 127]);
        Ok(())
    }

    #[test]
    fn requantizes_and_saturates() -> TestResult {
        // Input zp 5, output scale twice the input's, alpha 0.25 with zp -10 (code 6).
        let p = PreluParams::prepare(q(0.2, 5), q(0.25 / 16.0, -10), q(0.4, -100))?;
        let mut out = [0; 4];
        prelu(&p, &[5, 25, -15, 127], &shape(&[4]), &[6], &shape(&[1]), &mut out, &shape(&[4]))?;
        // 0 → -100; 20 steps of 0.2 = 4.0 → 10 steps of 0.4; -20 × 0.25 = -5 → -1.25 → -2.5.
        assert_eq!(out, [-100, -90, -103, -39]);
        assert!(PreluParams::prepare(q(0.2, 5), q(0.0, 0), q(0.4, 0)).is_err());
        assert!(PreluParams::prepare(q(1e30, 5), q(1.0, 0), q(1e-30, 0)).is_err());
        Ok(())
    }
}
