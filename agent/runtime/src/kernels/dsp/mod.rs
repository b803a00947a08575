//! Dual-MAC kernels for cores with the DSP extension (Cortex-M4, M7, M33 with DSP).
//!
//! The int8 operands are widened to pairs of 16-bit lanes in registers and multiplied two
//! at a time by `SMLAD` (see [`intrinsics`]):
//! - the input's zero point is added while widening (`SXTAB16`), so `x + offset` never
//!   leaves a register and no im2col buffer is needed;
//! - a convolution is a sum of dot products over contiguous runs of the input (one run
//!   per filter row: `filter width × channels` bytes, cut where the window leaves the
//!   image), computed as 2 pixels × 2 output channels with each word widened once for
//!   both of its partners, or 1 pixel × 2 channels where the neighbour's window is cut
//!   differently;
//! - a depthwise convolution keeps four channels' accumulators in registers over the
//!   whole window (`SMLABB` / `SMLATT` on the low and high lanes);
//! - fully connected is the same dot product, 1 row × 2 outputs.
//!
//! Bytes 0 and 2 of a word land in one register and bytes 1 and 3 in another, for the
//! input and the weights alike, so every lane meets its partner. The sums are the portable
//! kernels' sums in another order: wrapping `i32` addition makes them equal to the bit.

pub mod intrinsics;

use bytemuck::cast_slice;

use self::intrinsics::{depthwise_4x3, smlabb, smlad, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8};
use super::conv::{ConvParams, Geometry, taps};
use super::fully_connected::{FcDims, FcParams};
use super::params::{Int32s, Rescale};
use super::{OpError, clamp_i8};

/// `offset` in both 16-bit lanes.
fn lanes(offset: i32) -> u32 {
    let half = u32::from(offset as u16);
    half | (half << 16)
}

fn word(bytes: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*bytes)
}

/// `Σ w·(x + offset)` over the scalar tail of equally long runs.
#[inline(always)]
fn tail(x: &[u8], w: &[u8], offset: i32, acc: i32) -> i32 {
    x.iter().zip(w).fold(acc, |acc, (&x, &w)| acc.wrapping_add(i32::from(w as i8) * (i32::from(x as i8) + offset)))
}

/// `Σ w·(x + offset)` for two runs of input (`x0`, `x1`, two pixels) against two runs of
/// weights (`w0`, `w1`, two output channels), all of one length: `acc` is
/// `[x0·w0, x0·w1, x1·w0, x1·w1]`. Each weight word is widened once for both pixels.
#[inline(always)]
fn dot_2x2(x0: &[u8], x1: &[u8], w0: &[u8], w1: &[u8], offset: i32, acc: &mut [i32; 4]) {
    let off = lanes(offset);
    let (x0w, x0t) = x0.as_chunks::<4>();
    let (x1w, x1t) = x1.as_chunks::<4>();
    let (w0w, w0t) = w0.as_chunks::<4>();
    let (w1w, w1t) = w1.as_chunks::<4>();
    let [mut a00, mut a01, mut a10, mut a11] = *acc;
    for (((xa, xb), wa), wb) in x0w.iter().zip(x1w).zip(w0w).zip(w1w) {
        let (wa, wb) = (word(wa), word(wb));
        let (xa, xb) = (word(xa), word(xb));
        let (wal, wbl) = (sxtb16(wa), sxtb16(wb));
        let (xal, xbl) = (sxtab16(off, xa), sxtab16(off, xb));
        a00 = smlad(xal, wal, a00);
        a01 = smlad(xal, wbl, a01);
        a10 = smlad(xbl, wal, a10);
        a11 = smlad(xbl, wbl, a11);
        let (wah, wbh) = (sxtb16_ror8(wa), sxtb16_ror8(wb));
        let (xah, xbh) = (sxtab16_ror8(off, xa), sxtab16_ror8(off, xb));
        a00 = smlad(xah, wah, a00);
        a01 = smlad(xah, wbh, a01);
        a10 = smlad(xbh, wah, a10);
        a11 = smlad(xbh, wbh, a11);
    }
    *acc = [
        tail(x0t, w0t, offset, a00),
        tail(x0t, w1t, offset, a01),
        tail(x1t, w0t, offset, a10),
        tail(x1t, w1t, offset, a11),
    ];
}

