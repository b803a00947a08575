//! The patch format, version 2 (codec 1). All integers little-endian.
//!
//! ```text
//! header (80 bytes)
//!   0  4  magic "MDLT"
//!   4  1  format version = 2
//!   5  1  codec = 1
//!   6  2  block size: output bytes per block (the last block may be shorter), ≤ 4096;
//!         the block count is the target size divided by it, rounded up
//!   8  4  target size
//!  12  4  base size (0: a full-image patch, no base is read)
//!  16 32  base sha256 (zeros for a full-image patch)
//!  48 32  target sha256
//! blocks, in output order
//!   0  2  bits 0-12: payload length (≤ 4096; 0 for copied); bits 13-15: mode (0 coded,
//!         1 stored, 2 copied)
//!   2  …  payload: the block's output bytes (stored) or its coded operations (coded)
//! ```
//!
//! A copied block is the base from the base cursor on (an unchanged stretch costs its 2
//! header bytes). A coded block is one range-coder stream (`rc`), its probabilities reset
//! at the block's start, holding operations until the block's output is complete. Each
//! operation is a `kind` (up to three adaptive bits, each with the previous kind as
//! context: ADD or not, EXTRA or a word kind, ADD32 or SCALED), a `count` (gamma,
//! per-kind contexts; bytes for ADD and EXTRA, 32-bit words for ADD32 and SCALED), then:
//!
//! - ADD: a base seek (zig-zag, gamma) relative to the base cursor, and `count`
//!   difference bytes (`new − base` as a signed byte: zero flag with the previous
//!   difference's zero-ness as context, sign with the base byte's sign as context, unary
//!   magnitude up to 8, then a 7-bit tree). The zero, sign and unary probabilities are
//!   [`crate::rc::Mixed`]: a fast and a slow estimate averaged.
//! - EXTRA: `count` literal bytes (bit tree).
//! - ADD32: a base seek, a multiplier flag (adaptive bit) and, if set, a multiplier `k`
//!   (zig-zag offset from [`ONE`], gamma), then `count` differences of little-endian
//!   32-bit words from their prediction (`new − base`, or `new − `[`multiply`]`(base, k)`,
//!   wrapping; [`crate::rc::WordModel`]): float32 quantization scales and int32 biases
//!   move by amounts whose bit length is stable and whose low bits are noise, which
//!   bytewise differences code badly, and a fine-tune's int32 biases partly scale
//!   together. Its first [`HISTORY`] output words become the block's history.
//! - SCALED: a 32-bit `factor` (direct bits), and `count` ≤ history length words, word
//!   `k` being [`scaled`]`(history[k], factor)` plus a residual (a second `WordModel`).
//!   A per-channel bias scale vector is exactly the float32 product of the input scale and
//!   the weight scales, which TFLite stores just before it. The base cursor advances by
//!   `4 × count`, as if the base's words there had been read.
//!
//! Operations never cross a block boundary, and blocks share nothing but the base
//! cursor (the history too starts empty in every block), so a decoder can resume at any
//! block from a 28-byte checkpoint. The encoder tries block sizes from 2 to 4 KiB and
//! keeps the smallest patch: where blocks start decides which scale vectors share one.

/// Magic bytes.
pub const MAGIC: &[u8; 4] = b"MDLT";
/// Format version.
pub const VERSION: u8 = 2;
/// The only codec: block-coded ADD/EXTRA operations under an adaptive range coder.
pub const CODEC: u8 = 1;
/// Header length.
pub const HEADER: usize = 80;
/// Block header length (mode, payload length).
pub const BLOCK_HEADER: usize = 2;
/// Largest block size and largest block payload.
pub const MAX_BLOCK: usize = 4096;
/// Operation kinds.
pub const KIND_ADD: usize = 0;
/// Literal bytes.
pub const KIND_EXTRA: usize = 1;
/// Differences of 32-bit little-endian words.
pub const KIND_ADD32: usize = 2;
/// 32-bit words predicted as float32 products of the last ADD32's words and a factor.
pub const KIND_SCALED: usize = 3;
/// Number of operation kinds.
pub const KINDS: usize = 4;
/// Words of the last ADD32 kept for SCALED (per-channel scale vectors up to this long).
pub const HISTORY: usize = 128;

