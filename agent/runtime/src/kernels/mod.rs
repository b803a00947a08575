//! int8 kernels with TFLite Micro's reference arithmetic.
//!
//! Each operator has a `prepare` step that checks what it is given and derives its
//! fixed-point parameters exactly as TFLM's `Prepare` does, and an `eval` step over
//! slices. Kernels never allocate; their slices come from the model (constants, read in
//! place from flash) and from the arena (activations).

use core::fmt;

pub mod arg_min_max;
pub mod conv;
pub mod dsp;
pub mod elementwise;
pub mod fully_connected;
pub mod gather;
pub mod params;
pub mod pool;
pub mod quantize;
pub mod resize;
pub mod shape;
pub mod softmax;
pub mod strided_slice;
pub mod transpose_conv;

/// Which implementation of the heavy kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Plain Rust loops, for every target.
    Portable,
    /// Dual 16-bit MAC kernels over the DSP instructions ([`dsp`]); on a target without
    /// them, the same code over their portable definitions (how the host tests it).
    Dsp,
}

impl Engine {
    /// The kernels this target runs: [`Engine::Dsp`] on a DSP core, otherwise
    /// [`Engine::Portable`].
    pub const NATIVE: Self = if cfg!(mota_dsp) { Self::Dsp } else { Self::Portable };
}

/// Why an operator cannot run as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// An input or output has a type the kernel does not take.
    Type(&'static str),
    /// Shapes are inconsistent or of a rank the kernel does not take.
    Shape(&'static str),
    /// Quantization parameters are missing or unusable.
    Quantization(&'static str),
    /// A parameter (option, padding, axis...) the kernel does not support.
    Unsupported(&'static str),
}

impl core::error::Error for OpError {}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Type(what) => write!(f, "unsupported type: {what}"),
            Self::Shape(what) => write!(f, "bad shape: {what}"),
            Self::Quantization(what) => write!(f, "bad quantization: {what}"),
            Self::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

/// Clamps an accumulator into the int8 range given by the fused activation.
#[inline]
pub(crate) fn clamp_i8(x: i32, min: i32, max: i32) -> i8 {
    // min/max lie inside [-128, 127], so the result fits.
    x.clamp(min, max) as i8
}
