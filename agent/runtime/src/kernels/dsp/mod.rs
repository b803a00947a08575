//! Dual-MAC kernels for cores with the DSP extension (Cortex-M4, M7, M33 with DSP).
//!
//! The int8 operands are widened to pairs of 16-bit lanes in registers and multiplied two
//! at a time by `SMLAD` (see [`intrinsics`]). Convolution, in order of preference:
//! - pointwise with stride 1: the input is a pixels × channels matrix, and 2 pixels × 2
//!   output channels are one assembly block ([`conv_2x2`]);
//! - windows of at most 576 bytes (3×3×64): two pixels' windows are gathered side by side
//!   on the stack (padding filled with the input zero point) and run through the same
//!   block;
//! - otherwise, runs of the input per filter row, the zero point added while widening
//!   (`SXTAB16`): 2 × 2 where two neighbours' windows are cut alike, else 1 × 2.
//!
//! The blocks multiply raw bytes: `bias + offset · Σw` is computed once per output
//! channel per layer. A depthwise convolution keeps four channels' accumulators in
//! registers over the window (`SMLABB` / `SMLATT`), a whole 3×3 window in one block;
//! fully connected is the offset-adding dot product, 1 row × 2 outputs.
//!
//! Bytes 0 and 2 of a word land in one register and bytes 1 and 3 in another, for the
//! input and the weights alike, so every lane meets its partner. The sums are the portable
//! kernels' sums in another order: wrapping `i32` addition makes them equal to the bit.

pub mod intrinsics;

use bytemuck::cast_slice;