/// One, for ADD32 multipliers (16 fraction bits).
pub const ONE: i64 = 1 << 16;

/// The ADD32 prediction: the base word, or with a multiplier `k` the base word as an
/// int32 times `k / 2^16`, rounded (wrapping: any input is defined).
pub fn multiply(w: u32, k: Option<i64>) -> u32 {
    match k {
        Some(k) => (i64::from(w as i32).wrapping_mul(k).wrapping_add(ONE / 2) >> 16) as u32,
        None => w,
    }
}

/// The SCALED prediction: the bits of the float32 product `h × factor`, or 0 where the
/// product or an operand is not a normal number (so that flush-to-zero and NaN payload
/// differences between FPUs and soft float can never change the result).
pub fn scaled(h: u32, factor: u32) -> u32 {
    let (a, b) = (f32::from_bits(h), f32::from_bits(factor));
    let p = a * b;
    if a.is_normal() && b.is_normal() && p.is_normal() && p.abs() > f32::MIN_POSITIVE { p.to_bits() } else { 0 }
}

/// A block header: payload length in the low 13 bits, mode in the top 3.
pub fn block_header(mode: u8, len: usize) -> [u8; BLOCK_HEADER] {
    ((u16::from(mode) << 13) | (len as u16 & 0x1FFF)).to_le_bytes()
}

/// Inverse of [`block_header`]: (mode, payload length).
pub fn parse_block_header(b: [u8; BLOCK_HEADER]) -> (u8, usize) {
    let v = u16::from_le_bytes(b);
    ((v >> 13) as u8, usize::from(v & 0x1FFF))
}

