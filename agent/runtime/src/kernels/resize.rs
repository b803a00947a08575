//! RESIZE_NEAREST_NEIGHBOR, as TFLM's `resize_nearest_neighbor.cc` with
//! `reference_ops::ResizeNearestNeighbor`: every output pixel copies the input pixel its
//! position maps to. The mapping is computed in single-precision float exactly as TFLM's
//! `GetNearestNeighbor` does, since its rounding decides which pixel is copied.

use super::OpError;
use crate::arith::round_f32;

/// The two options of `ResizeNearestNeighborOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResizeParams {
    /// Map the corner pixels onto each other (and round instead of flooring).
    pub align_corners: bool,
    /// Sample at pixel centres (offset 0.5).
    pub half_pixel_centers: bool,
}

/// The input coordinate output coordinate `value` copies (`GetNearestNeighbor`).
fn nearest(p: ResizeParams, value: usize, input_size: usize, output_size: usize) -> usize {
    let scale = if p.align_corners && output_size > 1 {
        (input_size - 1) as i32 as f32 / (output_size - 1) as i32 as f32
    } else {
        input_size as i32 as f32 / output_size as i32 as f32
    };
    let offset = if p.half_pixel_centers { 0.5f32 } else { 0.0 };
    let position = (value as i32 as f32 + offset) * scale;
    // `position` is never negative, so truncation is `floor`.
    let index = if p.align_corners { round_f32(position) as i64 } else { position as i64 };
    index.min(input_size as i64 - 1).max(0) as usize
}

/// Resizes `input` (NHWC `in_shape`, `elem` bytes per element) to `out` (NHWC
/// `out_shape`); batches and depth must agree.
pub fn resize_nearest(
    p: ResizeParams,
    input: &[u8],
    in_shape: [usize; 4],
    elem: usize,
    out: &mut [u8],
    out_shape: [usize; 4],
) -> Result<(), OpError> {
    let [batches, in_h, in_w, depth] = in_shape;
    let [o_b, out_h, out_w, o_d] = out_shape;
    let bytes = |s: [usize; 4]| s.iter().try_fold(elem, |a, &d| a.checked_mul(d));
    if o_b != batches || o_d != depth || bytes(in_shape) != Some(input.len()) || bytes(out_shape) != Some(out.len()) {
        return Err(OpError::Shape("resize input and output do not match"));
    }
    if in_h == 0 || in_w == 0 {
        return if out.is_empty() { Ok(()) } else { Err(OpError::Shape("resize of an empty image")) };
    }
    let pixel = depth * elem;
    let mut dest = out.chunks_exact_mut(pixel.max(1));
    for b in 0..batches {
        for y in 0..out_h {
            let in_y = nearest(p, y, in_h, out_h);
            for x in 0..out_w {
                let in_x = nearest(p, x, in_w, out_w);
                let from = ((b * in_h + in_y) * in_w + in_x) * pixel;
                let src = input.get(from..from + pixel).ok_or(OpError::Shape("resize index out of range"))?;
                if let Some(d) = dest.next() {
                    d.copy_from_slice(src);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::testutil::TestResult;

    fn rows(p: ResizeParams, input: usize, output: usize) -> Vec<usize> {
        (0..output).map(|v| nearest(p, v, input, output)).collect()
    }

    #[test]
    fn coordinate_mapping() {
        let plain = ResizeParams::default();
        let half = ResizeParams { half_pixel_centers: true, ..plain };
        let corners = ResizeParams { align_corners: true, ..plain };
        assert_eq!(rows(plain, 2, 4), [0, 0, 1, 1]);
        assert_eq!(rows(plain, 4, 2), [0, 2]);
        assert_eq!(rows(plain, 5, 7), [0, 0, 1, 2, 2, 3, 4]);
        // Centres: (y + 0.5) × 5/7 floored.
        assert_eq!(rows(half, 5, 7), [0, 1, 1, 2, 3, 3, 4]);
        assert_eq!(rows(half, 4, 2), [1, 3]);
        // Corners: y × 4/6 rounded, halves away from zero.
        assert_eq!(rows(corners, 5, 7), [0, 1, 1, 2, 3, 3, 4]);
        assert_eq!(rows(corners, 4, 9), [0, 0, 1, 1, 2, 2, 2, 3, 3]);
        assert_eq!(rows(corners, 3, 1), [0]);
    }

    #[test]
    fn copies_whole_pixels() -> TestResult {
        // A 2x2 image with 2 channels doubled in each direction.
        let input = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut out = [0u8; 32];
        resize_nearest(ResizeParams::default(), &input, [1, 2, 2, 2], 1, &mut out, [1, 4, 4, 2])?;
        assert_eq!(out[..8], [1, 2, 1, 2, 3, 4, 3, 4]);
        assert_eq!(out[16..24], [5, 6, 5, 6, 7, 8, 7, 8]);
        // Downscaling keeps the first pixel of each block.
        let mut small = [0u8; 2];
        resize_nearest(ResizeParams::default(), &input, [1, 2, 2, 2], 1, &mut small, [1, 1, 1, 2])?;
        assert_eq!(small, [1, 2]);
        Ok(())
    }

    #[test]
    fn refusals_and_empty_dims() -> TestResult {
        let p = ResizeParams::default();
        let mut out = [0u8; 8];
        assert!(resize_nearest(p, &[0; 4], [1, 2, 2, 1], 1, &mut out, [1, 4, 2, 2]).is_err());
        assert!(resize_nearest(p, &[0; 4], [1, 2, 2, 1], 1, &mut out, [2, 2, 2, 1]).is_err());
        assert!(resize_nearest(p, &[0; 3], [1, 2, 2, 1], 1, &mut out[..4], [1, 2, 2, 1]).is_err());
        resize_nearest(p, &[], [1, 0, 2, 1], 1, &mut [], [1, 3, 0, 1])?;
        assert!(resize_nearest(p, &[], [1, 0, 2, 1], 1, &mut [0; 2], [1, 2, 1, 1]).is_err());
        Ok(())
    }
}
