//! int8 (and 16x8: int16 activations, int8 weights) kernels with TFLite Micro's reference
//! arithmetic.
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
pub mod wide;

/// The codes of a quantized activation tensor: `i8`, `u8`, or [`I16`] for int16.
///
/// Kernels generic over it read and write the codes of any of those types with the same
/// arithmetic; only the range and the byte layout differ.
pub trait Code: Copy + bytemuck::Pod + Default {
    /// The smallest code.
    const MIN: i32;
    /// The largest code.
    const MAX: i32;
    /// The code's value.
    fn value(self) -> i32;
    /// The code for `v`, clamped into `MIN..=MAX`.
    fn clamped(v: i32) -> Self;
}

/// An int16 code as stored: two little-endian bytes, so a tensor of them is a view of
/// any byte slice whatever its alignment (arenas and flatbuffers promise none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct I16(pub [u8; 2]);

impl Code for i8 {
    const MIN: i32 = i8::MIN as i32;
    const MAX: i32 = i8::MAX as i32;
    #[inline(always)]
    fn value(self) -> i32 {
        i32::from(self)
    }
    #[inline(always)]
    fn clamped(v: i32) -> Self {
        v.clamp(<Self as Code>::MIN, <Self as Code>::MAX) as i8
    }
}

impl Code for u8 {
    const MIN: i32 = u8::MIN as i32;
    const MAX: i32 = u8::MAX as i32;
    #[inline(always)]
    fn value(self) -> i32 {
        i32::from(self)
    }
    #[inline(always)]
    fn clamped(v: i32) -> Self {
        v.clamp(<Self as Code>::MIN, <Self as Code>::MAX) as u8
    }
}

impl Code for I16 {
    const MIN: i32 = i16::MIN as i32;
    const MAX: i32 = i16::MAX as i32;
    #[inline(always)]
    fn value(self) -> i32 {
        i32::from(i16::from_le_bytes(self.0))
    }
    #[inline(always)]
    fn clamped(v: i32) -> Self {
        Self((v.clamp(<Self as Code>::MIN, <Self as Code>::MAX) as i16).to_le_bytes())
    }
}

/// A byte slice as codes (`None` when its length is not a whole number of codes).
pub fn codes<C: Code>(bytes: &[u8]) -> Option<&[C]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// A mutable byte slice as codes.
pub fn codes_mut<C: Code>(bytes: &mut [u8]) -> Option<&mut [C]> {
    bytemuck::try_cast_slice_mut(bytes).ok()
}

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
