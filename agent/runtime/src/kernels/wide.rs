//! 16x8 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: int16 activations, int8 weights,
//! TFLite's `reference_integer_ops` kernels for int16 input.
//!
//! Activations are symmetric (zero point 0), so there are no offsets. TFLM accumulates in
//! the bias's width: 64 bits with int64 biases (its int64 `MultiplyByQuantizedMultiplier`,
//! a 16-bit multiplier), 32 bits with int32 biases or none (the int8 rescaling), except
//! the depthwise kernel, which always accumulates in 64 bits. The accumulator width is
//! decided at prepare ([`Accumulator`]). These are portable loops on every target:
//! 16x8 models are rare on microcontrollers, and their speed is not a target.

use super::conv::{ConvParams, View4, for_each_pixel};
use super::fully_connected::{FcDims, FcParams};
use super::params::{Rescale, WideBias, check_len};
use super::{Code, I16, OpError};

/// How wide a 16x8 layer accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulator {
    /// 32 bits, wrapping, rescaled as int8 layers are.
    I32,
    /// 64 bits, rescaled with the 16-bit multiplier.
    I64,
}

impl Accumulator {
    /// Adds the bias and rescales into the activation range.
    #[inline]
    fn finish(self, sum: i64, bias: i64, rescale: &Rescale<'_>, channel: usize, act: (i32, i32)) -> I16 {
        let m = rescale.channel(channel);
        let v = match self {
            Self::I32 => m.apply((sum as i32).wrapping_add(bias as i32)),
            Self::I64 => m.apply_wide(sum.wrapping_add(bias)),
        };
        I16::clamped(v.clamp(act.0, act.1))
    }
}

/// An int16 activation and its 4-D shape (NHWC).
#[derive(Debug, Clone, Copy)]
pub struct Wide4<'a> {
    /// The codes.
    pub data: &'a [I16],
    /// The shape.
    pub shape: [usize; 4],
}

/// 16x8 convolution: NHWC input, OHWI filter (groups allowed), NHWC output.
pub fn conv2d(
    p: &ConvParams<'_>,
    acc: Accumulator,
    input: Wide4<'_>,
    View4 { data: filter, shape: filter_shape }: View4<'_>,
    bias: WideBias<'_>,
    output: &mut [I16],
    output_shape: [usize; 4],
) -> Result<(), OpError> {
    let [batches, in_h, in_w, in_depth] = input.shape;
    let [out_depth, f_h, f_w, f_depth] = filter_shape;
    check_len(input.data, input.shape.iter().product(), "conv input")?;
    check_len(filter, filter_shape.iter().product(), "conv filter")?;
    check_len(output, output_shape.iter().product(), "conv output")?;
    if output_shape[0] != batches || output_shape[3] != out_depth || f_depth == 0 || !in_depth.is_multiple_of(f_depth) {
        return Err(OpError::Shape("conv channels"));
    }
    let groups = in_depth / f_depth;
    if !out_depth.is_multiple_of(groups) {
        return Err(OpError::Shape("conv groups"));
    }
    let per_group = out_depth / groups;
    let filter_size = f_h * f_w * f_depth;
    for_each_pixel(p, input.shape, (f_h, f_w), output, output_shape, |win, pixel| {
        for (oc, out) in pixel.iter_mut().enumerate() {
            let weights = &filter[oc * filter_size..(oc + 1) * filter_size];
            let channel0 = (oc / per_group) * f_depth;
            let mut sum = 0i64;
            for fy in win.rows.clone() {
                let iy = (win.y0 + (p.dilation.0 * fy) as isize) as usize;
                for fx in win.cols.clone() {
                    let ix = (win.x0 + (p.dilation.1 * fx) as isize) as usize;
                    let at = ((win.batch * in_h + iy) * in_w + ix) * in_depth + channel0;
                    let w = (fy * f_w + fx) * f_depth;
                    for (x, &w) in input.data[at..at + f_depth].iter().zip(&weights[w..w + f_depth]) {
                        sum += i64::from(i32::from(w) * x.value());
                    }
                }
            }
            *out = acc.finish(sum, bias.get(oc), &p.rescale, oc, p.act);
        }
    })
}

/// 16x8 depthwise convolution: NHWC input, 1HWC filter (C = input channels × depth
/// multiplier), NHWC output; always a 64-bit accumulator, as in TFLM.
pub fn depthwise_conv2d(
    p: &ConvParams<'_>,
    input: Wide4<'_>,
    View4 { data: filter, shape: filter_shape }: View4<'_>,
    bias: WideBias<'_>,
    output: &mut [I16],
    output_shape: [usize; 4],
) -> Result<(), OpError> {
    let [batches, in_h, in_w, in_depth] = input.shape;
    let [_, f_h, f_w, f_depth] = filter_shape;
    let out_depth = output_shape[3];
    let mult = p.depth_multiplier;
    check_len(input.data, input.shape.iter().product(), "depthwise input")?;
    check_len(filter, filter_shape.iter().product(), "depthwise filter")?;
    check_len(output, output_shape.iter().product(), "depthwise output")?;
    if output_shape[0] != batches || mult == 0 || out_depth != in_depth * mult || f_depth != out_depth {
        return Err(OpError::Shape("depthwise channels"));
    }
    for_each_pixel(p, input.shape, (f_h, f_w), output, output_shape, |win, pixel| {
        for (oc, out) in pixel.iter_mut().enumerate() {
            let mut sum = 0i64;
            for fy in win.rows.clone() {
                let iy = (win.y0 + (p.dilation.0 * fy) as isize) as usize;
                for fx in win.cols.clone() {
                    let ix = (win.x0 + (p.dilation.1 * fx) as isize) as usize;
                    let x = input.data[((win.batch * in_h + iy) * in_w + ix) * in_depth + oc / mult];
                    sum += i64::from(i32::from(filter[(fy * f_w + fx) * f_depth + oc]) * x.value());
                }
            }
            *out = Accumulator::I64.finish(sum, bias.get(oc), &p.rescale, oc, p.act);
        }
    })
}

