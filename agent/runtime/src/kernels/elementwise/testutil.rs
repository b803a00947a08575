//! Helpers shared by the element-wise kernels' unit tests.

use crate::tensor::{Quant, Shape};

/// What a test returns, so errors propagate with `?`.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Per-tensor quantization.
pub fn q(scale: f32, zero_point: i32) -> Quant {
    Quant { scale, zero_point }
}

/// A shape (an empty one for ranks the runtime does not take, which the kernels refuse).
pub fn shape(dims: &[usize]) -> Shape {
    Shape::new(dims).unwrap_or_default()
}
