//! gemmlowp's fixed-point arithmetic on raw integers, as TFLite's int8 kernels use it
//! (softmax's `exp` and reciprocal, logistic, tanh, and the int16 helpers of hard swish).
//!
//! A value with `k` integer bits is a raw `i32` with `31 − k` fractional bits; gemmlowp
//! carries `k` in the type (`FixedPoint<RawType, IntegerBits>`), here it is an argument.
//! TFLM evaluates these in integer arithmetic, so results depend on every rounding step:
//! each function follows gemmlowp's sequence of operations exactly. Additions wrap, as
//! the C++ does on every compiler TFLM targets.

use crate::arith::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul as srdhm};

/// `SaturatingRoundingMultiplyByPOT`: `x × 2^exponent`, saturating up, rounding down.
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    match exponent {
        0 => x,
        e if e > 0 => saturating_shl(x, e.min(31) as u32),
        e => rounding_divide_by_pot(x, (-e).min(31)),
    }
}

/// `Rescale<dst>` of a value with `src` integer bits.
pub fn rescale(x: i32, src: i32, dst: i32) -> i32 {
    saturating_rounding_multiply_by_pot(x, src - dst)
}

/// `SaturatingRoundingMultiplyByPOT<exponent>` for `exponent > 0`: a left shift that
/// saturates (note gemmlowp's symmetric threshold).
fn saturating_shl(x: i32, exponent: u32) -> i32 {
    let threshold = (1i32 << (31 - exponent)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << exponent
    }
}

/// `gemmlowp::RoundingHalfSum` for int32.
fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// `exp_on_interval_between_negative_one_quarter_and_0_excl` (Q0 in, Q0 out).
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const CONSTANT_TERM: i32 = 1_895_147_668; // exp(-1/8)
    const ONE_THIRD: i32 = 715_827_883;
    let x = a.wrapping_add(1 << 28); // a + 1/8
    let x2 = srdhm(x, x);
    let x3 = srdhm(x2, x);
    let x4 = srdhm(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(srdhm(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2), 1);
    CONSTANT_TERM.wrapping_add(srdhm(CONSTANT_TERM, x.wrapping_add(poly)))
}

/// `exp_on_negative_values` for an input with `integer_bits` integer bits (1 to 30);
/// returns Q0.
pub(crate) fn exp_on_negative_values(a: i32, integer_bits: u32) -> i32 {
    // (exponent of the power of two, Q0 of exp(-2^exponent))
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    let fractional_bits = 31 - integer_bits;
    let one_quarter = 1i32 << (fractional_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(saturating_shl(
        a_mod_quarter_minus_one_quarter,
        integer_bits,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    for (exponent, multiplier) in BARREL {
        if integer_bits as i32 > exponent {
            let bit = fractional_bits as i32 + exponent;
            if remainder & (1 << bit) != 0 {
                result = srdhm(result, multiplier);
            }
        }
    }
    if integer_bits > 5 {
        let clamp = -(1i32 << (36 - integer_bits)); // -32
        if a < clamp {
            result = 0;
        }
    }
    if a == 0 { i32::MAX } else { result }
}

/// The Newton-Raphson reciprocal shared by `one_over_one_plus_x_for_x_in_0_1` and
/// `one_minus_x_over_one_plus_x_for_x_in_0_1`: returns `1 / half_denominator` in Q2.
fn reciprocal_q2(half_denominator: i32) -> i32 {
    const C48_OVER_17: i32 = 1_515_870_810;
    const NEG_C32_OVER_17: i32 = -1_010_580_540;
    const ONE_Q2: i32 = 1 << 29;
    let mut x = C48_OVER_17.wrapping_add(srdhm(half_denominator, NEG_C32_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = srdhm(half_denominator, x);
        let one_minus_half_denominator_times_x = ONE_Q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(saturating_shl(srdhm(x, one_minus_half_denominator_times_x), 2));
    }
    x
}

/// `one_over_one_plus_x_for_x_in_0_1` (Q0 in, Q0 out).
pub(crate) fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    let x = reciprocal_q2(rounding_half_sum(a, i32::MAX));
    saturating_shl(x, 1) // x / 2, from Q1 to Q0
}

/// `one_minus_x_over_one_plus_x_for_x_in_0_1` (Q0 in, Q0 out).
fn one_minus_x_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    let x = reciprocal_q2(rounding_half_sum(a, i32::MAX));
    saturating_shl(x.wrapping_sub(1 << 29), 2)
}

/// `gemmlowp::logistic` for an input with `integer_bits` integer bits; returns Q0.
pub(crate) fn logistic(a: i32, integer_bits: u32) -> i32 {
    if a == 0 {
        return 1 << 30; // one half
    }
    let abs = if a > 0 { a } else { a.wrapping_neg() };
    let result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(abs.wrapping_neg(), integer_bits));
    if a > 0 { result_if_positive } else { i32::MAX.wrapping_sub(result_if_positive) }
}

/// `gemmlowp::tanh` for an input with `integer_bits` integer bits (at most 29); returns Q0.
pub(crate) fn tanh(a: i32, integer_bits: u32) -> i32 {
    if a == 0 {
        return 0;
    }
    let n = if a < 0 { a } else { a.wrapping_neg() };
    // ExactMulByPot<1>: the same raw value read with one more integer bit, i.e. 2n.
    let t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1));
    if a < 0 { t.wrapping_neg() } else { t }
}

