//! The element pairing of TFLM's binary int8 kernels (ADD, SUB, MUL).
//!
//! TFLM takes the flat path when the two input shapes, right-aligned to a common rank,
//! are equal (`ProcessBroadcastShapes`), and otherwise `BroadcastBinaryOpSimple`, which
//! walks the output shape and gives an input a zero stride along every dimension where it
//! has extent 1 and the output does not. That mapping is reproduced here, with the extra
//! checks that make every read provably in bounds (TFLM trusts the converter instead).

use crate::kernels::OpError;
use crate::tensor::{MAX_RANK, Shape};

/// `shape` right-aligned into `MAX_RANK` dimensions.
pub(crate) fn extend(shape: &Shape) -> [usize; MAX_RANK] {
    let mut out = [1; MAX_RANK];
    for (o, &d) in out.iter_mut().rev().zip(shape.dims().iter().rev()) {
        *o = d;
    }
    out
}

/// Checks that a slice holds exactly the elements of its shape.
pub(crate) fn check_len(data_len: usize, shape: &Shape, what: &'static str) -> Result<(), OpError> {
    if data_len == shape.elements() { Ok(()) } else { Err(OpError::Shape(what)) }
}

/// One input's view of an output row: a single broadcast value or a contiguous run.
enum Lane<'a, T> {
    Scalar(T),
    Run(&'a [T]),
}

impl<'a, T: Copy> Lane<'a, T> {
    fn new(data: &'a [T], offset: usize, broadcast: bool, len: usize) -> Result<Self, OpError> {
        let bad = OpError::Shape("broadcast index out of range");
        if broadcast {
            data.get(offset).map(|&v| Lane::Scalar(v)).ok_or(bad)
        } else {
            offset.checked_add(len).and_then(|end| data.get(offset..end)).map(Lane::Run).ok_or(bad)
        }
    }
}

/// Input strides over the output's dimensions: zero where the input is broadcast.
fn strides(dims: &[usize; MAX_RANK], out: &[usize; MAX_RANK]) -> Result<[usize; MAX_RANK], OpError> {
    let mut strides = [0; MAX_RANK];
    let mut acc = 1usize;
    for k in (0..MAX_RANK).rev() {
        let (d, o) = (dims[k], out[k]);
        if d != o && d != 1 {
            return Err(OpError::Shape("shapes do not broadcast to the output"));
        }
        strides[k] = if d == 1 && o != 1 { 0 } else { acc };
        acc = acc.checked_mul(d).ok_or(OpError::Shape("shape too large"))?;
    }
    Ok(strides)
}

/// Applies `op` pairwise with TFLM's broadcasting, writing every output element.
pub(crate) fn binary_op<T: Copy, U: Copy>(
    in1: &[T],
    shape1: &Shape,
    in2: &[T],
    shape2: &Shape,
    out: &mut [U],
    out_shape: &Shape,
    op: impl Fn(T, T) -> U,
) -> Result<(), OpError> {
    check_len(in1.len(), shape1, "input 1 length does not match its shape")?;
    check_len(in2.len(), shape2, "input 2 length does not match its shape")?;
    check_len(out.len(), out_shape, "output length does not match its shape")?;
    let (d1, d2, od) = (extend(shape1), extend(shape2), extend(out_shape));

    if d1 == d2 {
        // Flat path: TFLM only needs the element counts to match.
        if out.len() != in1.len() {
            return Err(OpError::Shape("output size differs from the inputs"));
        }
        for ((o, &a), &b) in out.iter_mut().zip(in1).zip(in2) {
            *o = op(a, b);
        }
        return Ok(());
    }

    if out.is_empty() {
        return Ok(());
    }
    let (s1, s2) = (strides(&d1, &od)?, strides(&d2, &od)?);
    let row = od[MAX_RANK - 1];
    let mut index = [0usize; MAX_RANK - 1];
    for out_row in out.chunks_exact_mut(row) {
        let offset = |s: &[usize; MAX_RANK]| index.iter().zip(s).map(|(i, s)| i * s).sum::<usize>();
        let a = Lane::new(in1, offset(&s1), s1[MAX_RANK - 1] == 0, row)?;
        let b = Lane::new(in2, offset(&s2), s2[MAX_RANK - 1] == 0, row)?;
        match (a, b) {
            (Lane::Run(a), Lane::Run(b)) => {
                for ((o, &x), &y) in out_row.iter_mut().zip(a).zip(b) {
                    *o = op(x, y);
                }
            }
            (Lane::Scalar(x), Lane::Run(b)) => {
                for (o, &y) in out_row.iter_mut().zip(b) {
                    *o = op(x, y);
                }
            }
            (Lane::Run(a), Lane::Scalar(y)) => {
                for (o, &x) in out_row.iter_mut().zip(a) {
                    *o = op(x, y);
                }
            }
            (Lane::Scalar(x), Lane::Scalar(y)) => out_row.fill(op(x, y)),
        }
        // Advance the odometer over the outer dimensions.
        for k in (0..MAX_RANK - 1).rev() {
            index[k] += 1;
            if index[k] < od[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    /// Records which input elements each output pairs, as `a * 16 + b`.
    fn pairs(s1: &[usize], s2: &[usize], so: &[usize]) -> Result<Vec<i8>, OpError> {
        let (s1, s2, so) = (shape(s1), shape(s2), shape(so));
        let a: Vec<i8> = (0..s1.elements() as i8).collect();
        let b: Vec<i8> = (0..s2.elements() as i8).collect();
        let mut out = vec![0; so.elements()];
        binary_op(&a, &s1, &b, &s2, &mut out, &so, |x, y| x * 16 + y)?;
        Ok(out)
    }

    #[test]
    fn extends_to_the_right() -> TestResult {
        assert_eq!(extend(&shape(&[2, 3])), [1, 1, 1, 2, 3]);
        assert_eq!(extend(&shape(&[])), [1; 5]);
        assert_eq!(extend(&shape(&[1, 2, 3, 4, 5])), [1, 2, 3, 4, 5]);
        Ok(())
    }

    #[test]
    fn numpy_broadcasting() -> TestResult {
        // Row vector against a column vector.
        assert_eq!(pairs(&[2, 1], &[3], &[2, 3])?, [0, 1, 2, 16, 17, 18]);
        // Scalar on either side.
        assert_eq!(pairs(&[], &[3], &[3])?, [0, 1, 2]);
        assert_eq!(pairs(&[3], &[1], &[3])?, [0, 16, 32]);
        // Middle dimension broadcast in a rank-5 shape.
        assert_eq!(pairs(&[1, 1, 2, 1, 2], &[1, 1, 1, 2, 1], &[1, 1, 2, 2, 2])?, [0, 16, 1, 17, 32, 48, 33, 49]);
        Ok(())
    }

    #[test]
    fn flat_path_and_errors() -> TestResult {
        // Same right-aligned shapes take the flat path even with different ranks.
        assert_eq!(pairs(&[1, 2], &[2], &[2])?, [0, 17]);
        assert_eq!(pairs(&[2], &[3], &[3]), Err(OpError::Shape("shapes do not broadcast to the output")));
        assert!(pairs(&[2], &[2], &[3]).is_err());
        assert!(pairs(&[2, 1], &[3], &[2, 2]).is_err());
        let s = shape(&[2]);
        let mut out = [0; 2];
        assert!(binary_op(&[1], &s, &[1, 2], &s, &mut out, &s, |x, _| x).is_err());
        // Empty output: nothing to do.
        assert_eq!(pairs(&[0, 1], &[3], &[0, 3])?, Vec::<i8>::new());
        Ok(())
    }
}