/// `Σ w·(x + offset)` for one run of input against two runs of weights of the same
/// length: `acc` is `[x·w0, x·w1]`. Each input word is widened once for both channels.
#[inline(always)]
fn dot_1x2(x: &[u8], w0: &[u8], w1: &[u8], offset: i32, acc: &mut [i32; 2]) {
    let off = lanes(offset);
    let (xw, xt) = x.as_chunks::<4>();
    let (w0w, w0t) = w0.as_chunks::<4>();
    let (w1w, w1t) = w1.as_chunks::<4>();
    let [mut a0, mut a1] = *acc;
    for ((x, wa), wb) in xw.iter().zip(w0w).zip(w1w) {
        let x = word(x);
        let (xl, xh) = (sxtab16(off, x), sxtab16_ror8(off, x));
        let (wa, wb) = (word(wa), word(wb));
        a0 = smlad(xh, sxtb16_ror8(wa), smlad(xl, sxtb16(wa), a0));
        a1 = smlad(xh, sxtb16_ror8(wb), smlad(xl, sxtb16(wb), a1));
    }
    *acc = [tail(xt, w0t, offset, a0), tail(xt, w1t, offset, a1)];
}

/// Rescales, offsets and clamps one accumulator (bias already added).
#[inline(always)]
fn requantize(rescale: &Rescale<'_>, channel: usize, acc: i32, output_offset: i32, act: (i32, i32)) -> i8 {
    clamp_i8(rescale.channel(channel).apply(acc).wrapping_add(output_offset), act.0, act.1)
}

fn bias_of(bias: Option<Int32s<'_>>, channel: usize) -> i32 {
    bias.map_or(0, |b| b.get(channel))
}

