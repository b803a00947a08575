//! int8 MAXIMUM and MINIMUM, as TFLM's `maximum_minimum.cc`.
//!
//! TFLM has no Prepare for either: it compares raw int8 codes with broadcasting and never
//! looks at quantization, so neither does this module (the converter gives both inputs
//! and the output one quantization).

use super::broadcast::{binary_op, extend};
use crate::kernels::OpError;
use crate::tensor::{MAX_RANK, Shape};

/// Checks that `a` and `b` broadcast to exactly `out` (numpy rules, right-aligned): in
/// every dimension the inputs agree or one of them is 1, and the output has the other.
pub(crate) fn check_broadcast(a: &Shape, b: &Shape, out: &Shape) -> Result<(), OpError> {
    let (a, b, o) = (extend(a), extend(b), extend(out));
    for k in 0..MAX_RANK {
        let expected = match (a[k], b[k]) {
            (1, d) | (d, 1) => d,
            (x, y) if x == y => x,
            _ => return Err(OpError::Shape("inputs do not broadcast")),
        };
        if o[k] != expected {
            return Err(OpError::Shape("output shape is not the inputs' broadcast shape"));
        }
    }
    Ok(())
}

/// int8 MAXIMUM with broadcasting.
pub fn maximum(a: &[i8], sa: &Shape, b: &[i8], sb: &Shape, out: &mut [i8], so: &Shape) -> Result<(), OpError> {
    binary_op(a, sa, b, sb, out, so, |x, y| x.max(y))
}

/// int8 MINIMUM with broadcasting.
pub fn minimum(a: &[i8], sa: &Shape, b: &[i8], sb: &Shape, out: &mut [i8], so: &Shape) -> Result<(), OpError> {
    binary_op(a, sa, b, sb, out, so, |x, y| x.min(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    #[test]
    fn elementwise_and_broadcast() -> TestResult {
        let (a, b) = ([-128, 0, 5, 127], [3, -1, 5, -128]);
        assert_eq!(run_binary(&maximum, &a, &[4], &b, &[4], &[4])?, [3, 0, 5, 127]);
        assert_eq!(run_binary(&minimum, &a, &[4], &b, &[4], &[4])?, [-128, -1, 5, -128]);
        // A scalar constant (the converter's `tf.maximum(x, 0.25)`).
        assert_eq!(run_binary(&maximum, &a, &[1, 4], &[2], &[], &[1, 4])?, [2, 2, 5, 127]);
        // A column against a row.
        assert_eq!(run_binary(&minimum, &[1, 7], &[2, 1], &[0, 4, 9], &[3], &[2, 3])?, [0, 1, 1, 0, 4, 7]);
        Ok(())
    }

    #[test]
    fn broadcast_checks() -> TestResult {
        assert!(check_broadcast(&shape(&[2, 1]), &shape(&[3]), &shape(&[2, 3])).is_ok());
        assert!(check_broadcast(&shape(&[]), &shape(&[1, 4]), &shape(&[1, 4])).is_ok());
        // Same element count, other shape: TFLM's broadcast loop would misread it.
        assert!(check_broadcast(&shape(&[2, 3]), &shape(&[2, 3]), &shape(&[6])).is_err());
        assert!(check_broadcast(&shape(&[2]), &shape(&[3]), &shape(&[3])).is_err());
        // An output larger than both inputs.
        assert!(check_broadcast(&shape(&[1]), &shape(&[1]), &shape(&[2])).is_err());
        assert!(check_broadcast(&shape(&[0]), &shape(&[1]), &shape(&[0])).is_ok());
        assert!(run_binary(&maximum, &[1, 2], &[2], &[1, 2, 3], &[3], &[3]).is_err());
        Ok(())
    }
}
