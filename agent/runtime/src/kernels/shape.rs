//! Operators that only move elements: SHAPE, PACK, UNPACK, SPLIT, SPLIT_V and TRANSPOSE,
//! as TFLM's `shape.cc`, `pack.cc`, `unpack.cc`, `split.cc`, `split_v.cc` and
//! `transpose.cc` (with `reference_ops::Transpose`).
//!
//! They work on bytes, with the element size as a parameter, because TFLM's kernels copy
//! elements without looking at their values or quantization (int32 tensors, the shapes a
//! dynamic-batch export computes, go through PACK and UNPACK as int8 ones do).
//! int32 tensors are little-endian, as in the model.

use super::OpError;
use crate::tensor::{MAX_RANK, Shape};

fn check_len(len: usize, shape: &Shape, elem: usize, what: &'static str) -> Result<(), OpError> {
    if shape.elements().checked_mul(elem) == Some(len) { Ok(()) } else { Err(OpError::Shape(what)) }
}

/// SHAPE: the dimensions of `input` as little-endian int32.
pub fn shape(input: &Shape, out: &mut [u8]) -> Result<(), OpError> {
    if out.len() != input.rank() * 4 {
        return Err(OpError::Shape("shape output length is not the input rank"));
    }
    for (o, &d) in out.chunks_exact_mut(4).zip(input.dims()) {
        let d = i32::try_from(d).map_err(|_| OpError::Shape("dimension above int32"))?;
        o.copy_from_slice(&d.to_le_bytes());
    }
    Ok(())
}

/// The size of the block each tensor of `lens` contributes per outer step, when their
/// lengths add up to `total` and each is a whole number of steps.
fn blocks(lens: impl Iterator<Item = usize>, outer: usize, total: usize) -> Result<(), OpError> {
    let mut sum = 0usize;
    for len in lens {
        if outer == 0 && len != 0 || outer != 0 && !len.is_multiple_of(outer) {
            return Err(OpError::Shape("part is not a whole number of outer steps"));
        }
        sum = sum.checked_add(len).ok_or(OpError::Shape("parts too large"))?;
    }
    if sum == total { Ok(()) } else { Err(OpError::Shape("parts do not add up to the whole")) }
}

/// PACK: for each of `outer` steps, one block from every input in turn (each input's
/// block is its length / `outer`). With one block per input per step this is also the
/// byte pattern of a concatenation.
pub fn join(inputs: &[&[u8]], outer: usize, out: &mut [u8]) -> Result<(), OpError> {
    blocks(inputs.iter().map(|i| i.len()), outer, out.len())?;
    let mut dest = out.iter_mut();
    for k in 0..outer {
        for input in inputs {
            let block = input.len() / outer;
            let src = input.get(k * block..(k + 1) * block).ok_or(OpError::Shape("pack index out of range"))?;
            // `src` first: zip then stops without taking an extra output byte.
            for (&v, o) in src.iter().zip(dest.by_ref()) {
                *o = v;
            }
        }
    }
    Ok(())
}

/// UNPACK, SPLIT and SPLIT_V: for each of `outer` steps, the next block of `input` to
/// every output in turn (each output's block is its length / `outer`).
pub fn split(input: &[u8], outer: usize, outputs: &mut [&mut [u8]]) -> Result<(), OpError> {
    blocks(outputs.iter().map(|o| o.len()), outer, input.len())?;
    let mut src = input.iter();
    for k in 0..outer {
        for output in outputs.iter_mut() {
            let block = output.len() / outer;
            let dest = output.get_mut(k * block..(k + 1) * block).ok_or(OpError::Shape("split index out of range"))?;
            for (o, &v) in dest.iter_mut().zip(src.by_ref()) {
                *o = v;
            }
        }
    }
    Ok(())
}

/// Row-major strides of `dims`, in elements.
fn strides(dims: &[usize]) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(dims).rev() {
        *s = acc;
        acc = acc.saturating_mul(d);
    }
    strides
}

