//! FULLY_CONNECTED, int8: TFLite's `reference_integer_ops::FullyConnected` (per-tensor
//! weights) and `FullyConnectedPerChannel`. Any input rank: the input is read as
//! `batches × accum_depth`, which is how TFLM treats the 4-D inputs current converters
//! feed it without a RESHAPE.

use super::params::{Int32s, Rescale};
use super::{Engine, OpError, clamp_i8, dsp};

/// Quantization of a fully connected layer.
#[derive(Debug, Clone, Copy)]
pub struct FcParams<'a> {
    /// `-input_zero_point`.
    pub input_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Fused activation clamp.
    pub act: (i32, i32),
    /// Accumulator rescaling.
    pub rescale: Rescale<'a>,
}

/// The matrix sizes: `batches × accum_depth` in, `output_depth × accum_depth` weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FcDims {
    /// Rows of the input.
    pub batches: usize,
    /// Output channels.
    pub output_depth: usize,
    /// Inputs per output.
    pub accum_depth: usize,
}

impl FcDims {
    /// Checks that the input, weights and output hold exactly these sizes' elements.
    pub(crate) fn check(&self, input: usize, filter: usize, output: usize) -> Result<(), OpError> {
        let Self { batches, output_depth, accum_depth } = *self;
        if input != batches * accum_depth {
            return Err(OpError::Shape("fully connected input"));
        }
        if filter != output_depth * accum_depth {
            return Err(OpError::Shape("fully connected weights"));
        }
        if output != batches * output_depth {
            return Err(OpError::Shape("fully connected output"));
        }
        Ok(())
    }
}

/// `output[b][o] = Σ_d filter[o][d] × (input[b][d] + input_offset) + bias[o]`, rescaled, on
/// this target's kernels.
pub fn fully_connected(
    p: &FcParams<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    dims: FcDims,
) -> Result<(), OpError> {
    fully_connected_on(Engine::NATIVE, p, input, filter, bias, output, dims)
}

/// [`fully_connected`] on the given kernels.
pub fn fully_connected_on(
    engine: Engine,
    p: &FcParams<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<Int32s<'_>>,
    output: &mut [i8],
    dims: FcDims,
) -> Result<(), OpError> {
    dims.check(input.len(), filter.len(), output.len())?;
    let FcDims { batches, output_depth, accum_depth } = dims;
    if engine == Engine::Dsp && dsp::unsaturated(&p.rescale, output_depth) {
        return dsp::fully_connected(p, input, filter, bias, output, dims);
    }
    // Σ w·(x + offset) = Σ w·x + offset·Σ w, exactly, in wrapping i32 arithmetic: the two
    // plain sums vectorise where the original product does not.
    for o in 0..output_depth {
        let m = p.rescale.channel(o);
        let b = bias.map_or(0, |b| b.get(o));
        let weights = &filter[o * accum_depth..(o + 1) * accum_depth];
        let weight_sum = weights.iter().fold(0i32, |s, &w| s.wrapping_add(i32::from(w)));
        let offset_term = weight_sum.wrapping_mul(p.input_offset);
        for batch in 0..batches {
            let row = &input[batch * accum_depth..(batch + 1) * accum_depth];
            let dot = row.iter().zip(weights).fold(0i32, |s, (&x, &w)| s.wrapping_add(i32::from(w) * i32::from(x)));
            let acc = m.apply(dot.wrapping_add(offset_term).wrapping_add(b)).wrapping_add(p.output_offset);
            output[batch * output_depth + o] = clamp_i8(acc, p.act.0, p.act.1);
        }
    }
    Ok(())
}