/// `gemmlowp::SaturatingRoundingDoublingHighMul` for int16.
pub(crate) fn srdhm_i16(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    let ab = i32::from(a) * i32::from(b);
    let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// `SaturatingDoublingHighMul` of TFLite's hard swish: as above, truncating toward zero.
pub(crate) fn saturating_doubling_high_mul_i16(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    ((i32::from(a) * i32::from(b)) / (1 << 15)) as i16
}

/// `SaturatingLeftShift` of TFLite's hard swish (`amount` at most 30).
pub(crate) fn saturating_left_shift_i16(value: i16, amount: u32) -> i16 {
    let shifted = i64::from(value) * (1i64 << amount.min(30));
    shifted.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// `gemmlowp::RoundingDivideByPOT` instantiated for int16 (`exponent` in 0..=31), with the
/// template's int16 truncations: the mask is `(2^exponent - 1)` cut to 16 bits.
pub(crate) fn rounding_divide_by_pot_i16(x: i16, exponent: u32) -> i16 {
    let exponent = exponent.min(31);
    let mask = ((1i64 << exponent) - 1) as i16;
    let remainder = x & mask;
    let threshold = (mask >> 1).wrapping_add(i16::from(x < 0));
    let shifted = (i32::from(x) >> exponent) as i16;
    shifted.wrapping_add(i16::from(remainder > threshold))
}

/// `tflite::GetReciprocal`: `1 / x` for `x` with `integer_bits` integer bits, as a value
/// with 0 integer bits and the number of bits it was scaled by.
pub fn get_reciprocal(x: i32, integer_bits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros() as i32;
    let num_bits_over_unit = integer_bits - headroom_plus_one;
    let shifted = (x as u32).checked_shl(headroom_plus_one as u32).unwrap_or(0);
    let shifted_sum_minus_one = shifted.wrapping_sub(1 << 31) as i32;
    (one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f64(raw: i32, integer_bits: i32) -> f64 {
        f64::from(raw) / (1u64 << (31 - integer_bits)) as f64
    }

    #[test]
    fn exp_is_close_to_exp() {
        for i in 0..200 {
            let x = -f64::from(i) * 0.1;
            let raw = (x * (1u64 << 26) as f64) as i32; // 5 integer bits
            let got = to_f64(exp_on_negative_values(raw, 5), 0);
            assert!((got - x.exp()).abs() < 1e-6, "exp({x}) = {got}");
        }
        assert_eq!(exp_on_negative_values(0, 5), i32::MAX);
    }

    #[test]
    fn reciprocal_is_close() {
        for v in [1.0f64, 1.5, 2.0, 3.7, 100.0, 4000.0] {
            let raw = (v * (1u64 << 19) as f64) as i32; // 12 integer bits
            let (r, bits) = get_reciprocal(raw, 12);
            let got = to_f64(r, 0) / (1u64 << bits.max(0)) as f64;
            assert!((got - 1.0 / v).abs() < 1e-6 / v.min(1.0), "1/{v} = {got}");
        }
    }

    #[test]
    fn pot_and_half_sum() {
        assert_eq!(saturating_rounding_multiply_by_pot(i32::MAX, 1), i32::MAX);
        assert_eq!(saturating_rounding_multiply_by_pot(-5, -1), -3);
    }

    // From the kernels' own checks of logistic, tanh and the int16 helpers.

    fn to_f(raw: i32, integer_bits: u32) -> f64 {
        f64::from(raw) / f64::from(1u32 << (31 - integer_bits))
    }

    #[test]
    fn exp_is_close_to_real_exp() {
        for i in 1..200 {
            let x = -f64::from(i) * 0.07;
            let raw = (x * f64::from(1u32 << 27)) as i32;
            let got = to_f(exp_on_negative_values(raw, 4), 0);
            assert!((got - x.exp()).abs() < 1e-6, "exp({x}) = {got}");
        }
        assert_eq!(exp_on_negative_values(0, 4), i32::MAX);
    }

    #[test]
    fn logistic_and_tanh_are_close_to_real() {
        for i in -150..150 {
            let x = f64::from(i) * 0.1;
            let raw = (x * f64::from(1u32 << 27)) as i32;
            let l = to_f(logistic(raw, 4), 0);
            assert!((l - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6, "logistic({x}) = {l}");
            let t = to_f(tanh(raw, 4), 0);
            assert!((t - x.tanh()).abs() < 1e-6, "tanh({x}) = {t}");
        }
        assert_eq!(logistic(0, 4), 1 << 30);
        assert_eq!(tanh(0, 4), 0);
    }

    #[test]
    fn gemmlowp_details() {
        assert_eq!(saturating_shl(1 << 28, 2), 1 << 30);
        assert_eq!(saturating_shl((1 << 29) + 1, 2), i32::MAX);
        assert_eq!(saturating_shl(-(1 << 29), 2), i32::MIN);
        assert_eq!(saturating_shl(-3, 2), -12);
        assert_eq!(rounding_half_sum(3, 4), 4);
        assert_eq!(rounding_half_sum(-3, -4), -4);
        assert_eq!(rounding_half_sum(i32::MAX, i32::MAX), i32::MAX);
    }

    #[test]
    fn int16_helpers() {
        assert_eq!(srdhm_i16(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(srdhm_i16(16384, 16384), 8192);
        // Negative halves round toward zero, as in the int32 version.
        assert_eq!(srdhm_i16(-3, 16384), -1);
        assert_eq!(srdhm_i16(3, 16384), 2);
        assert_eq!(saturating_doubling_high_mul_i16(-5, 16384), -2);
        assert_eq!(saturating_doubling_high_mul_i16(5, 16384), 2);
        assert_eq!(saturating_doubling_high_mul_i16(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(saturating_left_shift_i16(300, 7), i16::MAX);
        assert_eq!(saturating_left_shift_i16(-300, 7), i16::MIN);
        assert_eq!(saturating_left_shift_i16(-3, 2), -12);
        assert_eq!(rounding_divide_by_pot_i16(5, 1), 3);
        assert_eq!(rounding_divide_by_pot_i16(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot_i16(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot_i16(7, 0), 7);
        // The int16 mask wraps for exponents of 16 and more, as in the C++ template.
        assert_eq!(rounding_divide_by_pot_i16(0, 16), 1);
        assert_eq!(rounding_divide_by_pot_i16(-5, 20), -1);
    }
}