/// TRANSPOSE: output dimension `k` is input dimension `perm[k]`; `perm` must be a
/// permutation of the input's axes and the output shape must follow from it.
pub fn transpose(
    perm: &[usize],
    input: &[u8],
    in_shape: &Shape,
    elem: usize,
    out: &mut [u8],
    out_shape: &Shape,
) -> Result<(), OpError> {
    check_transpose(perm, in_shape, out_shape)?;
    check_len(input.len(), in_shape, elem, "transpose input length does not match its shape")?;
    check_len(out.len(), out_shape, elem, "transpose output length does not match its shape")?;
    if out.is_empty() {
        return Ok(());
    }
    let rank = perm.len();
    let in_strides = strides(in_shape.dims());
    let mut step = [0usize; MAX_RANK];
    for (s, &p) in step.iter_mut().zip(perm) {
        *s = in_strides[p] * elem;
    }
    let dims = out_shape.dims();
    // Walk the output in order, keeping the input offset of the current position.
    let mut index = [0usize; MAX_RANK];
    let mut from = 0usize;
    for o in out.chunks_exact_mut(elem) {
        let src = input.get(from..from + elem).ok_or(OpError::Shape("transpose index out of range"))?;
        o.copy_from_slice(src);
        for k in (0..rank).rev() {
            index[k] += 1;
            from += step[k];
            if index[k] < dims[k] {
                break;
            }
            from -= step[k] * dims[k];
            index[k] = 0;
        }
    }
    Ok(())
}