use self::intrinsics::{
    conv_2x2, depthwise_4x3, depthwise_4x9, smlabb, smlad, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8,
};
use super::conv::{ConvParams, Geometry, taps};
use super::fully_connected::{FcDims, FcParams};
use super::params::{Int32s, Rescale};
use super::{OpError, clamp_i8};
use crate::arith::Multiplier;

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
    if out_depth == 0 || depth == 0 {
        return Err(OpError::Shape("conv channels"));
    }
    if (f_h, f_w, stride_h, stride_w) == (1, 1, 1, 1)
        && p.padding == (0, 0)
        && depth.is_multiple_of(4)
        && let Some(block) = block(depth)
    {
        return pointwise_packed(p, input, filter, bias, output, depth, block);
    }
    if (4..=IM2COL).contains(&filter_size)
        && let Some(block) = block(filter_size)
    {
        return conv_im2col(p, input, filter, bias, output, g, block);
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

/// Whether every output channel's multiplier differs from `i32::MIN`, the one value on
/// which the doubling high multiply saturates: only then do the DSP kernels run (their
/// [`Rescaler`] leaves that case out); TFLM's multipliers never take it, as
/// `Multiplier::new` gives none, but the kernels are public. Checked once per layer.
pub(crate) fn unsaturated(rescale: &Rescale<'_>, channels: usize) -> bool {
    (0..channels).all(|c| rescale.channel(c).multiplier != i32::MIN)
}

/// One output channel's requantization with everything that does not depend on the
/// accumulator worked out once: [`Multiplier::apply`], the output offset and the clamp,
/// for a multiplier other than `i32::MIN` (see [`unsaturated`]).
#[derive(Debug, Clone, Copy)]
struct Rescaler {
    multiplier: i32,
    left: u32,
    right: u32,
    mask: i32,
    offset: i32,
    act: (i32, i32),
}

impl Rescaler {
    fn new(m: Multiplier, p: &ConvParams<'_>) -> Self {
        Self::with(m, p.output_offset, p.act)
    }

    fn with(m: Multiplier, offset: i32, act: (i32, i32)) -> Self {
        let right = (-m.shift).clamp(0, 31) as u32;
        Self {
            multiplier: m.multiplier,
            left: m.shift.clamp(0, 31) as u32,
            right,
            mask: (1u32 << right).wrapping_sub(1) as i32,
            offset,
            act,
        }
    }

    /// The output byte for accumulator `acc` (bias already added). With a multiplier
    /// other than `i32::MIN` the doubling high multiply cannot saturate: the product's
    /// magnitude stays below 2^62, and the result fits 32 bits (a test per output cost
    /// kws_dscnn_v1 4 % of its instructions on the M4).
    #[inline(always)]
    fn apply(self, acc: i32) -> i8 {
        let a = acc.wrapping_shl(self.left);
        let high = ((i64::from(a) * i64::from(self.multiplier) + (1 << 30)) >> 31) as i32;
        let threshold = (self.mask >> 1) + i32::from(high < 0);
        let q = (high >> self.right) + i32::from(high & self.mask > threshold);
        // The clamp bounds lie inside [-128, 127].
        q.wrapping_add(self.offset).max(self.act.0).min(self.act.1) as i8
    }
}

/// A 2 × 2 block (see [`conv_2x2`]) compiled for one run length.
type Block = fn(&[u8], &[u8], usize, [i32; 4]) -> Option<[i32; 4]>;

/// The block whose second pixel and second filter lie `run` bytes after the first, the
/// layout of both the pointwise matrix and the gathered windows, for the lengths models
/// use: channel counts (1×1 filters) and 3×3 windows of 1 to 64 channels.
fn block(run: usize) -> Option<Block> {
    Some(match run {
        8 => conv_2x2::<8, 8>,
        9 => conv_2x2::<9, 9>,
        16 => conv_2x2::<16, 16>,
        24 => conv_2x2::<24, 24>,
        27 => conv_2x2::<27, 27>,
        32 => conv_2x2::<32, 32>,
        40 => conv_2x2::<40, 40>,
        48 => conv_2x2::<48, 48>,
        64 => conv_2x2::<64, 64>,
        72 => conv_2x2::<72, 72>,
        96 => conv_2x2::<96, 96>,
        128 => conv_2x2::<128, 128>,
        144 => conv_2x2::<144, 144>,
        192 => conv_2x2::<192, 192>,
        256 => conv_2x2::<256, 256>,
        288 => conv_2x2::<288, 288>,
        576 => conv_2x2::<576, 576>,
        _ => return None,
    })
}

/// Largest window (`filter height × width × channels`) gathered on the stack.
const IM2COL: usize = 576;

/// Output channels whose `bias + offset · Σw` are kept on the stack at once.
const BASES: usize = 64;

/// CONV_2D over gathered windows: the windows of two output pixels are copied side by
/// side into a stack buffer (padding filled with the input zero point, which adds
/// nothing), then every pair of output channels is one [`Block`] over them, with
/// `bias + offset · Σw` computed once per channel for a chunk of [`BASES`] channels.
fn conv_im2col(
    p: &ConvParams<'_>,
    input: &[u8],
    filter: &[u8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    g: &Geometry,
    block: Block,
) -> Result<(), OpError> {
    let [batches, in_h, in_w, depth] = g.input;
    let [out_depth, f_h, f_w, _] = g.filter;
    let [_, out_h, out_w, _] = g.output;
    let k = f_h * f_w * depth;
    let run = k - k % 4;
    let zero = (p.input_offset.wrapping_neg()) as u8;
    let short = || OpError::Shape("conv input");
    let pixels = batches * out_h * out_w;
    let mut cols = [0u8; 2 * IM2COL];
    // Copies the window of output pixel `i` into `col`.
    let gather = |i: usize, col: &mut [u8]| -> Result<(), OpError> {
        let (batch, oy, ox) = (i / (out_h * out_w), i / out_w % out_h, i % out_w);
        let y0 = (oy * p.stride.0) as isize - p.padding.0 as isize;
        let x0 = (ox * p.stride.1) as isize - p.padding.1 as isize;
        let cols_in = taps(x0, 1, f_w, in_w);
        for (fy, row) in col.chunks_exact_mut(f_w * depth).enumerate() {
            let iy = y0 + fy as isize;
            row.fill(zero);
            if iy < 0 || iy >= in_h as isize || cols_in.is_empty() {
                continue;
            }
            let start = ((batch * in_h + iy as usize) * in_w + (x0 + cols_in.start as isize) as usize) * depth;
            let len = cols_in.len() * depth;
            let src = input.get(start..start + len).ok_or_else(short)?;
            row.get_mut(cols_in.start * depth..cols_in.start * depth + len).ok_or_else(short)?.copy_from_slice(src);
        }
        Ok(())
    };
    let sum = |w: &[u8]| w.iter().fold(0i32, |s, &w| s.wrapping_add(i32::from(w as i8)));
    let dot = |x: &[u8], w: &[u8]| {
        x.iter().zip(w).fold(0i32, |s, (&x, &w)| s.wrapping_add(i32::from(x as i8) * i32::from(w as i8)))
    };
    for first in (0..out_depth).step_by(BASES) {
        let chunk = BASES.min(out_depth - first);
        let mut bases = [0i32; BASES];
        for (c, b) in bases.iter_mut().enumerate().take(chunk) {
            let w = filter.get((first + c) * k..(first + c + 1) * k).ok_or_else(short)?;
            *b = bias_of(bias, first + c).wrapping_add(p.input_offset.wrapping_mul(sum(w)));
        }
        for i in (0..pixels).step_by(2) {
            let second = (i + 1).min(pixels - 1);
            let (c0, c1) = cols.split_at_mut(k);
            gather(i, c0)?;
            gather(second, c1.get_mut(..k).ok_or_else(short)?)?;
            let (x0, x1) = (&cols[..k], &cols[k..2 * k]);
            let mut put = |pixel: usize, oc: usize, r: Rescaler, acc: i32| {
                if let Some(y) = output.get_mut(pixel * out_depth + oc) {
                    *y = r.apply(acc);
                }
            };
            let mut c = 0;
            while c < chunk {
                let oc = first + c;
                if c + 1 < chunk {
                    let w = filter.get(oc * k..(oc + 2) * k).ok_or_else(short)?;
                    let (b0, b1) = (bases[c], bases[c + 1]);
                    let [a00, a01, a10, a11] = block(&cols, w, run, [b0, b1, b0, b1]).ok_or_else(short)?;
                    let (w0, w1) = w.split_at(k);
                    let (t0, t1) = (&w0[run..], &w1[run..]);
                    let (u0, u1) = (&x0[run..], &x1[run..]);
                    let (r0, r1) =
                        (Rescaler::new(p.rescale.channel(oc), p), Rescaler::new(p.rescale.channel(oc + 1), p));
                    put(i, oc, r0, a00.wrapping_add(dot(u0, t0)));
                    put(i, oc + 1, r1, a01.wrapping_add(dot(u0, t1)));
                    if second != i {
                        put(second, oc, r0, a10.wrapping_add(dot(u1, t0)));
                        put(second, oc + 1, r1, a11.wrapping_add(dot(u1, t1)));
                    }
                    c += 2;
                } else {
                    let w = filter.get(oc * k..(oc + 1) * k).ok_or_else(short)?;
                    let r = Rescaler::new(p.rescale.channel(oc), p);
                    put(i, oc, r, bases[c].wrapping_add(dot(x0, w)));
                    if second != i {
                        put(second, oc, r, bases[c].wrapping_add(dot(x1, w)));
                    }
                    c += 1;
                }
            }
        }
    }
    Ok(())
}

/// Pointwise CONV_2D with stride 1: the input is a `pixels × depth` matrix and the filter
/// an `out_depth × depth` one, each row next to the one after it, so a block is one call
/// per pair of pixels and pair of channels, with no window to find.
fn pointwise_packed(
    p: &ConvParams<'_>,
    input: &[u8],
    filter: &[u8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    depth: usize,
    block: Block,
) -> Result<(), OpError> {
    let out_depth = filter.len() / depth;
    let pixels = input.len() / depth;
    let short = || OpError::Shape("conv input");
    let sum = |w: &[u8]| w.iter().fold(0i32, |s, &w| s.wrapping_add(i32::from(w as i8)));
    let base = |oc: usize, w: &[u8]| bias_of(bias, oc).wrapping_add(p.input_offset.wrapping_mul(sum(w)));
    let put = |output: &mut [i8], pixel: usize, oc: usize, m: Rescaler, acc: i32| {
        if let Some(y) = output.get_mut(pixel * out_depth + oc) {
            *y = m.apply(acc);
        }
    };
    let pairs = filter.chunks_exact(2 * depth);
    let last = pairs.remainder();
    for (j, w) in pairs.enumerate() {
        let oc = 2 * j;
        let (w0, w1) = w.split_at(depth);
        let (b0, b1) = (base(oc, w0), base(oc + 1, w1));
        let (m0, m1) = (Rescaler::new(p.rescale.channel(oc), p), Rescaler::new(p.rescale.channel(oc + 1), p));
        let xs = input.chunks_exact(2 * depth);
        let odd = xs.remainder();
        // Each pixel pair's two output rows, from this pair of channels on.
        for (x, y) in xs.zip(output.chunks_exact_mut(2 * out_depth)) {
            let [a00, a01, a10, a11] = block(x, w, depth, [b0, b1, b0, b1]).ok_or_else(short)?;
            let (y0, y1) = y.split_at_mut(out_depth);
            if let (Some([c00, c01]), Some([c10, c11])) = (y0.get_mut(oc..oc + 2), y1.get_mut(oc..oc + 2)) {
                (*c00, *c01, *c10, *c11) = (m0.apply(a00), m1.apply(a01), m0.apply(a10), m1.apply(a11));
            }
        }
        if !odd.is_empty() {
            let mut acc = [bias_of(bias, oc), bias_of(bias, oc + 1)];
            dot_1x2(odd, w0, w1, p.input_offset, &mut acc);
            put(output, pixels - 1, oc, m0, acc[0]);
            put(output, pixels - 1, oc + 1, m1, acc[1]);
        }
    }
    if !last.is_empty() {
        let oc = out_depth - 1;
        let m = Rescaler::new(p.rescale.channel(oc), p);
        for (i, x) in input.chunks_exact(depth).enumerate() {
            let mut acc = [bias_of(bias, oc); 2];
            dot_1x2(x, last, last, p.input_offset, &mut acc);
            put(output, i, oc, m, acc[0]);
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
    let short = || OpError::Shape("depthwise input");
    // Channel groups are the outer loop: each group's biases and requantization are set
    // up once per layer, then every output pixel is visited for the group.
    for c in (0..depth).step_by(4) {
        let group = (depth - c).min(4);
        let rescalers: [Rescaler; 4] = core::array::from_fn(|k| Rescaler::new(p.rescale.channel(c + k), p));
        let biases: [i32; 4] = core::array::from_fn(|k| bias_of(bias, c + k));
        // A whole 3×3 window's accumulators start from `bias + offset · Σw`, so its block
        // multiplies raw bytes.
        let whole: [i32; 4] = core::array::from_fn(|k| {
            let taps = filter.get(c + k..).unwrap_or(&[]).iter().step_by(depth).take(f_h * f_w);
            let sum = taps.fold(0i32, |s, &w| s.wrapping_add(i32::from(w as i8)));
            biases[k].wrapping_add(p.input_offset.wrapping_mul(sum))
        });
        let mut pixel = 0;
        for batch in 0..batches {
            for oy in 0..out_h {
                let y0 = (oy * p.stride.0) as isize - p.padding.0 as isize;
                let rows = taps(y0, 1, f_h, in_h);
                for ox in 0..out_w {
                    let x0 = (ox * p.stride.1) as isize - p.padding.1 as isize;
                    let cols = taps(x0, 1, f_w, in_w);
                    // Where filter row `fy`'s first in-bounds tap reads, in the input and
                    // in the filter, for this group; the next taps are `depth` bytes on.
                    let starts = |fy: usize| {
                        let iy = (y0 + fy as isize) as usize;
                        let ix = (x0 + cols.start as isize) as usize;
                        (((batch * in_h + iy) * in_w + ix) * depth + c, (fy * f_w + cols.start) * depth + c)
                    };
                    let mut acc = biases;
                    if group == 4 && (f_h, f_w) == (3, 3) && rows.len() == 3 && cols.len() == 3 {
                        // A whole 3×3 window: one block.
                        let (x_at, w_at) = starts(0);
                        let (xs, ws) = (input.get(x_at..).unwrap_or(&[]), filter.get(w_at..).unwrap_or(&[]));
                        acc = depthwise_4x9(xs, ws, depth, in_w * depth, whole).ok_or_else(short)?;
                    } else if group == 4 && cols.len() == 3 {
                        // Whole rows (a window cut at the top or bottom, or not 3 high).
                        for fy in rows.clone() {
                            let (x_at, w_at) = starts(fy);
                            let (xs, ws) = (input.get(x_at..).unwrap_or(&[]), filter.get(w_at..).unwrap_or(&[]));
                            acc = depthwise_4x3(xs, ws, depth, off, acc).ok_or_else(short)?;
                        }
                    } else if group == 4 && f_w == 3 && !cols.is_empty() {
                        // A 3-wide window cut by the border: the row's taps are copied
                        // into place (missing ones get zero weights, so they add nothing)
                        // and go through the same block.
                        for fy in rows.clone() {
                            let (x_at, w_at) = starts(fy);
                            let (mut xs, mut ws) = ([0u8; 12], [0u8; 12]);
                            for (t, fx) in cols.clone().enumerate() {
                                let (from_x, from_w) = (x_at + t * depth, w_at + t * depth);
                                let x = input.get(from_x..from_x + 4).ok_or_else(short)?;
                                let w = filter.get(from_w..from_w + 4).ok_or_else(short)?;
                                xs[fx * 4..fx * 4 + 4].copy_from_slice(x);
                                ws[fx * 4..fx * 4 + 4].copy_from_slice(w);
                            }
                            acc = depthwise_4x3(&xs, &ws, 4, off, acc).ok_or_else(short)?;
                        }
                    } else if group == 4 {
                        for fy in rows.clone() {
                            let (x_at, w_at) = starts(fy);
                            let xs = input.get(x_at..).unwrap_or(&[]).chunks(depth);
                            let ws = filter.get(w_at..).unwrap_or(&[]).chunks(depth);
                            for (x, w) in xs.zip(ws).take(cols.len()) {
                                let (Some(x), Some(w)) = (x.first_chunk::<4>(), w.first_chunk::<4>()) else {
                                    return Err(short());
                                };
                                let (x, w) = (word(x), word(w));
                                let (xl, xh) = (sxtab16(off, x), sxtab16_ror8(off, x));
                                let (wl, wh) = (sxtb16(w), sxtb16_ror8(w));
                                acc[0] = smlabb(xl, wl, acc[0]);
                                acc[1] = smlabb(xh, wh, acc[1]);
                                acc[2] = smlatt(xl, wl, acc[2]);
                                acc[3] = smlatt(xh, wh, acc[3]);
                            }
                        }
                    } else {
                        for (k, a) in acc.iter_mut().enumerate().take(group) {
                            for fy in rows.clone() {
                                let (x_at, w_at) = starts(fy);
                                let xs = input.get(x_at + k..).unwrap_or(&[]).iter().step_by(depth);
                                let ws = filter.get(w_at + k..).unwrap_or(&[]).iter().step_by(depth);
                                for (&x, &w) in xs.zip(ws).take(cols.len()) {
                                    *a = a.wrapping_add(i32::from(w as i8) * (i32::from(x as i8) + p.input_offset));
                                }
                            }
                        }
                    }
                    let out = output.get_mut(pixel * depth + c..pixel * depth + c + group).ok_or_else(short)?;
                    for ((y, a), r) in out.iter_mut().zip(acc).zip(rescalers) {
                        *y = r.apply(a);
                    }
                    pixel += 1;
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
                    *y = Rescaler::with(p.rescale.channel(o + k), p.output_offset, p.act).apply(a);
                }
            }
            o += 2;
        }
    }
    Ok(())
}