/// CONV_2D without dilation or groups (the caller checked the shapes).
pub(crate) fn conv2d(
    p: &ConvParams<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    g: &Geometry,
) -> Result<(), OpError> {
    let (input, filter): (&[u8], &[u8]) = (cast_slice(input), cast_slice(filter));
    let [batches, in_h, in_w, depth] = g.input;
    let [out_depth, f_h, f_w, _] = g.filter;
    let [_, out_h, out_w, _] = g.output;
    let filter_size = f_h * f_w * depth;
    let (stride_h, stride_w) = p.stride;
    if out_depth == 0 {
        return Err(OpError::Shape("conv channels"));
    }
    let mut pixels = output.chunks_exact_mut(out_depth);
    for batch in 0..batches {
        for oy in 0..out_h {
            let y0 = (oy * stride_h) as isize - p.padding.0 as isize;
            let rows = taps(y0, 1, f_h, in_h);
            let mut ox = 0;
            while ox < out_w {
                let x0 = (ox * stride_w) as isize - p.padding.1 as isize;
                let cols = taps(x0, 1, f_w, in_w);
                let run = cols.len() * depth;
                // The input run of filter row `fy` for the pixel `k` columns on.
                let x_run = |fy: usize, k: usize| {
                    let iy = (y0 + fy as isize) as usize;
                    let start =
                        ((batch * in_h + iy) * in_w + (x0 + cols.start as isize) as usize + k * stride_w) * depth;
                    input.get(start..start + run).ok_or(OpError::Shape("conv input"))
                };
                let w_run = |oc: usize, fy: usize| {
                    let start = oc * filter_size + (fy * f_w + cols.start) * depth;
                    filter.get(start..start + run).ok_or(OpError::Shape("conv filter"))
                };
                // Two pixels at once when their windows are cut alike (always, inside).
                if ox + 1 < out_w && taps(x0 + stride_w as isize, 1, f_w, in_w) == cols {
                    let first = pixels.next().ok_or(OpError::Shape("conv output"))?;
                    let second = pixels.next().ok_or(OpError::Shape("conv output"))?;
                    let mut oc = 0;
                    while oc + 2 <= out_depth {
                        let (b0, b1) = (bias_of(bias, oc), bias_of(bias, oc + 1));
                        let mut acc = [b0, b1, b0, b1];
                        for fy in rows.clone() {
                            let (x0, x1) = (x_run(fy, 0)?, x_run(fy, 1)?);
                            dot_2x2(x0, x1, w_run(oc, fy)?, w_run(oc + 1, fy)?, p.input_offset, &mut acc);
                        }
                        let [a00, a01, a10, a11] = acc;
                        for (pixel, pair) in [(&mut *first, [a00, a01]), (&mut *second, [a10, a11])] {
                            for (k, a) in pair.into_iter().enumerate() {
                                if let Some(out) = pixel.get_mut(oc + k) {
                                    *out = requantize(&p.rescale, oc + k, a, p.output_offset, p.act);
                                }
                            }
                        }
                        oc += 2;
                    }
                    if oc < out_depth {
                        // The odd last channel: the 2×2 block with that channel twice.
                        let b = bias_of(bias, oc);
                        let mut acc = [b; 4];
                        for fy in rows.clone() {
                            let w = w_run(oc, fy)?;
                            dot_2x2(x_run(fy, 0)?, x_run(fy, 1)?, w, w, p.input_offset, &mut acc);
                        }
                        for (pixel, a) in [&mut *first, &mut *second].into_iter().zip([acc[0], acc[2]]) {
                            if let Some(out) = pixel.get_mut(oc) {
                                *out = requantize(&p.rescale, oc, a, p.output_offset, p.act);
                            }
                        }
                    }
                    ox += 2;
                } else {
                    let pixel = pixels.next().ok_or(OpError::Shape("conv output"))?;
                    let mut oc = 0;
                    while oc < out_depth {
                        // An odd last channel is computed twice.
                        let second = (oc + 1).min(out_depth - 1);
                        let mut acc = [bias_of(bias, oc), bias_of(bias, second)];
                        for fy in rows.clone() {
                            dot_1x2(x_run(fy, 0)?, w_run(oc, fy)?, w_run(second, fy)?, p.input_offset, &mut acc);
                        }
                        for (k, a) in acc.into_iter().enumerate().take(out_depth - oc) {
                            if let Some(out) = pixel.get_mut(oc + k) {
                                *out = requantize(&p.rescale, oc + k, a, p.output_offset, p.act);
                            }
                        }
                        oc += 2;
                    }
                    ox += 1;
                }
            }
        }
    }
    Ok(())
}