/// TRANSPOSE's shape checks: `perm` is a permutation of the input's axes and output
/// dimension `k` is input dimension `perm[k]`.
pub fn check_transpose(perm: &[usize], in_shape: &Shape, out_shape: &Shape) -> Result<(), OpError> {
    let rank = in_shape.rank();
    if perm.len() != rank || out_shape.rank() != rank {
        return Err(OpError::Shape("transpose permutation length is not the rank"));
    }
    let mut seen = [false; MAX_RANK];
    for (k, &p) in perm.iter().enumerate() {
        match seen.get_mut(p) {
            Some(s) if !*s && p < rank => *s = true,
            _ => return Err(OpError::Unsupported("transpose perm is not a permutation of the axes")),
        }
        if out_shape.dim(k) != in_shape.dim(p) {
            return Err(OpError::Shape("transpose output shape does not follow from perm"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::{TestResult, shape as s};

    #[test]
    fn shape_writes_int32_dims() -> TestResult {
        let mut out = [0u8; 12];
        shape(&s(&[1, 14, 4]), &mut out)?;
        assert_eq!(out, [1, 0, 0, 0, 14, 0, 0, 0, 4, 0, 0, 0]);
        assert!(shape(&s(&[1, 14]), &mut out).is_err());
        shape(&s(&[]), &mut [])?;
        Ok(())
    }

    #[test]
    fn pack_and_unpack_are_inverse() -> TestResult {
        // Pack two [2, 3] along axis 1: outer 2, a block of 3 from each per step.
        let (a, b) = ([1u8, 2, 3, 4, 5, 6], [7u8, 8, 9, 10, 11, 12]);
        let mut packed = [0u8; 12];
        join(&[&a, &b], 2, &mut packed)?;
        assert_eq!(packed, [1, 2, 3, 7, 8, 9, 4, 5, 6, 10, 11, 12]);
        let (mut x, mut y) = ([0u8; 6], [0u8; 6]);
        split(&packed, 2, &mut [&mut x, &mut y])?;
        assert_eq!((x, y), (a, b));
        // Axis 0 (outer 1) is plain concatenation; the last axis interleaves elements.
        join(&[&a, &b], 1, &mut packed)?;
        assert_eq!(packed, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        join(&[&a, &b], 6, &mut packed)?;
        assert_eq!(packed, [1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 6, 12]);
        // int32 elements: blocks are whole elements because lengths are in bytes.
        let mut out = [0u8; 8];
        join(&[&7i32.to_le_bytes(), &(-1i32).to_le_bytes()], 1, &mut out)?;
        assert_eq!(out, [7, 0, 0, 0, 255, 255, 255, 255]);
        Ok(())
    }

    #[test]
    fn split_v_takes_unequal_parts() -> TestResult {
        // [2, 5] split along axis 1 into 1, 3 and 1 columns.
        let input: Vec<u8> = (0..10).collect();
        let (mut a, mut b, mut c) = ([0u8; 2], [0u8; 6], [0u8; 2]);
        split(&input, 2, &mut [&mut a, &mut b, &mut c])?;
        assert_eq!((a, b, c), ([0, 5], [1, 2, 3, 6, 7, 8], [4, 9]));
        Ok(())
    }

    #[test]
    fn join_and_split_refuse_inconsistent_parts() -> TestResult {
        let mut out = [0u8; 4];
        assert!(join(&[&[1, 2], &[3]], 1, &mut out).is_err());
        assert!(join(&[&[1, 2, 3], &[4]], 2, &mut out).is_err());
        assert!(split(&[1, 2, 3], 1, &mut [&mut [0u8; 2], &mut [0u8; 2]]).is_err());
        assert!(split(&[1, 2, 3, 4], 2, &mut [&mut [0u8; 3], &mut [0u8; 1]]).is_err());
        // Empty dimensions: zero outer steps and empty parts.
        join(&[&[], &[]], 0, &mut [])?;
        split(&[], 0, &mut [&mut [], &mut []])?;
        assert!(split(&[], 0, &mut [&mut [0u8; 1]]).is_err());
        Ok(())
    }

    #[test]
    fn transposes_any_rank() -> TestResult {
        // NCHW [1, 2, 2, 3] to NHWC: perm [0, 2, 3, 1].
        let input: Vec<u8> = (0..12).collect();
        let mut out = [0u8; 12];
        transpose(&[0, 2, 3, 1], &input, &s(&[1, 2, 2, 3]), 1, &mut out, &s(&[1, 2, 3, 2]))?;
        assert_eq!(out, [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]);
        let mut out = [0u8; 6];
        transpose(&[1, 0], &input[..6], &s(&[2, 3]), 1, &mut out, &s(&[3, 2]))?;
        assert_eq!(out, [0, 3, 1, 4, 2, 5]);
        // 4-byte elements move whole.
        let words: Vec<u8> = [1i32, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0u8; 16];
        transpose(&[1, 0], &words, &s(&[2, 2]), 4, &mut out, &s(&[2, 2]))?;
        assert_eq!(out[4..8], 3i32.to_le_bytes());
        // Rank 5, and the identity.
        let input: Vec<u8> = (0..32).collect();
        let mut out = [0u8; 32];
        transpose(&[4, 3, 2, 1, 0], &input, &s(&[2; 5]), 1, &mut out, &s(&[2; 5]))?;
        assert_eq!(out[1], 16);
        transpose(&[0, 1, 2, 3, 4], &input, &s(&[2; 5]), 1, &mut out, &s(&[2; 5]))?;
        assert_eq!(out.to_vec(), input);
        // An empty dimension.
        transpose(&[1, 0], &[], &s(&[0, 3]), 1, &mut [], &s(&[3, 0]))?;
        Ok(())
    }

    #[test]
    fn transpose_refusals() -> TestResult {
        let (a, mut out) = ([0u8; 6], [0u8; 6]);
        assert!(transpose(&[0, 0], &a, &s(&[2, 3]), 1, &mut out, &s(&[2, 2])).is_err());
        assert!(transpose(&[0, 2], &a, &s(&[2, 3]), 1, &mut out, &s(&[2, 3])).is_err());
        assert!(transpose(&[1, 0], &a, &s(&[2, 3]), 1, &mut out, &s(&[2, 3])).is_err());
        assert!(transpose(&[0], &a, &s(&[2, 3]), 1, &mut out, &s(&[2, 3])).is_err());
        assert!(transpose(&[1, 0], &a[..5], &s(&[2, 3]), 1, &mut out, &s(&[3, 2])).is_err());
        Ok(())
    }
}
