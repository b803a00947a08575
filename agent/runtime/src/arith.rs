//! TFLite's fixed-point arithmetic, reproduced to the bit.
//!
//! TFLM's reference kernels (built without `TFLITE_SINGLE_ROUNDING`, as TFLM ships) rescale
//! with gemmlowp's two-step rounding: a saturating rounding doubling high multiply, then a
//! rounding right shift that rounds half away from zero. Multipliers come from float scales
//! through `frexp` and `std::round` in double precision. Every function here follows those
//! definitions exactly, in integer and IEEE-754 operations only (no libm), so results match
//! TFLM on every target, with or without an FPU.

/// `gemmlowp::SaturatingRoundingDoublingHighMul`.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == b && a == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, as in C++; the quotient fits in i32.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `gemmlowp::RoundingDivideByPOT`: `x / 2^exponent` rounded half away from zero.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!((0..=31).contains(&exponent));
    let exponent = exponent.clamp(0, 31);
    let mask = (1u32 << exponent).wrapping_sub(1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// `tflite::MultiplyByQuantizedMultiplier` (double rounding).
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.max(0);
    let right = (-shift).max(0);
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left.min(31)), multiplier), right)
}

/// `tflite::MultiplyByQuantizedMultiplierSmallerThanOneExp`.
pub fn multiply_by_quantized_multiplier_smaller_than_one_exp(x: i32, multiplier: i32, left_shift: i32) -> i32 {
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), -left_shift)
}

/// `tflite::MultiplyByQuantizedMultiplierGreaterThanOne`.
pub fn multiply_by_quantized_multiplier_greater_than_one(x: i32, multiplier: i32, left_shift: i32) -> i32 {
    saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left_shift.clamp(0, 31)), multiplier)
}

/// A multiplier in Q31 with its power-of-two exponent: `real ≈ multiplier × 2^(shift − 31)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Multiplier {
    /// Q31 mantissa.
    pub multiplier: i32,
    /// Exponent (positive: left shift).
    pub shift: i32,
}

impl Multiplier {
    /// `tflite::QuantizeMultiplier`.
    pub fn new(real: f64) -> Self {
        if real == 0.0 {
            return Self::default();
        }
        let (q, mut shift) = frexp(real);
        let mut q_fixed = round_f64(q * (1i64 << 31) as f64) as i64;
        if q_fixed == 1i64 << 31 {
            q_fixed /= 2;
            shift += 1;
        }
        if shift < -31 {
            shift = 0;
            q_fixed = 0;
        }
        // |q| < 1, so |q_fixed| ≤ 2^31 - 1 after the adjustment above.
        Self { multiplier: q_fixed as i32, shift }
    }

    /// Applies it to `x` as the kernels do: [`multiply_by_quantized_multiplier`], to the
    /// bit, in the fewest instructions (it runs once per output of every layer).
    ///
    /// gemmlowp's high multiply adds 2^30 to a non-negative product and `1 − 2^30` to a
    /// negative one, then divides truncating toward zero; that equals adding 2^30 and
    /// shifting right (flooring) in both cases, which is a multiply-long, an add and a
    /// shift.
    #[inline(always)]
    pub fn apply(self, x: i32) -> i32 {
        let a = x.wrapping_shl(self.shift.clamp(0, 31) as u32);
        let high = if a == i32::MIN && self.multiplier == i32::MIN {
            i32::MAX
        } else {
            ((i64::from(a) * i64::from(self.multiplier) + (1 << 30)) >> 31) as i32
        };
        rounding_divide_by_pot(high, (-self.shift).clamp(0, 31))
    }
}