/// DEPTHWISE_CONV_2D with depth multiplier 1 and no dilation (the caller checked the
/// shapes).
pub(crate) fn depthwise_conv2d(
    p: &ConvParams<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    g: &Geometry,
) -> Result<(), OpError> {
    let (input, filter): (&[u8], &[u8]) = (cast_slice(input), cast_slice(filter));
    let [batches, in_h, in_w, depth] = g.input;
    let [_, f_h, f_w, _] = g.filter;
    let [_, out_h, out_w, _] = g.output;
    let off = lanes(p.input_offset);
    if depth == 0 {
        return Err(OpError::Shape("depthwise channels"));
    }
    let mut pixels = output.chunks_exact_mut(depth);
    for batch in 0..batches {
        for oy in 0..out_h {
            let y0 = (oy * p.stride.0) as isize - p.padding.0 as isize;
            let rows = taps(y0, 1, f_h, in_h);
            for ox in 0..out_w {
                let x0 = (ox * p.stride.1) as isize - p.padding.1 as isize;
                let cols = taps(x0, 1, f_w, in_w);
                let pixel = pixels.next().ok_or(OpError::Shape("depthwise output"))?;
                // Where filter row `fy`'s first in-bounds tap reads, in the input and in
                // the filter; the next taps are `depth` bytes on in both.
                let starts = |fy: usize| {
                    let iy = (y0 + fy as isize) as usize;
                    let ix = (x0 + cols.start as isize) as usize;
                    (((batch * in_h + iy) * in_w + ix) * depth, (fy * f_w + cols.start) * depth)
                };
                let mut c = 0;
                while c + 4 <= depth {
                    let mut acc = [bias_of(bias, c), bias_of(bias, c + 1), bias_of(bias, c + 2), bias_of(bias, c + 3)];
                    for fy in rows.clone() {
                        let (x_at, w_at) = starts(fy);
                        if cols.len() == 3 {
                            let (xs, ws) =
                                (input.get(x_at + c..).unwrap_or(&[]), filter.get(w_at + c..).unwrap_or(&[]));
                            acc = depthwise_4x3(xs, ws, depth, off, acc).ok_or(OpError::Shape("depthwise input"))?;
                            continue;
                        }
                        let xs = input.get(x_at + c..).unwrap_or(&[]).chunks(depth);
                        let ws = filter.get(w_at + c..).unwrap_or(&[]).chunks(depth);
                        for (x, w) in xs.zip(ws).take(cols.len()) {
                            let (Some(x), Some(w)) = (x.first_chunk::<4>(), w.first_chunk::<4>()) else { break };
                            let (x, w) = (word(x), word(w));
                            let (xl, xh) = (sxtab16(off, x), sxtab16_ror8(off, x));
                            let (wl, wh) = (sxtb16(w), sxtb16_ror8(w));
                            acc[0] = smlabb(xl, wl, acc[0]);
                            acc[1] = smlabb(xh, wh, acc[1]);
                            acc[2] = smlatt(xl, wl, acc[2]);
                            acc[3] = smlatt(xh, wh, acc[3]);
                        }
                    }
                    for (k, a) in acc.into_iter().enumerate() {
                        if let Some(out) = pixel.get_mut(c + k) {
                            *out = requantize(&p.rescale, c + k, a, p.output_offset, p.act);
                        }
                    }
                    c += 4;
                }
                for c in c..depth {
                    let mut acc = bias_of(bias, c);
                    for fy in rows.clone() {
                        let (x_at, w_at) = starts(fy);
                        let xs = input.get(x_at + c..).unwrap_or(&[]).iter().step_by(depth);
                        let ws = filter.get(w_at + c..).unwrap_or(&[]).iter().step_by(depth);
                        for (&x, &w) in xs.zip(ws).take(cols.len()) {
                            acc = acc.wrapping_add(i32::from(w as i8) * (i32::from(x as i8) + p.input_offset));
                        }
                    }
                    if let Some(out) = pixel.get_mut(c) {
                        *out = requantize(&p.rescale, c, acc, p.output_offset, p.act);
                    }
                }
            }
        }
    }
    Ok(())
}

/// FULLY_CONNECTED (the caller checked the lengths).
pub(crate) fn fully_connected(
    p: &FcParams<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    dims: FcDims,
) -> Result<(), OpError> {
    let (input, filter): (&[u8], &[u8]) = (cast_slice(input), cast_slice(filter));
    let FcDims { output_depth, accum_depth, .. } = dims;
    if accum_depth == 0 || output_depth == 0 {
        return Err(OpError::Shape("fully connected dimensions"));
    }
    let row = |o: usize| filter.get(o * accum_depth..(o + 1) * accum_depth).ok_or(OpError::Shape("weights"));
    for (x, out) in input.chunks_exact(accum_depth).zip(output.chunks_exact_mut(output_depth)) {
        let mut o = 0;
        while o < output_depth {
            let second = (o + 1).min(output_depth - 1);
            let mut acc = [bias_of(bias, o), bias_of(bias, second)];
            dot_1x2(x, row(o)?, row(second)?, p.input_offset, &mut acc);
            for (k, a) in acc.into_iter().enumerate().take(output_depth - o) {
                if let Some(y) = out.get_mut(o + k) {
                    *y = requantize(&p.rescale, o + k, a, p.output_offset, p.act);
                }
            }
            o += 2;
        }
    }
    Ok(())
}
