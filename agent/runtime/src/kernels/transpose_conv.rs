//! int8 TRANSPOSE_CONV, as TFLM's `transpose_conv.cc` with
//! `reference_integer_ops::TransposeConv`.
//!
//! TFLM scatters every input pixel into an int32 scratch copy of the output and rescales
//! it afterwards. This kernel gathers instead: each output element sums the products of
//! the input pixels and filter taps that land on it. The terms are the same and int32
//! addition wraps (TFLM's accumulation too, on every target it runs on), so the sums, and
//! the outputs, are equal to the bit without an output-sized scratch buffer in the arena.
//! Filters are `[out_channels, height, width, in_channels]`, weights symmetric (TFLM
//! ignores the filter zero point), multipliers per output channel as for CONV_2D.

use super::OpError;
use super::params::{Int32s, Rescale};

/// Parameters of an int8 TRANSPOSE_CONV.
#[derive(Debug, Clone, Copy)]
pub struct TransposeConvParams<'a> {
    /// (height, width).
    pub stride: (usize, usize),
    /// Padding before (height, width), from the output size as TFLM computes it.
    pub padding: (usize, usize),
    /// Minus the input zero point.
    pub input_offset: i32,
    /// The output zero point.
    pub output_offset: i32,
    /// Clamp range of the fused activation.
    pub act: (i32, i32),
    /// Per-channel (or per-tensor) output multipliers.
    pub rescale: Rescale<'a>,
}

/// A tensor's data with its NHWC (or OHWI) shape.
#[derive(Debug, Clone, Copy)]
pub struct Tensor4<'d> {
    /// The elements, row-major.
    pub data: &'d [i8],
    /// Its four dimensions.
    pub shape: [usize; 4],
}

/// The input positions along one axis that reach output position `o` through tap `f`,
/// or `None` when the tap falls between input pixels or outside the input.
fn source(o: usize, pad: usize, f: usize, stride: usize, size: usize) -> Option<usize> {
    let t = (o + pad).checked_sub(f)?;
    (t.is_multiple_of(stride) && t / stride < size).then_some(t / stride)
}

