//! The DSP kernels against the portable ones on random shapes, quantizations and data:
//! every output byte equal. On the host the DSP kernels run over the instructions'
//! portable definitions; `mota-firmware`'s `dsp-check` compares those definitions with the
//! instructions themselves on a Cortex-M4.

use mota_runtime::arith::Multiplier;
use mota_runtime::kernels::Engine;
use mota_runtime::kernels::conv::{self, ConvParams, View4};
use mota_runtime::kernels::fully_connected::{self, FcDims, FcParams};
use mota_runtime::kernels::params::{Int32s, Rescale, Scales};
use proptest::prelude::*;

/// Deterministic bytes from a seed (xorshift).
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn int8(seed: u64, n: usize) -> Vec<i8> {
    bytes(seed, n).into_iter().map(|b| b as i8).collect()
}

/// Biases in ±2^20 (an int8 × int8 layer's range), as little-endian bytes.
fn biases(seed: u64, n: usize) -> Vec<u8> {
    bytes(seed, n * 4)
        .chunks_exact(4)
        .flat_map(|b| (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 11).to_le_bytes())
        .collect()
}

/// Per-channel filter scales between 2^-12 and 2^-4.
fn scales(seed: u64, n: usize) -> Vec<u8> {
    bytes(seed, n).into_iter().flat_map(|b| (2f32.powi(-12) * (1.0 + f32::from(b) / 16.0)).to_le_bytes()).collect()
}

#[derive(Debug, Clone)]
struct Case {
    input: [usize; 4],
    filter: (usize, usize),
    out_depth: usize,
    stride: (usize, usize),
    padding: (usize, usize),
    input_offset: i32,
    output_offset: i32,
    act: (i32, i32),
    per_tensor: bool,
    bias: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 1usize..10, 1usize..10, 1usize..14),
        (1usize..5, 1usize..5),
        1usize..10,
        (1usize..4, 1usize..4),
        (0usize..4, 0usize..4),
        (-127i32..=128, -128i32..=127),
        (-128i32..=0, 0i32..=127),
        any::<(bool, bool, u64)>(),
    )
        .prop_map(|((n, h, w, c), filter, out_depth, stride, pad, (io, oo), act, (per_tensor, bias, seed))| Case {
            input: [n, h, w, c],
            padding: (pad.0.min(filter.0 - 1), pad.1.min(filter.1 - 1)),
            filter,
            out_depth,
            stride,
            input_offset: io,
            output_offset: oo,
            act,
            per_tensor,
            bias,
            seed,
        })
}

impl Case {
    fn output(&self, depth: usize) -> Option<[usize; 4]> {
        let [n, h, w, _] = self.input;
        let size = |i: usize, f: usize, p: usize, s: usize| (i + 2 * p).checked_sub(f).map(|d| d / s + 1);
        Some([
            n,
            size(h, self.filter.0, self.padding.0, self.stride.0)?,
            size(w, self.filter.1, self.padding.1, self.stride.1)?,
            depth,
        ])
    }

    fn params<'a>(&self, scales: &'a [u8]) -> ConvParams<'a> {
        ConvParams {
            stride: self.stride,
            dilation: (1, 1),
            padding: self.padding,
            input_offset: self.input_offset,
            output_offset: self.output_offset,
            act: self.act,
            rescale: self.rescale(scales),
            depth_multiplier: 1,
        }
    }

    fn rescale<'a>(&self, scales: &'a [u8]) -> Rescale<'a> {
        if self.per_tensor {
            Rescale::PerTensor(Multiplier::new(f64::from(Scales(scales).get(0)) * 3.0))
        } else {
            Rescale::PerChannel { input: 0.5, output: 0.125, filter: Scales(scales) }
        }
    }
}

type Conv = fn(
    Engine,
    &ConvParams<'_>,
    View4<'_>,
    View4<'_>,
    Option<Int32s<'_>>,
    &mut [i8],
    [usize; 4],
) -> Result<(), mota_runtime::kernels::OpError>;

type Outputs = Result<Vec<i8>, mota_runtime::kernels::OpError>;

