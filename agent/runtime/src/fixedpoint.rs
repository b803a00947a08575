//! gemmlowp's fixed-point transcendental functions on raw `i32`, as TFLite's int8 kernels
//! use them (softmax's `exp` and reciprocal, logistic, tanh).
//!
//! A value with `k` integer bits is a raw `i32` with `31 − k` fractional bits. gemmlowp
//! carries `k` in the type; here it is an argument. Additions wrap, as the C++ does on
//! every compiler TFLM targets; products are saturating rounding doubling high products.

use crate::arith::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul as mul};

/// `SaturatingRoundingMultiplyByPOT`: `x × 2^exponent`, saturating up, rounding down.
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    match exponent {
        0 => x,
        e if e > 0 => {
            let wide = i64::from(x) << e.min(31);
            wide.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        }
        e => rounding_divide_by_pot(x, (-e).min(31)),
    }
}

/// `Rescale<dst>` of a value with `src` integer bits.
pub fn rescale(x: i32, src: i32, dst: i32) -> i32 {
    saturating_rounding_multiply_by_pot(x, src - dst)
}

/// `RoundingHalfSum`: `(a + b) / 2` rounded half away from zero.
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// One in a format with 0 integer bits (the largest value below 1).
pub const ONE_Q0: i32 = i32::MAX;

/// `exp(x)` for `x` in `[-1/4, 0)`, 0 integer bits in and out.
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const CONSTANT_TERM: i32 = 1_895_147_668; // exp(-1/8)
    const ONE_THIRD: i32 = 715_827_883;
    let x = a.wrapping_add(1 << 28); // + 1/8
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2);
    let poly = saturating_rounding_multiply_by_pot(mul(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2), -1);
    CONSTANT_TERM.wrapping_add(mul(CONSTANT_TERM, x.wrapping_add(poly)))
}

/// `exp_on_negative_values` of `a` (≤ 0) with `integer_bits` integer bits; result has 0.
pub fn exp_on_negative_values(a: i32, integer_bits: i32) -> i32 {
    let fractional_bits = 31 - integer_bits;
    let one_quarter = 1i32 << (fractional_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(
        a_mod_quarter_minus_one_quarter,
        integer_bits,
        0,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947), // exp(-1/4)
        (-1, 1_302_514_674), // exp(-1/2)
        (0, 790_015_084),    // exp(-1)
        (1, 290_630_308),    // exp(-2)
        (2, 39_332_535),     // exp(-4)
        (3, 720_401),        // exp(-8)
        (4, 242),            // exp(-16)
    ];
    for (exponent, multiplier) in BARREL {
        if integer_bits > exponent {
            let shift = fractional_bits + exponent;
            if remainder & (1 << shift) != 0 {
                result = mul(result, multiplier);
            }
        }
    }
    if integer_bits > 5 {
        let clamp = -(1i32 << (36 - integer_bits)); // -32
        if a < clamp {
            result = 0;
        }
    }
    if a == 0 { ONE_Q0 } else { result }
}

/// `one_over_one_plus_x_for_x_in_0_1`, 0 integer bits in and out.
pub fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    const C48_OVER_17: i32 = 1_515_870_810; // 2 integer bits
    const CNEG32_OVER_17: i32 = -1_010_580_540; // 2 integer bits
    const ONE_Q2: i32 = 1 << 29;
    let half_denominator = rounding_half_sum(a, ONE_Q0);
    let mut x = C48_OVER_17.wrapping_add(mul(half_denominator, CNEG32_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x);
        let one_minus = ONE_Q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(rescale(mul(x, one_minus), 4, 2));
    }
    // ExactMulByPot<-1> relabels 2 integer bits as 1; then rescale to 0.
    rescale(x, 1, 0)
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
        assert_eq!(exp_on_negative_values(0, 5), ONE_Q0);
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
        assert_eq!(rounding_half_sum(3, 4), 4);
        assert_eq!(rounding_half_sum(-3, -4), -4);
    }
}