/// Block modes.
pub const MODE_CODED: u8 = 0;
/// Stored block: the payload is the output.
pub const MODE_STORED: u8 = 1;
/// Copied block: no payload; the output is the base from the base cursor on.
pub const MODE_COPY: u8 = 2;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Output bytes per block.
    pub block_size: u32,
    /// Number of blocks (not stored: the target size over the block size, rounded up).
    pub blocks: u32,
    /// Size of the rebuilt image.
    pub target_size: u32,
    /// Size of the base (0 for a full-image patch).
    pub base_size: u32,
    /// SHA-256 of the base.
    pub base_sha256: [u8; 32],
    /// SHA-256 of the target.
    pub target_sha256: [u8; 32],
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a mota-delta patch.
    Magic,
    /// A format version or codec this build does not decode.
    Unsupported,
    /// Sizes that contradict each other.
    Inconsistent,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Header {
    /// Parses and checks the first [`HEADER`] bytes of a patch.
    pub fn parse(b: &[u8; HEADER]) -> Result<Self, HeaderError> {
        if &b[..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[4] != VERSION || b[5] != CODEC {
            return Err(HeaderError::Unsupported);
        }
        let mut base_sha256 = [0u8; 32];
        base_sha256.copy_from_slice(&b[16..48]);
        let mut target_sha256 = [0u8; 32];
        target_sha256.copy_from_slice(&b[48..80]);
        let block_size = u32::from(u16::from_le_bytes([b[6], b[7]]));
        if block_size == 0 || block_size as usize > MAX_BLOCK {
            return Err(HeaderError::Inconsistent);
        }
        let target_size = u32_at(b, 8);
        Ok(Self {
            block_size,
            blocks: target_size.div_ceil(block_size),
            target_size,
            base_size: u32_at(b, 12),
            base_sha256,
            target_sha256,
        })
    }

    /// Output length of block `i`.
    pub fn block_len(&self, i: u32) -> usize {
        let start = u64::from(i) * u64::from(self.block_size);
        (u64::from(self.target_size).saturating_sub(start)).min(u64::from(self.block_size)) as usize
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = CODEC;
        b[6..8].copy_from_slice(&(self.block_size as u16).to_le_bytes());
        b[8..12].copy_from_slice(&self.target_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.base_size.to_le_bytes());
        b[16..48].copy_from_slice(&self.base_sha256);
        b[48..80].copy_from_slice(&self.target_sha256);
        b
    }
}

/// The adaptive probabilities of one coded block.
pub struct Model {
    /// Operation kind, first decision (ADD or not), by previous kind.
    pub kind: [u16; KINDS],
    /// Operation kind, second decision (EXTRA or a word kind), by previous kind.
    pub kind2: [u16; KINDS],
    /// Operation kind, third decision (ADD32 or SCALED), by previous kind.
    pub kind3: [u16; KINDS],
    /// Lengths, by kind.
    pub len: [[u16; 32]; KINDS],
    /// Base seeks.
    pub seek: [u16; 32],
    /// Difference bytes (context: whether the previous difference was zero).
    pub diff: crate::rc::SignedModel,
    /// Literal bytes.
    pub literal: [u16; 256],
    /// Word differences (ADD32).
    pub word: crate::rc::WordModel,
    /// Whether an ADD32 has a multiplier.
    pub multiplied: u16,
    /// ADD32 multipliers (zig-zag offset from [`ONE`], gamma).
    pub multiplier: [u16; 32],
    /// Word residuals from the scaled prediction (SCALED).
    pub scaled: crate::rc::WordModel,
    /// The words the block's last ADD32 wrote (its first [`HISTORY`]), which SCALED
    /// predicts from.
    pub history: [u32; HISTORY],
    /// How many of `history` are valid.
    pub history_len: usize,
}

impl Model {
    /// All probabilities at one half.
    pub const fn new() -> Self {
        use crate::rc::HALF;
        Self {
            kind: [HALF; KINDS],
            kind2: [HALF; KINDS],
            kind3: [HALF; KINDS],
            len: [[HALF; 32]; KINDS],
            seek: [HALF; 32],
            diff: crate::rc::SignedModel::new(),
            literal: [HALF; 256],
            word: crate::rc::WordModel::new(),
            multiplied: HALF,
            multiplier: [HALF; 32],
            scaled: crate::rc::WordModel::new(),
            history: [0; HISTORY],
            history_len: 0,
        }
    }
}

impl Model {
    /// Back to one half everywhere, in place (no 2 KiB temporary on the stack).
    pub fn reset(&mut self) {
        use crate::rc::HALF;
        self.kind.fill(HALF);
        self.kind2.fill(HALF);
        self.kind3.fill(HALF);
        self.len.iter_mut().for_each(|l| l.fill(HALF));
        self.seek.fill(HALF);
        self.diff = crate::rc::SignedModel::new();
        self.literal.fill(HALF);
        self.word = crate::rc::WordModel::new();
        self.multiplied = HALF;
        self.multiplier.fill(HALF);
        self.scaled = crate::rc::WordModel::new();
        self.history_len = 0;
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// Zig-zag: signed seeks as unsigned (0, -1, 1, -2, ...).
pub fn zigzag(v: i64) -> u32 {
    ((v << 1) ^ (v >> 63)) as u32
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u32) -> i64 {
    i64::from(v >> 1) ^ -i64::from(v & 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiply_rounds_and_never_overflows() {
        assert_eq!(multiply(1000, Some(ONE / 2)), 500);
        assert_eq!(multiply((-1000i32) as u32, Some(ONE / 2)) as i32, -500);
        assert_eq!(multiply(7, None), 7);
        let _ = multiply(u32::MAX, Some(i64::MAX));
        let _ = multiply(0x8000_0000, Some(i64::MIN));
    }

    #[test]
    fn scaled_is_the_float_product_or_zero() {
        let (h, f) = (0.0123f32, 0.0457f32);
        assert_eq!(scaled(h.to_bits(), f.to_bits()), (h * f).to_bits());
        assert_eq!(scaled(0, f.to_bits()), 0);
        assert_eq!(scaled(f32::NAN.to_bits(), f.to_bits()), 0);
        assert_eq!(scaled(f32::INFINITY.to_bits(), f.to_bits()), 0);
        // Subnormal operand, and a product that underflows.
        assert_eq!(scaled(1, f.to_bits()), 0);
        assert_eq!(scaled(1e-30f32.to_bits(), 1e-10f32.to_bits()), 0);
        assert_eq!(scaled(u32::MAX, u32::MAX), 0);
    }
}
