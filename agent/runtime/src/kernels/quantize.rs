//! QUANTIZE (float32 → int8, uint8 or int16, and requantization between those integer
//! types) and DEQUANTIZE (int8, uint8 or int16 → float32): the wrappers converters put
//! around integer models, with TFLM's rounding (`std::round` of the float quotient;
//! double-precision scale for dequantization; `reference_ops::Requantize` otherwise).

use super::params::check_len;
use super::{Code, OpError};
use crate::arith::{Multiplier, round_f32};
use crate::tensor::Quant;

/// float32 (little-endian bytes) → codes (`AffineQuantize`).
pub fn quantize<C: Code>(q: Quant, input: &[u8], output: &mut [C]) -> Result<(), OpError> {
    check_len(input, output.len() * 4, "quantize input")?;
    for (chunk, o) in input.chunks_exact(4).zip(output.iter_mut()) {
        let x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        *o = C::clamped((round_f32(x / q.scale) as i32).saturating_add(q.zero_point));
    }
    Ok(())
}

/// Codes → float32 (little-endian bytes).
pub fn dequantize<C: Code>(q: Quant, input: &[C], output: &mut [u8]) -> Result<(), OpError> {
    check_len(output, input.len() * 4, "dequantize output")?;
    let scale = f64::from(q.scale);
    for (&x, chunk) in input.iter().zip(output.chunks_exact_mut(4)) {
        let v = (scale * f64::from(x.value() - q.zero_point)) as f32;
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// Codes → codes of the same or another integer type with other quantization
/// (`reference_ops::Requantize`; its int8 ↔ uint8 shortcut gives the same codes).
pub fn requantize<A: Code, B: Code>(
    input_q: Quant,
    output_q: Quant,
    input: &[A],
    output: &mut [B],
) -> Result<(), OpError> {
    check_len(output, input.len(), "requantize output")?;
    let m = Multiplier::new(f64::from(input_q.scale) / f64::from(output_q.scale));
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = B::clamped(m.apply(x.value() - input_q.zero_point).wrapping_add(output_q.zero_point));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::I16;

    fn q(scale: f32, zero_point: i32) -> Quant {
        Quant { scale, zero_point }
    }

    #[test]
    fn uint8_and_int8_differ_by_128_at_the_same_scale() -> Result<(), OpError> {
        let mut signed = [0i8; 4];
        requantize(q(0.5, 128), q(0.5, 0), &[0u8, 127, 128, 255], &mut signed)?;
        assert_eq!(signed, [-128, -1, 0, 127]);
        let mut unsigned = [0u8; 4];
        requantize(q(0.5, 0), q(0.5, 128), &signed, &mut unsigned)?;
        assert_eq!(unsigned, [0, 127, 128, 255]);
        Ok(())
    }

    #[test]
    fn int16_round_trips_through_float() -> Result<(), OpError> {
        let floats: Vec<u8> = [0.5f32, -1.25, 100.0, -100.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let mut codes = [I16::default(); 4];
        quantize(q(0.0025, 0), &floats, &mut codes)?;
        assert_eq!(codes.map(|c| c.value()), [200, -500, 32767, -32768]);
        let mut back = [0u8; 16];
        dequantize(q(0.0025, 0), &codes[..2], &mut back[..8])?;
        assert_eq!(f32::from_le_bytes([back[0], back[1], back[2], back[3]]), 0.5);
        assert!(quantize(q(1.0, 0), &floats[..4], &mut codes).is_err());
        Ok(())
    }
}
