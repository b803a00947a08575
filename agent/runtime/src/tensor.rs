//! Shapes, quantization parameters and fused activations: the vocabulary kernels share.

use crate::arith::round_f32;

/// Highest tensor rank the runtime accepts.
pub const MAX_RANK: usize = 5;

/// A tensor shape of rank 0 to [`MAX_RANK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// A shape from its dimensions, or `None` when the rank exceeds [`MAX_RANK`].
    pub fn new(dims: &[usize]) -> Option<Self> {
        let mut shape = Self { dims: [0; MAX_RANK], rank: dims.len() };
        shape.dims.get_mut(..dims.len())?.copy_from_slice(dims);
        Some(shape)
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Dimension `i` (1 when out of range, so a lower-rank shape reads as broadcast).
    pub fn dim(&self, i: usize) -> usize {
        if i < self.rank { self.dims[i] } else { 1 }
    }

    /// The number of elements (checked when the model was verified to fit `usize`).
    pub fn elements(&self) -> usize {
        self.dims().iter().product()
    }

    /// The shape right-aligned into 4 dimensions (`[1, 1, a, b]` for `[a, b]`), as TFLite's
    /// `RuntimeShape::ExtendedShape(4, ...)`; `None` above rank 4.
    pub fn extended4(&self) -> Option<[usize; 4]> {
        if self.rank > 4 {
            return None;
        }
        let mut out = [1; 4];
        out[4 - self.rank..].copy_from_slice(self.dims());
        Some(out)
    }
}

/// Per-tensor affine quantization: `real = scale × (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

/// A fused activation function, as in TFLite's `ActivationFunctionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None.
    None,
    /// max(0, x).
    Relu,
    /// clamp(x, -1, 1).
    ReluN1To1,
    /// clamp(x, 0, 6).
    Relu6,
}

impl Activation {
    /// From the schema's enum value; TANH and SIGN_BIT fusions are not supported.
    pub fn from_schema(value: i8) -> Option<Self> {
        match value {
            0 => Some(Self::None),
            1 => Some(Self::Relu),
            2 => Some(Self::ReluN1To1),
            3 => Some(Self::Relu6),
            _ => None,
        }
    }

    /// The clamp range in the int8 output domain (`CalculateActivationRangeQuantized`).
    pub fn range_i8(self, output: Quant) -> (i32, i32) {
        self.range(output, (i32::from(i8::MIN), i32::from(i8::MAX)))
    }

    /// The clamp range for an output whose codes span `codes` (`CalculateActivationRangeQuantized`).
    pub fn range(self, output: Quant, codes: (i32, i32)) -> (i32, i32) {
        let (qmin, qmax) = codes;
        let quantize = |f: f32| output.zero_point.saturating_add(round_f32(f / output.scale) as i32);
        match self {
            Self::None => (qmin, qmax),
            Self::Relu => (qmin.max(quantize(0.0)), qmax),
            Self::Relu6 => (qmin.max(quantize(0.0)), qmax.min(quantize(6.0))),
            Self::ReluN1To1 => (qmin.max(quantize(-1.0)), qmax.min(quantize(1.0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = Shape::new(&[2, 3]).unwrap_or_default();
        assert_eq!(s.elements(), 6);
        assert_eq!(s.extended4(), Some([1, 1, 2, 3]));
        assert_eq!(s.dim(5), 1);
        assert!(Shape::new(&[1; MAX_RANK + 1]).is_none());
    }

    #[test]
    fn activation_ranges() {
        let q = Quant { scale: 0.05, zero_point: -10 };
        assert_eq!(Activation::None.range_i8(q), (-128, 127));
        assert_eq!(Activation::Relu.range_i8(q), (-10, 127));
        assert_eq!(Activation::Relu6.range_i8(q), (-10, 110));
        assert_eq!(Activation::ReluN1To1.range_i8(q), (-30, 10));
    }
}