/// int8 transposed convolution of `input` by `filter` into `out` (shape `out_shape`).
pub fn transpose_conv(
    p: &TransposeConvParams<'_>,
    input: Tensor4<'_>,
    filter: Tensor4<'_>,
    bias: Option<Int32s<'_>>,
    out: &mut [i8],
    out_shape: [usize; 4],
) -> Result<(), OpError> {
    let [batches, in_h, in_w, in_c] = input.shape;
    let [out_c, f_h, f_w, f_c] = filter.shape;
    let [o_b, o_h, o_w, o_c] = out_shape;
    let len = |s: [usize; 4]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if o_b != batches || f_c != in_c || o_c != out_c || p.stride.0 == 0 || p.stride.1 == 0 {
        return Err(OpError::Shape("transpose conv shapes do not match"));
    }
    if len(input.shape) != Some(input.data.len())
        || len(filter.shape) != Some(filter.data.len())
        || len(out_shape) != Some(out.len())
        || bias.is_some_and(|b| b.len() != out_c)
    {
        return Err(OpError::Shape("transpose conv lengths do not match the shapes"));
    }
    let mut dest = out.iter_mut();
    for b in 0..batches {
        for y in 0..o_h {
            for x in 0..o_w {
                for c in 0..out_c {
                    let mut acc = 0i32;
                    for fy in 0..f_h {
                        let Some(iy) = source(y, p.padding.0, fy, p.stride.0, in_h) else { continue };
                        for fx in 0..f_w {
                            let Some(ix) = source(x, p.padding.1, fx, p.stride.1, in_w) else { continue };
                            let at = ((b * in_h + iy) * in_w + ix) * in_c;
                            let pixel = input.data.get(at..at + in_c).unwrap_or(&[]);
                            let at = ((c * f_h + fy) * f_w + fx) * in_c;
                            let taps = filter.data.get(at..at + in_c).unwrap_or(&[]);
                            for (&v, &w) in pixel.iter().zip(taps) {
                                // |(v + offset) × w| ≤ 255 × 128: only the sum can wrap.
                                acc = acc.wrapping_add((i32::from(v) + p.input_offset) * i32::from(w));
                            }
                        }
                    }
                    if let Some(bias) = bias {
                        acc = acc.wrapping_add(bias.get(c));
                    }
                    let value = p.rescale.channel(c).apply(acc).wrapping_add(p.output_offset);
                    if let Some(o) = dest.next() {
                        *o = value.max(p.act.0).min(p.act.1).clamp(-128, 127) as i8;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::Multiplier;
    use crate::kernels::elementwise::testutil::TestResult;

    fn params(stride: usize, padding: usize) -> TransposeConvParams<'static> {
        TransposeConvParams {
            stride: (stride, stride),
            padding: (padding, padding),
            input_offset: 0,
            output_offset: 0,
            act: (-128, 127),
            rescale: Rescale::PerTensor(Multiplier::new(1.0)),
        }
    }

    /// The scatter formulation TFLM uses, to compare against.
    fn scatter(
        p: &TransposeConvParams<'_>,
        input: Tensor4<'_>,
        filter: Tensor4<'_>,
        out_shape: [usize; 4],
    ) -> Vec<i32> {
        let [_, in_h, in_w, in_c] = input.shape;
        let [out_c, f_h, f_w, _] = filter.shape;
        let [_, o_h, o_w, _] = out_shape;
        let mut acc = vec![0i32; o_h * o_w * out_c];
        for iy in 0..in_h {
            for ix in 0..in_w {
                for ic in 0..in_c {
                    for fy in 0..f_h {
                        for fx in 0..f_w {
                            for oc in 0..out_c {
                                let oy = (iy * p.stride.0 + fy) as i64 - p.padding.0 as i64;
                                let ox = (ix * p.stride.1 + fx) as i64 - p.padding.1 as i64;
                                if oy < 0 || ox < 0 || oy >= o_h as i64 || ox >= o_w as i64 {
                                    continue;
                                }
                                let v = i32::from(input.data[(iy * in_w + ix) * in_c + ic]) + p.input_offset;
                                let w = i32::from(filter.data[((oc * f_h + fy) * f_w + fx) * in_c + ic]);
                                acc[(oy as usize * o_w + ox as usize) * out_c + oc] += v * w;
                            }
                        }
                    }
                }
            }
        }
        acc
    }

    #[test]
    fn gather_equals_scatter() -> TestResult {
        // 3x3 input, 2 channels; 2 output channels, 3x3 filter, stride 2, SAME (pad 1 → 6x6).
        let input: Vec<i8> = (0..18).map(|i| (i * 7 % 23) as i8 - 11).collect();
        let filter: Vec<i8> = (0..36).map(|i| (i * 5 % 17) as i8 - 8).collect();
        for (stride, padding, out_hw) in [(2, 1, 6), (2, 0, 7), (1, 1, 3), (3, 0, 9)] {
            let mut p = params(stride, padding);
            p.input_offset = 3;
            let (x, w) =
                (Tensor4 { data: &input, shape: [1, 3, 3, 2] }, Tensor4 { data: &filter, shape: [2, 3, 3, 2] });
            let shape = [1, out_hw, out_hw, 2];
            let mut out = vec![0i8; out_hw * out_hw * 2];
            transpose_conv(&p, x, w, None, &mut out, shape)?;
            let want: Vec<i8> = scatter(&p, x, w, shape).iter().map(|&a| a.clamp(-128, 127) as i8).collect();
            assert_eq!(out, want, "stride {stride} padding {padding}");
        }
        Ok(())
    }

    #[test]
    fn bias_rescale_offset_and_activation() -> TestResult {
        // 1x1 input, 1x1 filter: out = clamp((x + 1) × w + bias) / 4 + zp.
        let bias = 8i32.to_le_bytes();
        let mut p = params(1, 0);
        p.input_offset = 1;
        p.output_offset = -10;
        p.act = (-10, 127);
        p.rescale = Rescale::PerTensor(Multiplier::new(0.25));
        let mut out = [0i8; 2];
        let x = Tensor4 { data: &[5], shape: [1, 1, 1, 1] };
        let w = Tensor4 { data: &[4, -8], shape: [2, 1, 1, 1] };
        transpose_conv(&p, x, w, Some(Int32s(&[bias, bias].concat())), &mut out, [1, 1, 1, 2])?;
        // (6 × 4 + 8) / 4 = 8 → -2; (6 × -8 + 8) / 4 = -10 → -20, clamped to -10.
        assert_eq!(out, [-2, -10]);
        Ok(())
    }

    #[test]
    fn refusals() -> TestResult {
        let p = params(1, 0);
        let x = Tensor4 { data: &[1, 2], shape: [1, 1, 1, 2] };
        let w = Tensor4 { data: &[1, 2], shape: [1, 1, 1, 2] };
        let mut out = [0i8; 1];
        assert!(transpose_conv(&p, x, w, None, &mut out, [1, 1, 1, 1]).is_ok());
        assert!(transpose_conv(&p, x, w, None, &mut out, [1, 1, 1, 2]).is_err());
        assert!(transpose_conv(&p, x, w, Some(Int32s(&[0; 8])), &mut out, [1, 1, 1, 1]).is_err());
        let short = Tensor4 { data: &[1], shape: [1, 1, 1, 2] };
        assert!(transpose_conv(&p, short, w, None, &mut out, [1, 1, 1, 1]).is_err());
        assert!(transpose_conv(&params(0, 0), x, w, None, &mut out, [1, 1, 1, 1]).is_err());
        // Empty dimensions: nothing to write.
        let empty = Tensor4 { data: &[], shape: [1, 0, 1, 2] };
        transpose_conv(&p, empty, w, None, &mut [], [1, 0, 1, 1])?;
        Ok(())
    }
}
