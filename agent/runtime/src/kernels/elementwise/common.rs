//! Prepare-time checks shared by the element-wise kernels.
//!
//! TFLM aborts (`TFLITE_CHECK`) or relies on undefined behaviour when a model carries
//! nonsensical quantization (zero or negative scales, zero points outside int8, multipliers
//! so large that a shift exceeds 31 bits). Such models have no defined TFLM result, so they
//! are refused here once, and the eval loops can then assume ranges in which every
//! intermediate provably fits its integer type.

use crate::arith::{Multiplier, round_f32};
use crate::kernels::OpError;
use crate::tensor::{Activation, Quant};

/// A usable scale: finite and positive.
pub(crate) fn check_scale(q: Quant) -> Result<(), OpError> {
    if q.scale.is_finite() && q.scale > 0.0 {
        Ok(())
    } else {
        Err(OpError::Quantization("scale must be finite and positive"))
    }
}

/// A zero point an int8 tensor can hold.
pub(crate) fn check_zero_point(q: Quant) -> Result<(), OpError> {
    if (i32::from(i8::MIN)..=i32::from(i8::MAX)).contains(&q.zero_point) {
        Ok(())
    } else {
        Err(OpError::Quantization("int8 zero point out of range"))
    }
}

/// Both checks above.
pub(crate) fn check_quant(q: Quant) -> Result<(), OpError> {
    check_scale(q)?;
    check_zero_point(q)
}

/// The checks above for an int8 tensor; for an int16 one, a usable scale and zero point
/// 0, which TFLM's 16x8 kernels assume (they add no offsets).
pub(crate) fn check_quant_of(q: Quant, int16: bool) -> Result<(), OpError> {
    if !int16 {
        return check_quant(q);
    }
    check_scale(q)?;
    if q.zero_point == 0 { Ok(()) } else { Err(OpError::Quantization("int16 zero point must be 0")) }
}

/// `tflite::QuantizeMultiplier`, refusing what TFLM could only evaluate with undefined
/// behaviour (a non-finite real, or a left shift of more than 31 bits).
pub(crate) fn quantize_multiplier(real: f64) -> Result<Multiplier, OpError> {
    if !real.is_finite() {
        return Err(OpError::Quantization("multiplier is not finite"));
    }
    let m = Multiplier::new(real);
    if m.shift > 31 {
        return Err(OpError::Quantization("multiplier too large"));
    }
    Ok(m)
}

/// `tflite::QuantizeMultiplierSmallerThanOneExp`: TFLM aborts unless `0 < real < 1` and the
/// quantized exponent is not positive.
pub(crate) fn quantize_multiplier_smaller_than_one(real: f64) -> Result<Multiplier, OpError> {
    if !(real > 0.0 && real < 1.0) {
        return Err(OpError::Quantization("multiplier must lie in (0, 1)"));
    }
    let m = Multiplier::new(real);
    if m.shift > 0 {
        return Err(OpError::Quantization("multiplier rounds up to 1"));
    }
    Ok(m)
}

/// `CalculateActivationRangeQuantized` for int8, failing where TFLM's `Quantize` fails (a
/// bound beyond ±2^31 in float) and also at exactly ±2^31, whose conversion to int32 is
/// undefined in C++. Below that no float is within 127 of the limit, so adding the zero
/// point cannot overflow. Guarantees `min <= max`.
pub(crate) fn activation_range(activation: Activation, output: Quant) -> Result<(i32, i32), OpError> {
    activation_range_of(activation, output, (i32::from(i8::MIN), i32::from(i8::MAX)))
}

/// [`activation_range`] for an output whose codes span `codes`.
pub(crate) fn activation_range_of(
    activation: Activation,
    output: Quant,
    codes: (i32, i32),
) -> Result<(i32, i32), OpError> {
    let bounds: &[f32] = match activation {
        Activation::None => &[],
        Activation::Relu => &[0.0],
        Activation::Relu6 => &[0.0, 6.0],
        Activation::ReluN1To1 => &[-1.0, 1.0],
    };
    for &f in bounds {
        if round_f32(f / output.scale).abs() >= 2_147_483_648.0 {
            return Err(OpError::Quantization("activation bound overflows int32"));
        }
    }
    let (min, max) = activation.range(output, codes);
    if min > max {
        return Err(OpError::Quantization("empty activation range"));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    #[test]
    fn quant_checks() -> TestResult {
        assert!(check_quant(q(0.5, -128)).is_ok());
        assert!(check_quant(q(0.0, 0)).is_err());
        assert!(check_quant(q(-1.0, 0)).is_err());
        assert!(check_quant(q(f32::NAN, 0)).is_err());
        assert!(check_quant(q(1.0, 128)).is_err());
        Ok(())
    }

    #[test]
    fn smaller_than_one() -> TestResult {
        assert_eq!(quantize_multiplier_smaller_than_one(0.5)?, Multiplier { multiplier: 1 << 30, shift: 0 });
        assert!(quantize_multiplier_smaller_than_one(1.0).is_err());
        assert!(quantize_multiplier_smaller_than_one(0.0).is_err());
        // Just below one rounds up to 2^31 and renormalises to a positive shift: TFLM aborts.
        assert!(quantize_multiplier_smaller_than_one(f64::from_bits(1.0f64.to_bits() - 1)).is_err());
        assert!(quantize_multiplier(1e12).is_err());
        assert!(quantize_multiplier(f64::INFINITY).is_err());
        Ok(())
    }

    #[test]
    fn activation_ranges() -> TestResult {
        assert_eq!(activation_range(Activation::Relu6, q(0.05, -10))?, (-10, 110));
        assert!(activation_range(Activation::Relu6, q(1e-12, 0)).is_err());
        // 6 / 3e-9 = 2e9 still fits an int32, as in TFLM.
        assert_eq!(activation_range(Activation::Relu6, q(3e-9, 0))?, (0, 127));
        assert_eq!(activation_range(Activation::None, q(1e-12, 0))?, (-128, 127));
        Ok(())
    }
}
