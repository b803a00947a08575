//! Constant operands read in place from the model: per-channel scales and int32 biases
//! are little-endian arrays inside the flatbuffer, possibly unaligned in flash, so they
//! are read element by element rather than cast.

use super::OpError;
use crate::arith::Multiplier;

/// A little-endian `f32` array in the model.
#[derive(Debug, Clone, Copy)]
pub struct Scales<'a>(pub &'a [u8]);

impl Scales<'_> {
    /// Number of scales.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scale `i` (the last one again past the end, so one scale serves every channel).
    pub fn get(&self, i: usize) -> f32 {
        let i = i.min(self.len().saturating_sub(1));
        match self.0.get(i * 4..i * 4 + 4) {
            Some(b) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0.0,
        }
    }
}

/// A little-endian `i32` array in the model (biases).
#[derive(Debug, Clone, Copy)]
pub struct Int32s<'a>(pub &'a [u8]);

impl Int32s<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`, or 0 past the end.
    #[inline(always)]
    pub fn get(&self, i: usize) -> i32 {
        match self.0.get(i * 4..i * 4 + 4) {
            Some(b) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }
}

/// A little-endian `i64` array in the model (biases of 16x8 layers).
#[derive(Debug, Clone, Copy)]
pub struct Int64s<'a>(pub &'a [u8]);

impl Int64s<'_> {
    /// Value `i`, or 0 past the end.
    #[inline(always)]
    pub fn get(&self, i: usize) -> i64 {
        match self.0.get(i * 8..i * 8 + 8) {
            Some(b) => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => 0,
        }
    }
}

/// The bias of a 16x8 layer: TFLM takes int32 or int64 biases there.
#[derive(Debug, Clone, Copy)]
pub enum WideBias<'a> {
    /// No bias.
    None,
    /// int32 biases.
    I32(Int32s<'a>),
    /// int64 biases.
    I64(Int64s<'a>),
}

impl WideBias<'_> {
    /// The bias of channel `c` (0 without one).
    #[inline(always)]
    pub fn get(&self, c: usize) -> i64 {
        match self {
            Self::None => 0,
            Self::I32(b) => i64::from(b.get(c)),
            Self::I64(b) => b.get(c),
        }
    }
}

/// How a convolution-like operator rescales its accumulators to the output.
#[derive(Debug, Clone, Copy)]
pub enum Rescale<'a> {
    /// One multiplier for every channel.
    PerTensor(Multiplier),
    /// One multiplier per output channel, from `input × filter[c] / output` in double
    /// precision (`PopulateConvolutionQuantizationParams`).
    PerChannel {
        /// Input scale.
        input: f32,
        /// Output scale.
        output: f32,
        /// Filter scales, one per output channel (or one for all).
        filter: Scales<'a>,
    },
    /// One multiplier per output channel, computed once into the arena.
    Table(ChannelTable<'a>),
}

/// Bytes per precomputed channel multiplier: the Q31 mantissa (i32) and the shift (i8).
pub const CHANNEL_ENTRY: usize = 5;

/// Per-channel multipliers precomputed into the arena (`CHANNEL_ENTRY` bytes each).
#[derive(Debug, Clone, Copy)]
pub struct ChannelTable<'a>(pub &'a [u8]);

impl ChannelTable<'_> {
    /// The multiplier of channel `c` (zero past the end).
    #[inline(always)]
    pub fn get(&self, c: usize) -> Multiplier {
        match self.0.get(c * CHANNEL_ENTRY..c * CHANNEL_ENTRY + CHANNEL_ENTRY) {
            Some(e) => {
                Multiplier { multiplier: i32::from_le_bytes([e[0], e[1], e[2], e[3]]), shift: i32::from(e[4] as i8) }
            }
            None => Multiplier::default(),
        }
    }
}

impl Rescale<'_> {
    /// Writes the multiplier of every channel into `table` (`CHANNEL_ENTRY` bytes each).
    pub fn fill(&self, table: &mut [u8]) {
        for (c, e) in table.chunks_exact_mut(CHANNEL_ENTRY).enumerate() {
            let m = self.channel(c);
            e[..4].copy_from_slice(&m.multiplier.to_le_bytes());
            e[4] = m.shift.clamp(-128, 127) as i8 as u8;
        }
    }

    /// The multiplier of output channel `c`.
    #[inline(always)]
    pub fn channel(&self, c: usize) -> Multiplier {
        match *self {
            Self::PerTensor(m) => m,
            Self::Table(t) => t.get(c),
            Self::PerChannel { input, output, filter } => {
                Multiplier::new(f64::from(input) * f64::from(filter.get(c)) / f64::from(output))
            }
        }
    }
}

/// Checks that `slice` holds exactly `expected` elements.
pub(crate) fn check_len<T>(slice: &[T], expected: usize, what: &'static str) -> Result<(), OpError> {
    if slice.len() == expected { Ok(()) } else { Err(OpError::Shape(what)) }
}
