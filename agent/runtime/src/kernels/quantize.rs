//! QUANTIZE (float32 → int8, and int8 → int8 requantization) and DEQUANTIZE (int8 →
//! float32): the float wrappers converters put around int8 models, with TFLM's rounding
//! (`std::round` of the float quotient; double-precision scale for dequantization).

use super::OpError;
use super::params::check_len;
use crate::arith::{Multiplier, round_f32};
use crate::tensor::Quant;

/// float32 (little-endian bytes) → int8.
pub fn quantize(q: Quant, input: &[u8], output: &mut [i8]) -> Result<(), OpError> {
    check_len(input, output.len() * 4, "quantize input")?;
    for (chunk, o) in input.chunks_exact(4).zip(output.iter_mut()) {
        let x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let v = (round_f32(x / q.scale) as i32).saturating_add(q.zero_point);
        *o = v.clamp(-128, 127) as i8;
    }
    Ok(())
}

/// int8 → float32 (little-endian bytes).
pub fn dequantize(q: Quant, input: &[i8], output: &mut [u8]) -> Result<(), OpError> {
    check_len(output, input.len() * 4, "dequantize output")?;
    let scale = f64::from(q.scale);
    for (&x, chunk) in input.iter().zip(output.chunks_exact_mut(4)) {
        let v = (scale * f64::from(i32::from(x) - q.zero_point)) as f32;
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// int8 → int8 with other quantization (`reference_ops::Requantize`).
pub fn requantize(input_q: Quant, output_q: Quant, input: &[i8], output: &mut [i8]) -> Result<(), OpError> {
    check_len(output, input.len(), "requantize output")?;
    let m = Multiplier::new(f64::from(input_q.scale) / f64::from(output_q.scale));
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        let v = m.apply(i32::from(x) - input_q.zero_point).wrapping_add(output_q.zero_point);
        *o = v.clamp(-128, 127) as i8;
    }
    Ok(())
}
