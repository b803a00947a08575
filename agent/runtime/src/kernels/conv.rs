//! CONV_2D and DEPTHWISE_CONV_2D, int8 with per-channel (or per-tensor) weights:
//! TFLite's `reference_integer_ops::ConvPerChannel` and `DepthwiseConvPerChannel`.
//!
//! The loops run output channel outermost so each channel's multiplier is derived once
//! per invocation instead of being kept in the arena (TFLM keeps them in its tail); the
//! integer results do not depend on the loop order.

use super::params::{Int32s, Rescale, check_len};
use super::{OpError, clamp_i8};

/// Geometry and quantization shared by both convolutions.
#[derive(Debug, Clone, Copy)]
pub struct ConvParams<'a> {
    /// Stride (height, width).
    pub stride: (usize, usize),
    /// Dilation (height, width).
    pub dilation: (usize, usize),
    /// Padding before the first row and column (height, width).
    pub padding: (usize, usize),
    /// `-input_zero_point`.
    pub input_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Fused activation clamp.
    pub act: (i32, i32),
    /// Accumulator rescaling.
    pub rescale: Rescale<'a>,
    /// Output channels per input channel (depthwise only; 1 otherwise).
    pub depth_multiplier: usize,
}

/// An int8 tensor and its 4-D shape.
#[derive(Debug, Clone, Copy)]
pub struct View4<'a> {
    /// The elements.
    pub data: &'a [i8],
    /// NHWC (or OHWI for filters).
    pub shape: [usize; 4],
}

/// NHWC input, OHWI filter, NHWC output.
pub fn conv2d(
    p: &ConvParams<'_>,
    input: View4<'_>,
    filter: View4<'_>,
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    output_shape: [usize; 4],
) -> Result<(), OpError> {
    let View4 { data: input, shape: input_shape } = input;
    let View4 { data: filter, shape: filter_shape } = filter;
    let [batches, in_h, in_w, in_depth] = input_shape;
    let [out_depth, f_h, f_w, f_depth] = filter_shape;
    let [_, out_h, out_w, _] = output_shape;
    check_len(input, input_shape.iter().product(), "conv input")?;
    check_len(filter, filter_shape.iter().product(), "conv filter")?;
    check_len(output, output_shape.iter().product(), "conv output")?;
    if output_shape[0] != batches || output_shape[3] != out_depth || f_depth == 0 || !in_depth.is_multiple_of(f_depth) {
        return Err(OpError::Shape("conv channels"));
    }
    let groups = in_depth / f_depth;
    if !out_depth.is_multiple_of(groups) {
        return Err(OpError::Shape("conv groups"));
    }
    let filters_per_group = out_depth / groups;
    for oc in 0..out_depth {
        let m = p.rescale.channel(oc);
        let b = bias.map_or(0, |b| b.get(oc));
        let group = oc / filters_per_group;
        let filter_oc = &filter[oc * f_h * f_w * f_depth..(oc + 1) * f_h * f_w * f_depth];
        for batch in 0..batches {
            for oy in 0..out_h {
                let in_y0 = (oy * p.stride.0) as isize - p.padding.0 as isize;
                for ox in 0..out_w {
                    let in_x0 = (ox * p.stride.1) as isize - p.padding.1 as isize;
                    let mut acc: i32 = 0;
                    for fy in 0..f_h {
                        let iy = in_y0 + (p.dilation.0 * fy) as isize;
                        if iy < 0 || iy >= in_h as isize {
                            continue;
                        }
                        for fx in 0..f_w {
                            let ix = in_x0 + (p.dilation.1 * fx) as isize;
                            if ix < 0 || ix >= in_w as isize {
                                continue;
                            }
                            let in_base =
                                ((batch * in_h + iy as usize) * in_w + ix as usize) * in_depth + group * f_depth;
                            let f_base = (fy * f_w + fx) * f_depth;
                            let inputs = &input[in_base..in_base + f_depth];
                            let weights = &filter_oc[f_base..f_base + f_depth];
                            for (&x, &w) in inputs.iter().zip(weights) {
                                acc = acc.wrapping_add(i32::from(w) * (i32::from(x) + p.input_offset));
                            }
                        }
                    }
                    let acc = m.apply(acc.wrapping_add(b)).wrapping_add(p.output_offset);
                    output[((batch * out_h + oy) * out_w + ox) * out_depth + oc] = clamp_i8(acc, p.act.0, p.act.1);
                }
            }
        }
    }
    Ok(())
}

/// NHWC input, 1HWC filter (C = input channels × depth multiplier), NHWC output.
pub fn depthwise_conv2d(
    p: &ConvParams<'_>,
    input: View4<'_>,
    filter: View4<'_>,
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    output_shape: [usize; 4],
) -> Result<(), OpError> {
    let View4 { data: input, shape: input_shape } = input;
    let View4 { data: filter, shape: filter_shape } = filter;
    let [batches, in_h, in_w, in_depth] = input_shape;
    let [_, f_h, f_w, f_depth] = filter_shape;
    let [_, out_h, out_w, out_depth] = output_shape;
    check_len(input, input_shape.iter().product(), "depthwise input")?;
    check_len(filter, filter_shape.iter().product(), "depthwise filter")?;
    check_len(output, output_shape.iter().product(), "depthwise output")?;
    if output_shape[0] != batches || out_depth != in_depth * p.depth_multiplier || f_depth != out_depth {
        return Err(OpError::Shape("depthwise channels"));
    }
    for ic in 0..in_depth {
        for mult in 0..p.depth_multiplier {
            let oc = ic * p.depth_multiplier + mult;
            let m = p.rescale.channel(oc);
            let b = bias.map_or(0, |b| b.get(oc));
            for batch in 0..batches {
                for oy in 0..out_h {
                    let in_y0 = (oy * p.stride.0) as isize - p.padding.0 as isize;
                    for ox in 0..out_w {
                        let in_x0 = (ox * p.stride.1) as isize - p.padding.1 as isize;
                        let mut acc: i32 = 0;
                        for fy in 0..f_h {
                            let iy = in_y0 + (p.dilation.0 * fy) as isize;
                            if iy < 0 || iy >= in_h as isize {
                                continue;
                            }
                            for fx in 0..f_w {
                                let ix = in_x0 + (p.dilation.1 * fx) as isize;
                                if ix < 0 || ix >= in_w as isize {
                                    continue;
                                }
                                let x = input[((batch * in_h + iy as usize) * in_w + ix as usize) * in_depth + ic];
                                let w = filter[(fy * f_w + fx) * f_depth + oc];
                                acc = acc.wrapping_add(i32::from(w) * (i32::from(x) + p.input_offset));
                            }
                        }
                        let acc = m.apply(acc.wrapping_add(b)).wrapping_add(p.output_offset);
                        output[((batch * out_h + oy) * out_w + ox) * out_depth + oc] = clamp_i8(acc, p.act.0, p.act.1);
                    }
                }
            }
        }
    }
    Ok(())
}