/// 16x8 fully connected: `batches × accum_depth` in, `output_depth × accum_depth` weights
/// (symmetric, per tensor or per channel).
pub fn fully_connected(
    p: &FcParams<'_>,
    acc: Accumulator,
    input: &[I16],
    filter: &[i8],
    bias: WideBias<'_>,
    output: &mut [I16],
    dims: FcDims,
) -> Result<(), OpError> {
    dims.check(input.len(), filter.len(), output.len())?;
    let FcDims { output_depth, accum_depth, .. } = dims;
    for (row, outs) in input.chunks_exact(accum_depth.max(1)).zip(output.chunks_exact_mut(output_depth.max(1))) {
        for (o, (out, weights)) in outs.iter_mut().zip(filter.chunks_exact(accum_depth.max(1))).enumerate() {
            let sum = row.iter().zip(weights).map(|(x, &w)| i64::from(i32::from(w) * x.value())).sum();
            *out = acc.finish(sum, bias.get(o), &p.rescale, o, p.act);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::Multiplier;
    use crate::kernels::params::Int64s;

    fn codes(v: &[i16]) -> Vec<I16> {
        v.iter().map(|&x| I16(x.to_le_bytes())).collect()
    }

    fn values(v: &[I16]) -> Vec<i32> {
        v.iter().map(|x| x.value()).collect()
    }

    fn params(m: Multiplier, act: (i32, i32)) -> ConvParams<'static> {
        ConvParams {
            stride: (1, 1),
            dilation: (1, 1),
            padding: (0, 0),
            input_offset: 0,
            output_offset: 0,
            act,
            rescale: Rescale::PerTensor(m),
            depth_multiplier: 1,
        }
    }

    #[test]
    fn wide_rescale_rounds_the_multiplier_to_16_bits() {
        // 0.5 in Q31 is 2^30, reduced to 2^14: x × 2^14 / 2^15, rounded half up.
        let half = Multiplier::new(0.5);
        assert_eq!(half.apply_wide(5), 3);
        assert_eq!(half.apply_wide(-5), -2);
        assert_eq!(half.apply_wide(1 << 40), 0); // 2^39 truncated to 32 bits, as the C cast does
        assert_eq!(half.apply_wide(1 << 20), 1 << 19);
        // A multiplier just below 1 saturates the reduced one at 0x7FFF.
        let one = Multiplier { multiplier: 0x7FFF_FFFF, shift: 0 };
        assert_eq!(one.apply_wide(1 << 20), ((((1i64 << 20) * 0x7FFF) + (1 << 14)) >> 15) as i32);
    }

    #[test]
    fn fully_connected_accumulates_in_the_bias_width() -> Result<(), OpError> {
        // One output: 3 × 30000 + 2 × 30000 = 150000, plus a bias of 2^33 in int64.
        let input = codes(&[30000, 30000]);
        let bias_bytes = (1i64 << 33).to_le_bytes();
        let dims = FcDims { batches: 1, output_depth: 1, accum_depth: 2 };
        let rescale = Rescale::PerTensor(Multiplier::new(1.0 / 65536.0));
        let mut p = FcParams { input_offset: 0, output_offset: 0, act: (-32768, 32767), rescale };
        let mut out = [I16::default()];
        let wide = WideBias::I64(Int64s(&bias_bytes));
        fully_connected(&p, Accumulator::I64, &input, &[3, 2], wide, &mut out, dims)?;
        assert_eq!(values(&out), [32767]);
        p.act = (-100, 100);
        fully_connected(&p, Accumulator::I32, &input, &[3, 2], WideBias::None, &mut out, dims)?;
        assert_eq!(values(&out), [2]); // 150000 / 65536 = 2.29
        Ok(())
    }

    #[test]
    fn convolutions_match_a_hand_computation() -> Result<(), OpError> {
        // 1×2×2×1 input, 2×2 filter, one output: 1·1000 + 2·(−2000) + 3·3000 + 4·(−4000).
        let input = codes(&[1000, -2000, 3000, -4000]);
        let p = params(Multiplier::new(0.25), (-32768, 32767));
        let mut out = [I16::default()];
        let view = Wide4 { data: &input, shape: [1, 2, 2, 1] };
        let filter = View4 { data: &[1, 2, 3, 4], shape: [1, 2, 2, 1] };
        conv2d(&p, Accumulator::I32, view, filter, WideBias::None, &mut out, [1, 1, 1, 1])?;
        assert_eq!(values(&out), [-2500]);
        depthwise_conv2d(&p, view, filter, WideBias::None, &mut out, [1, 1, 1, 1])?;
        assert_eq!(values(&out), [-2500]);
        // A short output is refused, not indexed past.
        assert!(conv2d(&p, Accumulator::I64, view, filter, WideBias::None, &mut [], [1, 1, 1, 1]).is_err());
        Ok(())
    }
}