/// Runs `kernel` on both engines; returns the two outputs (or `None` for a geometry
/// without output).
fn both(kernel: Conv, c: &Case, filter_shape: [usize; 4], out_depth: usize) -> Option<(Outputs, Outputs)> {
    let out_shape = c.output(out_depth)?;
    let input = int8(c.seed, c.input.iter().product());
    let filter = int8(c.seed ^ 1, filter_shape.iter().product());
    let bias = biases(c.seed ^ 2, out_depth);
    let scales = scales(c.seed ^ 3, out_depth);
    let p = c.params(&scales);
    let run = |engine| {
        let mut out = vec![0i8; out_shape.iter().product()];
        let bias = c.bias.then_some(Int32s(&bias));
        let (x, w) = (View4 { data: &input, shape: c.input }, View4 { data: &filter, shape: filter_shape });
        kernel(engine, &p, x, w, bias, &mut out, out_shape).map(|()| out)
    };
    Some((run(Engine::Portable), run(Engine::Dsp)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_is_bit_exact(c in case()) {
        let filter_shape = [c.out_depth, c.filter.0, c.filter.1, c.input[3]];
        if let Some((portable, dsp)) = both(conv::conv2d_on, &c, filter_shape, c.out_depth) {
            prop_assert!(portable.is_ok());
            prop_assert_eq!(portable, dsp);
        }
    }

    /// The shapes the assembly blocks take (1×1 and 3×3 filters, stride 1, windows of 9,
    /// 27, 72 or 144 bytes, 8 or 16 channels), which random shapes rarely hit.
    #[test]
    fn conv2d_blocks_are_bit_exact(c in case(), depth in prop_oneof![Just(1usize), Just(3), Just(8), Just(9), Just(16)], three in any::<bool>()) {
        let f = if three { 3 } else { 1 };
        let c = Case { input: [c.input[0], c.input[1], c.input[2], depth], filter: (f, f), stride: (1, 1), padding: (c.padding.0 % f, c.padding.1 % f), ..c };
        let filter_shape = [c.out_depth, f, f, depth];
        if let Some((portable, dsp)) = both(conv::conv2d_on, &c, filter_shape, c.out_depth) {
            prop_assert!(portable.is_ok());
            prop_assert_eq!(portable, dsp);
        }
    }

    /// 3×3 depthwise on whole groups of four channels (the assembly block, inside and on
    /// the border), any stride and padding.
    #[test]
    fn depthwise_blocks_are_bit_exact(c in case(), groups in 1usize..4) {
        let depth = 4 * groups;
        let c = Case { input: [c.input[0], c.input[1], c.input[2], depth], filter: (3, 3), padding: (c.padding.0 % 3, c.padding.1 % 3), ..c };
        if let Some((portable, dsp)) = both(conv::depthwise_conv2d_on, &c, [1, 3, 3, depth], depth) {
            prop_assert!(portable.is_ok());
            prop_assert_eq!(portable, dsp);
        }
    }

    #[test]
    fn depthwise_is_bit_exact(c in case()) {
        let depth = c.input[3];
        let filter_shape = [1, c.filter.0, c.filter.1, depth];
        if let Some((portable, dsp)) = both(conv::depthwise_conv2d_on, &c, filter_shape, depth) {
            prop_assert!(portable.is_ok());
            prop_assert_eq!(portable, dsp);
        }
    }

    #[test]
    fn fully_connected_is_bit_exact(
        batches in 1usize..4,
        output_depth in 1usize..12,
        accum_depth in 1usize..70,
        c in case(),
    ) {
        let dims = FcDims { batches, output_depth, accum_depth };
        let input = int8(c.seed, batches * accum_depth);
        let filter = int8(c.seed ^ 1, output_depth * accum_depth);
        let bias = biases(c.seed ^ 2, output_depth);
        let scales = scales(c.seed ^ 3, output_depth);
        let p = FcParams {
            input_offset: c.input_offset,
            output_offset: c.output_offset,
            act: c.act,
            rescale: c.rescale(&scales),
        };
        let run = |engine| {
            let mut out = vec![0i8; batches * output_depth];
            let bias = c.bias.then_some(Int32s(&bias));
            fully_connected::fully_connected_on(engine, &p, &input, &filter, bias, &mut out, dims).map(|()| out)
        };
        let portable = run(Engine::Portable);
        prop_assert!(portable.is_ok());
        prop_assert_eq!(portable, run(Engine::Dsp));
    }
}

/// A multiplier of `i32::MIN` saturates the doubling high multiply at an accumulator of
/// `i32::MIN`; the DSP kernels leave that case to the portable ones, so the bytes agree:
/// −1.0 × −2^31 saturates to 2^31 − 1, which clamps to 127 (the unchecked product would
/// wrap to −2^31 and clamp to −128).
#[test]
fn a_saturating_multiplier_runs_exactly() {
    let m = Multiplier { multiplier: i32::MIN, shift: 0 };
    let bias = i32::MIN.to_le_bytes().repeat(4);
    let p = ConvParams {
        stride: (1, 1),
        dilation: (1, 1),
        padding: (0, 0),
        input_offset: 0,
        output_offset: 0,
        act: (-128, 127),
        rescale: Rescale::PerTensor(m),
        depth_multiplier: 1,
    };
    let (input, filter) = ([0i8; 4 * 4], [0i8; 4 * 4]);
    for engine in [Engine::Portable, Engine::Dsp] {
        let mut out = [0i8; 4];
        let x = View4 { data: &input, shape: [1, 1, 1, 16] };
        let w = View4 { data: &filter, shape: [4, 1, 1, 4] };
        conv::conv2d_on(
            engine,
            &p,
            View4 { data: &input[..4], shape: [1, 1, 1, 4] },
            w,
            Some(Int32s(&bias)),
            &mut out,
            [1, 1, 1, 4],
        )
        .unwrap();
        assert_eq!(out, [127; 4], "conv {engine:?}");
        let dw = View4 { data: &filter[..4], shape: [1, 1, 1, 4] };
        conv::depthwise_conv2d_on(
            engine,
            &p,
            View4 { data: &input[..4], shape: [1, 1, 1, 4] },
            dw,
            Some(Int32s(&bias)),
            &mut out,
            [1, 1, 1, 4],
        )
        .unwrap();
        assert_eq!(out, [127; 4], "depthwise {engine:?}");
        let fc = FcParams { input_offset: 0, output_offset: 0, act: (-128, 127), rescale: Rescale::PerTensor(m) };
        let dims = FcDims { batches: 1, output_depth: 4, accum_depth: 16 };
        fully_connected::fully_connected_on(
            engine,
            &fc,
            x.data,
            &filter.repeat(4),
            Some(Int32s(&bias)),
            &mut out,
            dims,
        )
        .unwrap();
        assert_eq!(out, [127; 4], "fully connected {engine:?}");
    }
}
