//! AVERAGE_POOL_2D and MAX_POOL_2D, int8: TFLite's `reference_integer_ops::AveragePool`
//! (sum rounded half away from zero by the count of in-bounds elements) and `MaxPool`.

use super::params::check_len;
use super::{OpError, clamp_i8};

/// Window geometry.
#[derive(Debug, Clone, Copy)]
pub struct PoolParams {
    /// Window (height, width).
    pub filter: (usize, usize),
    /// Stride (height, width).
    pub stride: (usize, usize),
    /// Padding before the first row and column (height, width).
    pub padding: (usize, usize),
    /// Fused activation clamp.
    pub act: (i32, i32),
}

/// Which pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Average.
    Average,
    /// Maximum.
    Max,
}

/// NHWC in and out.
pub fn pool(
    kind: PoolKind,
    p: &PoolParams,
    input: &[i8],
    input_shape: [usize; 4],
    output: &mut [i8],
    output_shape: [usize; 4],
) -> Result<(), OpError> {
    let [batches, in_h, in_w, depth] = input_shape;
    let [_, out_h, out_w, _] = output_shape;
    check_len(input, input_shape.iter().product(), "pool input")?;
    check_len(output, output_shape.iter().product(), "pool output")?;
    if output_shape[0] != batches || output_shape[3] != depth {
        return Err(OpError::Shape("pool channels"));
    }
    for batch in 0..batches {
        for oy in 0..out_h {
            let y0 = (oy * p.stride.0) as isize - p.padding.0 as isize;
            let fy_start = (-y0).max(0) as usize;
            let fy_end = (in_h as isize - y0).clamp(0, p.filter.0 as isize) as usize;
            for ox in 0..out_w {
                let x0 = (ox * p.stride.1) as isize - p.padding.1 as isize;
                let fx_start = (-x0).max(0) as usize;
                let fx_end = (in_w as isize - x0).clamp(0, p.filter.1 as isize) as usize;
                for c in 0..depth {
                    let mut sum: i32 = 0;
                    let mut max = i32::from(i8::MIN);
                    let mut count: i32 = 0;
                    for fy in fy_start..fy_end {
                        let iy = (y0 + fy as isize) as usize;
                        for fx in fx_start..fx_end {
                            let ix = (x0 + fx as isize) as usize;
                            let v = i32::from(input[((batch * in_h + iy) * in_w + ix) * depth + c]);
                            sum += v;
                            max = max.max(v);
                            count += 1;
                        }
                    }
                    let value = match kind {
                        PoolKind::Max => max,
                        PoolKind::Average => {
                            if count == 0 {
                                return Err(OpError::Shape("empty pooling window"));
                            }
                            if sum > 0 { (sum + count / 2) / count } else { (sum - count / 2) / count }
                        }
                    };
                    output[((batch * out_h + oy) * out_w + ox) * depth + c] = clamp_i8(value, p.act.0, p.act.1);
                }
            }
        }
    }
    Ok(())
}
