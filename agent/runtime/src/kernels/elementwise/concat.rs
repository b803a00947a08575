//! int8 CONCATENATION, as TFLM's `concatenation.cc` with `reference_ops::Concatenation`.
//!
//! TFLM's int8 kernel only copies bytes: its Prepare refuses any input whose scale or
//! zero point differs from the output's rather than rescale, and it takes at most ten
//! inputs.

use super::broadcast::check_len;
use crate::kernels::OpError;
use crate::tensor::{Quant, Shape};

/// Most inputs TFLM's CONCATENATION accepts (`kMaxInputNum`).
pub const MAX_INPUTS: usize = 10;

/// CONCATENATION's quantization checks for int8: every input has exactly the output's
/// scale and zero point.
pub fn check_concat_quant(inputs: &[Quant], output: Quant) -> Result<(), OpError> {
    for q in inputs {
        if f64::from(q.scale) != f64::from(output.scale) || q.zero_point != output.zero_point {
            return Err(OpError::Quantization("concatenation input quantization differs from the output"));
        }
    }
    Ok(())
}

/// Concatenates `inputs` along `axis` (negative counts from the end) into `out`. All
/// shapes have the output's rank and match it except along `axis`, where they sum to it.
pub fn concatenation(inputs: &[(&[i8], Shape)], axis: i32, out: &mut [i8], out_shape: &Shape) -> Result<(), OpError> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(OpError::Unsupported("concatenation takes 1 to 10 inputs"));
    }
    check_len(out.len(), out_shape, "concatenation output length does not match its shape")?;
    let rank = out_shape.rank();
    let axis = usize::try_from(if axis < 0 { axis + rank as i32 } else { axis })
        .ok()
        .filter(|&a| a < rank)
        .ok_or(OpError::Unsupported("concatenation axis out of range"))?;
    let dims = out_shape.dims();
    let mut axis_total = 0usize;
    for (data, shape) in inputs {
        check_len(data.len(), shape, "concatenation input length does not match its shape")?;
        if shape.rank() != rank {
            return Err(OpError::Shape("concatenation ranks differ"));
        }
        let same_elsewhere = shape.dims().iter().zip(dims).enumerate().all(|(k, (a, b))| k == axis || a == b);
        if !same_elsewhere {
            return Err(OpError::Shape("concatenation dimensions differ off the axis"));
        }
        axis_total = axis_total.saturating_add(shape.dim(axis));
    }
    if axis_total != out_shape.dim(axis) {
        return Err(OpError::Shape("concatenation sizes along the axis do not add up"));
    }
    let inner: usize = dims.iter().skip(axis + 1).product();
    let outer: usize = dims.iter().take(axis).product();
    // Each outer step takes one block of `dim(axis) × inner` from every input, in order.
    let mut dest = out.iter_mut();
    for k in 0..outer {
        for (data, shape) in inputs {
            let block = shape.dim(axis) * inner;
            let src = data.get(k * block..(k + 1) * block).ok_or(OpError::Shape("concatenation index out of range"))?;
            // `src` first: zip then stops without taking an extra output slot.
            for (&v, o) in src.iter().zip(dest.by_ref()) {
                *o = v;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::*;

    #[test]
    fn concatenates_along_any_axis() -> TestResult {
        let (a, b) = ([1, 2, 3, 4, 5, 6], [7, 8, 9, 10]);
        let mut out = [0; 10];
        concatenation(&[(&a, shape(&[2, 3])), (&b, shape(&[2, 2]))], 1, &mut out, &shape(&[2, 5]))?;
        assert_eq!(out, [1, 2, 3, 7, 8, 4, 5, 6, 9, 10]);
        concatenation(&[(&a, shape(&[2, 3])), (&b, shape(&[2, 2]))], -1, &mut out, &shape(&[2, 5]))?;
        assert_eq!(out, [1, 2, 3, 7, 8, 4, 5, 6, 9, 10]);
        let c = [11, 12];
        let mut out = [0; 8];
        concatenation(&[(&a, shape(&[3, 2])), (&c, shape(&[1, 2]))], 0, &mut out, &shape(&[4, 2]))?;
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 11, 12]);
        // An empty input contributes nothing.
        concatenation(&[(&[], shape(&[0, 2])), (&out.clone(), shape(&[4, 2]))], -2, &mut out, &shape(&[4, 2]))?;
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 11, 12]);
        Ok(())
    }

    #[test]
    fn errors() -> TestResult {
        let a = [1, 2];
        let mut out = [0; 4];
        let s = shape(&[1, 2]);
        let os = shape(&[2, 2]);
        assert!(concatenation(&[(&a, s), (&a, s)], 2, &mut out, &os).is_err());
        assert!(concatenation(&[(&a, s), (&a, s)], -3, &mut out, &os).is_err());
        assert!(concatenation(&[(&a, s), (&a, s)], 1, &mut out, &os).is_err());
        assert!(concatenation(&[(&a, s)], 0, &mut out, &os).is_err());
        assert!(concatenation(&[(&a, shape(&[2])), (&a, shape(&[2]))], 0, &mut out, &os).is_err());
        assert!(concatenation(&[(&a[..1], s), (&a, s)], 0, &mut out, &os).is_err());
        assert!(concatenation(&[], 0, &mut out, &os).is_err());
        assert!(concatenation(&[(&a, s), (&a, s)], 0, &mut out, &os).is_ok());
        let a: &[i8] = &a;
        assert!(concatenation(&[(a, s); 11], 0, &mut [0; 22], &shape(&[11, 2])).is_err());
        let q = |scale, zero_point| Quant { scale, zero_point };
        assert!(check_concat_quant(&[q(0.5, 1), q(0.5, 1)], q(0.5, 1)).is_ok());
        assert!(check_concat_quant(&[q(0.5, 1), q(0.25, 1)], q(0.5, 1)).is_err());
        assert!(check_concat_quant(&[q(0.5, 2)], q(0.5, 1)).is_err());
        Ok(())
    }
}