impl Multiplier {
    /// Applies it to a 64-bit accumulator as TFLM's 16x8 kernels do
    /// (`MultiplyByQuantizedMultiplier(int64_t, ...)`): the multiplier is first rounded to
    /// 16 bits, then one rounding shift by `15 − shift`. The result is truncated to 32 bits,
    /// as the C cast does. Shifts of 8 and above, which TFLM does not define, are refused
    /// at prepare; here they saturate the shift so nothing panics.
    #[inline]
    pub fn apply_wide(self, x: i64) -> i32 {
        let reduced =
            if self.multiplier < 0x7FFF_0000 { (i64::from(self.multiplier) + (1 << 15)) >> 16 } else { 0x7FFF };
        let total = (15 - self.shift).clamp(1, 62) as u32;
        (x.wrapping_mul(reduced).wrapping_add(1 << (total - 1)) >> total) as i32
    }
}

/// `std::frexp` for finite doubles: `x = m × 2^e` with `0.5 ≤ |m| < 1`.
pub fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (m, e - 54);
    }
    let exponent = exp_bits - 1022;
    let mantissa = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (mantissa, exponent)
}

/// `std::round` for doubles: to nearest, halves away from zero.
pub fn round_f64(x: f64) -> f64 {
    if !x.is_finite() || x.abs() >= 4_503_599_627_370_496.0 {
        return x; // 2^52 and above are integers already
    }
    let t = x as i64 as f64; // truncation toward zero, exact in this range
    let frac = x - t; // exact (Sterbenz)
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// `std::round` for floats.
pub fn round_f32(x: f32) -> f32 {
    if !x.is_finite() || x.abs() >= 8_388_608.0 {
        return x; // 2^23 and above are integers already
    }
    let t = x as i32 as f32;
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn apply_is_the_reference(x in any::<i32>(), multiplier in any::<i32>(), shift in -31i32..40) {
            let m = Multiplier { multiplier, shift };
            prop_assert_eq!(m.apply(x), multiply_by_quantized_multiplier(x, multiplier, shift));
        }

        #[test]
        fn apply_is_the_reference_near_the_edges(
            x in prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(-1), Just(0), Just(1), any::<i32>()],
            multiplier in prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(1 << 30), Just(0), any::<i32>()],
            shift in -31i32..33,
        ) {
            let m = Multiplier { multiplier, shift };
            prop_assert_eq!(m.apply(x), multiply_by_quantized_multiplier(x, multiplier, shift));
        }
    }

    #[test]
    fn high_mul_matches_gemmlowp() {
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30), 1 << 29);
        // The nudge rounds positive halves up and negative halves toward zero.
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
    }

    #[test]
    fn divide_by_pot_rounds_half_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
    }

    #[test]
    fn quantize_multiplier_matches_known_values() {
        assert_eq!(Multiplier::new(0.5), Multiplier { multiplier: 1 << 30, shift: 0 });
        assert_eq!(Multiplier::new(1.0), Multiplier { multiplier: 1 << 30, shift: 1 });
        assert_eq!(Multiplier::new(0.0), Multiplier::default());
        // 0.75 = 0.75 × 2^0 → round(0.75 × 2^31)
        assert_eq!(Multiplier::new(0.75), Multiplier { multiplier: 1_610_612_736, shift: 0 });
        // Tiny multipliers flush to zero.
        assert_eq!(Multiplier::new(1e-12), Multiplier::default());
        // Rounding up to 2^31 renormalises.
        let almost_one = f64::from_bits(1.0f64.to_bits() - 1);
        assert_eq!(Multiplier::new(almost_one), Multiplier { multiplier: 1 << 30, shift: 1 });
        assert_eq!(Multiplier::new(0.003921568859368563).apply(1000), 4);
    }

    #[test]
    fn frexp_and_round() {
        assert_eq!(frexp(8.0), (0.5, 4));
        assert_eq!(frexp(-0.375), (-0.75, -1));
        assert_eq!(frexp(f64::MIN_POSITIVE / 4.0), (0.5, -1023));
        assert_eq!(round_f64(2.5), 3.0);
        assert_eq!(round_f64(-2.5), -3.0);
        assert_eq!(round_f64(0.49999999999999994), 0.0);
        assert_eq!(round_f32(-0.5), -1.0);
        assert_eq!(round_f32(1.4999999), 1.0);
    }
}
