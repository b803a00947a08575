//! Helpers shared by the element-wise kernels' unit tests.

use crate::kernels::OpError;
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

/// The signature of the binary kernels (ADD/SUB, MUL) with their parameters bound.
pub type Binary<'f> = &'f dyn Fn(&[i8], &Shape, &[i8], &Shape, &mut [i8], &Shape) -> Result<(), OpError>;

/// Runs a binary kernel on `a` (shape `sa`) and `b` (shape `sb`) into a fresh output of
/// shape `so`.
pub fn run_binary(
    kernel: Binary<'_>,
    a: &[i8],
    sa: &[usize],
    b: &[i8],
    sb: &[usize],
    so: &[usize],
) -> Result<Vec<i8>, OpError> {
    let so = shape(so);
    let mut out = vec![0; so.elements()];
    kernel(a, &shape(sa), b, &shape(sb), &mut out, &so)?;
    Ok(out)
}
